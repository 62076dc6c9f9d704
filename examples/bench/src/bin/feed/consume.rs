//! The consumer side: `bank-notifier`'s handler in inbox instances (with a `pg_notify` at each event, which
//! PostgreSQL delivers at the commit, for the latency phase), and the hand-written baseline consumer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals_nats::async_nats::jetstream::consumer::AckPolicy;
use annals_nats::async_nats::jetstream::consumer::pull::Config as PullConfig;
use annals_nats::async_nats::{self, jetstream};
use annals_nats::{Delivery, Handler, HandlerError, Inbox, InboxOptions, async_trait};
use bank_account::account::AccountEvent;
use bank_account::notifier::Notifications;
use futures::StreamExt as _;
use sqlx::{PgConnection, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The consumer's durable name.
pub(crate) const CONSUMER: &str = "notifier";
/// The channel the consumer's commits are announced on.
const APPLIED: &str = "feed_bench_applied";

/// `bank-notifier`'s handler, announcing each applied position when `announce`.
pub(crate) struct Timed {
    announce: bool,
}

#[async_trait]
impl Handler for Timed {
    type Event = AccountEvent;

    async fn handle(
        &self,
        delivery: &Delivery<AccountEvent>,
        conn: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        Notifications.handle(delivery, conn).await?;
        if self.announce {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(APPLIED)
                .bind(delivery.headers.position.get().to_string())
                .execute(conn)
                .await?;
        }
        Ok(())
    }
}

/// Running consumer instances (inbox or baseline), stopped by [`Running::stop`].
pub(crate) struct Running {
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for task in self.tasks {
            task.await??;
        }
        Ok(())
    }
}

/// Starts `instances` inbox instances sharing the durable consumer, each with its own NATS connection and pool.
pub(crate) async fn inboxes(
    database: &sqlx::postgres::PgConnectOptions,
    nats_url: &str,
    stream: &str,
    instances: usize,
    announce: bool,
    batch_size: Option<usize>,
) -> anyhow::Result<Running> {
    let mut running = Running {
        stops: Vec::new(),
        tasks: Vec::new(),
    };
    for _ in 0..instances {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(database.clone())
            .await?;
        let client = async_nats::connect(nats_url).await?;
        let mut options = InboxOptions::default()
            .schema(bank_account::notifier::SCHEMA)
            .filter("bank.account.*");
        if let Some(n) = batch_size {
            options = options.batch_size(n);
        }
        let inbox = Inbox::new(pool, client, stream, CONSUMER, Timed { announce }, options)?;
        let (stop, stopped) = oneshot::channel::<()>();
        running.stops.push(stop);
        running.tasks.push(tokio::spawn(async move {
            inbox
                .run(async {
                    let _ = stopped.await;
                })
                .await?;
            Ok(())
        }));
    }
    Ok(running)
}

/// The hand-written baseline: a plain pull consumer on its own durable consumer, up to 256 messages per
/// transaction written with one multi-row insert, acknowledged after the commit.
pub(crate) async fn baseline(
    pool: PgPool,
    nats_url: &str,
    stream: &str,
) -> anyhow::Result<Running> {
    let client = async_nats::connect(nats_url).await?;
    let consumer = jetstream::new(client)
        .get_stream(stream)
        .await?
        .get_or_create_consumer(
            "baseline",
            PullConfig {
                durable_name: Some("baseline".into()),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: 512,
                ..PullConfig::default()
            },
        )
        .await?;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut messages = consumer.messages().await?;
        loop {
            let first = tokio::select! {
                m = messages.next() => m,
                _ = &mut stopped => return Ok(()),
            };
            let Some(first) = first else { return Ok(()) };
            let mut batch = vec![first?];
            while batch.len() < 256 {
                match futures::FutureExt::now_or_never(messages.next()) {
                    Some(Some(Ok(m))) => batch.push(m),
                    _ => break,
                }
            }
            write_plainly(&pool, &batch).await?;
            let acks = batch.iter().map(|m| m.double_ack());
            for acked in futures::future::join_all(acks).await {
                acked.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            }
        }
    });
    Ok(Running {
        stops: vec![stop],
        tasks: vec![task],
    })
}

/// The baseline's transaction: the notifications of a batch in one insert.
async fn write_plainly(pool: &PgPool, batch: &[jetstream::Message]) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    let mut accounts = Vec::new();
    let mut amounts = Vec::new();
    let mut versions = Vec::new();
    let mut texts = Vec::new();
    for m in batch {
        let headers = m
            .headers
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no headers"))?;
        let get = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .ok_or_else(|| anyhow::anyhow!("no {name}"))
        };
        let stream = get("Annals-Stream-Id")?;
        let account = stream
            .strip_prefix("account-")
            .unwrap_or(&stream)
            .to_owned();
        let payload: serde_json::Value = serde_json::from_slice(&m.payload)?;
        let amount = payload["amount"].as_i64().unwrap_or(0);
        ids.push(uuid::Uuid::parse_str(&get("Annals-Event-Id")?)?);
        texts.push(format!("{amount} deposited into account {account}"));
        accounts.push(account);
        amounts.push(amount);
        versions.push(get("Annals-Stream-Version")?.parse::<i64>()?);
    }
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO notifier.notifications (event_id, account, kind, amount, version, text) \
         SELECT e, a, 'deposit', m, v, t FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) \
         AS r(e, a, m, v, t) ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(accounts)
    .bind(amounts)
    .bind(versions)
    .bind(texts)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Empties the consumer's database and deletes its durable consumers, for a drain from the start.
pub(crate) async fn reset(pool: &PgPool, nats_url: &str, stream: &str) -> anyhow::Result<()> {
    let js = jetstream::new(async_nats::connect(nats_url).await?);
    let s = js.get_stream(stream).await?;
    for name in [CONSUMER, "baseline"] {
        let _ = s.delete_consumer(name).await;
    }
    bank_account::notifier::migrate(pool).await?;
    sqlx::raw_sql(
        "TRUNCATE notifier.notifications;
         DO $$ BEGIN
           IF to_regclass('notifier.inbox') IS NOT NULL THEN
             TRUNCATE notifier.inbox, notifier.inbox_parked, notifier.inbox_streams;
           END IF;
         END $$;",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The notifications in the consumer's database.
pub(crate) async fn applied(pool: &PgPool) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notifier.notifications")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n)?)
}

/// Waits until `expected` notifications are in the consumer's database; returns when they were.
pub(crate) async fn until_applied(
    pool: &PgPool,
    expected: u64,
    deadline: Duration,
) -> anyhow::Result<Instant> {
    let start = Instant::now();
    loop {
        if applied(pool).await? >= expected {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            start.elapsed() < deadline,
            "{} of {expected} notifications after {deadline:?}",
            applied(pool).await?
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Collects the instant each position's commit was announced in the consumer's database.
pub(crate) async fn listen(
    pool: &PgPool,
) -> anyhow::Result<(Arc<Mutex<HashMap<u64, Instant>>>, JoinHandle<()>)> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(APPLIED).await?;
    let seen: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Ok(n) = listener.recv().await {
            let now = Instant::now();
            if let (Ok(position), Ok(mut seen)) = (n.payload().parse::<u64>(), sink.lock()) {
                seen.entry(position).or_insert(now);
            }
        }
    });
    Ok((seen, task))
}
