//! Opening the file: the PRAGMA profile (`docs/sqlite.md`) and the two pools, one writer and a few readers. A
//! file the store must not use is refused before anything in it changes: one that is not SQLite, the database
//! of another application, one this process cannot write.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, SqliteConnection};

use crate::error::Error;
use crate::failure::{Transience, is_not_writable, retry, transience};
use crate::settings::Settings;

/// The connections of one store: a pool of one writer, so that this process's appends queue in the store
/// instead of spinning in SQLite's busy handler (which serves only the contention with other processes), and a
/// pool of readers, which never wait for the writer in WAL mode.
pub(crate) struct Pools {
    pub(crate) writer: SqlitePool,
    pub(crate) readers: SqlitePool,
}

/// The options every connection of the store opens with: the file; `synchronous`, `busy_timeout` and
/// `foreign_keys` (which are per connection). `journal_mode` is left alone: [`open`] turns WAL on once it knows
/// the file is the store's, and WAL mode stays set in the file.
fn options(path: &Path, settings: &Settings) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .synchronous(settings.synchronous.pragma())
        .busy_timeout(settings.busy_timeout)
        .foreign_keys(true)
}

/// The driver error `source` met while opening `path`, as the caller can act on it.
fn open_error(path: &Path, source: sqlx::Error) -> Error {
    let path = path.to_owned();
    match is_not_writable(&source) {
        true => Error::NotWritable { path, source },
        false => Error::Open { path, source },
    }
}

/// Opens (creating if needed) the file at `path`, checks that it is the store's and writable, turns WAL mode
/// on and connects the readers, so that a file that cannot be used is refused here, naming it.
pub(crate) async fn open(path: &Path, settings: &Settings) -> Result<Pools, Error> {
    let busy = |error: &sqlx::Error| transience(error) == Transience::Busy;
    let mut writer_options = options(path, settings).create_if_missing(true);
    if let Some(pages) = settings.max_page_count {
        writer_options = writer_options.pragma("max_page_count", pages.to_string());
    }
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(writer_options)
        .await
        .map_err(|e| open_error(path, e))?;
    let prepared = async {
        let mut conn = writer.acquire().await.map_err(|e| open_error(path, e))?;
        refuse_foreign(path, &mut conn).await?;
        // Turning WAL on takes a lock that the busy handler does not wait for: retried when another process
        // opens the same new file at the same moment. Before it, a write rolled back proves the file and its
        // directory writable.
        drop(conn);
        retry("open", settings.busy_retries, busy, || async {
            let mut conn = writer.acquire().await?;
            let mut probe = conn.begin_with("BEGIN IMMEDIATE").await?;
            // On a read-only file `BEGIN IMMEDIATE` only begins a read; a write (rolled back) is refused.
            sqlx::query("CREATE TABLE annals_write_probe (x INTEGER)")
                .execute(&mut *probe)
                .await?;
            probe.rollback().await?;
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&mut *conn)
                .await
        })
        .await
        .map_err(|e| open_error(path, e))?;
        Ok::<_, Error>(())
    };
    if let Err(error) = prepared.await {
        writer.close().await;
        return Err(error);
    }
    let readers = retry("open", settings.busy_retries, busy, || {
        SqlitePoolOptions::new()
            .max_connections(settings.readers)
            .test_before_acquire(false)
            .connect_with(options(path, settings))
    })
    .await
    .map_err(|e| open_error(path, e))?;
    Ok(Pools { writer, readers })
}

/// Refuses a SQLite file that holds tables but not the store's migration record (`_sqlx_migrations`): the
/// database of another application, to which the store must not add its tables nor change the journal mode.
/// Reading the schema is also what finds a file that is not SQLite at all (`SQLITE_NOTADB`).
async fn refuse_foreign(path: &Path, conn: &mut SqliteConnection) -> Result<(), Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| open_error(path, e))?;
    if tables.is_empty() || tables.iter().any(|t| t == "_sqlx_migrations") {
        return Ok(());
    }
    Err(Error::Misconfigured {
        path: path.to_owned(),
        setting: "the tables",
        found: format!(
            "{} (a database without the event store's migration record, _sqlx_migrations)",
            tables.join(", ")
        ),
        fix: "check that the path names an Annals event store: the store does not add its tables to the \
              database of another application"
            .to_owned(),
    })
}
