//! Files the store must not use are refused with an error naming the file, and left as they were: one that is
//! not SQLite (text, random bytes), the SQLite database of another application, one that was never migrated,
//! one a newer release migrated.

use annals_sqlite::{Error, Settings, SqliteStore};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use crate::support::{TempDb, companion, contents, open};

fn names(error: &Error, db: &TempDb) -> bool {
    error.to_string().contains(&db.path().display().to_string())
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_at_open() {
    let db = TempDb::new();
    std::fs::write(
        db.path(),
        "these are not the pages of a database, just some text\n".repeat(100),
    )
    .unwrap();
    let error = SqliteStore::open(db.path()).await.unwrap_err();
    assert!(matches!(error, Error::Open { .. }), "{error:?}");
    assert!(names(&error, &db), "{error}");
    let kept = std::fs::read_to_string(db.path()).unwrap();
    assert!(
        kept.starts_with("these are not"),
        "the file is left as it was"
    );
}

/// 64 KiB of bytes from a fixed-seed xorshift generator: not a SQLite header, not any structure.
fn random_bytes() -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test]
async fn random_bytes_are_refused_at_open_and_left_as_they_were() {
    let db = TempDb::new();
    std::fs::write(db.path(), random_bytes()).unwrap();
    let error = SqliteStore::open(db.path()).await.unwrap_err();
    assert!(matches!(error, Error::Open { .. }), "{error:?}");
    assert!(names(&error, &db), "{error}");
    assert_eq!(std::fs::read(db.path()).unwrap(), random_bytes());
    assert!(!companion(db.path(), "-wal").exists());
}

#[tokio::test]
async fn the_database_of_another_application_is_refused_at_open_and_left_as_it_was() {
    let db = TempDb::new();
    let options = SqliteConnectOptions::new()
        .filename(db.path())
        .create_if_missing(true);
    let mut other = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::query("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("INSERT INTO customers (name) VALUES ('Ada'), ('Grace')")
        .execute(&mut other)
        .await
        .unwrap();
    other.close().await.unwrap();
    let before = contents(db.path());

    let error = SqliteStore::open(db.path()).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Misconfigured {
                setting: "the tables",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(names(&error, &db), "{error}");
    assert!(error.to_string().contains("customers"), "{error}");
    // Not switched to WAL mode, no Annals table added: the other application's file is as it was.
    assert_eq!(contents(db.path()), before);
}

#[tokio::test]
async fn a_file_that_was_not_migrated_fails_verify() {
    let db = TempDb::new();
    let store = SqliteStore::open(db.path()).await.unwrap();
    let error = store.verify().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Misconfigured {
                setting: "the table events",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(names(&error, &db), "{error}");
}

#[tokio::test]
async fn a_file_of_a_newer_schema_is_refused() {
    let db = TempDb::new();
    open(&db, Settings::default()).await;
    let mut raw = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(db.path()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    let store = SqliteStore::open(db.path()).await.unwrap();
    let error = store.migrate().await.unwrap_err();
    assert!(matches!(error, Error::Migrate { .. }), "{error:?}");
    assert!(names(&error, &db), "{error}");
    let error = store.verify().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Misconfigured {
                setting: "the schema version",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("9999"), "{error}");
    // Refused, not rolled back or rewritten: the newer release's record is still there.
    let version: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(version, 9999);
}
