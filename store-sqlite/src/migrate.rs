//! Applying the embedded migrations (`migrations/`) and checking that a file is the event store this binary
//! expects.

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{Connection, Row, SqlitePool};

use crate::error::Error;
use crate::failure::{Transience, retry, transience};

/// The migrations this binary embeds.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies the embedded migrations that `pool`'s file lacks, all in one `BEGIN IMMEDIATE` transaction (so that
/// processes migrating the same file at once take turns, and a failure leaves the file as it was), then
/// [`verify`]s the file.
pub(crate) async fn migrate(path: &Path, pool: &SqlitePool, retries: u32) -> Result<(), Error> {
    let fail = |source| Error::Migrate {
        path: path.to_owned(),
        source,
    };
    let busy = |error: &MigrateError| match error {
        MigrateError::Execute(error) => transience(error) == Transience::Busy,
        _ => false,
    };
    retry("migrate", retries, busy, || async {
        let mut conn = pool.acquire().await?;
        let done = async {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            MIGRATOR.run(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, MigrateError>(())
        }
        .await;
        // SQLite may have rolled a failed transaction back by itself, which sqlx does not notice (`writer.rs`):
        // the connection is closed rather than reused.
        if done.is_err() {
            conn.close_on_drop();
        }
        done
    })
    .await
    .map_err(fail)?;
    verify(path, pool).await?;
    tracing::info!(path = %path.display(), "event store file is up to date");
    Ok(())
}

/// Checks that the file is in WAL mode and holds exactly the embedded migrations, each applied successfully with
/// the same checksum: not a file of another application, not one a newer release migrated, not one this binary
/// has not migrated yet.
pub(crate) async fn verify(path: &Path, pool: &SqlitePool) -> Result<(), Error> {
    let check = |source| Error::Check {
        path: path.to_owned(),
        source,
    };
    let misconfigured = |setting, found: String, fix: &str| {
        Err(Error::Misconfigured {
            path: path.to_owned(),
            setting,
            found,
            fix: fix.to_owned(),
        })
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .map_err(check)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return misconfigured(
            "journal_mode",
            mode,
            "keep the file on a local file system that supports WAL mode (not a network share), and open it \
             with SqliteStore::open, which turns WAL on",
        );
    }
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('events', '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await
    .map_err(check)?;
    if tables < 2 {
        return misconfigured(
            "the table events",
            "missing".to_owned(),
            "run SqliteStore::migrate on the file, or check that the path names an Annals event store",
        );
    }
    let rows =
        sqlx::query("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(check)?;
    let mut applied = BTreeMap::new();
    for row in &rows {
        let version: i64 = row.try_get(0).map_err(check)?;
        let success: bool = row.try_get(1).map_err(check)?;
        let checksum: Vec<u8> = row.try_get(2).map_err(check)?;
        applied.insert(version, (success, checksum));
    }
    match schema_mismatch(&applied) {
        Some((found, fix)) => misconfigured("the schema version", found, fix),
        None => Ok(()),
    }
}

/// How the applied migrations (version → success, checksum) differ from the embedded ones, if they do: what was
/// found and how to repair it.
fn schema_mismatch(applied: &BTreeMap<i64, (bool, Vec<u8>)>) -> Option<(String, &'static str)> {
    let embedded: BTreeMap<i64, &[u8]> = MIGRATOR
        .iter()
        .map(|m| (m.version, m.checksum.as_ref()))
        .collect();
    if let Some(version) = applied.keys().find(|v| !embedded.contains_key(v)) {
        let latest = embedded.keys().last().copied().unwrap_or(0);
        return Some((
            format!("{version}, newer than this binary's latest ({latest})"),
            "run a release of the application at least as new as the one that last migrated the file",
        ));
    }
    embedded
        .iter()
        .find_map(|(version, checksum)| match applied.get(version) {
            None => Some((
                format!("missing migration {version}"),
                "run SqliteStore::migrate on the file",
            )),
            Some((false, _)) => Some((
                format!("migration {version} marked failed"),
                "restore the file from a backup",
            )),
            Some((true, stored)) if stored.as_slice() != *checksum => Some((
                format!("migration {version} with another checksum"),
                "the file was migrated by a build with different migrations; restore it from a backup",
            )),
            Some(_) => None,
        })
}
