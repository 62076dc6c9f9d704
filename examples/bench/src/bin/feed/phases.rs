//! One run of every phase on fresh databases and a fresh nats-server, and the report over the runs.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use annals::EventStore as _;
use annals_nats::async_nats::{self, jetstream};
use annals_nats::{Relay, RelayOptions};
use annals_postgres::PostgresStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};

use crate::Args;
use crate::consume;
use crate::nats::NatsServer;
use crate::produce::Producer;

/// The JetStream stream and subject prefix (the bank's defaults).
const STREAM: &str = "BANK";

/// Commit → applied at one offered rate.
#[derive(Debug, Clone)]
pub(crate) struct Latency {
    rate: u32,
    events: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// The producer at its maximum rate with one consumer instance.
#[derive(Debug, Clone)]
pub(crate) struct Keeping {
    produced_per_s: f64,
    applied_per_s: f64,
    lag_at_stop: u64,
    catch_up_s: f64,
}

/// One run's figures.
#[derive(Debug, Clone)]
pub(crate) struct RunResult {
    server: String,
    latency: Vec<Latency>,
    drains: Vec<(usize, f64)>,
    baseline_drain: f64,
    drained: u64,
    keeping: Option<Keeping>,
}

impl RunResult {
    pub(crate) fn line(&self) -> String {
        let mut s = String::new();
        for l in &self.latency {
            let _ = write!(
                s,
                "{}/s: p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} events); ",
                l.rate, l.p50_ms, l.p99_ms, l.max_ms, l.events
            );
        }
        for (k, rate) in &self.drains {
            let _ = write!(s, "drain x{k}: {rate:.0}/s; ");
        }
        let _ = write!(
            s,
            "baseline drain: {:.0}/s ({} events)",
            self.baseline_drain, self.drained
        );
        if let Some(k) = &self.keeping {
            let _ = write!(
                s,
                "; max producer {:.0}/s, applied {:.0}/s meanwhile, lag at stop {}, caught up {:.2} s later",
                k.produced_per_s, k.applied_per_s, k.lag_at_stop, k.catch_up_s
            );
        }
        s
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn runs_of(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The medians over the runs, with each run listed.
pub(crate) fn report(args: &Args, results: &[RunResult]) -> String {
    let mut s = String::new();
    if let Some(first) = results.first() {
        let _ = writeln!(
            s,
            "server: {}; NOTIFY coalescing {:?}",
            first.server,
            args.notify_coalesce()
        );
    }
    let _ = writeln!(
        s,
        "| offered | p50 ms (median; runs) | p99 ms (median; runs) |"
    );
    let _ = writeln!(s, "| --- | --- | --- |");
    for (i, rate) in args.rates.iter().enumerate() {
        let p50: Vec<f64> = results.iter().map(|r| r.latency[i].p50_ms).collect();
        let p99: Vec<f64> = results.iter().map(|r| r.latency[i].p99_ms).collect();
        let _ = writeln!(
            s,
            "| {rate}/s | {:.1} ({}) | {:.1} ({}) |",
            median(p50.clone()),
            runs_of(&p50, 1),
            median(p99.clone()),
            runs_of(&p99, 1)
        );
    }
    let _ = writeln!(s, "\n| drain | events/s (median; runs) |");
    let _ = writeln!(s, "| --- | --- |");
    for (i, k) in args.instances.iter().enumerate() {
        let rates: Vec<f64> = results.iter().map(|r| r.drains[i].1).collect();
        let _ = writeln!(
            s,
            "| inbox x{k} | {:.0} ({}) |",
            median(rates.clone()),
            runs_of(&rates, 0)
        );
    }
    let base: Vec<f64> = results.iter().map(|r| r.baseline_drain).collect();
    let _ = writeln!(
        s,
        "| baseline x1 | {:.0} ({}) |",
        median(base.clone()),
        runs_of(&base, 0)
    );
    let keeping: Vec<&Keeping> = results.iter().filter_map(|r| r.keeping.as_ref()).collect();
    if !keeping.is_empty() {
        let produced: Vec<f64> = keeping.iter().map(|k| k.produced_per_s).collect();
        let applied: Vec<f64> = keeping.iter().map(|k| k.applied_per_s).collect();
        let lag: Vec<f64> = keeping.iter().map(|k| k.lag_at_stop as f64).collect();
        let catch: Vec<f64> = keeping.iter().map(|k| k.catch_up_s).collect();
        let _ = writeln!(
            s,
            "\nmax producer: {:.0}/s ({}); applied meanwhile {:.0}/s ({}); lag at stop {:.0} ({}); caught up after {:.2} s ({})",
            median(produced.clone()),
            runs_of(&produced, 0),
            median(applied.clone()),
            runs_of(&applied, 0),
            median(lag.clone()),
            runs_of(&lag, 0),
            median(catch.clone()),
            runs_of(&catch, 2)
        );
    }
    s
}

/// The databases of one run, dropped at the end.
struct Databases {
    admin: PgPool,
    bank: PgConnectOptions,
    consumer: PgConnectOptions,
    names: [String; 2],
}

impl Databases {
    async fn create(url: &str) -> anyhow::Result<Self> {
        let admin = PgPoolOptions::new().max_connections(1).connect(url).await?;
        let base: PgConnectOptions = url.parse()?;
        let tag = format!("{}_{}", std::process::id(), uuid::Uuid::now_v7().simple());
        let names = [
            format!("feed_bank_{}", &tag[..20]),
            format!("feed_notifier_{}", &tag[..20]),
        ];
        for name in &names {
            sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await?;
        }
        Ok(Self {
            bank: base.clone().database(&names[0]),
            consumer: base.database(&names[1]),
            admin,
            names,
        })
    }

    async fn drop_all(self) -> anyhow::Result<()> {
        for name in &self.names {
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&self.admin)
            .await?;
        }
        Ok(())
    }
}

async fn pool(options: &PgConnectOptions, connections: u32) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options.clone())
        .await?)
}

