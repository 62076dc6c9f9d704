//! The inbox through an outage longer than any retry budget, of its database or of the broker (a fault proxy
//! between them and the inbox severs every connection and refuses new ones): every event is applied once, in
//! order, nothing is parked, and the inbox never stops.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals_nats::{Delivery, Handler, HandlerError, Inbox, InboxOptions, async_nats};
use annals_test_support::FaultProxy;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::sync::{Notify, mpsc};

use crate::support::{
    Effects, TestEvent, TestStream, effect_counts, eventually, parked_reasons, pg_store,
    publish_all, shared_nats, spawn_inbox, write_events,
};

/// How long the outages last: longer than any of the inbox's retry budgets (attempts × backoff, the pool's
/// acquire timeout, the broker's ack wait).
const OUTAGE: Duration = Duration::from_secs(20);

/// Where the fault proxy stands: between the inbox and its database, or between the inbox and the broker.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Database,
    Broker,
}

/// A pool on the test's database through `proxy`, failing fast when no connection can be had.
async fn pool_through(pool: &PgPool, proxy: &FaultProxy) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .host("127.0.0.1")
        .port(proxy.port());
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .unwrap()
}

/// Asserts that `<schema>.effects` holds `expected` events, each once, each stream's in version order.
async fn assert_applied_once_in_order(pool: &PgPool, schema: &str, expected: i64) {
    let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT stream, version FROM {schema}.effects ORDER BY seq"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (stream, version) in &rows {
        let before = last.entry(stream).or_insert(0);
        assert_eq!(
            *version,
            *before + 1,
            "stream {stream}: version {version} applied after {before}"
        );
        *before = *version;
    }
    assert_eq!(rows.len() as i64, expected);
    assert_eq!(effect_counts(pool, schema).await, (expected, expected));
}

/// A proxy in front of the test's PostgreSQL server.
async fn pg_proxy(pool: &PgPool) -> FaultProxy {
    let options = pool.connect_options();
    let host = options
        .get_host()
        .parse()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    FaultProxy::start((host, options.get_port())).await.unwrap()
}

/// Events flow, the proxy cuts `cut` (open connections severed, new ones refused) while more are published,
/// for [`OUTAGE`], then restores: every event is applied once, in order, nothing parked, and the inbox never
/// stopped.
async fn ride_out(pool: PgPool, cut: Cut) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    let before = write_events(&store, "account", 3, 2).await as i64;
    let relay = publish_all(&pool, &store, &feed).await;
    let (proxy, inbox_pool, client) = match cut {
        Cut::Database => {
            let proxy = pg_proxy(&pool).await;
            let inbox_pool = pool_through(&pool, &proxy).await;
            let client = async_nats::connect(shared_nats()).await.unwrap();
            (proxy, inbox_pool, client)
        }
        Cut::Broker => {
            let nats: SocketAddr = shared_nats().parse().unwrap();
            let proxy = FaultProxy::start(nats).await.unwrap();
            let client = async_nats::connect(proxy.addr().to_string()).await.unwrap();
            (proxy, pool.clone(), client)
        }
    };
    let effects = Effects::new(&pool, "svc").await;
    let options = InboxOptions::default()
        .schema("inbox_t")
        .attempts(3)
        .backoff(Duration::from_millis(20))
        .ack_wait(Duration::from_secs(5));
    let inbox = Inbox::new(inbox_pool, client, &feed.name, "svc", effects, options).unwrap();
    let (stop, done) = spawn_inbox(inbox);
    eventually(
        "the first events applied",
        Duration::from_secs(60),
        || async { effect_counts(&pool, "svc").await.0 >= before },
    )
    .await;

    // More events reach the broker, and the cut comes while the inbox is applying them.
    let during = write_events(&store, "account", 3, 4).await as i64;
    publish_all(&pool, &store, &feed).await;
    proxy.outage();
    let refused = proxy.refused();
    // The fault's duration, not a synchronisation: the server stays out of reach this long.
    tokio::time::sleep(OUTAGE).await;
    assert!(
        proxy.refused() > refused,
        "the inbox kept trying to reach the {cut:?} during the outage"
    );
    assert!(
        !done.is_finished(),
        "the inbox stopped during the outage: {:?}",
        done.await
    );
    proxy.restore();
    eventually(
        "every event published before and during the outage applied",
        Duration::from_secs(120),
        || async { effect_counts(&pool, "svc").await.0 >= before + during },
    )
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    assert_applied_once_in_order(&pool, "svc", before + during).await;
    assert_eq!(parked_reasons(&pool, "svc").await, Vec::<String>::new());
    drop(relay);
}

