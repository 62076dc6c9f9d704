//! A database outage longer than every retry budget stops no runner for good. A fault proxy stands between the
//! process manager (its instances, its commands' target, its timers) and PostgreSQL, while its runner's
//! checkpoints reach PostgreSQL directly: each input fails past the failure policy's retries (before the
//! supervisor, the runner then stopped for good with `ProjectionFailed`), and the timer poller fails too. The
//! supervisor starts both again and again, without end; once the database is back, without restarting
//! anything, every job requested during the outage ends, nothing is parked, and `status` shows the restarts.

use std::sync::Arc;
use std::time::Duration;

use annals::{EventStore, RetryPolicy};
use annals_process::{Process, ProcessOptions, Timers, default_options};
use annals_projections::{FailurePolicy, Projections, Supervised, Supervisor};
use annals_test_support::FaultProxy;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::support::*;

/// A pool on the test's database through `proxy`, failing fast when no connection can be had.
async fn pool_through(pool: &PgPool, proxy: &FaultProxy) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .host("127.0.0.1")
        .port(proxy.port());
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options)
        .await
        .unwrap()
}

async fn all_done(process: &Process<Jobs>, jobs: &[String]) -> bool {
    for job in jobs {
        match process.load(job).await {
            Ok(Some(loaded)) if loaded.state.status == Status::Done => {}
            _ => return false,
        }
    }
    true
}

#[sqlx::test(migrations = false)]
async fn runners_restart_after_an_outage_longer_than_their_retries(pool: PgPool) {
    let direct: Arc<dyn EventStore> = Arc::new(pg_store(pool.clone()).await);
    let port = pool.connect_options().get_port();
    let proxy = FaultProxy::start((std::net::Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let through = pool_through(&pool, &proxy).await;
    let store = annals_postgres::PostgresStore::from_pool(through.clone());
    let timers = Timers::postgres(&store);
    let store: Arc<dyn EventStore> = Arc::new(store);
    let supervisor = Supervisor::with_policy(RetryPolicy::forever(
        Duration::from_millis(50),
        Duration::from_millis(500),
    ));
    let projections =
        Projections::postgres(Arc::clone(&direct), pool.clone()).with_supervisor(supervisor);
    let counters = Counters::new(Arc::clone(&store));
    let process = Process::new(Jobs, Arc::clone(&store), counters, timers)
        .with_options(ProcessOptions::new().timer_poll(Duration::from_millis(20)));
    // A failure policy far shorter than the outage: three tries of an input, then the runner ends.
    let policy = FailurePolicy::retry(2, Duration::from_millis(20));
    let projections = process.register(projections, default_options().failure_policy(policy));

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
        let supervisor = projections.supervisor().clone();
        let stopped = signal(stopped.clone());
        async move { process.run_timers_supervised(&supervisor, stopped).await }
    });

    request(&*direct, "before", "c", 1, None).await;
    let before = vec!["before".to_owned()];
    eventually("the first job ended", Duration::from_secs(30), || {
        all_done(&process, &before)
    })
    .await;

    // The outage: open connections severed, new ones refused. The jobs are requested beside it (directly).
    proxy.outage();
    let jobs: Vec<String> = (0..5).map(|n| format!("during{n}")).collect();
    for job in &jobs {
        request(&*direct, job, "c", 1, None).await;
    }
    let supervisor = projections.supervisor().clone();
    eventually(
        "the process runner and the timer poller were started again at least twice each",
        Duration::from_secs(60),
        || {
            let supervisor = supervisor.clone();
            let timers = process.timers_runner_name();
            async move {
                let restarts = |name: &str| supervisor.status_of(name).map_or(0, |s| s.restarts);
                restarts("jobs") >= 2 && restarts(&timers) >= 1
            }
        },
    )
    .await;
    let jobs_runner = supervisor.status_of("jobs").unwrap();
    assert!(
        !matches!(jobs_runner.state, Supervised::Failed { .. }),
        "{jobs_runner:?}"
    );

    // The database is back: nothing is restarted by hand.
    proxy.restore();
    eventually(
        "every job requested during the outage ended",
        Duration::from_secs(60),
        || all_done(&process, &jobs),
    )
    .await;
    assert_eq!(counter_value(&direct, "c").await, 6);
    let status = process.status(&projections).await.unwrap();
    let runner_status = status
        .runner
        .clone()
        .expect("the runner ran in this process");
    assert!(runner_status.restarts >= 2, "{status:?}");
    assert_eq!(runner_status.state, Supervised::Running, "{status:?}");
    assert!(status.timers_runner.is_some_and(|t| t.restarts >= 1));
    assert_eq!(status.parked_inputs, 0, "an outage parks nothing");
    assert_eq!(status.parked_events, 0, "an outage parks nothing");

    let _ = stop.send(true);
    runner.await.unwrap().unwrap();
    poller.await.unwrap().unwrap();
    through.close().await;
}
