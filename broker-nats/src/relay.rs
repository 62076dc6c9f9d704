//! [`Relay`]: follows the event log from a checkpoint and publishes every committed event to JetStream.

use std::sync::{Arc, Mutex, PoisonError};

use annals::{EventStore, Position, RecordedEvent};
use annals_projections::{Projections, State};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::{Error, Result};
use crate::options::RelayOptions;
use crate::publisher::{Published, Publisher};
use crate::relay_stats::{STATS_COLLECTION, STATS_KEY, Stats};

/// The relay: the event log is the outbox. It reads a page of the gap-safe global order from its checkpoint,
/// publishes it outside any database transaction, then commits the checkpoint in a short transaction fenced by
/// its lease (a projection registered with [`Projections::leased`], so exactly one relay publishes at a time
/// across processes, on any projections backend). See `docs/event-feed.md` for the failure model and
/// `docs/adr/0010-relay-publish-then-commit.md` for the design.
#[derive(Clone)]
pub struct Relay {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) projections: Projections,
    pub(crate) publisher: Publisher,
    pub(crate) options: RelayOptions,
    pub(crate) retrying: Arc<Mutex<Option<Retrying>>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The relay's loop is waiting to start again after a transient failure (broker or database out of reach).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Retrying {
    /// The last failure.
    pub error: String,
    /// Failed attempts in a row so far.
    pub attempts: u32,
    /// When the first of them failed.
    pub since: DateTime<Utc>,
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
    /// Who holds the lease and what it does (live, catching up, stopped: no relay holds it, failed with its
    /// error).
    pub state: State,
    /// When this process's relay is retrying after a transient failure: the failure and how long it lasts
    /// (`None` in another process than the one running the relay).
    pub retrying: Option<Retrying>,
    /// Events acknowledged by the broker so far (re-published pages count again).
    pub published: u64,
    /// Of those, how many the broker reported as duplicates.
    pub duplicates: u64,
    /// Messages sent again after a lost or timed-out acknowledgement.
    pub resent: u64,
    /// When the last page was checkpointed.
    pub last_batch_at: Option<DateTime<Utc>>,
}

impl Relay {
    /// A relay reading `store`, keeping its checkpoint and lease in PostgreSQL (`pool`, the projections' tables,
    /// see [`RelayOptions::projections_schema`]) and publishing through `client`.
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
        let projections = Projections::postgres_in(
            Arc::clone(&store),
            pool,
            &options.projections_schema,
            &options.read_model_prefix,
        )?;
        Ok(Self::on_shared(store, projections, client, options))
    }

    /// A relay reading `store` whose checkpoint and lease live in `projections`, on any backend (memory,
    /// PostgreSQL, SQLite): the relay registers itself in the set as the leased projection
    /// [`RelayOptions::name`] with the relay's lease TTL. `projections` should read the same store.
    pub fn on(
        store: impl EventStore + 'static,
        projections: Projections,
        client: async_nats::Client,
        options: RelayOptions,
    ) -> Self {
        Self::on_shared(Arc::new(store), projections, client, options)
    }

    fn on_shared(
        store: Arc<dyn EventStore>,
        projections: Projections,
        client: async_nats::Client,
        options: RelayOptions,
    ) -> Self {
        let publisher = Publisher::new(
            client,
            options.subjects.clone(),
            options.max_in_flight,
            options.ack_timeout,
            options.attempts,
        );
        let projections = projections
            .lease_ttl(options.lease_ttl)
            .leased(&options.name);
        Self {
            store,
            projections,
            publisher,
            options,
            retrying: Arc::default(),
        }
    }

    /// The projections set the relay's checkpoint lives in (for `status`, `reset` and the projections CLI).
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

    /// The retry this process's relay is in, if any.
    pub(crate) fn set_retrying(&self, update: impl FnOnce(&mut Option<Retrying>)) {
        update(&mut self.retrying.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Where the relay is: checkpoint, head, lag in positions and seconds, state, retry, counters.
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
        let stats: Stats = self
            .projections
            .documents(&self.options.name)?
            .get(STATS_COLLECTION, STATS_KEY)
            .await?
            .unwrap_or_default();
        let retrying = self
            .retrying
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(RelayStatus {
            checkpoint: status.checkpoint,
            head: status.head,
            lag: status.lag,
            seconds_behind,
            state: status.state,
            retrying,
            published: stats.events,
            duplicates: stats.duplicates,
            resent: stats.resent,
            last_batch_at: stats.last_batch_at,
        })
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
