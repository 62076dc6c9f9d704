//! A stored row that does not decode is an error naming the stream, version, position and event type.

use annals::{Aggregate, Event, EventStore, Position, Repository, StreamVersion};
use serde::{Deserialize, Serialize};
use sqlx::{Executor, PgPool};

use crate::support::{store, stream};

#[derive(Debug, Default)]
struct Counter {
    value: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    #[serde(rename = "CounterIncremented")]
    Incremented { by: u64 },
}
impl Event for CounterEvent {}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Counter {
    type Command = u64;
    type Event = CounterEvent;
    type Error = Never;

    fn decide(&self, by: &u64) -> Result<Vec<CounterEvent>, Never> {
        Ok(vec![CounterEvent::Incremented { by: *by }])
    }

    fn apply(&mut self, CounterEvent::Incremented { by }: &CounterEvent) {
        self.value += by;
    }
}

async fn three_increments(pool: &PgPool) -> (annals_postgres::PostgresStore, annals::StreamId) {
    let store = store(pool.clone()).await;
    let id = stream("it's \"counter\" 1");
    let counters = Repository::<Counter, _>::new(store.clone());
    for by in 1..=3 {
        counters.execute(&id, &by).await.unwrap();
    }
    (store, id)
}

#[track_caller]
fn assert_decode_error(err: annals::Error, id: &annals::StreamId, event_type: &str) -> Position {
    match err {
        annals::Error::Decode {
            stream,
            version,
            position,
            event_type: stored_type,
            ..
        } => {
            assert_eq!(&stream, id);
            assert_eq!(version, StreamVersion(2));
            assert_eq!(stored_type, event_type);
            position
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[sqlx::test(migrations = false)]
async fn an_unknown_event_type_names_the_event(pool: PgPool) {
    let (store, id) = three_increments(&pool).await;
    pool.execute(
        "UPDATE annals.events SET event_type = 'CounterExploded' WHERE stream_version = 2",
    )
    .await
    .unwrap();
    let err = Repository::<Counter, _>::new(store.clone())
        .load(&id)
        .await
        .unwrap_err();
    let message = err.to_string();
    let position = assert_decode_error(err, &id, "CounterExploded");
    let stored = store.load_stream(&id).await.unwrap();
    assert_eq!(position, stored[1].position);
    assert!(
        message.contains("CounterExploded") && message.contains("version 2"),
        "{message}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_payload_that_does_not_fit_names_the_event(pool: PgPool) {
    let (store, id) = three_increments(&pool).await;
    pool.execute(r#"UPDATE annals.events SET payload = '{"by": "lots"}' WHERE stream_version = 2"#)
        .await
        .unwrap();
    let err = Repository::<Counter, _>::new(store)
        .load(&id)
        .await
        .unwrap_err();
    assert_decode_error(err, &id, "CounterIncremented");
}

#[sqlx::test(migrations = false)]
async fn corrupt_metadata_names_the_event_in_every_read(pool: PgPool) {
    let (store, id) = three_increments(&pool).await;
    pool.execute(
        r#"UPDATE annals.events SET metadata = '["not", "an", "object"]' WHERE stream_version = 2"#,
    )
    .await
    .unwrap();
    assert_decode_error(
        store.load_stream(&id).await.unwrap_err(),
        &id,
        "CounterIncremented",
    );
    assert_decode_error(
        store.read_all(Position::START, 10).await.unwrap_err(),
        &id,
        "CounterIncremented",
    );
    let mut visited = 0;
    let err = store
        .visit_all(Position::START, &mut |_| {
            visited += 1;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_decode_error(err, &id, "CounterIncremented");
    assert_eq!(
        visited, 1,
        "the event before the corrupt one was handed over"
    );
    // A fold reads no metadata, so the corrupt metadata is not in its way (and nothing is made of it).
    let mut folded = Vec::new();
    store
        .fold_all(Position::START, &mut |e| {
            folded.push((e.stream_version, e.metadata.clone()));
            Ok(())
        })
        .await
        .unwrap();
    let versions: Vec<_> = folded.iter().map(|(v, _)| v.get()).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert!(
        folded
            .iter()
            .all(|(_, m)| *m == annals::Metadata::default())
    );
    let loaded = Repository::<Counter, _>::new(store)
        .load(&id)
        .await
        .unwrap();
    assert_eq!(loaded.state.value, 6);
}

/// `fold_all` decodes what it reads with the checks and errors of `visit_all`: a payload that does not fit, or an
/// unknown event type, is a decode error naming the stream, version, position and type.
#[sqlx::test(migrations = false)]
async fn a_fold_of_the_global_order_names_the_event_it_cannot_decode(pool: PgPool) {
    let (store, id) = three_increments(&pool).await;
    for (update, event_type) in [
        (
            r#"UPDATE annals.events SET payload = '{"by": "lots"}' WHERE stream_version = 2"#,
            "CounterIncremented",
        ),
        (
            "UPDATE annals.events SET event_type = 'CounterExploded' WHERE stream_version = 2",
            "CounterExploded",
        ),
    ] {
        pool.execute(update).await.unwrap();
        let mut folded = 0;
        let err = store
            .fold_all(Position::START, &mut |e| {
                e.decode::<CounterEvent>()?;
                folded += 1;
                Ok(())
            })
            .await
            .unwrap_err();
        let position = assert_decode_error(err, &id, event_type);
        assert_eq!(position, store.load_stream(&id).await.unwrap()[1].position);
        assert_eq!(folded, 1, "the event before it was folded");
    }
}

#[sqlx::test(migrations = false)]
async fn an_invalid_stored_stream_id_names_the_position(pool: PgPool) {
    let (store, _) = three_increments(&pool).await;
    pool.execute("UPDATE annals.events SET stream_id = E'bad\\nid' WHERE stream_version = 2")
        .await
        .unwrap();
    let err = store.read_all(Position::START, 10).await.unwrap_err();
    let message = format!("{err} / {:?}", std::error::Error::source(&err));
    assert!(
        message.contains("position 2") && message.contains("invalid stream id"),
        "{message}"
    );
    let err = store
        .visit_all(Position::START, &mut |_| Ok(()))
        .await
        .unwrap_err();
    let visited = format!("{err} / {:?}", std::error::Error::source(&err));
    assert_eq!(visited, message, "visit_all reports it as read_all does");
    let err = store
        .fold_all(Position::START, &mut |_| Ok(()))
        .await
        .unwrap_err();
    let folded = format!("{err} / {:?}", std::error::Error::source(&err));
    assert_eq!(folded, message, "fold_all reports it as read_all does");
}

/// A negative position or version found in the table (a row written by hand) is an error naming what was read,
/// never clamped to 0: a head of 0 would send a reader back to the start, a version of 0 would let an append
/// expecting a new stream through.
#[sqlx::test(migrations = false)]
async fn negative_stored_positions_and_versions_are_errors_not_zero(pool: PgPool) {
    let store = store(pool.clone()).await;
    pool.execute(
        "INSERT INTO annals.events (position, stream_version, event_id, schema_version, stream_id, event_type, payload)
         VALUES (-7, -3, gen_random_uuid(), 1, 'bent', 'T', '{}')",
    )
    .await
    .unwrap();
    let backend = |what: &str, result: String| {
        assert!(result.contains(what), "{result} should name {what}");
    };
    match store.head().await {
        Err(error @ annals::Error::Backend { .. }) => backend("-7", error.to_string()),
        other => panic!("a negative head must be an error, got {other:?}"),
    }
    let id = stream("bent");
    match store
        .append(
            &id,
            annals::ExpectedVersion::Any,
            vec![crate::support::event(1)],
        )
        .await
    {
        Err(error @ annals::Error::Backend { .. }) => backend("-2", error.to_string()),
        other => panic!("a negative stream version must be an error, got {other:?}"),
    }
    // A command's lean read of the stream (no event ids) checks the envelope all the same.
    match Repository::<Counter, _>::new(store).load(&id).await {
        Err(error @ annals::Error::Decode { .. }) => backend("-3", format!("{error:?}")),
        other => panic!("a negative stored version must be an error, got {other:?}"),
    }
}
