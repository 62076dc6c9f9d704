//! [`SqliteStore`]: opening, migrating, and the [`EventStore`] implementation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annals::{
    AppendResult, CommandId, CommandRecord, EventStore, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StreamId, StreamVersion, async_trait,
};
use sqlx::SqlitePool;
use tokio::sync::watch;

use crate::error::Error;
use crate::read::Columns;
use crate::settings::Settings;

/// The SQLite event store: durable, in one file, safe to share between the tasks of a process and between the
/// processes of a machine. Cheap to clone: clones share the connections.
///
/// Open it with [`SqliteStore::open`], call [`migrate`](SqliteStore::migrate) once at start-up. See the
/// [guide](crate::guide) for the PRAGMA profile, what survives a crash, and what is not done yet.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) inner: Arc<Inner>,
}

/// What clones share.
pub(crate) struct Inner {
    pub(crate) path: PathBuf,
    pub(crate) settings: Settings,
    /// One connection: this process's writes queue for it (`open.rs`).
    pub(crate) writer: SqlitePool,
    pub(crate) readers: SqlitePool,
    /// Bumped after every write attempt of this process that may have committed; waiters subscribe to it.
    pub(crate) generation: watch::Sender<u64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the event store in the file at `path`, creating the file if it is missing, with the default
    /// [`Settings`] (`synchronous = FULL`, WAL mode). Call [`migrate`](SqliteStore::migrate) before using a new
    /// file.
    ///
    /// # Errors
    /// [`Error::Open`] naming the file when it cannot be opened or created, or is not a SQLite database;
    /// [`Error::NotWritable`] when the file or its directory is read-only; [`Error::Misconfigured`] when it is the
    /// database of another application (tables, but not the store's migration record). A refused file is left
    /// as it was.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, Settings::default()).await
    }

    /// As [`open`](SqliteStore::open), with `settings`.
    ///
    /// # Errors
    /// As [`open`](SqliteStore::open).
    pub async fn open_with(path: impl AsRef<Path>, settings: Settings) -> Result<Self, Error> {
        let path = path.as_ref().to_owned();
        let pools = crate::open::open(&path, &settings).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                settings,
                writer: pools.writer,
                readers: pools.readers,
                generation: watch::channel(0).0,
            }),
        })
    }

    /// Applies the embedded migrations the file lacks, in one transaction, then [`verify`](SqliteStore::verify)s
    /// it. Safe to call from several processes at once and on every start-up.
    ///
    /// # Errors
    /// [`Error::Migrate`] naming the file when a migration fails (a read-only file, a full disk) or the file holds
    /// migrations this version does not know (a newer release wrote it); [`Error::Misconfigured`] or
    /// [`Error::Check`] from the checks.
    pub async fn migrate(&self) -> Result<(), Error> {
        let inner = &self.inner;
        crate::migrate::migrate(&inner.path, &inner.writer, inner.settings.busy_retries).await
    }

    /// Checks that the file is an Annals event store of exactly this binary's schema, in WAL mode.
    /// [`migrate`](SqliteStore::migrate) runs it; call it on its own in processes that do not migrate.
    ///
    /// # Errors
    /// [`Error::Misconfigured`] naming the setting and the fix; [`Error::Check`] when the checks cannot run.
    pub async fn verify(&self) -> Result<(), Error> {
        crate::migrate::verify(&self.inner.path, &self.inner.readers).await
    }

    /// `error` with the driver's error inside it naming the store's file ([`FileError`](crate::FileError)).
    pub(crate) fn on_file(&self, error: annals::Error) -> annals::Error {
        crate::failure::on_file(&self.inner.path, error)
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The settings the store was opened with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The store's writer: a pool of one connection, for companions that keep their tables in the store's file
    /// (the projections and the process managers' timers), so that their writes queue behind this process's
    /// appends instead of meeting them at SQLite's lock. Begin every write transaction on it with
    /// `BEGIN IMMEDIATE` and keep it short: the store's appends wait for it.
    pub fn writer_pool(&self) -> &SqlitePool {
        &self.inner.writer
    }

    /// The store's readers (see [`writer_pool`](SqliteStore::writer_pool)); in WAL mode they never wait for the
    /// writer.
    pub fn reader_pool(&self) -> &SqlitePool {
        &self.inner.readers
    }

    /// Closes every connection, waiting for operations in flight to finish; later operations fail with
    /// [`annals::Error::Unavailable`]. Dropping the last clone closes them too, without waiting.
    pub async fn close(&self) {
        self.inner.writer.close().await;
        self.inner.readers.close().await;
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        self.append_events(stream, expected, events)
            .await
            .map_err(|e| self.on_file(e))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        let mut events = Vec::new();
        self.visit_stream_rows(stream, from, limit, &mut |event| {
            events.push(event);
            Ok(())
        })
        .await
        .map_err(|e| self.on_file(e))?;
        Ok(events)
    }

    async fn read_all(&self, after: Position, limit: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.read_all_page(after, limit)
            .await
            .map_err(|e| self.on_file(e))
    }

    async fn head(&self) -> annals::Result<Position> {
        self.head_position().await.map_err(|e| self.on_file(e))
    }

    async fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        self.wait_until_past(after, timeout)
            .await
            .map_err(|e| self.on_file(e))
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        self.visit_stream_rows(stream, StreamVersion::FIRST, usize::MAX, &mut |event| {
            visit(&event)
        })
        .await
        .map_err(|e| self.on_file(e))
    }

    async fn visit_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        self.visit_all_rows(after, Columns::Whole, visit)
            .await
            .map_err(|e| self.on_file(e))
    }

    /// Reads only what a fold reads (no event id, `recorded_at` or metadata).
    async fn fold_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        self.visit_all_rows(after, Columns::Lean, visit)
            .await
            .map_err(|e| self.on_file(e))
    }

    async fn find_command(&self, command_id: &CommandId) -> annals::Result<Option<CommandRecord>> {
        self.find_command_row(command_id)
            .await
            .map_err(|e| self.on_file(e))
    }

    async fn record_command(&self, record: CommandRecord) -> annals::Result<CommandRecord> {
        self.record_command_row(record)
            .await
            .map_err(|e| self.on_file(e))
    }
}
