//! Numbers SQLite's 64-bit signed integers cannot hold are handled where they enter by the same rules as on
//! PostgreSQL: an expected version, a `from` version or an `after` position beyond `i64::MAX` lies beyond every
//! stored value (a conflict, an empty read, a wait that times out), and a command record carrying one is refused.

use std::time::Duration;

use annals::{
    CommandId, CommandOutcome, CommandRecord, EventStore, ExpectedVersion, Position, StreamVersion,
};
use annals_sqlite::Settings;

use crate::support::{TempDb, event, open, stream};

#[tokio::test]
async fn numbers_beyond_i64_are_beyond_every_stored_value() {
    let db = TempDb::new();
    let store = open(&db, Settings::default()).await;
    let id = stream("huge-1");
    store
        .append(&id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    for huge in [u64::MAX, i64::MAX as u64 + 1] {
        let expected = ExpectedVersion::Exact(StreamVersion(huge));
        match store.append(&id, expected, vec![event(2)]).await {
            Err(annals::Error::Conflict { actual, .. }) => assert_eq!(actual, StreamVersion(1)),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(
            store
                .read_stream(&id, StreamVersion(huge), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.read_all(Position(huge), 10).await.unwrap().is_empty());
        let head = store
            .wait_for_events(Position(huge), Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(head, Position(1));
    }
    let record = CommandRecord {
        command_id: CommandId::new("huge-command").unwrap(),
        stream: id.clone(),
        version: StreamVersion(u64::MAX),
        position: Position(1),
        outcome: CommandOutcome::Unchanged,
        recorded_at: chrono::Utc::now(),
    };
    let refused = store.record_command(record).await;
    assert!(
        matches!(refused, Err(annals::Error::Backend { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store
            .find_command(&CommandId::new("huge-command").unwrap())
            .await
            .unwrap(),
        None
    );
}
