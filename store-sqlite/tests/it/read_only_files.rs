//! A file or a directory the store cannot write is refused when the store opens it, with an error naming the
//! file (`annals_sqlite::Error::NotWritable`), never a panic and never a change to the file; once it is
//! writable again, the store reads every event and appends on.

use annals::{EventStore, ExpectedVersion, Position, StreamVersion};
use annals_sqlite::{Error, Settings, SqliteStore};

use crate::support::{ReadOnly, TempDir, companion, event, stream};

/// A migrated store file in `dir` holding two events of `cart-1`, closed (its write-ahead log checkpointed and
/// removed).
async fn filled(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path().join("events.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.migrate().await.unwrap();
    store
        .append(
            &stream("cart-1"),
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        )
        .await
        .unwrap();
    store.close().await;
    path
}

/// Opens `path` again (writable by now): the two events are there and a third append follows them.
async fn appends_on(path: &std::path::Path) {
    let store = SqliteStore::open(path).await.unwrap();
    store.migrate().await.unwrap();
    let positions: Vec<u64> = store
        .read_all(Position::START, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position.get())
        .collect();
    assert_eq!(positions, vec![1, 2]);
    let done = store
        .append(
            &stream("cart-1"),
            ExpectedVersion::Exact(StreamVersion(2)),
            vec![event(3)],
        )
        .await
        .unwrap();
    assert_eq!(done.last_position, Position(3));
    store.close().await;
}

fn assert_not_writable(error: &Error, path: &std::path::Path) {
    assert!(matches!(error, Error::NotWritable { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "the error names the file: {error}"
    );
}

#[tokio::test]
async fn a_read_only_file_is_refused_at_open_and_left_as_it_was() {
    let dir = TempDir::new();
    let path = filled(&dir).await;
    let before = std::fs::read(&path).unwrap();
    {
        let _read_only = ReadOnly::new(&path);
        let error = SqliteStore::open(&path).await.unwrap_err();
        assert_not_writable(&error, &path);
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    appends_on(&path).await;
}

#[tokio::test]
async fn a_read_only_directory_is_refused_at_open_naming_the_file() {
    let dir = TempDir::new();
    let path = filled(&dir).await;
    assert!(
        !companion(&path, "-wal").exists() && !companion(&path, "-shm").exists(),
        "closing the store removes the -wal and -shm files, which the open below must create"
    );
    let before = std::fs::read(&path).unwrap();
    {
        let _read_only = ReadOnly::new(dir.path());
        let error = SqliteStore::open(&path).await.unwrap_err();
        assert_not_writable(&error, &path);
        // A new file in a read-only directory cannot be created either.
        let new = dir.path().join("new.db");
        let error = SqliteStore::open_with(&new, Settings::default())
            .await
            .unwrap_err();
        assert_not_writable(&error, &new);
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    appends_on(&path).await;
}
