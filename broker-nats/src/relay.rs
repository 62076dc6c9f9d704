//! [`Relay`]: follows the event log from a checkpoint and publishes every committed event to JetStream.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals::{EventStore, Position, RecordedEvent, async_trait};
use annals_projections::{
    BoxError, FailurePolicy, ProjectionOptions, Projections, SqlProjection, SqlTx, State,
};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool, Row};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::error::{Error, Result};
use crate::options::RelayOptions;
use crate::publisher::{Published, Publisher};

/// The table, in the relay's read-model schema, that counts what the relay published. Its row is updated in
/// every batch's transaction after the broker acknowledged the batch and before the checkpoint commits.
pub const STATS_TABLE: &str = "relay_stats";

/// The relay: the event log is the outbox. It is a [`SqlProjection`] run by [`Projections`], so it inherits
/// their checkpoint (committed only after the broker acknowledged the whole batch), their lease and takeover
/// (exactly one relay publishes at a time across processes), and their status and lag.
///
/// See the crate documentation for an example and `docs/event-feed.md` for the consistency model.
#[derive(Clone)]
pub struct Relay {
    store: Arc<dyn EventStore>,
    pool: PgPool,
    projections: Projections,
    publisher: Publisher,
    options: RelayOptions,
    transient: Arc<AtomicBool>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What the relay has done and how far behind the log it is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RelayStatus {
    /// The position of the last event acknowledged by the broker and checkpointed.
    pub checkpoint: Position,
    /// The event log's head.
    pub head: Position,
    /// Positions between the checkpoint and the head.
    pub lag: u64,
    /// Seconds between now and the recording of the oldest event not yet published (0 when caught up).
    pub seconds_behind: f64,
    /// What the runner is doing (live, catching up, stopped, failed with its error).
    pub state: State,
    /// Events acknowledged by the broker so far (re-published batches count again).
    pub published: u64,
    /// Of those, how many the broker reported as duplicates.
    pub duplicates: u64,
    /// Messages sent again after a lost or timed-out acknowledgement.
    pub resent: u64,
    /// When the last batch was acknowledged.
    pub last_batch_at: Option<DateTime<Utc>>,
}

struct RelayProjection {
    name: String,
    instance: String,
    publisher: Publisher,
    transient: Arc<AtomicBool>,
}

#[async_trait]
impl SqlProjection for RelayProjection {
    fn name(&self) -> &str {
        &self.name
    }

    async fn setup(&self, tx: &mut SqlTx<'_>) -> std::result::Result<(), BoxError> {
        let table = tx.table(STATS_TABLE);
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                 id smallint PRIMARY KEY CHECK (id = 1),
                 batches bigint NOT NULL DEFAULT 0,
                 events bigint NOT NULL DEFAULT 0,
                 duplicates bigint NOT NULL DEFAULT 0,
                 resent bigint NOT NULL DEFAULT 0,
                 last_position bigint NOT NULL DEFAULT 0,
                 last_batch_at timestamptz
             );
             INSERT INTO {table} (id) VALUES (1) ON CONFLICT DO NOTHING;"
        )))
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    async fn apply(
        &self,
        event: &RecordedEvent,
        tx: &mut SqlTx<'_>,
    ) -> std::result::Result<(), BoxError> {
        self.apply_batch(&[event], tx).await.map_err(|(_, e)| e)
    }

    async fn apply_batch(
        &self,
        events: &[&RecordedEvent],
        tx: &mut SqlTx<'_>,
    ) -> std::result::Result<(), (usize, BoxError)> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let span = info_span!("relay_batch", relay = %self.instance, from = first.position.get(),
                              to = last.position.get(), events = events.len());
        let published: Published = match self.publisher.publish(events).instrument(span).await {
            Ok(p) => p,
            Err((index, e)) => {
                self.transient.store(e.is_transient(), Ordering::Relaxed);
                warn!(relay = %self.instance, error = %e, "publishing a batch failed");
                return Err((index, Box::new(e)));
            }
        };
        self.transient.store(false, Ordering::Relaxed);
        let table = tx.table(STATS_TABLE);
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {table} SET batches = batches + 1, events = events + $1, duplicates = duplicates + $2, \
             resent = resent + $3, last_position = $4, last_batch_at = now() WHERE id = 1"
        )))
        .bind(i64::try_from(published.events).unwrap_or(i64::MAX))
        .bind(i64::try_from(published.duplicates).unwrap_or(i64::MAX))
        .bind(i64::try_from(published.resent).unwrap_or(i64::MAX))
        .bind(i64::try_from(last.position.get()).unwrap_or(i64::MAX))
        .execute(tx.conn())
        .await
        .map_err(|e| (0, Box::new(e) as BoxError))?;
        info!(relay = %self.instance, from = first.position.get(), to = last.position.get(),
              events = published.events, duplicates = published.duplicates, resent = published.resent,
              "published batch");
        Ok(())
    }
}

