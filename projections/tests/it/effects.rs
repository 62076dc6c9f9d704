//! `Projection::effects`: work outside the read model runs before the batch's transaction, once per event and in
//! order; an effect that fails commits the events before it (their effects are not run again) and meets the
//! failure policy on its own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::{EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use annals_projections::{
    BoxError, Documents, FailurePolicy, Projection, ProjectionOptions, Projections, async_trait,
};
use serde_json::json;

use crate::support::*;

/// Records the positions its effects ran for; the effect of the event with `"flaky": true` fails the first
/// `fail_times` times. `apply` counts the events in a document.
#[derive(Clone, Default)]
struct Effects {
    ran: Arc<Mutex<Vec<(Position, bool)>>>,
    fail_times: Arc<AtomicU32>,
}

#[async_trait]
impl Projection for Effects {
    fn name(&self) -> &str {
        "effects"
    }

    async fn effects(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let flaky = event.payload.to_value()?["flaky"] == json!(true);
        let fails = flaky
            && self
                .fail_times
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        self.ran.lock().unwrap().push((event.position, !fails));
        if fails {
            return Err("the service is unavailable for a moment".into());
        }
        Ok(())
    }

    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        let n = docs.get::<u64>("count", "all").await?.unwrap_or(0);
        docs.put("count", "all", &(n + 1))?;
        let _ = event;
        Ok(())
    }
}

async fn run_effects(projections: Projections, store: Arc<dyn EventStore>) {
    let effects = Effects::default();
    effects.fail_times.store(2, Ordering::SeqCst);
    let projections = projections.with_options(
        effects.clone(),
        ProjectionOptions::new()
            .batch_size(100)
            .failure_policy(FailurePolicy::retry(5, Duration::from_millis(1))),
    );
    let stream = StreamId::new("e-1").unwrap();
    let mut flaky_at = Position::START;
    for i in 0..10 {
        let payload = json!({"flaky": i == 4});
        let done = store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("Happened", payload)],
            )
            .await
            .unwrap();
        if i == 4 {
            flaky_at = done.last_position;
        }
    }
    let (stop, handle) = spawn_run(&projections);
    let head = store.head().await.unwrap();
    projections
        .documents("effects")
        .unwrap()
        .wait_for_position(head, Duration::from_secs(20))
        .await
        .unwrap();
    let count: Option<u64> = projections
        .documents("effects")
        .unwrap()
        .get("count", "all")
        .await
        .unwrap();
    assert_eq!(count, Some(10), "every event applied once");
    let ran = effects.ran.lock().unwrap().clone();
    let positions: Vec<u64> = ran.iter().map(|(p, _)| p.get()).collect();
    let mut expected: Vec<u64> = Vec::new();
    for event in store.read_all(Position::START, 100).await.unwrap() {
        let times = if event.position == flaky_at { 3 } else { 1 };
        expected.extend(std::iter::repeat_n(event.position.get(), times));
    }
    assert_eq!(
        positions, expected,
        "each effect once, in order; the failing one three times and nothing before it again"
    );
    assert_eq!(ran.iter().filter(|(_, ok)| !ok).count(), 2);
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn effects_run_once_in_order_and_a_failing_one_commits_the_events_before_it_memory() {
    let store = memory_store();
    run_effects(Projections::memory(store.clone()), Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test(migrations = false)]
async fn effects_run_once_in_order_and_a_failing_one_commits_the_events_before_it_postgres(
    pool: sqlx::PgPool,
) {
    let store = pg_store(&pool).await;
    run_effects(Projections::postgres(store.clone(), pool), Arc::new(store)).await;
}

/// A slow service: each effect takes 400 ms, and records the checkpoint committed when it ran.
#[derive(Clone, Default)]
struct Slow {
    reader: Arc<std::sync::OnceLock<annals_projections::DocumentReader>>,
    seen: Arc<Mutex<Vec<Position>>>,
}

#[async_trait]
impl Projection for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    async fn effects(&self, _: &RecordedEvent) -> Result<(), BoxError> {
        let checkpoint = match self.reader.get() {
            Some(reader) => reader.position().await?,
            None => Position::START,
        };
        self.seen.lock().unwrap().push(checkpoint);
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(())
    }

    async fn apply(&self, _: &RecordedEvent, _: &mut Documents<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Effects that outlast a third of the lease (3 s here) cut their batch: what they did is committed (renewing the
/// lease) before the rest runs, so a batch of slow effects never runs past its lease uncommitted.
#[tokio::test]
async fn slow_effects_are_committed_in_parts_within_the_lease() {
    let store = memory_store();
    let slow = Slow::default();
    let projections = Projections::memory(store.clone())
        .lease_ttl(Duration::from_secs(3))
        .with_options(slow.clone(), ProjectionOptions::new().batch_size(100));
    let _ = slow.reader.set(projections.documents("slow").unwrap());
    let stream = StreamId::new("s-1").unwrap();
    for _ in 0..6 {
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("Happened", json!({}))],
            )
            .await
            .unwrap();
    }
    let (stop, handle) = spawn_run(&projections);
    let head = store.head().await.unwrap();
    projections
        .documents("slow")
        .unwrap()
        .wait_for_position(head, Duration::from_secs(20))
        .await
        .unwrap();
    let seen = slow.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(seen[0], Position::START);
    assert!(
        *seen.last().unwrap() > Position::START,
        "the six events (2.4 s of effects, one page) were committed in parts: {seen:?}"
    );
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
}
