//! No input can stop a process manager: a job whose due time is outside the one accepted range (year -5000, which
//! PostgreSQL's `timestamptz` cannot hold; year 1; year 10000) is refused with a typed error on every timer
//! store, its input is parked with the reason (and the instance's later inputs behind it), and the twenty
//! ordinary jobs after it all end. Each case runs on the memory store and on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use annals::{EventStore, Repository};
use annals_memory::MemoryStore;
use annals_process::{Error, Process, ProcessOptions, Timers, default_options, timer_due_range};
use annals_projections::Projections;
use chrono::{DateTime, Utc};

use crate::support::*;

/// `$body(store, timers, projections, due)` on both stores, for each hostile due time.
macro_rules! on_both_stores_at {
    ($name:ident, $body:path, $due:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn memory() {
                let store = MemoryStore::new();
                let projections = Projections::memory(store.clone());
                $body(Arc::new(store), Timers::memory(), projections, $due).await;
            }

            #[sqlx::test(migrations = false)]
            async fn postgres(pool: sqlx::PgPool) {
                let store = pg_store(pool.clone()).await;
                let timers = Timers::postgres(&store);
                let projections = Projections::postgres(store.clone(), pool);
                $body(Arc::new(store), timers, projections, $due).await;
            }

            #[tokio::test]
            async fn sqlite() {
                let scratch = Scratch::new();
                let store = scratch.store().await;
                let timers = Timers::sqlite(&store);
                let projections = Projections::sqlite(store.clone());
                $body(Arc::new(store.clone()), timers, projections, $due).await;
                store.close().await;
            }
        }
    };
}

fn due(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

on_both_stores_at!(
    a_job_due_in_year_minus_5000_stops_nothing,
    poisoned_then_ordinary,
    due("-5000-01-01T00:00:00Z")
);
on_both_stores_at!(
    a_job_due_in_year_1_stops_nothing,
    poisoned_then_ordinary,
    due("0001-01-01T00:00:00Z")
);
on_both_stores_at!(
    a_job_due_in_year_10000_stops_nothing,
    poisoned_then_ordinary,
    due("+10000-01-01T00:00:00Z")
);

async fn poisoned_then_ordinary(
    store: Arc<dyn EventStore>,
    timers: Timers,
    projections: Projections,
    due: DateTime<Utc>,
) {
    let counters = Counters::new(Arc::clone(&store));
    let process = Process::new(Jobs, Arc::clone(&store), counters.clone(), timers)
        .with_options(ProcessOptions::new().timer_poll(Duration::from_millis(20)));
    let projections = process.register(projections, default_options());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let runner = tokio::spawn({
        let projections = projections.clone();
        let stopped = signal(stopped.clone());
        async move { projections.run(stopped).await }
    });
    let poller = tokio::spawn({
        let process = process.clone();
        let stopped = signal(stopped.clone());
        async move { process.run_timers(stopped).await }
    });

    assert!(!timer_due_range().contains(&due));
    let poison = request(&*store, "poison", "p", 1, Some(due)).await;
    eventually(
        "the poisoned input is parked",
        Duration::from_secs(30),
        || async { !process.parked().await.unwrap().is_empty() },
    )
    .await;
    // The typed error, on every store alike; retrying does not help while the job still wants the timer.
    let error = process.handle_event(&poison).await.unwrap_err();
    assert!(matches!(error, Error::DueOutOfRange { .. }), "{error}");
    assert!(error.is_permanent());
    let report = process.retry_parked().await.unwrap();
    assert_eq!((report.handled, report.still_parked), (0, 1));
    assert_eq!(process.parked().await.unwrap()[0].attempts, 2);

    // Its cancellation comes later: an input of the same instance, which waits behind the parked one.
    Repository::<Job, _>::new(Arc::clone(&store))
        .execute(&stream("job-poison"), &JobCommand::Cancel)
        .await
        .unwrap();
    for n in 0..20 {
        request(&*store, &format!("o{n}"), &format!("c{n}"), 1, None).await;
    }
    eventually(
        "all 20 ordinary jobs ended",
        Duration::from_secs(30),
        || async {
            for n in 0..20 {
                let job = process.load(&format!("o{n}")).await.unwrap();
                if !job.is_some_and(|j| j.state.status == Status::Done) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let head = store.head().await.unwrap();
    projections
        .wait_for_position("jobs", head, Duration::from_secs(30))
        .await
        .unwrap();

    // The poisoned input and the one behind it are parked, with their reasons, in order.
    let status = process.status(&projections).await.unwrap();
    assert_eq!(status.parked_inputs, 2, "{status:?}");
    assert_eq!(
        status.parked_events, 0,
        "the runner's own policy parked nothing"
    );
    let parked = process.parked().await.unwrap();
    assert_eq!(parked[0].position, poison.position);
    assert_eq!(parked[0].instance.as_deref(), Some("poison"));
    assert_eq!(parked[0].attempts, 2);
    assert!(
        parked[0].reason.contains("outside the accepted range")
            && parked[0]
                .reason
                .contains("1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"),
        "{parked:?}"
    );
    assert_eq!(parked[1].event_type, "JobCancelled");
    assert!(parked[1].reason.contains("waits behind"), "{parked:?}");

    // Once the job is cancelled, a retry handles both in order: the request decides nothing any more, the
    // cancellation drops the (never set) timer.
    let report = process.retry_parked().await.unwrap();
    assert_eq!((report.handled, report.still_parked), (2, 0));
    assert_eq!(process.status(&projections).await.unwrap().parked_inputs, 0);
    let job = process.load("poison").await.unwrap().unwrap();
    assert_eq!(job.state.status, Status::Cancelled);
    assert!(counters.sends().iter().all(|(add, _)| add.job != "poison"));

    let _ = stop.send(true);
    runner.await.unwrap().unwrap();
    poller.await.unwrap().unwrap();
}
