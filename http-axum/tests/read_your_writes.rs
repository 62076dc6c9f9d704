//! `MinPosition::wait_for` against a real (in-memory) read model: answered at once when there is nothing to wait
//! for, after the runner caught up when it does, `504 projection_lagging` when it does not in time, `422` beyond
//! the head; and the mapping of `annals-projections`' errors.
#![cfg(feature = "projections")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use annals::{
    EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId, async_trait,
};
use annals_axum::{HttpError, MinPosition};
use annals_memory::MemoryStore;
use annals_projections::{BoxError, Documents, Projection, Projections};

struct Seen;

#[async_trait]
impl Projection for Seen {
    fn name(&self) -> &str {
        "seen"
    }
    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        docs.put("events", event.stream_id.as_str(), &event.position.get())?;
        Ok(())
    }
}

async fn appended(store: &MemoryStore) -> Position {
    let stream = StreamId::new("thing-1").unwrap();
    let event = NewEvent::new("ThingHappened", serde_json::json!({}));
    store
        .append(&stream, ExpectedVersion::Any, vec![event])
        .await
        .unwrap()
        .last_position
}

#[tokio::test]
async fn a_read_model_that_does_not_catch_up_in_time_is_a_504_naming_it() {
    let store = MemoryStore::new();
    let projections = Projections::memory(store.clone()).with(Seen);
    let mut reader = projections.documents("seen").unwrap();
    reader.set_max_wait(Duration::from_millis(50));
    let position = appended(&store).await;

    MinPosition(None).wait_for(&store, &reader).await.unwrap();
    let lagging = MinPosition(Some(position))
        .wait_for(&store, &reader)
        .await
        .unwrap_err();
    assert_eq!(
        (lagging.status.as_u16(), lagging.code),
        (504, "projection_lagging")
    );
    assert_eq!(
        lagging.message,
        format!("the seen read model has processed position 0, not yet {position}; retry later")
    );
    let beyond = MinPosition(Some(Position(position.get() + 1)))
        .wait_for(&store, &reader)
        .await
        .unwrap_err();
    assert_eq!(
        (beyond.status.as_u16(), beyond.code),
        (422, "position_beyond_head")
    );
}

#[tokio::test]
async fn a_read_waits_for_the_runner_to_process_its_write() {
    let store = MemoryStore::new();
    let projections = Projections::memory(store.clone()).with(Seen);
    let reader = projections.documents("seen").unwrap();
    assert_eq!(reader.max_wait(), annals_projections::DEFAULT_MAX_WAIT);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn({
        let projections = projections.clone();
        async move {
            projections
                .run(async {
                    stopped.await.ok();
                })
                .await
        }
    });
    let position = appended(&store).await;
    MinPosition(Some(position))
        .wait_for(&store, &reader)
        .await
        .unwrap();
    let seen: Option<u64> = reader.get("events", "thing-1").await.unwrap();
    assert_eq!(seen, Some(position.get()));
    stop.send(()).unwrap();
    runner.await.unwrap().unwrap();
}

#[test]
fn read_model_errors_map_to_their_statuses() {
    let unavailable = annals_projections::Error::Store(annals::Error::Unavailable {
        operation: "read_all",
        source: "reset".into(),
    });
    let busy = annals_projections::Error::Busy {
        projection: "seen".into(),
        what: "live read model",
    };
    let unknown = annals_projections::Error::UnknownProjection {
        name: "nope".into(),
        known: vec!["seen".into()],
    };
    for (error, status, code) in [
        (unavailable, 503, "unavailable"),
        (busy, 503, "unavailable"),
        (unknown, 500, "internal"),
    ] {
        let answer = HttpError::from(error);
        assert_eq!((answer.status.as_u16(), answer.code), (status, code));
        assert!(!answer.message.contains("nope"), "{}", answer.message);
    }
}
