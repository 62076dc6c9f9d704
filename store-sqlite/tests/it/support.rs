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

/// A temporary directory, removed (with everything in it) when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("annals-sqlite-dir-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file or directory made read-only for as long as this lives: its permission bits, and, for a process that
/// would write anyway (root ignores permission bits), the immutable attribute (`chattr +i`, which binds root
/// too). Both are undone when dropped.
#[derive(Debug)]
pub struct ReadOnly {
    path: PathBuf,
    mode: u32,
    immutable: bool,
}

impl ReadOnly {
    pub fn new(path: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        let read_only = if path.is_dir() { 0o555 } else { 0o444 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(read_only)).unwrap();
        let mut guard = Self {
            path: path.to_owned(),
            mode,
            immutable: false,
        };
        if writable(path) {
            let done = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .expect("chattr, to make a path read-only for root");
            assert!(done.success(), "chattr +i {path:?} failed");
            guard.immutable = true;
        }
        assert!(!writable(path), "{path:?} is still writable");
        guard
    }
}

/// Whether this process can write `path` (a file: open it for writing; a directory: create a file in it).
fn writable(path: &Path) -> bool {
    if path.is_dir() {
        let probe = path.join(".probe");
        let created = std::fs::File::create(&probe).is_ok();
        let _ = std::fs::remove_file(&probe);
        created
    } else {
        std::fs::OpenOptions::new().write(true).open(path).is_ok()
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.path)
                .status();
        }
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(self.mode));
    }
}

/// The bytes of the file at `path` and of its `-wal` companion (empty when missing): what a refused open must
/// leave as it was.
pub fn contents(path: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut wal = path.to_owned().into_os_string();
    wal.push("-wal");
    (
        std::fs::read(path).unwrap_or_default(),
        std::fs::read(wal).unwrap_or_default(),
    )
}

/// `path` with `suffix` appended (`-wal`, `-shm`).
pub fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.to_owned().into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}