#[sqlx::test(migrations = false)]
async fn a_database_outage_longer_than_any_retry_budget_loses_and_parks_nothing(pool: PgPool) {
    ride_out(pool, Cut::Database).await;
}

#[sqlx::test(migrations = false)]
async fn a_broker_outage_longer_than_any_retry_budget_loses_and_parks_nothing(pool: PgPool) {
    ride_out(pool, Cut::Broker).await;
}

/// The error a handler of the house style returns: its own type, the database error as its source.
#[derive(Debug)]
struct Wrapped(sqlx::Error);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("writing the notification failed")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A handler that, the first time, stops before its statement until the test has cut its connection; its
/// errors are [`Wrapped`].
struct CutInside {
    effects: Effects,
    first: AtomicBool,
    entered: mpsc::UnboundedSender<()>,
    resume: Arc<Notify>,
}

#[annals_nats::async_trait]
impl Handler for CutInside {
    type Event = TestEvent;

    async fn handle(
        &self,
        delivery: &Delivery<TestEvent>,
        conn: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        if self.first.swap(false, Ordering::SeqCst) {
            let _ = self.entered.send(());
            self.resume.notified().await;
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {}.effects (event_id, stream, version) VALUES ($1, $2, $3)",
            self.effects.schema
        )))
        .bind(delivery.headers.event_id.0)
        .bind(delivery.headers.stream_id.as_str())
        .bind(delivery.headers.stream_version.0 as i64)
        .execute(conn)
        .await
        .map_err(Wrapped)?;
        Ok(())
    }
}

#[sqlx::test(migrations = false)]
async fn a_connection_cut_inside_the_handler_is_transient_under_the_handlers_own_error(
    pool: PgPool,
) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    write_events(&store, "account", 1, 1).await;
    let relay = publish_all(&pool, &store, &feed).await;
    let proxy = pg_proxy(&pool).await;
    let (entered, mut inside) = mpsc::unbounded_channel();
    let resume = Arc::new(Notify::new());
    let handler = CutInside {
        effects: Effects::new(&pool, "svc").await,
        first: AtomicBool::new(true),
        entered,
        resume: Arc::clone(&resume),
    };
    // One attempt: a handler failure would park at once.
    let options = InboxOptions::default().schema("inbox_t").attempts(1);
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let inbox_pool = pool_through(&pool, &proxy).await;
    let inbox = Inbox::new(inbox_pool, client, &feed.name, "svc", handler, options).unwrap();
    let (stop, done) = spawn_inbox(inbox);
    tokio::time::timeout(Duration::from_secs(60), inside.recv())
        .await
        .expect("the handler ran")
        .unwrap();
    // The connection is cut under the handler's transaction; new connections pass.
    proxy.sever();
    resume.notify_one();
    eventually(
        "the event applied, or parked",
        Duration::from_secs(60),
        || async {
            effect_counts(&pool, "svc").await.0 >= 1
                || !parked_reasons(&pool, "svc").await.is_empty()
        },
    )
    .await;
    assert_eq!(
        parked_reasons(&pool, "svc").await,
        Vec::<String>::new(),
        "a lost connection is transient, whatever error the handler wraps it in"
    );
    eventually("the event applied", Duration::from_secs(60), || async {
        effect_counts(&pool, "svc").await.0 >= 1
    })
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    assert_eq!(effect_counts(&pool, "svc").await, (1, 1));
    drop(relay);
}