impl Relay {
    /// A relay reading `store`, keeping its checkpoint and lease in `pool` (the projections' tables, see
    /// [`RelayOptions::projections_schema`]) and publishing through `client`.
    ///
    /// # Errors
    /// [`Error::Config`] / [`Error::Projections`] when a name in `options` is invalid.
    pub fn new(
        store: impl EventStore + 'static,
        pool: PgPool,
        client: async_nats::Client,
        options: RelayOptions,
    ) -> Result<Self> {
        let store: Arc<dyn EventStore> = Arc::new(store);
        let publisher = Publisher::new(
            client,
            options.subjects.clone(),
            options.max_in_flight,
            options.ack_timeout,
            options.attempts,
        );
        let transient = Arc::new(AtomicBool::new(false));
        let projection = RelayProjection {
            name: options.name.clone(),
            instance: options.instance.clone(),
            publisher: publisher.clone(),
            transient: Arc::clone(&transient),
        };
        let projections = Projections::postgres_in(
            Arc::clone(&store),
            pool.clone(),
            &options.projections_schema,
            &options.read_model_prefix,
        )?
        .lease_ttl(options.lease_ttl)
        .with_sql_options(
            projection,
            ProjectionOptions::new()
                .batch_size(options.batch_size)
                // Never park: a parked event would be an event never published. Retry, then stop and let
                // `run` start over when the cause was transient.
                .failure_policy(FailurePolicy::retry(6, Duration::from_millis(200))),
        );
        Ok(Self {
            store,
            pool,
            projections,
            publisher,
            options,
            transient,
        })
    }

    /// The projections set the relay runs in (for `status`, `reset` and the projections CLI).
    pub fn projections(&self) -> &Projections {
        &self.projections
    }

    /// The publisher (also used by [`republish`](Self::republish)).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The relay's options.
    pub fn options(&self) -> &RelayOptions {
        &self.options
    }

    /// Creates the JetStream stream when missing, or checks it (subjects, duplicate window).
    ///
    /// # Errors
    /// See [`FeedStream::ensure`](crate::FeedStream::ensure).
    pub async fn ensure_stream(&self) -> Result<()> {
        self.options
            .feed_stream()
            .ensure(self.publisher.context())
            .await
    }

