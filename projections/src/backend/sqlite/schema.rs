//! The SQLite backend's tables, created by the backend itself (as the PostgreSQL backend creates its schema):
//! they belong to the projections, not to the event store, whose migrations `SqliteStore::verify` checks to be
//! exactly its own; and the statements below are idempotent, so every process may run them at start-up.

use sqlx::SqlitePool;

use crate::error::{Error, Result};

/// The slots table, as errors name it.
pub(super) const SLOTS: &str = "projection_slots";
/// The dead letters table, as errors name it.
pub(super) const DEAD_LETTERS: &str = "projection_dead_letters";

/// The columns [`slot_from`](super::slot_from) reads.
pub(super) const SLOT_COLUMNS: &str = "name, generation, version, live, checkpoint, state, error, throughput, owner, lease_until, fence";

/// Every table and index, `IF NOT EXISTS`.
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS projection_slots (
    name        TEXT    NOT NULL,
    generation  INTEGER NOT NULL CHECK (generation >= 1),
    version     INTEGER NOT NULL CHECK (version >= 0),
    live        INTEGER NOT NULL CHECK (live IN (0, 1)),
    checkpoint  INTEGER NOT NULL DEFAULT 0 CHECK (checkpoint >= 0),
    state       TEXT    NOT NULL,
    error       TEXT,
    throughput  REAL    NOT NULL DEFAULT 0,
    -- The lease: its owner (a UUID as text), until when (milliseconds since the Unix epoch), and the fencing
    -- token drawn from projection_fence when it was taken.
    owner       TEXT,
    lease_until INTEGER,
    fence       INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (name, generation)
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS projection_slots_one_live ON projection_slots (name) WHERE live = 1;
CREATE UNIQUE INDEX IF NOT EXISTS projection_slots_one_rebuild ON projection_slots (name) WHERE live = 0;
CREATE TABLE IF NOT EXISTS projection_fence (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO projection_fence (id, last) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS projection_documents (
    name       TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    collection TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    -- JSON text.
    doc        TEXT    NOT NULL,
    PRIMARY KEY (name, generation, collection, key)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_dead_letters (
    name       TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    event_id   TEXT    NOT NULL,
    stream_id  TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    parked_at  INTEGER NOT NULL,
    PRIMARY KEY (name, generation, position)
) STRICT;
";

/// Creates the tables in one `BEGIN IMMEDIATE` transaction (processes starting at once take turns).
pub(super) async fn migrate(writer: &SqlitePool) -> Result<()> {
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(Error::db("migrate"))?;
    sqlx::raw_sql(TABLES)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("migrate"))?;
    tx.commit().await.map_err(Error::db("migrate"))
}
