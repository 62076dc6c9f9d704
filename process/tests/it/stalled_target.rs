//! A command target that stalls holds no database transaction of the runner open: the process's handling
//! (appends, timers, commands) runs before the runner's batch transaction, which is short; and once the target
//! answers again, every input takes effect once.

use std::sync::Arc;
use std::time::Duration;

use annals::EventStore;
use annals_process::{Process, Timers, default_options};
use annals_projections::Projections;
use annals_test_support::FaultProxy;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::support::*;

/// The runner's connections carry this name, so the test can find them in `pg_stat_activity`.
const RUNNER: &str = "annals-process-runner";

/// The runner's sessions that are inside a transaction now (idle in it or not).
async fn runner_transactions(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1 AND xact_start IS NOT NULL",
    )
    .bind(RUNNER)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_stalled_command_target_holds_no_transaction_open(pool: PgPool) {
    let store = pg_store(pool.clone()).await;
    let timers = Timers::postgres(&store);
    // The counters (the commands' target) are reached through a proxy that the test stalls.
    let options = pool.connect_options();
    let proxy = FaultProxy::start((
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
        options.get_port(),
    ))
    .await
    .unwrap();
    let through = PgPoolOptions::new()
        .max_connections(2)
        .connect_with((*options).clone().host("127.0.0.1").port(proxy.port()))
        .await
        .unwrap();
    let target: Arc<dyn EventStore> = Arc::new(annals_postgres::PostgresStore::from_pool(through));
    let runner_pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with((*options).clone().application_name(RUNNER))
        .await
        .unwrap();
    let store: Arc<dyn EventStore> = Arc::new(store);
    let counters = Counters::new(Arc::clone(&target));
    let process = Process::new(Jobs, Arc::clone(&store), counters.clone(), timers);
    let projections = process.register(
        Projections::postgres(Arc::clone(&store), runner_pool),
        default_options(),
    );
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

    proxy.black_hole();
    for n in 0..3 {
        request(&*store, &format!("j{n}"), "s", 10, None).await;
    }
    eventually(
        "a command is on its way to the stalled target",
        Duration::from_secs(10),
        || async { !counters.sends().is_empty() },
    )
    .await;
    assert_eq!(
        runner_transactions(&pool).await,
        vec![],
        "while a command's target stalls, the runner holds no transaction open"
    );

    proxy.restore();
    eventually("every job is done", Duration::from_secs(15), || async {
        let mut done = 0;
        for n in 0..3 {
            if process
                .load(&format!("j{n}"))
                .await
                .unwrap()
                .is_some_and(|j| j.state.status == Status::Done)
            {
                done += 1;
            }
        }
        done == 3
    })
    .await;
    let head = store.head().await.unwrap();
    projections
        .wait_for_position("jobs", head, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(counter_value(&store, "s").await, 30, "each job added once");
    let mut ids: Vec<_> = counters
        .sends()
        .into_iter()
        .map(|(add, id)| (add.job, id))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        3,
        "one command id per job, however often sent: {ids:?}"
    );
    let status = process.status(&projections).await.unwrap();
    assert_eq!((status.lag, status.parked_inputs), (0, 0), "{status:?}");

    let _ = stop.send(());
    runner.await.unwrap().unwrap();
}
