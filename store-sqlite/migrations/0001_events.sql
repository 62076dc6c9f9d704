-- The event store on SQLite: one events table. `SqliteStore::migrate` applies this once per file.
-- Global order (ADR 0008): `position` is an INTEGER PRIMARY KEY AUTOINCREMENT. Every append is one write
-- transaction begun with BEGIN IMMEDIATE, and SQLite lets one writer in at a time, so a transaction draws its
-- positions and commits (or rolls back, giving them back with the sqlite_sequence row) before the next writer can
-- draw any: the committed positions are contiguous, and a reader's snapshot is always a prefix of them.
-- AUTOINCREMENT (rather than a plain rowid) also keeps a position from ever being drawn twice.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL CHECK (stream_version >= 1),
    -- The UUID's 16 bytes.
    event_id       BLOB    NOT NULL UNIQUE CHECK (length(event_id) = 16),
    -- Microseconds since the Unix epoch, UTC.
    recorded_at    INTEGER NOT NULL,
    event_type     TEXT    NOT NULL CHECK (event_type <> ''),
    schema_version INTEGER NOT NULL CHECK (schema_version BETWEEN 0 AND 2147483647),
    -- JSON text.
    payload        TEXT    NOT NULL CHECK (json_valid(payload)),
    -- JSON text of the metadata; NULL when the event has none.
    metadata       TEXT,
    -- The stream read path, and the last line of defence for optimistic concurrency.
    UNIQUE (stream_id, stream_version)
) STRICT;
