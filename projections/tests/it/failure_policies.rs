//! A poison event under each failure policy: stop names the event and loses nothing after it; park sets it
//! aside and continues, and replaying it after the fix applies it; retry succeeds once the cause goes away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use annals::{EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use annals_projections::{
    BoxError, Documents, Error, FailurePolicy, Projection, ProjectionOptions, Projections, State,
    async_trait,
};
use serde_json::json;
#[cfg(feature = "postgres")]
use sqlx::PgPool;

use crate::support::*;

/// Sums amounts per stream; fails on events with `"poison": true` while `broken` is set, or for the first
/// `fail_times` attempts.
#[derive(Clone, Default)]
struct Picky {
    broken: Arc<AtomicBool>,
    fail_times: Arc<AtomicU32>,
}

#[async_trait]
impl Projection for Picky {
    fn name(&self) -> &str {
        "picky"
    }

    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        let payload = event.payload.to_value()?;
        if payload["poison"] == json!(true) {
            if self.broken.load(Ordering::SeqCst) {
                return Err("cannot handle poison".into());
            }
            if self.fail_times.load(Ordering::SeqCst) > 0 {
                self.fail_times.fetch_sub(1, Ordering::SeqCst);
                return Err("transient trouble".into());
            }
        }
        let n = docs.get::<u64>("sum", &event.stream_id).await?.unwrap_or(0);
        docs.put(
            "sum",
            &event.stream_id,
            &(n + payload["amount"].as_u64().unwrap_or(0)),
        )?;
        Ok(())
    }
}

/// Appends 10 deposits of 1 with a poison event (amount 100) as the 5th; returns the poison's position.
async fn write_with_poison(store: &dyn EventStore) -> Position {
    let id = StreamId::new("p-1").unwrap();
    let mut poison_at = Position::START;
    for i in 0..10 {
        let payload = if i == 4 {
            json!({"amount": 100, "poison": true})
        } else {
            json!({"amount": 1})
        };
        let done = store
            .append(
                &id,
                ExpectedVersion::Any,
                vec![NewEvent::new("Deposited", payload)],
            )
            .await
            .unwrap();
        if i == 4 {
            poison_at = done.last_position;
        }
    }
    poison_at
}

async fn sum(projections: &Projections) -> Option<u64> {
    projections
        .documents("picky")
        .unwrap()
        .get("sum", "p-1")
        .await
        .unwrap()
}

async fn stop_policy(projections: Projections, store: impl EventStore + 'static) {
    let poison = write_with_poison(&store).await;
    let err = projections.run(std::future::pending()).await.unwrap_err();
    match &err {
        Error::ProjectionFailed {
            projection,
            position,
            stream,
            event_type,
            cause,
            attempts,
            ..
        } => {
            assert_eq!(projection, "picky");
            assert_eq!(*position, poison);
            assert_eq!(stream.as_str(), "p-1");
            assert_eq!(event_type, "Deposited");
            assert_eq!(cause, "cannot handle poison");
            assert_eq!(*attempts, 1);
        }
        other => panic!("expected ProjectionFailed, got {other:?}"),
    }
    // Everything before the poison is applied and checkpointed, nothing after it.
    assert_eq!(sum(&projections).await, Some(4));
    let status = projections.status().await.unwrap();
    assert_eq!(status[0].checkpoint.get(), poison.get() - 1);
    assert!(
        matches!(&status[0].state, State::Failed { error } if error.contains("position")),
        "{:?}",
        status[0].state
    );
    assert_eq!(status[0].lag, 6);
}

async fn park_policy(projections: Projections, picky: Picky, store: impl EventStore + 'static) {
    let poison = write_with_poison(&store).await;
    let (stop, handle) = spawn_run(&projections);
    let reader = projections.documents("picky").unwrap();
    reader
        .wait_for_position(Position(poison.get() + 5), Duration::from_secs(20))
        .await
        .unwrap();
    // Nothing after the poison is lost.
    assert_eq!(sum(&projections).await, Some(9));
    let parked = projections.parked("picky").await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, poison);
    assert_eq!(parked[0].stream.as_str(), "p-1");
    assert_eq!(parked[0].error, "cannot handle poison");
    assert_eq!(projections.status().await.unwrap()[0].parked, 1);

    // Still broken: replay keeps it parked.
    let report = projections.replay_parked("picky").await.unwrap();
    assert_eq!((report.replayed, report.still_failing), (0, 1));
    assert_eq!(projections.parked("picky").await.unwrap()[0].attempts, 2);

    // Fixed: replay applies it and empties the list.
    picky.broken.store(false, Ordering::SeqCst);
    let report = projections.replay_parked("picky").await.unwrap();
    assert_eq!((report.replayed, report.still_failing), (1, 0));
    assert!(projections.parked("picky").await.unwrap().is_empty());
    assert_eq!(sum(&projections).await, Some(109));
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

