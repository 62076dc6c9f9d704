//! [`Inbox`]: an idempotent consumer of the feed. The handler runs in the consumer's own PostgreSQL
//! transaction, which also records `(consumer, event id)`, for a batch of messages at a time; the broker
//! messages are acknowledged after the commit. An order fence keeps each Annals stream's events in order
//! across redeliveries and instances (ADR 0011). Transient database failures are retried for as long as they
//! last; only the handler's own failures count toward parking (`docs/event-feed.md`, "The inbox's failure
//! model").

mod acks;
mod attempt;
mod backoff;
mod batch;
mod decode;
mod fence;
mod handler;
mod options;
mod parked;
mod transient;

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{AckKind, Message};
use futures::{FutureExt as _, StreamExt};
use sqlx::{AssertSqlSafe, PgPool};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use self::attempt::{Attempt, Failure};
use self::backoff::backoff;
use crate::error::{Error, Result};

pub use self::handler::{Delivery, Handler, HandlerError};
pub use self::options::InboxOptions;
pub use self::parked::Parked;

/// The first pause after a transient failure (a database or broker that cannot be reached, a deadlock): the
/// pauses double from it, with jitter, up to [`TRANSIENT_CAP`], and are never given up.
const TRANSIENT_FIRST: Duration = Duration::from_millis(100);

/// The longest pause between retries of a transient failure: once an outage ends, the inbox resumes within it.
const TRANSIENT_CAP: Duration = Duration::from_secs(5);

/// The longest pause between the handler's own failed attempts.
const HANDLER_CAP: Duration = Duration::from_secs(30);

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler ran and its transaction committed.
    Applied,
    /// Already in the inbox: acknowledged without running the handler.
    Duplicate,
    /// Parked and terminated at the broker.
    Parked,
    /// An earlier event of its stream is not applied yet (held by another instance, or by one that died):
    /// nothing was recorded, and the message is handed back to the broker for a later redelivery.
    Held,
}

/// An idempotent consumer: a durable JetStream pull consumer with explicit acknowledgements, an inbox table and
/// a parking table in the consumer service's own database.
pub struct Inbox<H: Handler> {
    pool: PgPool,
    context: async_nats::jetstream::Context,
    stream: String,
    name: String,
    options: InboxOptions,
    handler: H,
    _event: PhantomData<fn() -> H::Event>,
}

