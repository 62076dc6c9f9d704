//! Crash safety and exclusive ownership on PostgreSQL: a connection dropped mid-batch, a runner process killed
//! with SIGKILL, and two runners on one projection.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use annals::{EventStore, Position};
use annals_projections::Projections;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::support::*;

/// A pool on the same database whose connections carry `application_name`, so a test can kill them.
async fn named_pool(pool: &PgPool, name: &str) -> PgPool {
    let options: PgConnectOptions = (*pool.connect_options()).clone().application_name(name);
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap()
}

async fn kill_connections(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()) t",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn dropped_connection_mid_batch_neither_loses_nor_repeats_events(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 20, 30).await;
    let victim = named_pool(&pool, "victim-runner").await;
    let mut tallies = Tallies::new();
    tallies.delay = Duration::from_millis(2);
    let calls = Arc::clone(&tallies.calls);
    let projections = Projections::postgres(store.clone(), victim)
        .lease_ttl(Duration::from_secs(1))
        .with_options(
            tallies,
            annals_projections::ProjectionOptions::new().batch_size(40),
        );
    let (stop, handle) = spawn_run(&projections);

    // Kill the runner's connections three times while it is inside batches.
    for round in 1..=3u64 {
        eventually(
            "the runner to be mid-batch",
            Duration::from_secs(20),
            || {
                let calls = Arc::clone(&calls);
                async move { calls.load(Ordering::SeqCst) > round * 100 + 10 }
            },
        )
        .await;
        assert!(kill_connections(&pool, "victim-runner").await > 0);
    }
    eventually(
        "the projection to catch up",
        Duration::from_secs(60),
        || caught_up(&projections, &store),
    )
    .await;
    // Some batches were applied more than once (rolled back, then redone) ...
    assert!(calls.load(Ordering::SeqCst) > 600);
    // ... yet the read model holds every event exactly once.
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert_eq!(
        untagged(snapshot(&projections).await),
        untagged(from_scratch(store).await)
    );
}

/// Not a test on its own: the body of the runner process that `runner_killed_with_sigkill_resumes_exactly` and
/// the tests of `takeover_when_the_owner_dies` start, kill and pause. Does nothing unless
/// `ANNALS_CHILD_RUNNER_URL` is set; `ANNALS_CHILD_TTL_MS` (default 1000) and `ANNALS_CHILD_DELAY_MS` (per event,
/// default 1) tune it; with `ANNALS_CHILD_LOG` set it logs the runner's debug lines to stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_runner_process() {
    let Ok(url) = std::env::var("ANNALS_CHILD_RUNNER_URL") else {
        return;
    };
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if std::env::var_os("ANNALS_CHILD_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "annals_projections=debug",
            ))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    let store = annals_postgres::PostgresStore::from_pool(pool.clone());
    let mut tallies = Tallies::tagged("child");
    tallies.delay = Duration::from_millis(number("ANNALS_CHILD_DELAY_MS", 1));
    let projections = Projections::postgres(store, pool)
        .lease_ttl(Duration::from_millis(number("ANNALS_CHILD_TTL_MS", 1000)))
        .with_options(
            tallies,
            annals_projections::ProjectionOptions::new().batch_size(50),
        );
    projections.run(std::future::pending()).await.unwrap();
}

/// Kills the child process when the test ends, even on a failed assertion.
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[sqlx::test]
async fn runner_killed_with_sigkill_resumes_exactly(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 20, 100).await;
    let options = pool.connect_options();
    let url = options.to_url_lossy().to_string();
    let mut child = KillOnDrop(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "leases_and_crashes::child_runner_process",
                "--nocapture",
            ])
            .env("ANNALS_CHILD_RUNNER_URL", &url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let observer = Projections::postgres(store.clone(), pool.clone())
        .lease_ttl(Duration::from_secs(1))
        .with(Tallies::tagged("parent"));
    let head = store.head().await.unwrap();
    // Kill it part-way: some batches committed, more to go (each batch takes about 50 ms).
    eventually(
        "the child to commit a few batches",
        Duration::from_secs(60),
        || {
            let observer = observer.clone();
            async move {
                let at = observer
                    .documents("tallies")
                    .unwrap()
                    .position()
                    .await
                    .unwrap();
                at >= Position(300)
            }
        },
    )
    .await;
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let at_kill = observer
        .documents("tallies")
        .unwrap()
        .position()
        .await
        .unwrap();
    assert!(at_kill < head, "the child finished before it was killed");

    // Another runner takes over once the dead child's lease expires, and finishes.
    let (stop, handle) = spawn_run(&observer);
    eventually("the takeover to catch up", Duration::from_secs(60), || {
        caught_up(&observer, &store)
    })
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    let docs = snapshot(&observer).await;
    let by_child = docs
        .iter()
        .filter(|((c, _), v)| c == "seen" && v["by"] == "child")
        .count();
    let by_parent = docs
        .iter()
        .filter(|((c, _), v)| c == "seen" && v["by"] == "parent")
        .count();
    assert!(
        by_child > 0 && by_parent > 0,
        "child {by_child}, parent {by_parent}"
    );
    assert_eq!(untagged(docs), untagged(from_scratch(store).await));
}

#[sqlx::test]
async fn two_runners_never_both_advance_and_a_dead_owner_hands_over(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 10, 20).await;
    let ttl = Duration::from_millis(800);
    let first = Projections::postgres(store.clone(), pool.clone())
        .lease_ttl(ttl)
        .with_options(
            Tallies::tagged("first"),
            annals_projections::ProjectionOptions::new().batch_size(25),
        );
    let second = Projections::postgres(store.clone(), pool.clone())
        .lease_ttl(ttl)
        .with_options(
            Tallies::tagged("second"),
            annals_projections::ProjectionOptions::new().batch_size(25),
        );
    let (_stop_first, first_task) = spawn_run(&first);
    eventually(
        "the first runner to catch up",
        Duration::from_secs(30),
        || caught_up(&first, &store),
    )
    .await;
    let (stop_second, second_task) = spawn_run(&second);

    // Both run; more events arrive; only the owner applies them (a double application would fail the
    // projection, and the markers say who applied what).
    write_events(&store, "more", 10, 10).await;
    eventually(
        "the new events to be applied",
        Duration::from_secs(30),
        || caught_up(&first, &store),
    )
    .await;
    let docs = snapshot(&first).await;
    assert!(
        docs.iter()
            .filter(|((c, _), _)| c == "seen")
            .all(|(_, v)| v["by"] == "first")
    );

    // The owner dies without releasing its lease; the other takes over within the lease time.
    first_task.abort();
    let _ = first_task.await;
    write_events(&store, "late", 10, 10).await;
    eventually(
        "the second runner to take over",
        Duration::from_secs(30),
        || caught_up(&second, &store),
    )
    .await;
    let docs = snapshot(&second).await;
    let late_by_second = docs
        .iter()
        .filter(|((c, _), v)| c == "seen" && v["by"] == "second")
        .count();
    assert_eq!(late_by_second, 100);
    stop_second.send(()).unwrap();
    second_task.await.unwrap().unwrap();
    assert_eq!(
        untagged(snapshot(&second).await),
        untagged(from_scratch(store).await)
    );
}
