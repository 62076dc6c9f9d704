//! The plain-sqlx baseline on SQLite: the minimal events table a hand-written application would keep in one
//! file, opened with the same durability as the Annals store's default (WAL, `synchronous = FULL`), and the
//! statements every SQLite scenario's baseline runs on it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{Executor, Sqlite, SqliteConnection};

use annals::Aggregate as _;

use crate::domain::{Cart, CartEvent, ITEM_ADDED, ItemAdded};
use crate::raw::decode;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS events (
    position   INTEGER PRIMARY KEY,
    stream_id  TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    UNIQUE (stream_id, version)
)";
const SELECT_STREAM: &str =
    "SELECT version, event_type, payload FROM events WHERE stream_id = ?1 ORDER BY version";
const INSERT_ONE: &str =
    "INSERT INTO events (stream_id, version, event_type, payload) VALUES (?1, ?2, ?3, ?4)";
const SELECT_ALL: &str =
    "SELECT position, stream_id, event_type, payload FROM events ORDER BY position";

/// Rows per multi-row insert while filling (4 parameters each).
const FILL_CHUNK: usize = 250;

static FILE_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh database file name in `dir` for one run of one side (`annals-bench-<label>-<pid>-<n>.db`); the file
/// and its `-wal`, `-shm` companions are removed when this is dropped.
pub(crate) struct ScratchFile(PathBuf);

impl ScratchFile {
    /// A name no other run uses; the file itself is created by whoever opens it.
    pub(crate) fn new(dir: &Path, label: &str) -> Self {
        let seq = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
        Self(dir.join(format!(
            "annals-bench-{label}-{}-{seq}.db",
            std::process::id()
        )))
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

/// The options of every baseline connection: the store's default durability (WAL, `synchronous = FULL`) and
/// busy timeout.
fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
}

/// A pool of `connections` connections to the baseline file at `path` that does not ping on acquire, all opened
/// before it is returned; the first creates the table.
pub(crate) async fn pool(path: &Path, connections: u32) -> anyhow::Result<SqlitePool> {
    let pool = SqlitePoolOptions::new()
        .max_connections(connections)
        .min_connections(connections)
        .test_before_acquire(false)
        .connect_with(options(path))
        .await
        .with_context(|| format!("cannot open the baseline file {}", path.display()))?;
    pool.execute(CREATE)
        .await
        .context("cannot create the baseline table")?;
    let mut held = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        held.push(pool.acquire().await?);
    }
    drop(held);
    Ok(pool)
}

/// Reads a stream's events, decoded, with the stream's version (rows collected first).
pub(crate) async fn load<'c>(
    executor: impl Executor<'c, Database = Sqlite>,
    stream: &str,
) -> anyhow::Result<(Vec<CartEvent>, i64)> {
    let rows: Vec<(i64, String, Json<ItemAdded>)> = sqlx::query_as(SELECT_STREAM)
        .bind(stream)
        .fetch_all(executor)
        .await?;
    let mut version = 0;
    let mut events = Vec::with_capacity(rows.len());
    for (v, event_type, Json(item)) in rows {
        events.push(decode(&event_type, item)?);
        version = v;
    }
    Ok((events, version))
}

/// Folds a stream's events into a cart as their rows arrive, and returns it with the stream's version.
pub(crate) async fn fold<'c>(
    executor: impl Executor<'c, Database = Sqlite>,
    stream: &str,
) -> anyhow::Result<(Cart, i64)> {
    let mut rows = sqlx::query_as::<_, (i64, String, Json<ItemAdded>)>(SELECT_STREAM)
        .bind(stream)
        .fetch(executor);
    let mut cart = Cart::default();
    let mut version = 0;
    while let Some((v, event_type, Json(item))) = rows.try_next().await? {
        cart.apply(&decode(&event_type, item)?);
        version = v;
    }
    Ok((cart, version))
}

/// Inserts a command's one event at version `after + 1` in one autocommit statement; `Ok(false)` when another
/// writer took the version first (the unique key is the baseline's whole concurrency control).
pub(crate) async fn insert_one<'c>(
    executor: impl Executor<'c, Database = Sqlite>,
    stream: &str,
    after: i64,
    event: &CartEvent,
) -> anyhow::Result<bool> {
    let CartEvent::ItemAdded(item) = event;
    let inserted = sqlx::query(INSERT_ONE)
        .bind(stream)
        .bind(after + 1)
        .bind(ITEM_ADDED)
        .bind(Json(item))
        .execute(executor)
        .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Writes `events` to `stream` at the versions after `after`, in one transaction of multi-row inserts (setup
/// only: filling a read scenario).
pub(crate) async fn insert_batch(
    conn: &mut SqliteConnection,
    stream: &str,
    after: i64,
    events: &[CartEvent],
) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await?;
    let mut version = after;
    for chunk in events.chunks(FILL_CHUNK) {
        let mut builder = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (stream_id, version, event_type, payload) ",
        );
        builder.push_values(chunk, |mut row, CartEvent::ItemAdded(item)| {
            version += 1;
            row.push_bind(stream)
                .push_bind(version)
                .push_bind(ITEM_ADDED)
                .push_bind(Json(item.clone()));
        });
        builder.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The statement reading every event in position order (position, stream, type, payload).
pub(crate) fn select_all() -> &'static str {
    SELECT_ALL
}