impl<H: Handler> std::fmt::Debug for Inbox<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("stream", &self.stream)
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn plain(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl<H: Handler> Inbox<H> {
    /// The consumer `name` (durable consumer name and inbox key: `a-z 0-9 _`, at most 60) of the JetStream
    /// stream `stream`, recording into `pool`.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad consumer or schema name.
    pub fn new(
        pool: PgPool,
        client: async_nats::Client,
        stream: impl Into<String>,
        name: impl Into<String>,
        handler: H,
        options: InboxOptions,
    ) -> Result<Self> {
        let name = name.into();
        if !plain(&name, 60) || !plain(&options.schema, 60) {
            return Err(Error::Config {
                reason: format!(
                    "consumer name {name:?} and schema {:?} must be 1 to 60 of a-z, 0-9 and '_', starting with a letter",
                    options.schema
                ),
            });
        }
        Ok(Self {
            pool,
            context: async_nats::jetstream::new(client),
            stream: stream.into(),
            name,
            options,
            handler,
            _event: PhantomData,
        })
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn table(&self, t: &str) -> String {
        format!("{}.{t}", self.options.schema)
    }

    /// Creates the inbox tables when missing (idempotent).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn migrate(&self) -> Result<()> {
        let s = &self.options.schema;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(Error::db("migrate inbox"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('annals_inbox_migrate'))")
            .execute(&mut *tx)
            .await
            .map_err(Error::db("migrate inbox"))?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.inbox (
                 consumer text NOT NULL,
                 event_id uuid NOT NULL,
                 stream_id text NOT NULL,
                 stream_version bigint NOT NULL,
                 position bigint NOT NULL,
                 received_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (consumer, event_id)
             );
             CREATE INDEX IF NOT EXISTS inbox_received ON {s}.inbox (consumer, received_at);
             CREATE TABLE IF NOT EXISTS {s}.inbox_parked (
                 consumer text NOT NULL,
                 sequence bigint NOT NULL,
                 subject text NOT NULL,
                 event_id uuid,
                 reason text NOT NULL,
                 attempts integer NOT NULL,
                 headers jsonb NOT NULL,
                 payload bytea NOT NULL,
                 parked_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (consumer, sequence)
             );"
        )))
        .execute(&mut *tx)
        .await
        .map_err(Error::db("migrate inbox"))?;
        let fenced: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{s}.inbox_streams"))
            .fetch_one(&mut *tx)
            .await
            .map_err(Error::db("migrate inbox"))?;
        if !fenced {
            sqlx::raw_sql(AssertSqlSafe(fence::create_sql(s) + &fence::seed_sql(s)))
                .execute(&mut *tx)
                .await
                .map_err(Error::db("migrate inbox"))?;
        }
        tx.commit().await.map_err(Error::db("migrate inbox"))
    }

    async fn consumer(&self) -> Result<async_nats::jetstream::consumer::Consumer<PullConfig>> {
        let stream = self
            .context
            .get_stream(&self.stream)
            .await
            .map_err(|e| unavailable("get stream", e))?;
        stream
            .get_or_create_consumer(
                &self.name,
                PullConfig {
                    durable_name: Some(self.name.clone()),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: self.options.ack_wait,
                    max_ack_pending: self.options.max_ack_pending,
                    filter_subject: self.options.filter.clone().unwrap_or_default(),
                    ..PullConfig::default()
                },
            )
            .await
            .map_err(|e| unavailable("create consumer", e))
    }

    /// Consumes until `shutdown` completes: every message is applied once (or parked), each Annals stream's
    /// events in order, in batches of what has arrived (at most [`InboxOptions::batch_size`]) whose
    /// acknowledgements go out while the next batch is applied. Transient failures (the broker or the database
    /// out of reach, a deadlock, a serialization failure, a lock or statement timeout) are retried with capped,
    /// jittered backoff for as long as they last, the batch kept in hand meanwhile; inbox rows older than the
    /// retention are pruned about every tenth of it (at most hourly).
    ///
    /// # Errors
    /// Configuration errors; an error that retrying cannot fix.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        self.migrate().await?;
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => { let _ = stop.send(true); }
                () = stop.closed() => {}
            }
        });
        let mut acks = acks::Acks::default();
        let result = self.consume_until_stopped(&mut acks, &mut stopped).await;
        acks.flush().await;
        result
    }

    async fn consume_until_stopped(
        &self,
        acks: &mut acks::Acks,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let mut failures = 0;
        let mut pruning = Pruning::new(self.options.retention);
        'connect: loop {
            if *stopped.borrow() {
                return Ok(());
            }
            let mut messages = match self.messages().await {
                Ok(m) => m,
                Err(e) => {
                    warn!(consumer = %self.name, error = %e, "cannot consume; retrying");
                    if pause(&mut failures, stopped).await.is_none() {
                        return Ok(());
                    }
                    continue;
                }
            };
            loop {
                pruning.prune_if_due(self).await;
                let next = tokio::select! {
                    m = messages.next() => m,
                    _ = stopped.wait_for(|s| *s) => return Ok(()),
                    () = tokio::time::sleep_until(pruning.next) => continue,
                };
                let mut batch = match next {
                    Some(Ok(m)) => vec![m],
                    Some(Err(e)) => {
                        warn!(consumer = %self.name, error = %e, "receiving failed; reconnecting");
                        if pause(&mut failures, stopped).await.is_none() {
                            return Ok(());
                        }
                        continue 'connect;
                    }
                    None => continue 'connect,
                };
                // What has arrived meanwhile joins the batch; nothing waits to fill it.
                while batch.len() < self.options.batch_size {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(m))) => batch.push(m),
                        _ => break,
                    }
                }
                let Some(settle) = self.consume(&batch, &mut failures, stopped).await? else {
                    return Ok(());
                };
                debug!(consumer = %self.name, messages = batch.len(), "batch applied");
                acks.send(&self.name, batch, settle).await;
            }
        }
    }

    /// The consumer's message stream.
    async fn messages(&self) -> Result<async_nats::jetstream::consumer::pull::Stream> {
        self.consumer()
            .await?
            .messages()
            .await
            .map_err(|e| unavailable("pull messages", e))
    }

    /// Applies one message: parks it when malformed, acknowledges a duplicate, hands it back when its stream's
    /// earlier event is not applied yet, else runs the handler in a transaction that records the inbox row, and
    /// commits it once it proved it is alive. The handler's own errors (and a transaction it left aborted) are
    /// retried in place with backoff up to the attempts, then the message is parked. The message is
    /// acknowledged (or terminated) only after the commit. [`run`](Self::run) applies batches instead.
    ///
    /// # Errors
    /// A transient failure, never counted toward the attempts: [`Error::Database`] (the inbox's own
    /// statements, or a commit of unknown outcome) or [`Error::HandlerTransient`]; the message is left
    /// unacknowledged, so hand it back (`Nak`) or let the broker redeliver it, and an inbox row committed
    /// meanwhile makes the redelivery a duplicate. [`Error::Unavailable`] when the acknowledgement could not be
    /// confirmed (the redelivery is absorbed).
    pub async fn process(&self, message: &Message) -> Result<Outcome> {
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let delivery = match decode::delivery::<H::Event>(message, sequence) {
            Ok(d) => d,
            Err(m) => {
                let stream = m.stream.as_ref().map(|(s, v)| (s.as_str(), *v));
                return self
                    .park(message, sequence, m.event_id, stream, m.reason, 0)
                    .await;
            }
        };
        let outcome = self.apply_one(message, &delivery, 0, None).await?;
        match outcome {
            Outcome::Applied | Outcome::Duplicate => self.ack(message, AckKind::Ack).await?,
            Outcome::Held => {
                self.ack(message, AckKind::Nak(Some(TRANSIENT_FIRST)))
                    .await?;
            }
            Outcome::Parked => {}
        }
        Ok(outcome)
    }

    /// Applies one delivery in a transaction of its own, retrying the handler's own failures in place up to the
    /// attempts (`failed` of them already spent, the last with `cause`), then parking it. Acknowledges nothing
    /// but a parked message (terminated).
    async fn apply_one(
        &self,
        message: &Message,
        delivery: &Delivery<H::Event>,
        failed: u32,
        cause: Option<String>,
    ) -> Result<Outcome> {
        let mut failures = failed;
        let mut cause = cause;
        loop {
            if let Some(cause) = cause.take() {
                let event_id = delivery.headers.event_id;
                if failures >= self.options.attempts {
                    let reason = format!("the handler failed {failures} time(s): {cause}");
                    let stream = (
                        delivery.headers.stream_id.as_str(),
                        delivery.headers.stream_version.0,
                    );
                    return self
                        .park(
                            message,
                            delivery.sequence,
                            Some(event_id.0),
                            Some(stream),
                            reason,
                            failures,
                        )
                        .await;
                }
                let wait = backoff(self.options.backoff, failures - 1, HANDLER_CAP);
                warn!(consumer = %self.name, %event_id, attempt = failures, ?wait, error = %cause,
                      "handler failed; retrying");
                // Tell the broker we are still on it, so it does not redeliver meanwhile.
                let _ = message.ack_with(AckKind::Progress).await;
                tokio::time::sleep(wait).await;
            }
            match self.attempt(&[delivery]).await {
                Ok(outcomes) => {
                    return Ok(match outcomes.first() {
                        Some(Attempt::Applied) => Outcome::Applied,
                        Some(Attempt::Duplicate) => {
                            debug!(consumer = %self.name, event_id = %delivery.headers.event_id, "duplicate; acknowledging");
                            Outcome::Duplicate
                        }
                        Some(Attempt::Held) | None => Outcome::Held,
                    });
                }
                Err(Failure::Transient(e)) => return Err(e),
                Err(Failure::Permanent { cause: c, .. }) => {
                    failures += 1;
                    cause = Some(c);
                }
            }
        }
    }

    async fn ack(&self, message: &Message, kind: AckKind) -> Result<()> {
        let result = match kind {
            AckKind::Ack => message.double_ack().await,
            other => message.ack_with(other).await,
        };
        result.map_err(|e| unavailable("acknowledge", e))
    }

    /// Deletes inbox rows older than the retention; returns how many.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn prune(&self) -> Result<u64> {
        let done = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE consumer = $1 AND received_at < now() - make_interval(secs => $2)",
            self.table("inbox")
        )))
        .bind(&self.name)
        .bind(self.options.retention.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(Error::db("prune inbox"))?;
        Ok(done.rows_affected())
    }
}

