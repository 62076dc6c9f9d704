//! `relay-nats`: publish every stored event to NATS JetStream with acknowledgements.
//!
//! Annals: the `annals-nats` relay, end to end from the event log to broker acks: it reads the log in pages,
//! publishes each batch (at most one unacknowledged message per stream, 256 acknowledgements in flight, every
//! header), waits for every ack and commits its checkpoint, batch after batch. The baseline is a plain
//! async-nats client publishing the same payloads to the same subjects, with a `Nats-Msg-Id` (so the server does
//! the same de-duplication work), keeping the same 256 acknowledgements in flight (a sliding window over the
//! whole run, no per-stream rule, no checkpoint, payloads already in memory). Each run of each side writes into
//! a fresh JetStream stream (file storage, the server's default fsync), deleted afterwards.
//!
//! The NATS server is `NATS_URL` (default `127.0.0.1:4222`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals::{EventStore, Position};
use annals_nats::async_nats::{self, HeaderMap, jetstream};
use annals_nats::{FeedStream, Relay, RelayOptions, Subjects};
use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use sqlx::{AssertSqlSafe, PgPool};

use crate::domain::stream_name;
use crate::harness::{self, Phase, Workload};
use crate::scenarios::fill;
use crate::settings::Settings;

/// Events in the store by default.
const DEFAULT_EVENTS: usize = 100_000;
/// Events per stream (as in the command scenarios).
const PER_STREAM: usize = 10;
/// Acknowledgements in flight on both sides (the relay's default).
const DEPTH: usize = 256;
/// Where the relay's checkpoints and leases live during the scenario (dropped at the end).
const META: &str = "annals_bench_relay";
const PREFIX: &str = "abr_";

static RUN: AtomicUsize = AtomicUsize::new(0);

/// Fills the store, measures both sides and returns the result line.
pub(crate) async fn run(settings: &Settings, name: &str) -> anyhow::Result<String> {
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".to_owned());
    let wanted = settings.events.unwrap_or(DEFAULT_EVENTS).max(PER_STREAM);
    let events = wanted / PER_STREAM * PER_STREAM;
    let names: Vec<String> = (0..events / PER_STREAM).map(stream_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    eprintln!(
        "{name}: {events} events over {} streams to JetStream at {nats_url}, {DEPTH} acks in flight",
        names.len()
    );
    let client = async_nats::connect(&nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {nats_url} (set NATS_URL)"))?;
    fill::prefilled(settings, 4, &names, PER_STREAM, async |filled| {
        let relay_pool = harness::pool(&settings.database_url, 4).await?.pool;
        let stored = filled.store.read_all(Position::START, events + 1).await?;
        anyhow::ensure!(
            stored.len() == events,
            "the store holds {} events",
            stored.len()
        );
        let workload = RelayNats {
            store: filled.store.clone(),
            pool: relay_pool.clone(),
            client: client.clone(),
            messages: Arc::new(
                stored
                    .iter()
                    .map(|e| {
                        (
                            e.stream_id.clone(),
                            e.event_id.to_string(),
                            Bytes::copy_from_slice(e.payload.as_str().as_bytes()),
                        )
                    })
                    .collect(),
            ),
            head: filled.store.head().await?,
        };
        let result = harness::measure(name, &workload, settings.runs, &settings.sides).await;
        cleanup(&relay_pool).await?;
        Ok(harness::rate_line(name, events, &result?))
    })
    .await
}

async fn cleanup(pool: &PgPool) -> anyhow::Result<()> {
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname = $1 OR starts_with(nspname, $2)",
    )
    .bind(META)
    .bind(PREFIX)
    .fetch_all(pool)
    .await?;
    for schema in schemas {
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
            .execute(pool)
            .await?;
    }
    Ok(())
}

struct RelayNats {
    store: Arc<dyn EventStore>,
    pool: PgPool,
    client: async_nats::Client,
    /// (stream, event id, payload) of every stored event, in position order, for the baseline.
    messages: Arc<Vec<(annals::StreamId, String, Bytes)>>,
    head: Position,
}

/// A fresh JetStream stream for one run: (stream, subjects), deleted by [`delete`].
async fn fresh_stream(js: &jetstream::Context) -> anyhow::Result<(FeedStream, Subjects)> {
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let subjects = Subjects::new(format!("bench{pid}r{n}"))?;
    let stream = FeedStream {
        name: format!("BENCH_{pid}_{n}"),
        subject: subjects.filter(),
        duplicate_window: Duration::from_secs(120),
    };
    stream.ensure(js).await?;
    Ok((stream, subjects))
}

async fn delete(
    js: &jetstream::Context,
    stream: &FeedStream,
    expected: usize,
) -> anyhow::Result<()> {
    let mut s = js.get_stream(&stream.name).await?;
    let stored = s.info().await?.state.messages;
    js.delete_stream(&stream.name).await?;
    anyhow::ensure!(
        stored == expected as u64,
        "JetStream stream {} holds {stored} messages, expected {expected}",
        stream.name
    );
    Ok(())
}

impl Workload for RelayNats {
    async fn annals(&self, _phase: Phase) -> anyhow::Result<Duration> {
        let js = jetstream::new(self.client.clone());
        let (stream, subjects) = fresh_stream(&js).await?;
        let relay_name = format!("bench_relay_{}", RUN.fetch_add(1, Ordering::Relaxed));
        let options = RelayOptions::new(subjects.prefix(), &stream.name)?
            .name(&relay_name)
            .projections_schema(META, PREFIX)
            .max_in_flight(DEPTH);
        let relay = Relay::new(
            self.store.clone(),
            self.pool.clone(),
            self.client.clone(),
            options,
        )?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let running = tokio::spawn({
            let relay = relay.clone();
            async move {
                relay
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        relay
            .projections()
            .wait_for_position(&relay_name, self.head, Duration::from_secs(600))
            .await?;
        let elapsed = started.elapsed();
        let _ = stop.send(());
        running.await??;
        relay.projections().reset(&relay_name).await?;
        delete(&js, &stream, self.messages.len()).await?;
        Ok(elapsed)
    }

    async fn raw(&self, _index: usize, _phase: Phase) -> anyhow::Result<Duration> {
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(DEPTH)
            .backpressure_on_inflight(true)
            .build(self.client.clone());
        let (stream, subjects) = fresh_stream(&js).await?;
        let started = Instant::now();
        let mut in_flight = FuturesUnordered::new();
        let mut acked = 0;
        for (stream_id, id, payload) in self.messages.iter() {
            if in_flight.len() >= DEPTH
                && let Some(ack) = in_flight.next().await
            {
                let _: jetstream::publish::PublishAck = ack?;
                acked += 1;
            }
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let ack = js
                .publish_with_headers(subjects.subject(stream_id), headers, payload.clone())
                .await?;
            in_flight.push(ack.into_future());
        }
        while let Some(ack) = in_flight.next().await {
            ack?;
            acked += 1;
        }
        let elapsed = started.elapsed();
        anyhow::ensure!(
            acked == self.messages.len(),
            "the baseline had {acked} acks"
        );
        delete(&js, &stream, self.messages.len()).await?;
        Ok(elapsed)
    }
}