    /// Runs the relay until `shutdown` completes: ensures the stream, takes the lease (waiting while another
    /// process holds it), catches up from the checkpoint and follows the log. Broker outages are retried with
    /// backoff (at most 30 s between attempts) for as long as they last; nothing is checkpointed past an event
    /// the broker has not acknowledged.
    ///
    /// # Errors
    /// Permanent failures only: a stream that does not fit ([`Error::StreamMismatch`]), a message JetStream
    /// refuses ([`Error::Projections`] with the position), invalid configuration.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => { let _ = stop.send(true); }
                () = stop.closed() => {}
            }
        });
        let mut backoff = Backoff::new();
        loop {
            match self.ensure_stream().await {
                Ok(()) => break,
                Err(e) if e.is_transient() => {
                    warn!(error = %e, "cannot reach JetStream to check the feed's stream; retrying");
                    if backoff.wait(&stopped).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        loop {
            if *stopped.borrow() {
                return Ok(());
            }
            let mut rx = stopped.clone();
            let result = self
                .projections
                .run(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() || self.transient.load(Ordering::Relaxed) => {
                    warn!(error = %e, "the relay stopped on a transient failure; starting again from its checkpoint");
                    if backoff.wait(&stopped).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Where the relay is: checkpoint, head, lag in positions and seconds, state, counters.
    ///
    /// # Errors
    /// Store and database errors.
    pub async fn status(&self) -> Result<RelayStatus> {
        let status = self
            .projections
            .status()
            .await?
            .into_iter()
            .find(|s| s.name == self.options.name)
            .ok_or_else(|| Error::Config {
                reason: format!("the relay {:?} is not registered", self.options.name),
            })?;
        let seconds_behind = if status.lag > 0 {
            match self.store.read_all(status.checkpoint, 1).await?.first() {
                Some(e) => ((Utc::now() - e.recorded_at).num_milliseconds().max(0) as f64) / 1000.0,
                None => 0.0,
            }
        } else {
            0.0
        };
        let mut out = RelayStatus {
            checkpoint: status.checkpoint,
            head: status.head,
            lag: status.lag,
            seconds_behind,
            state: status.state,
            published: 0,
            duplicates: 0,
            resent: 0,
            last_batch_at: None,
        };
        if let Some(schema) = self.projections.schema(&self.options.name)? {
            let sql = format!(
                "SELECT events, duplicates, resent, last_batch_at FROM \"{}\".{STATS_TABLE} WHERE id = 1",
                schema.replace('"', "\"\"")
            );
            match sqlx::query(AssertSqlSafe(sql))
                .fetch_optional(&self.pool)
                .await
            {
                Ok(Some(row)) => {
                    let col = |c: &'static str| {
                        move |e| Error::Database {
                            operation: c,
                            source: e,
                        }
                    };
                    out.published = u64::try_from(
                        row.try_get::<i64, _>("events")
                            .map_err(col("read relay_stats.events"))?,
                    )
                    .unwrap_or(0);
                    out.duplicates = u64::try_from(
                        row.try_get::<i64, _>("duplicates")
                            .map_err(col("read relay_stats.duplicates"))?,
                    )
                    .unwrap_or(0);
                    out.resent = u64::try_from(
                        row.try_get::<i64, _>("resent")
                            .map_err(col("read relay_stats.resent"))?,
                    )
                    .unwrap_or(0);
                    out.last_batch_at = row
                        .try_get("last_batch_at")
                        .map_err(col("read relay_stats.last_batch_at"))?;
                }
                Ok(None) => {}
                Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42P01") => {}
                Err(e) => return Err(Error::db("read relay_stats")(e)),
            }
        }
        Ok(out)
    }

    /// Publishes the events at positions `from..=to` (to the head when `to` is `None`) again, without touching
    /// the relay's checkpoint: for after a broker lost acknowledged messages (JetStream's lazy fsync) or a
    /// stream was restored from an old backup. Inside the duplicate window the broker drops what it has;
    /// beyond it, consumers' inboxes drop what they have seen. Returns the totals.
    ///
    /// # Errors
    /// Store errors; [`Error::Publish`] naming the first position not acknowledged.
    pub async fn republish(
        &self,
        from: Position,
        to: Option<Position>,
        progress: &(dyn Fn(Position, &Published) + Send + Sync),
    ) -> Result<Published> {
        self.ensure_stream().await?;
        let mut after = Position(from.get().saturating_sub(1));
        let mut total = Published::default();
        let head = self.store.head().await?;
        let to = to.unwrap_or(head).min(head);
        while after < to {
            let events = self.store.read_all(after, self.options.batch_size).await?;
            let events: Vec<&RecordedEvent> = events.iter().filter(|e| e.position <= to).collect();
            let Some(last) = events.last() else { break };
            let last = last.position;
            let p = self.publisher.publish(&events).await.map_err(|(_, e)| e)?;
            total.events += p.events;
            total.duplicates += p.duplicates;
            total.resent += p.resent;
            after = last;
            progress(after, &total);
        }
        Ok(total)
    }
}

/// Exponential backoff between attempts of the relay's outer loop: 200 ms doubling to 30 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(200))
    }

    /// Waits; returns whether shutdown came first.
    async fn wait(&mut self, stopped: &watch::Receiver<bool>) -> bool {
        let delay = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
        let mut rx = stopped.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            _ = rx.wait_for(|s| *s) => true,
        }
    }
}
