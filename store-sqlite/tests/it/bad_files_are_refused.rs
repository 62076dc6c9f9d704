//! Files the store must not use are refused with an error naming the file: one that is not SQLite, one that was
//! never migrated, one a newer release migrated.

use annals_sqlite::{Error, Settings, SqliteStore};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use crate::support::{TempDb, open};

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
}
