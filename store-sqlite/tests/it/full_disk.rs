//! A full disk, for real: the writer's `PRAGMA max_page_count` (`Settings::with_max_page_count`) caps the file,
//! so an append that needs one more page fails with SQLITE_FULL exactly as on a full disk. The refused append
//! writes nothing, every earlier event stays readable, and once the cap is raised the store appends again at
//! the next version and position.

use annals::{EventStore, ExpectedVersion, NewEvent, Position, StreamVersion};
use annals_sqlite::{Settings, SqliteStore};

use crate::support::{TempDb, contiguous, open, stream};

/// An event of about 2 KiB, so that a few fill a page.
fn big(n: u64) -> NewEvent {
    NewEvent::new(
        "ThingHappened",
        serde_json::json!({"n": n, "padding": "x".repeat(2_000)}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_file_refuses_the_append_keeps_every_event_and_appends_again_once_raised() {
    let db = TempDb::new();
    // The migrated, empty file, to learn how many pages it has.
    open(&db, Settings::default()).await.close().await;
    let pages = u32::try_from(std::fs::metadata(db.path()).unwrap().len() / 4096).unwrap();
    let capped = open(&db, Settings::default().with_max_page_count(pages + 4)).await;
    let cart = stream("cart-1");
    let mut stored = 0u64;
    let refused = loop {
        assert!(stored < 1_000, "the capped file never filled up");
        let expected = ExpectedVersion::Exact(StreamVersion(stored));
        match capped.append(&cart, expected, vec![big(stored)]).await {
            Ok(done) => {
                stored += 1;
                assert_eq!(done.last_position, Position(stored));
            }
            Err(error) => break error,
        }
    };
    assert!(stored > 0, "no append fitted under the cap: {refused}");
    assert!(
        matches!(refused, annals::Error::Unavailable { .. }),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .contains(&db.path().display().to_string()),
        "the error names the file: {refused}"
    );
    // The refused append wrote nothing, and the store still reads and answers on the same connections.
    let all = capped.read_all(Position::START, 10_000).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.get()).collect();
    assert_eq!(positions, contiguous(stored));
    assert_eq!(capped.head().await.unwrap(), Position(stored));
    let again = capped
        .append(
            &cart,
            ExpectedVersion::Exact(StreamVersion(stored)),
            vec![big(stored)],
        )
        .await
        .unwrap_err();
    assert!(again.is_retryable(), "{again:?}");
    capped.close().await;

    // The cap raised: every earlier event is there, and appends go on at the next version and position.
    let raised = SqliteStore::open_with(db.path(), Settings::default())
        .await
        .unwrap();
    raised.verify().await.unwrap();
    let events = raised
        .read_stream(&cart, StreamVersion::FIRST, 10_000)
        .await
        .unwrap();
    assert_eq!(events.len() as u64, stored);
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event.payload.to_value().unwrap()["n"], n as u64);
    }
    let done = raised
        .append(
            &cart,
            ExpectedVersion::Exact(StreamVersion(stored)),
            vec![big(stored)],
        )
        .await
        .unwrap();
    assert_eq!(done.stream_version, StreamVersion(stored + 1));
    assert_eq!(done.last_position, Position(stored + 1));
    let positions: Vec<u64> = raised
        .read_all(Position::START, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position.get())
        .collect();
    assert_eq!(positions, contiguous(stored + 1));
}
