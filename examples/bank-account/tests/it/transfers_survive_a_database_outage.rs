//! The acceptance test of the supervisor (issue 28): a 60 s PostgreSQL outage, longer than every retry budget of
//! the service's runners (the read models, the transfer process and its timers), in the middle of a run of
//! random transfers. A fault proxy stands between the whole service and PostgreSQL; nothing is restarted by
//! hand. Once the database is back every transfer ends, money is conserved, no leg is applied twice, and the
//! supervisor shows that it started the runners again. The only long test of the suite (about 90 s).

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use annals_projections::Supervised;
use annals_test_support::FaultProxy;
use bank_account::StoreConfig;

use crate::support::{TestServer, postgres_config};
use crate::transfers::{check, prepare, send_all};

/// Longer than any retry budget: the transfer process's failure policy (8 retries, about 25 s), a runner's own
/// retries (about 3 s), the timer poller's (about 45 s from its 500 ms poll).
const OUTAGE: Duration = Duration::from_secs(60);

/// `config` with its database URL pointing at `proxy` instead of the server.
fn through(config: StoreConfig, proxy: &FaultProxy) -> StoreConfig {
    let url = config.database_url.expect("a PostgreSQL configuration");
    let target = proxy.target();
    let url = url.replacen(
        &format!("{}:{}", target.ip(), target.port()),
        &format!("127.0.0.1:{}", proxy.port()),
        1,
    );
    assert!(url.contains(&proxy.port().to_string()), "{url}");
    StoreConfig {
        database_url: Some(url),
        ..config
    }
}

#[sqlx::test(migrations = false)]
async fn transfers_end_after_a_database_outage_longer_than_every_retry_budget(pool: sqlx::PgPool) {
    let direct = postgres_config(&pool);
    let port = pool.connect_options().get_port();
    let proxy = FaultProxy::start((std::net::Ipv4Addr::new(127, 0, 0, 1), port))
        .await
        .unwrap();
    let server = TestServer::start(through(direct, &proxy), |s| s).await;
    let run = prepare(&server.base, 28, 20, 60).await;
    let ids = send_all(&server.base, &run.transfers, 4, &AtomicUsize::new(0)).await;

    // The transfers are accepted and under way: the database goes away (open connections severed, new ones
    // refused) for longer than any runner retries.
    let started = tokio::time::Instant::now();
    proxy.outage();
    let supervisor = server.service.supervisor().clone();
    let until = started + OUTAGE;
    while supervisor
        .status_of(bank_account::transfer_process::NAME)
        .map_or(0, |s| s.restarts)
        < 1
    {
        assert!(
            tokio::time::Instant::now() < until,
            "the transfer process was not started again during the outage: {:?}",
            supervisor.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rest of the outage: a fault's duration, not a wait for a condition.
    tokio::time::sleep_until(until).await;
    proxy.restore();

    check(&server.base, &run, &ids).await;
    let statuses = supervisor.status();
    assert!(supervisor.restarts_total() >= 1, "{statuses:?}");
    for runner in &statuses {
        assert!(
            !matches!(runner.state, Supervised::Failed { .. }),
            "no runner stopped for good: {statuses:?}"
        );
    }
    let transfers = server
        .service
        .projections()
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == bank_account::transfer_process::NAME)
        .unwrap();
    assert!(
        transfers.runner.is_some_and(|r| r.restarts >= 1),
        "`status` shows the restarts"
    );
    server.stop().await;
}
