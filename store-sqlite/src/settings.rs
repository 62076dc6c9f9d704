//! [`Settings`]: how a [`SqliteStore`](crate::SqliteStore) opens its file (the PRAGMA profile) and how it waits
//! and retries. `docs/sqlite.md` explains each choice.

use std::time::Duration;

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`), in WAL mode. See `docs/sqlite.md`,
/// "Durability".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `FULL` (the default): the write-ahead log is flushed to the disk (fsync) at every commit, so an
    /// acknowledged append survives a process crash and a power loss or OS crash.
    #[default]
    Full,
    /// `NORMAL`: the log is flushed only at checkpoints. An acknowledged append survives a process crash, but
    /// the appends committed since the last checkpoint may be lost (rolled back, never half-written) at a power
    /// loss or OS crash. Faster commits, for data that can be lost.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> sqlx::sqlite::SqliteSynchronous {
        match self {
            Self::Full => sqlx::sqlite::SqliteSynchronous::Full,
            Self::Normal => sqlx::sqlite::SqliteSynchronous::Normal,
        }
    }
}

/// How long SQLite's busy handler waits for another connection's lock before it answers `SQLITE_BUSY`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times an operation that still found the file busy after the busy timeout is tried again.
pub const DEFAULT_BUSY_RETRIES: u32 = 3;

/// How long a waiter sleeps at most before it reads the head again: the delay after which appends made by
/// other processes (which cannot wake it) are seen.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How many reader connections the store keeps open at most.
pub const DEFAULT_READERS: u32 = 4;

/// How a [`SqliteStore`](crate::SqliteStore) opens its file and how it waits. Build it from
/// [`Settings::default`] with the `with_` methods.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) synchronous: Synchronous,
    pub(crate) busy_timeout: Duration,
    pub(crate) busy_retries: u32,
    pub(crate) poll_interval: Duration,
    pub(crate) readers: u32,
    pub(crate) max_page_count: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::default(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            busy_retries: DEFAULT_BUSY_RETRIES,
            poll_interval: DEFAULT_POLL_INTERVAL,
            readers: DEFAULT_READERS,
            max_page_count: None,
        }
    }
}

impl Settings {
    /// Sets `PRAGMA synchronous` (default [`Synchronous::Full`]).
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Sets `PRAGMA busy_timeout`: how long a connection waits for another process's lock (default
    /// [`DEFAULT_BUSY_TIMEOUT`]).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets how many times an operation that found the file busy is tried again, with a growing pause, before it
    /// fails with [`annals::Error::Unavailable`] (default [`DEFAULT_BUSY_RETRIES`]; 0: never).
    pub fn with_busy_retries(mut self, retries: u32) -> Self {
        self.busy_retries = retries;
        self
    }

    /// Sets how long [`wait_for_events`](annals::EventStore::wait_for_events) waits at most before it reads the
    /// head again (default [`DEFAULT_POLL_INTERVAL`]). Appends through this store wake its waiters at once;
    /// appends by other processes are seen within this interval. Values below 5 ms are raised to 5 ms.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(5));
        self
    }

    /// Sets how many reader connections the store keeps open at most (default [`DEFAULT_READERS`]; at least 1).
    /// Readers never wait for the writer in WAL mode.
    pub fn with_readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// Caps the file at `pages` pages (`PRAGMA max_page_count` on the writer; a page is 4 KiB unless the file
    /// says otherwise): an append that would grow the file past the cap fails as on a full disk
    /// ([`annals::Error::Unavailable`], `SQLITE_FULL`) and writes nothing. A quota on the store's size, and a
    /// full disk for tests. A cap below the file's size is raised to it. Default: none (SQLite's own limit).
    pub fn with_max_page_count(mut self, pages: u32) -> Self {
        self.max_page_count = Some(pages);
        self
    }

    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}
