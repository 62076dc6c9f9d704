//! Opening the file: the PRAGMA profile (`docs/sqlite.md`) and the two pools, one writer and a few readers.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::error::Error;
use crate::failure::{Transience, retry, transience};
use crate::settings::Settings;

/// The connections of one store: a pool of one writer, so that this process's appends queue in the store
/// instead of spinning in SQLite's busy handler (which serves only the contention with other processes), and a
/// pool of readers, which never wait for the writer in WAL mode.
pub(crate) struct Pools {
    pub(crate) writer: SqlitePool,
    pub(crate) readers: SqlitePool,
}

/// The options every connection of the store opens with: the file, created if missing; `synchronous`,
/// `busy_timeout` and `foreign_keys` (which are per connection); `journal_mode = WAL` on the writer, which
/// sets it in the file for good.
fn options(path: &Path, settings: &Settings) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .synchronous(settings.synchronous.pragma())
        .busy_timeout(settings.busy_timeout)
        .foreign_keys(true)
}

/// Opens (creating if needed) the file at `path` in WAL mode and connects the writer and one reader, so that a
/// file that cannot be used is refused here, naming it.
pub(crate) async fn open(path: &Path, settings: &Settings) -> Result<Pools, Error> {
    let fail = |source| Error::Open {
        path: path.to_owned(),
        source,
    };
    let busy = |error: &sqlx::Error| transience(error) == Transience::Busy;
    let writer_options = options(path, settings)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    // Turning WAL on takes a lock that the busy handler does not wait for: retried when another process
    // opens the same new file at the same moment.
    let writer = retry("open", settings.busy_retries, busy, || {
        SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(writer_options.clone())
    })
    .await
    .map_err(fail)?;
    // Readers leave `journal_mode` alone: the writer made the file WAL, and WAL mode is persistent.
    let readers = retry("open", settings.busy_retries, busy, || {
        SqlitePoolOptions::new()
            .max_connections(settings.readers)
            .test_before_acquire(false)
            .connect_with(options(path, settings))
    })
    .await
    .map_err(fail)?;
    Ok(Pools { writer, readers })
}