async fn retry_policy(projections: Projections, store: impl EventStore + 'static) {
    let poison = write_with_poison(&store).await;
    let (stop, handle) = spawn_run(&projections);
    let reader = projections.documents("picky").unwrap();
    reader
        .wait_for_position(Position(poison.get() + 5), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(sum(&projections).await, Some(109));
    assert!(projections.parked("picky").await.unwrap().is_empty());
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

fn broken() -> Picky {
    let picky = Picky::default();
    picky.broken.store(true, Ordering::SeqCst);
    picky
}

fn flaky() -> Picky {
    let picky = Picky::default();
    picky.fail_times.store(2, Ordering::SeqCst);
    picky
}

fn park() -> ProjectionOptions {
    ProjectionOptions::new()
        .batch_size(3)
        .failure_policy(FailurePolicy::park())
}

fn retry() -> ProjectionOptions {
    ProjectionOptions::new()
        .batch_size(3)
        .failure_policy(FailurePolicy::retry(3, Duration::from_millis(5)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_poison_event_stops_by_default() {
    let store = memory_store();
    let p = Projections::memory(store.clone())
        .with_options(broken(), ProjectionOptions::new().batch_size(3));
    stop_policy(p, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_poison_event_is_parked_and_replayed() {
    let store = memory_store();
    let picky = broken();
    let p = Projections::memory(store.clone()).with_options(picky.clone(), park());
    park_policy(p, picky, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_poison_event_is_retried_until_it_succeeds() {
    let store = memory_store();
    let p = Projections::memory(store.clone()).with_options(flaky(), retry());
    retry_policy(p, store).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_poison_event_stops_by_default() {
    let scratch = ScratchFile::new();
    let store = scratch.store().await;
    let p = Projections::sqlite(store.clone())
        .with_options(broken(), ProjectionOptions::new().batch_size(3));
    stop_policy(p, store).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_poison_event_is_parked_and_replayed() {
    let scratch = ScratchFile::new();
    let store = scratch.store().await;
    let picky = broken();
    let p = Projections::sqlite(store.clone()).with_options(picky.clone(), park());
    park_policy(p, picky, store).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_poison_event_is_retried_until_it_succeeds() {
    let scratch = ScratchFile::new();
    let store = scratch.store().await;
    let p = Projections::sqlite(store.clone()).with_options(flaky(), retry());
    retry_policy(p, store).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_poison_event_stops_by_default(pool: PgPool) {
    let store = pg_store(&pool).await;
    let p = Projections::postgres(store.clone(), pool)
        .with_options(broken(), ProjectionOptions::new().batch_size(3));
    stop_policy(p, store).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_poison_event_is_parked_and_replayed(pool: PgPool) {
    let store = pg_store(&pool).await;
    let picky = broken();
    let p = Projections::postgres(store.clone(), pool).with_options(picky.clone(), park());
    park_policy(p, picky, store).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_poison_event_is_retried_until_it_succeeds(pool: PgPool) {
    let store = pg_store(&pool).await;
    let p = Projections::postgres(store.clone(), pool).with_options(flaky(), retry());
    retry_policy(p, store).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_retries_exhausted_then_park(pool: PgPool) {
    let store = pg_store(&pool).await;
    let picky = broken();
    let p = Projections::postgres(store.clone(), pool).with_options(
        picky,
        ProjectionOptions::new()
            .batch_size(3)
            .failure_policy(FailurePolicy::retry(2, Duration::from_millis(1)).then_park()),
    );
    let poison = write_with_poison(&store).await;
    let (stop, handle) = spawn_run(&p);
    p.wait_for_position("picky", Position(poison.get() + 5), Duration::from_secs(20))
        .await
        .unwrap();
    let parked = p.parked("picky").await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].attempts, 3);
    assert_eq!(sum(&p).await, Some(9));
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_a_retry_backoff_without_skipping_the_event() {
    let store = memory_store();
    let picky = broken();
    let p = Projections::memory(store.clone()).with_options(
        picky,
        ProjectionOptions::new()
            .batch_size(3)
            .failure_policy(FailurePolicy::retry(5, Duration::from_secs(600))),
    );
    let poison = write_with_poison(&store).await;
    let (stop, handle) = spawn_run(&p);
    // The events before the poison are committed; the runner then waits out its first backoff.
    p.wait_for_position("picky", Position(poison.get() - 1), Duration::from_secs(20))
        .await
        .unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("shutdown waited for the backoff")
        .unwrap()
        .unwrap();
    let status = p.status().await.unwrap();
    assert_eq!(status[0].checkpoint.get(), poison.get() - 1);
    assert_eq!(status[0].state, State::Stopped);
    assert_eq!(sum(&p).await, Some(4));
}