/// When the inbox prunes next, and how often.
struct Pruning {
    next: tokio::time::Instant,
    every: Duration,
}

impl Pruning {
    /// About every tenth of the retention, at least every hour, at most every second; the first one now.
    fn new(retention: Duration) -> Self {
        Self {
            next: tokio::time::Instant::now(),
            every: (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600)),
        }
    }

    async fn prune_if_due<H: Handler>(&mut self, inbox: &Inbox<H>) {
        if tokio::time::Instant::now() < self.next {
            return;
        }
        match inbox.prune().await {
            Ok(n) if n > 0 => info!(consumer = %inbox.name, pruned = n, "pruned the inbox"),
            Ok(_) => {}
            Err(e) => warn!(consumer = %inbox.name, error = %e, "pruning the inbox failed"),
        }
        self.next = tokio::time::Instant::now() + self.every;
    }
}

fn unavailable(operation: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        url: String::new(),
        operation,
        cause: e.to_string(),
    }
}

/// The pause after `failures` transient failures in a row.
fn next_pause(failures: u32) -> Duration {
    backoff(TRANSIENT_FIRST, failures, TRANSIENT_CAP)
}

/// Waits the pause after one more transient failure in a row; `None` when the inbox is told to stop meanwhile.
async fn pause(failures: &mut u32, stopped: &mut watch::Receiver<bool>) -> Option<()> {
    let wait = next_pause(*failures);
    *failures = failures.saturating_add(1);
    tokio::select! {
        () = tokio::time::sleep(wait) => Some(()),
        _ = stopped.wait_for(|s| *s) => None,
    }
}
