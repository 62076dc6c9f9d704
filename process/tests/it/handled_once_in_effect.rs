//! Every input is handled once in effect: after a crash anywhere, handling it again has no second effect; a
//! refused command is an input like any event; status shows checkpoint, lag and open instances.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use annals::{EventStore, Position};
use annals_memory::MemoryStore;
use annals_process::{Process, Timers, default_options};
use annals_projections::Projections;

use crate::support::*;

/// Runs `$body(store, timers, projections-factory)` on the memory store and on PostgreSQL.
macro_rules! on_both_stores {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn memory() {
                let store = MemoryStore::new();
                let projections = Projections::memory(store.clone());
                $body(Arc::new(store), Timers::memory(), projections).await;
            }

            #[sqlx::test(migrations = false)]
            async fn postgres(pool: sqlx::PgPool) {
                let store = pg_store(pool.clone()).await;
                let timers = Timers::postgres(&store);
                let projections = Projections::postgres(store.clone(), pool);
                $body(Arc::new(store), timers, projections).await;
            }
        }
    };
}

on_both_stores!(an_event_handled_again_has_no_second_effect, handled_again);
on_both_stores!(
    a_crash_after_the_command_before_the_checkpoint_is_recovered,
    crash_after_command
);
on_both_stores!(
    a_refused_command_is_an_input_for_compensation,
    refused_command
);
on_both_stores!(
    status_shows_checkpoint_lag_and_open_instances,
    status_of_a_running_process
);

async fn handled_again(store: Arc<dyn EventStore>, timers: Timers, _: Projections) {
    let counters = Counters::new(Arc::clone(&store));
    let process = Process::new(Jobs, Arc::clone(&store), counters.clone(), timers);
    let requested = request(&*store, "1", "a", 10, None).await;

    // Handle the request, then handle it twice more (a runner that crashed before its checkpoint, a stale owner).
    for _ in 0..3 {
        process.handle_event(&requested).await.unwrap();
    }
    let log_after_request = log(&store).await;
    let added = log_after_request
        .iter()
        .find(|e| e.event_type == "Added")
        .cloned()
        .unwrap();
    for _ in 0..3 {
        process.handle_event(&added).await.unwrap();
    }

    let job = process.load("1").await.unwrap().unwrap();
    assert_eq!(job.state.status, Status::Done);
    assert_eq!(job.version.get(), 3, "requested, started, done: each once");
    assert_eq!(
        counter_value(&store, "a").await,
        10,
        "the counter moved once"
    );
    let sends = counters.sends();
    assert_eq!(
        sends.len(),
        3,
        "the command was sent again on every re-handling"
    );
    assert!(
        sends.iter().all(|(_, id)| *id == sends[0].1),
        "always under the same command id: {sends:?}"
    );
    let log = log(&store).await;
    assert_eq!(log.len(), 4, "request, started, added, done: {log:#?}");
    // Correlation flows from the request through the process's events and the command's events.
    assert!(
        log.iter()
            .all(|e| e.metadata.correlation_id.as_deref() == Some("corr-1")),
        "{log:#?}"
    );
    let added = log.iter().find(|e| e.event_type == "Added").unwrap();
    assert_eq!(
        added
            .metadata
            .extra
            .get("command_id")
            .and_then(|v| v.as_str()),
        Some(sends[0].1.to_string().as_str())
    );
}

async fn crash_after_command(store: Arc<dyn EventStore>, timers: Timers, _: Projections) {
    let counters = Counters::new(Arc::clone(&store));
    let process = Process::new(Jobs, Arc::clone(&store), counters.clone(), timers);
    let requested = request(&*store, "2", "b", 30, None).await;

    // The command takes effect, then the handling fails (the process "crashes" before anything after it).
    counters.fail_after.store(1, Ordering::SeqCst);
    let error = process.handle_event(&requested).await.unwrap_err();
    assert!(error.to_string().contains("injected failure"), "{error}");
    assert_eq!(counter_value(&store, "b").await, 30);

    // Handled again (the runner retries or resumes from its checkpoint): nothing happens twice.
    process.handle_event(&requested).await.unwrap();
    assert_eq!(counter_value(&store, "b").await, 30);
    let job = process.load("2").await.unwrap().unwrap();
    assert_eq!(job.state.status, Status::Started);
    assert_eq!(job.version.get(), 2);
}

