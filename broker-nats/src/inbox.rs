//! [`Inbox`]: an idempotent consumer of the feed. The handler runs in the consumer's own PostgreSQL
//! transaction, which also records `(consumer, event id)`; the broker message is acknowledged after the commit.

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use annals::{Event, Payload, RecordedEvent, async_trait};
use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::headers::FeedHeaders;

/// A boxed error from a handler.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// An event received from the feed and decoded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivery<E> {
    /// The envelope, from the message's headers.
    pub headers: FeedHeaders,
    /// The decoded (and upcast) event.
    pub event: E,
    /// The JetStream stream sequence of the message.
    pub sequence: u64,
}

/// What a consumer does with each event, inside its own transaction.
///
/// # Implementing
/// One method: [`handle`](Handler::handle). Write your effects through `conn` (it is inside the transaction
/// that also records the event in the inbox); return an error to roll them back. Errors are retried with
/// backoff up to [`InboxOptions::attempts`], then the message is parked.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The event type the feed carries (decoded with its upcasters, so old payloads arrive current).
    type Event: Event;

    /// Applies one event.
    async fn handle(
        &self,
        delivery: &Delivery<Self::Event>,
        conn: &mut PgConnection,
    ) -> std::result::Result<(), HandlerError>;
}

/// The inbox's configuration.
#[derive(Debug, Clone)]
pub struct InboxOptions {
    pub(crate) schema: String,
    pub(crate) filter: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) ack_wait: Duration,
    pub(crate) max_ack_pending: i64,
    pub(crate) retention: Duration,
}

impl Default for InboxOptions {
    fn default() -> Self {
        Self {
            schema: "annals_inbox".into(),
            filter: None,
            attempts: 5,
            backoff: Duration::from_millis(100),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl InboxOptions {
    /// The PostgreSQL schema of the inbox tables (`inbox`, `inbox_parked`; default `annals_inbox`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Only subjects matching `filter` (for example [`Subjects::category_filter`](crate::Subjects)).
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// How many times the handler runs for one event before it is parked (default 5, at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The first wait between handler attempts (default 100 ms; doubling, at most 30 s).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long the broker waits for an acknowledgement before redelivering (default 30 s).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Messages delivered but not yet acknowledged (default 1: strict per-stream order, even across
    /// redeliveries; raise it only if your handler tolerates reordering after a crash).
    pub fn max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = n.max(1);
        self
    }

    /// How long inbox rows are kept (default 7 days). Must exceed the longest time after which the same event
    /// can arrive again: see `docs/event-feed.md`.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }
}

/// A parked message: one the inbox could not apply, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Parked {
    /// The JetStream stream sequence.
    pub sequence: u64,
    /// The subject it arrived on.
    pub subject: String,
    /// The event id, when its header was readable.
    pub event_id: Option<uuid::Uuid>,
    /// Why it was parked.
    pub reason: String,
    /// How many times the handler ran (0 for malformed messages).
    pub attempts: u32,
}

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

