//! The errors of opening, migrating and checking a [`SqliteStore`](crate::SqliteStore). Store operations
//! themselves return [`annals::Error`], like every store.

use std::path::PathBuf;

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while opening, migrating or checking the store's file. Each variant names the file and says
/// what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or created, or SQLite refused it: the directory is missing or not writable,
    /// the file is not a SQLite database, or it is locked by another process for longer than the busy timeout.
    /// Fix the path or its permissions; retry only when another process held a lock.
    #[error("cannot open the SQLite event store {path:?}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// The file cannot be written: it is read-only, or its directory does not let SQLite create the `-wal` and
    /// `-shm` files that WAL mode keeps beside it (or does not exist). Nothing was changed. Make the file and its
    /// directory writable by this process and open it again.
    #[error(
        "the SQLite event store {path:?} cannot be opened for writing: {source}; the file and its directory \
         must exist and be writable by this process (SQLite creates the -wal and -shm files beside the file)"
    )]
    NotWritable {
        /// The database file.
        path: PathBuf,
        /// The driver's error (`SQLITE_READONLY` or `SQLITE_CANTOPEN`).
        #[source]
        source: sqlx::Error,
    },

    /// Applying the embedded migrations failed: the file is read-only, the disk is full, or the file holds
    /// migrations this version does not know (a newer release wrote it). Fix the cause and call `migrate` again;
    /// the migrations run in one transaction, so a failure leaves the file as it was.
    #[error("cannot migrate the SQLite event store {path:?}: {source}")]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// The file is not the event store this version expects: it is not in WAL mode, it has no Annals tables
    /// (not migrated, or not an Annals database), or its schema is older or newer than this binary's. `fix`
    /// says what to do.
    #[error("the SQLite event store {path:?} cannot be used: {setting} is {found}; {fix}")]
    Misconfigured {
        /// The database file.
        path: PathBuf,
        /// The setting or object at fault, for example `journal_mode`.
        setting: &'static str,
        /// What was found.
        found: String,
        /// How to repair it.
        fix: String,
    },

    /// The checks made at start-up could not run (the file could not be read). Fix the cause and start again.
    #[error("cannot check the SQLite event store {path:?}: {source}")]
    Check {
        /// The database file.
        path: PathBuf,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}