async fn refused_command(store: Arc<dyn EventStore>, timers: Timers, _: Projections) {
    let counters = Counters::new(Arc::clone(&store));
    let process = Process::new(Jobs, Arc::clone(&store), counters.clone(), timers);
    let first = request(&*store, "3", "c", 80, None).await;
    let second = request(&*store, "4", "c", 30, None).await;
    process.handle_event(&first).await.unwrap();
    process.handle_event(&second).await.unwrap();
    process.handle_event(&second).await.unwrap();

    let refused = process.load("4").await.unwrap().unwrap();
    assert_eq!(refused.state.status, Status::Failed);
    assert_eq!(refused.state.reason.as_deref(), Some("too_much"));
    assert_eq!(
        refused.version.get(),
        3,
        "requested, started, failed: once each"
    );
    assert_eq!(counter_value(&store, "c").await, 80);
}

async fn status_of_a_running_process(
    store: Arc<dyn EventStore>,
    timers: Timers,
    projections: Projections,
) {
    let counters = Counters::new(Arc::clone(&store));
    let process = Process::new(Jobs, Arc::clone(&store), counters.clone(), timers);
    let projections = process.register(projections, default_options());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn({
        let projections = projections.clone();
        async move {
            projections
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });

    for n in 0..20 {
        request(&*store, &format!("s{n}"), "d", 10, None).await;
    }
    // A scheduled job stays open.
    request(
        &*store,
        "later",
        "d",
        1,
        Some(chrono::Utc::now() + chrono::Duration::hours(1)),
    )
    .await;
    eventually("every job ended", Duration::from_secs(30), || async {
        let mut ended = 0;
        for n in 0..20 {
            let job = process.load(&format!("s{n}")).await.unwrap();
            if job.is_some_and(|j| matches!(j.state.status, Status::Done | Status::Failed)) {
                ended += 1;
            }
        }
        ended == 20
    })
    .await;
    let head = store.head().await.unwrap();
    projections
        .wait_for_position("jobs", head, Duration::from_secs(30))
        .await
        .unwrap();
    let status = process.status(&projections).await.unwrap();
    assert_eq!(status.checkpoint, head);
    assert_eq!(status.lag, 0);
    assert_eq!(status.open_instances, 1, "{status:?}");
    assert_eq!(status.timers_pending, 1);
    assert_eq!(
        counter_value(&store, "d").await,
        100,
        "ten fit under the cap"
    );
    assert!(status.head > Position::START);

    let _ = stop.send(());
    runner.await.unwrap().unwrap();
}

/// Replaying the log through a process manager would send its commands and schedule its timers again: `rebuild`
/// and `reset` refuse it, naming why, and change nothing.
#[tokio::test]
async fn a_process_manager_cannot_be_rebuilt_or_reset() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let counters = Counters::new(Arc::clone(&store));
    let process = Process::new(Jobs, Arc::clone(&store), counters, Timers::memory());
    let projections = process.register(Projections::memory(Arc::clone(&store)), default_options());
    let name = projections.names()[0].to_owned();
    match projections.rebuild(&name).await {
        Err(error @ annals_projections::Error::HasSideEffects { .. }) => {
            assert!(error.to_string().contains("send its commands"), "{error}");
        }
        other => panic!("rebuild of a process manager: {other:?}"),
    }
    assert!(matches!(
        projections.reset(&name).await,
        Err(annals_projections::Error::HasSideEffects { .. })
    ));
}
