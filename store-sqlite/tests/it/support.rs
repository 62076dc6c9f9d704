//! Helpers shared by the integration tests: a fresh database file per test, removed afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use annals::{
    AppendResult, CommandId, CommandRecord, CommandSession, EventStore, ExpectedVersion, NewEvent,
    Position, RecordedEvent, StreamId, StreamVersion, async_trait,
};
use annals_sqlite::{Settings, SqliteStore};

/// A unique file name in the temporary directory; the file and its `-wal` and `-shm` companions are removed
/// when this is dropped.
#[derive(Debug)]
pub struct TempDb(PathBuf);

impl TempDb {
    pub fn new() -> Self {
        Self(std::env::temp_dir().join(format!("annals-sqlite-{}.db", uuid::Uuid::now_v7())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

/// A migrated store on `db` with `settings`.
pub async fn open(db: &TempDb, settings: Settings) -> SqliteStore {
    let store = SqliteStore::open_with(db.path(), settings).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// A migrated store on a fresh file that removes the file when dropped, for the conformance macros (which
/// build the store in one expression).
pub struct TempStore {
    store: SqliteStore,
    _db: TempDb,
}

impl TempStore {
    pub async fn new() -> Self {
        let db = TempDb::new();
        let store = open(&db, Settings::default()).await;
        Self { store, _db: db }
    }
}

#[async_trait]
impl EventStore for TempStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        self.store.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.store.read_stream(stream, from, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.store.read_all(after, limit).await
    }

    async fn head(&self) -> annals::Result<Position> {
        self.store.head().await
    }

    async fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        self.store.wait_for_events(after, timeout).await
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        self.store.visit_stream(stream, visit).await
    }

    async fn visit_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        self.store.visit_all(after, visit).await
    }

    async fn fold_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        self.store.fold_all(after, visit).await
    }

    fn command_session(&self) -> Box<dyn CommandSession + '_> {
        self.store.command_session()
    }

    async fn find_command(&self, command_id: &CommandId) -> annals::Result<Option<CommandRecord>> {
        self.store.find_command(command_id).await
    }

    async fn record_command(&self, record: CommandRecord) -> annals::Result<CommandRecord> {
        self.store.record_command(record).await
    }
}

pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

pub fn event(n: u64) -> NewEvent {
    NewEvent::new("ThingHappened", serde_json::json!({"n": n}))
}

/// Positions `1..=n`, what a gap-free global order of `n` events holds.
pub fn contiguous(n: u64) -> Vec<u64> {
    (1..=n).collect()
}