    /// Consumes until `shutdown` completes: every message is applied once (or parked), in delivery order.
    /// Broker and database outages are retried with backoff; inbox rows older than the retention are pruned
    /// about every tenth of it (at most hourly).
    ///
    /// # Errors
    /// Configuration errors; a database error that is not a connection problem.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        self.migrate().await?;
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => { let _ = stop.send(true); }
                () = stop.closed() => {}
            }
        });
        let mut delay = Duration::from_millis(100);
        let prune_every =
            (self.options.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let mut next_prune = tokio::time::Instant::now();
        'connect: loop {
            if *stopped.borrow() {
                return Ok(());
            }
            let messages = match self.consumer().await {
                Ok(c) => c
                    .messages()
                    .await
                    .map_err(|e| unavailable("pull messages", e)),
                Err(e) => Err(e),
            };
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    warn!(consumer = %self.name, error = %e, "cannot consume; retrying");
                    if sleep_or_stop(&mut delay, &mut stopped).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            loop {
                if tokio::time::Instant::now() >= next_prune {
                    match self.prune().await {
                        Ok(n) if n > 0 => {
                            info!(consumer = %self.name, pruned = n, "pruned the inbox")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            warn!(consumer = %self.name, error = %e, "pruning the inbox failed")
                        }
                    }
                    next_prune = tokio::time::Instant::now() + prune_every;
                }
                let next = tokio::select! {
                    m = messages.next() => m,
                    _ = stopped.wait_for(|s| *s) => return Ok(()),
                    () = tokio::time::sleep_until(next_prune) => continue,
                };
                let message = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        warn!(consumer = %self.name, error = %e, "receiving failed; reconnecting");
                        if sleep_or_stop(&mut delay, &mut stopped).await {
                            return Ok(());
                        }
                        continue 'connect;
                    }
                    None => continue 'connect,
                };
                match self.process(&message).await {
                    Ok(outcome) => {
                        delay = Duration::from_millis(100);
                        debug!(consumer = %self.name, ?outcome, "message processed");
                    }
                    Err(e) if e.is_transient() => {
                        warn!(consumer = %self.name, error = %e, "processing failed; the broker will redeliver");
                        let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                        if sleep_or_stop(&mut delay, &mut stopped).await {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Applies one message: parks it when malformed, acknowledges a duplicate, else runs the handler in a
    /// transaction that records the inbox row, retrying handler errors with backoff up to the attempts, then
    /// parking. The message is acknowledged (or terminated) only after the commit.
    ///
    /// # Errors
    /// [`Error::Database`] (the message is left unacknowledged, so the broker redelivers it);
    /// [`Error::Unavailable`] when the acknowledgement could not be confirmed (the redelivery is absorbed).
    pub async fn process(&self, message: &Message) -> Result<Outcome> {
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let headers = match FeedHeaders::parse(message.headers.as_ref()) {
            Ok(h) => h,
            Err(reason) => return self.park(message, sequence, None, reason, 0).await,
        };
        let payload = match std::str::from_utf8(&message.payload)
            .map_err(|e| e.to_string())
            .and_then(|s| Payload::from_json(s).map_err(|e| e.to_string()))
        {
            Ok(p) => p,
            Err(e) => {
                let reason = format!("the payload is not JSON: {e}");
                return self
                    .park(message, sequence, Some(headers.event_id.0), reason, 0)
                    .await;
            }
        };
        let recorded = RecordedEvent {
            event_id: headers.event_id,
            stream_id: headers.stream_id.clone(),
            stream_version: headers.stream_version,
            position: headers.position,
            recorded_at: headers.recorded_at,
            event_type: headers.event_type.clone(),
            schema_version: headers.schema_version,
            payload,
            metadata: annals::Metadata {
                correlation_id: headers.correlation_id.clone(),
                causation_id: headers.causation_id.clone(),
                ..annals::Metadata::default()
            },
        };
        let event = match recorded.decode::<H::Event>() {
            Ok(e) => e,
            Err(e) => {
                let reason = format!("the event does not decode: {e}");
                return self
                    .park(message, sequence, Some(headers.event_id.0), reason, 0)
                    .await;
            }
        };
        let delivery = Delivery {
            headers,
            event,
            sequence,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.pool.begin().await.map_err(Error::db("begin"))?;
            let inserted = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {} (consumer, event_id, stream_id, stream_version, position) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                self.table("inbox")
            )))
            .bind(&self.name)
            .bind(delivery.headers.event_id.0)
            .bind(delivery.headers.stream_id.as_str())
            .bind(i64::try_from(delivery.headers.stream_version.0).unwrap_or(i64::MAX))
            .bind(i64::try_from(delivery.headers.position.get()).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(Error::db("record in inbox"))?;
            if inserted.rows_affected() == 0 {
                drop(tx);
                debug!(consumer = %self.name, event_id = %delivery.headers.event_id, "duplicate; acknowledging");
                self.ack(message, AckKind::Ack).await?;
                return Ok(Outcome::Duplicate);
            }
            match self.handler.handle(&delivery, &mut tx).await {
                Ok(()) => {
                    tx.commit().await.map_err(Error::db("commit"))?;
                    self.ack(message, AckKind::Ack).await?;
                    return Ok(Outcome::Applied);
                }
                Err(e) => {
                    drop(tx);
                    if let Some(db) = e.downcast_ref::<sqlx::Error>()
                        && is_connection_error(db)
                    {
                        return Err(Error::Database {
                            operation: "handler",
                            source: match e.downcast::<sqlx::Error>() {
                                Ok(e) => *e,
                                Err(e) => sqlx::Error::Protocol(e.to_string()),
                            },
                        });
                    }
                    if attempt >= self.options.attempts {
                        let reason = format!("the handler failed {attempt} time(s): {e}");
                        let id = Some(delivery.headers.event_id.0);
                        return self.park(message, sequence, id, reason, attempt).await;
                    }
                    let wait = self
                        .options
                        .backoff
                        .saturating_mul(1u32 << (attempt - 1).min(16))
                        .min(Duration::from_secs(30));
                    warn!(consumer = %self.name, event_id = %delivery.headers.event_id, attempt, ?wait,
                          error = %e, "handler failed; retrying");
                    // Tell the broker we are still on it, so it does not redeliver meanwhile.
                    let _ = message.ack_with(AckKind::Progress).await;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn park(
        &self,
        message: &Message,
        sequence: u64,
        event_id: Option<uuid::Uuid>,
        reason: String,
        attempts: u32,
    ) -> Result<Outcome> {
        warn!(consumer = %self.name, sequence, subject = %message.subject, %reason, "parking the message");
        let headers: serde_json::Map<String, serde_json::Value> = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(k, v)| {
                let values: Vec<serde_json::Value> = v
                    .iter()
                    .map(|v| serde_json::Value::from(v.as_str()))
                    .collect();
                (k.to_string(), serde_json::Value::from(values))
            })
            .collect();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (consumer, sequence, subject, event_id, reason, attempts, headers, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (consumer, sequence) DO NOTHING",
            self.table("inbox_parked")
        )))
        .bind(&self.name)
        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
        .bind(message.subject.as_str())
        .bind(event_id)
        .bind(&reason)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .bind(sqlx::types::Json(serde_json::Value::Object(headers)))
        .bind(message.payload.as_ref())
        .execute(&self.pool)
        .await
        .map_err(Error::db("park message"))?;
        self.ack(message, AckKind::Term).await?;
        Ok(Outcome::Parked)
    }

    async fn ack(&self, message: &Message, kind: AckKind) -> Result<()> {
        let result = match kind {
            AckKind::Ack => message.double_ack().await,
            other => message.ack_with(other).await,
        };
        result.map_err(|e| unavailable("acknowledge", e))
    }

    /// The parked messages of this consumer, oldest first.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn parked(&self) -> Result<Vec<Parked>> {
        use sqlx::Row;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT sequence, subject, event_id, reason, attempts FROM {} WHERE consumer = $1 ORDER BY sequence",
            self.table("inbox_parked")
        )))
        .bind(&self.name)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::db("list parked messages"))?;
        rows.iter()
            .map(|r| {
                let col = |c: &'static str| {
                    move |e| Error::Database {
                        operation: c,
                        source: e,
                    }
                };
                Ok(Parked {
                    sequence: u64::try_from(
                        r.try_get::<i64, _>("sequence")
                            .map_err(col("read inbox_parked.sequence"))?,
                    )
                    .unwrap_or(0),
                    subject: r
                        .try_get("subject")
                        .map_err(col("read inbox_parked.subject"))?,
                    event_id: r
                        .try_get("event_id")
                        .map_err(col("read inbox_parked.event_id"))?,
                    reason: r
                        .try_get("reason")
                        .map_err(col("read inbox_parked.reason"))?,
                    attempts: u32::try_from(
                        r.try_get::<i32, _>("attempts")
                            .map_err(col("read inbox_parked.attempts"))?,
                    )
                    .unwrap_or(0),
                })
            })
            .collect()
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

fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

fn unavailable(operation: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        url: String::new(),
        operation,
        cause: e.to_string(),
    }
}

async fn sleep_or_stop(delay: &mut Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    let d = *delay;
    *delay = (*delay * 2).min(Duration::from_secs(30));
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        _ = stopped.wait_for(|s| *s) => true,
    }
}