/// How many messages the feed's JetStream stream holds (0 before it exists).
async fn in_stream(js: &jetstream::Context) -> u64 {
    match js.get_stream(STREAM).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Runs every phase once.
pub(crate) async fn one_run(args: &Args) -> anyhow::Result<RunResult> {
    let dbs = Databases::create(&args.database_url).await?;
    let result = phases(args, &dbs).await;
    dbs.drop_all().await?;
    result
}

async fn phases(args: &Args, dbs: &Databases) -> anyhow::Result<RunResult> {
    let nats = NatsServer::start().await?;
    let store = PostgresStore::from_pool(pool(&dbs.bank, 24).await?)
        .with_notify_coalesce(args.notify_coalesce());
    store.migrate().await?;
    // The relay's own store: it learns of the producer's appends by NOTIFY, as in another process.
    let relay_pool = pool(&dbs.bank, 4).await?;
    let relay = Relay::new(
        PostgresStore::from_pool(relay_pool.clone()),
        relay_pool,
        async_nats::connect(&nats.url).await?,
        RelayOptions::new("bank", STREAM)?,
    )?;
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relaying = tokio::spawn(async move {
        relay
            .run(async {
                let _ = relay_stopped.await;
            })
            .await
    });
    let js = jetstream::new(async_nats::connect(&nats.url).await?);
    let started = Instant::now();
    while js.get_stream(STREAM).await.is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the relay made no stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let consumer_pool = pool(&dbs.consumer, 4).await?;
    consume::reset(&consumer_pool, &nats.url, STREAM).await?;
    let producer = Producer::new(store.clone());

    let latency = latency_phase(args, &producer, dbs, &consumer_pool, &nats).await?;
    let keeping = if args.max_seconds > 0 {
        Some(keeping_phase(args, &producer, dbs, &consumer_pool, &nats).await?)
    } else {
        None
    };
    producer
        .closed(16, 10, Some(args.backlog as u64), None)
        .await?;
    let total = store.head().await?.get();
    let started = Instant::now();
    while in_stream(&js).await < total {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the relay fell behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut drains = Vec::new();
    for &k in &args.instances {
        consume::reset(&consumer_pool, &nats.url, STREAM).await?;
        let t0 = Instant::now();
        let running =
            consume::inboxes(&dbs.consumer, &nats.url, STREAM, k, false, args.batch_size).await?;
        let done = consume::until_applied(&consumer_pool, total, Duration::from_secs(600)).await?;
        running.stop().await?;
        drains.push((k, total as f64 / (done - t0).as_secs_f64()));
    }
    consume::reset(&consumer_pool, &nats.url, STREAM).await?;
    let t0 = Instant::now();
    let running = consume::baseline(consumer_pool.clone(), &nats.url, STREAM).await?;
    let done = consume::until_applied(&consumer_pool, total, Duration::from_secs(600)).await?;
    running.stop().await?;
    let baseline_drain = total as f64 / (done - t0).as_secs_f64();

    let _ = stop_relay.send(());
    relaying.await??;
    consumer_pool.close().await;
    store.pool().close().await;
    Ok(RunResult {
        server: nats.version.clone(),
        latency,
        drains,
        baseline_drain,
        drained: total,
        keeping,
    })
}

/// Commit → applied at each offered rate, one inbox instance.
async fn latency_phase(
    args: &Args,
    producer: &Producer,
    dbs: &Databases,
    consumer_pool: &PgPool,
    nats: &NatsServer,
) -> anyhow::Result<Vec<Latency>> {
    let (seen, listening) = consume::listen(consumer_pool).await?;
    let running =
        consume::inboxes(&dbs.consumer, &nats.url, STREAM, 1, true, args.batch_size).await?;
    let mut out = Vec::new();
    for &rate in &args.rates {
        let positions = producer.offered(rate, args.seconds).await?;
        let started = Instant::now();
        loop {
            let missing = {
                let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                positions.iter().filter(|p| !seen.contains_key(p)).count()
            };
            if missing == 0 {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "{missing} of {} deposits not applied at {rate}/s",
                positions.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let commits = producer
            .commits
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mut ms: Vec<f64> = positions
            .iter()
            .filter_map(|p| Some((*seen.get(p)?).saturating_duration_since(*commits.get(p)?)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        out.push(Latency {
            rate,
            events: ms.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        });
        eprintln!("feed: {rate}/s done");
    }
    running.stop().await?;
    listening.abort();
    Ok(out)
}

/// The producer as fast as it goes for `max_seconds`, one inbox instance consuming meanwhile.
async fn keeping_phase(
    args: &Args,
    producer: &Producer,
    dbs: &Databases,
    consumer_pool: &PgPool,
    nats: &NatsServer,
) -> anyhow::Result<Keeping> {
    let before = consume::applied(consumer_pool).await?;
    let running =
        consume::inboxes(&dbs.consumer, &nats.url, STREAM, 1, false, args.batch_size).await?;
    let t0 = Instant::now();
    let produced = producer
        .closed(32, 1, None, Some(Duration::from_secs(args.max_seconds)))
        .await?;
    let stopped = Instant::now();
    let applied = consume::applied(consumer_pool).await? - before;
    let done =
        consume::until_applied(consumer_pool, before + produced, Duration::from_secs(600)).await?;
    running.stop().await?;
    let window = (stopped - t0).as_secs_f64();
    eprintln!("feed: max producer done");
    Ok(Keeping {
        produced_per_s: produced as f64 / window,
        applied_per_s: applied as f64 / window,
        lag_at_stop: produced.saturating_sub(applied),
        catch_up_s: (done - stopped).as_secs_f64(),
    })
}
