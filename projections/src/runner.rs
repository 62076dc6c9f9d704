//! The engine shared by the live runner, rebuilds and replays: batches, failure policies, leases, swaps.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use annals::{Event, EventStore, Payload, Position, RecordedEvent};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use crate::backend::{Acquired, Backend, BatchTx, Commit, Slot, parked_from};
use crate::documents::{DocBuffer, Documents};
use crate::error::{BoxError, Error, Result, is_transient_sqlx};
use crate::policy::ProjectionOptions;
use crate::projection::{Projection, SqlProjection};
use crate::read_ahead::ReadAhead;
use crate::status::{Progress, RebuildOutcome, RebuildReport, ReplayReport, SlotState};

/// Pages a catching-up or rebuilding runner reads ahead of the batch it applies.
const READ_AHEAD_PAGES: usize = 2;

/// The projection code behind a registration.
#[derive(Clone)]
pub(crate) enum Kind {
    Docs(Arc<dyn Projection>),
    Sql(Arc<dyn SqlProjection>),
}

/// One registered projection.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) event_types: Vec<String>,
    pub(crate) kind: Kind,
    pub(crate) options: ProjectionOptions,
}

impl Registered {
    fn wants(&self, event: &RecordedEvent) -> bool {
        self.event_types.is_empty() || self.event_types.contains(&event.event_type)
    }

    async fn reset_hook(&self) -> Result<()> {
        if let Kind::Docs(p) = &self.kind {
            p.reset().await.map_err(|e| Error::Hook {
                projection: self.name.clone(),
                hook: "reset",
                cause: e.to_string(),
            })?;
        }
        Ok(())
    }

    async fn caught_up_hook(&self, position: Position) {
        match &self.kind {
            Kind::Docs(p) => p.caught_up(position).await,
            Kind::Sql(p) => p.caught_up(position).await,
        }
    }
}

/// Brings an event written under an older name or schema version up to date (see
/// [`Projections::upcasting`](crate::Projections::upcasting)): `None` when it is current.
pub(crate) type Upcaster =
    fn(&RecordedEvent) -> std::result::Result<Option<RecordedEvent>, BoxError>;

/// The [`Upcaster`] of event type `E`: the event as `E::upcast` rewrites it (name and payload), with the
/// rewritten event's current schema version.
pub(crate) fn upcaster<E: Event>() -> Upcaster {
    |event| {
        let Some((name, payload)) =
            E::upcast(&event.event_type, event.schema_version, &event.payload)
                .map_err(|reason| event.decode_error(format!("upcasting failed: {reason}")))?
        else {
            return Ok(None);
        };
        let payload = Payload::from(payload);
        let decoded = E::decode(&name, &payload).map_err(|e| event.decode_error(e))?;
        let mut current = event.clone();
        current.event_type = name;
        current.schema_version = decoded.schema_version();
        current.payload = payload;
        Ok(Some(current))
    }
}

/// A wanted event of a batch, as projections see it, with its index in the batch.
type Wanted<'e> = (usize, Cow<'e, RecordedEvent>);

/// Why a batch did not commit.
enum BatchError {
    /// The projection failed on the event at this index of the batch (`None`: the batch failed and which
    /// event caused it is unknown; the runner retries the events one by one to find it).
    Apply {
        index: Option<usize>,
        error: BoxError,
    },
    /// Infrastructure (store, database, ownership).
    Infra(Error),
}

impl From<Error> for BatchError {
    fn from(e: Error) -> Self {
        Self::Infra(e)
    }
}

/// Whether an error from projection code is really a transient infrastructure failure (retry the batch: a lost
/// connection, a deadlock, a lost lease) or a failure of the event (the failure policy decides), by SQLSTATE.
fn classify(index: Option<usize>, error: BoxError) -> BatchError {
    let transient = if let Some(e) = error.downcast_ref::<Error>() {
        e.is_transient() && !matches!(e, Error::Busy { .. })
    } else if let Some(e) = error.downcast_ref::<sqlx::Error>() {
        is_transient_sqlx(e)
    } else {
        false
    };
    if !transient {
        return BatchError::Apply { index, error };
    }
    let error = match error.downcast::<Error>() {
        Ok(e) => return BatchError::Infra(*e),
        Err(error) => error,
    };
    match error.downcast::<sqlx::Error>() {
        Ok(source) => BatchError::Infra(Error::Database {
            operation: "apply",
            source: *source,
        }),
        Err(error) => BatchError::Apply { index, error },
    }
}

/// How a failed commit counts: transient errors are retried; permanent ones (a document PostgreSQL refuses)
/// are the failure of an event of the batch: `only` when the batch holds a single wanted event, else unknown.
fn commit_failure(error: Error, only: Option<usize>) -> BatchError {
    if error.is_transient() {
        BatchError::Infra(error)
    } else {
        BatchError::Apply {
            index: only,
            error: Box::new(error),
        }
    }
}

/// Events per second over windows of about a second.
struct Rate {
    since: Instant,
    events: usize,
    last: Option<f64>,
}

impl Rate {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            events: 0,
            last: None,
        }
    }

    fn add(&mut self, events: usize) {
        self.events += events;
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.last = Some(self.events as f64 / elapsed.as_secs_f64());
            self.since = Instant::now();
            self.events = 0;
        }
    }

    fn get(&self) -> Option<f64> {
        self.last
    }
}

/// What became of a failing event.
enum Poison {
    /// A retry succeeded.
    Applied,
    /// Parked in the dead-letter list.
    Parked,
    /// Shutdown came during a retry's backoff; the event is not applied.
    Interrupted,
}

/// Shared by every runner of one [`Projections`](crate::Projections).
pub(crate) struct Engine {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) owner: Uuid,
    pub(crate) lease_ttl: Duration,
    pub(crate) notifiers: Mutex<HashMap<String, watch::Sender<Position>>>,
    /// Applied to every event before filtering and applying, in order; the first that rewrites it wins.
    pub(crate) upcasters: Vec<Upcaster>,
}

/// Stops a loop when `true` is sent or the sender is dropped.
pub(crate) type Shutdown = watch::Receiver<bool>;

fn is_shut(shutdown: &Shutdown) -> bool {
    *shutdown.borrow()
}

/// Sleeps for `d` unless shutdown comes first; returns whether shutdown came.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut Shutdown) -> bool {
    if is_shut(shutdown) {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        r = shutdown.wait_for(|s| *s) => { let _ = r; true }
    }
}

impl Engine {
    pub(crate) fn notifier(&self, name: &str) -> watch::Sender<Position> {
        let mut map = self
            .notifiers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_owned())
            .or_insert_with(|| watch::channel(Position::START).0)
            .clone()
    }

    fn notify(&self, slot: &Slot) {
        if slot.live {
            self.notifier(&slot.name).send_if_modified(|p| {
                let grew = slot.checkpoint > *p;
                if grew {
                    *p = slot.checkpoint;
                }
                grew
            });
        }
    }

    /// The event as projections see it: brought up to date by the registered upcasters.
    fn current<'e>(
        &self,
        event: &'e RecordedEvent,
    ) -> std::result::Result<Cow<'e, RecordedEvent>, BoxError> {
        for upcast in &self.upcasters {
            if let Some(current) = upcast(event)? {
                return Ok(Cow::Owned(current));
            }
        }
        Ok(Cow::Borrowed(event))
    }

    /// The events of `events` that `p` wants, upcast, with their index in `events`. Filters on the name the
    /// event has after upcasting (a renamed event reaches the projections listing its new name).
    fn wanted<'e>(
        &self,
        p: &Registered,
        events: &'e [RecordedEvent],
    ) -> std::result::Result<Vec<Wanted<'e>>, (usize, BoxError)> {
        let mut wanted = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let current = self.current(event).map_err(|error| (index, error))?;
            if p.wants(&current) {
                wanted.push((index, current));
            }
        }
        Ok(wanted)
    }

    /// Applies `events` inside `tx`, reading and writing documents through `buffer` (so a transaction that spans
    /// several pages sees its own earlier writes); returns the indexes of the events the projection wanted.
    async fn apply_into(
        &self,
        p: &Registered,
        tx: &mut dyn BatchTx,
        events: &[RecordedEvent],
        buffer: &mut DocBuffer,
    ) -> std::result::Result<Vec<usize>, BatchError> {
        let wanted = self
            .wanted(p, events)
            .map_err(|(index, error)| BatchError::Apply {
                index: Some(index),
                error,
            })?;
        match &p.kind {
            Kind::Docs(projection) => {
                for (index, event) in &wanted {
                    let mut docs = Documents {
                        source: tx.docs(),
                        buffer: &mut *buffer,
                    };
                    projection
                        .apply(event, &mut docs)
                        .await
                        .map_err(|e| classify(Some(*index), e))?;
                    if let Some(refused) = buffer.take_refused() {
                        return Err(BatchError::Apply {
                            index: Some(*index),
                            error: Box::new(refused),
                        });
                    }
                }
            }
            Kind::Sql(projection) => {
                let mut sql = tx.sql().ok_or_else(|| Error::SqlNeedsPostgres {
                    name: p.name.clone(),
                })?;
                let refs: Vec<&RecordedEvent> = wanted.iter().map(|(_, e)| e.as_ref()).collect();
                projection
                    .apply_batch(&refs, &mut sql)
                    .await
                    .map_err(|(j, e)| {
                        // Index 0 of several means "cannot tell which": found by retrying one by one.
                        let index = match (j, wanted.len()) {
                            (0, n) if n > 1 => None,
                            (j, _) => Some(wanted.get(j).map_or(0, |w| w.0)),
                        };
                        classify(index, e)
                    })?;
            }
        }
        Ok(wanted.into_iter().map(|(index, _)| index).collect())
    }

    /// Applies one batch to `slot` and commits it with the checkpoint.
    async fn try_batch(
        &self,
        p: &Registered,
        slot: &mut Slot,
        events: &[RecordedEvent],
        state: SlotState,
        throughput: Option<f64>,
    ) -> std::result::Result<usize, BatchError> {
        let Some(last) = events.last() else {
            return Ok(0);
        };
        let mut tx = self
            .backend
            .begin(
                slot,
                self.owner,
                self.lease_ttl,
                Some(slot.checkpoint),
                false,
            )
            .await?;
        let mut buffer = DocBuffer::default();
        let wanted = self.apply_into(p, tx.as_mut(), events, &mut buffer).await?;
        let only = match wanted.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        tx.commit(Commit {
            writes: buffer.into_writes(),
            checkpoint: Some(last.position),
            state: Some(state),
            throughput,
            ..Commit::default()
        })
        .await
        .map_err(|e| commit_failure(e, only))?;
        slot.checkpoint = last.position;
        self.notify(slot);
        Ok(wanted.len())
    }

    /// Applies `events` one wanted event per transaction (the events it does not want ride along with the
    /// next one), until one fails: returns its index and error, or `None` when every one was applied.
    async fn one_by_one(
        &self,
        p: &Registered,
        slot: &mut Slot,
        events: &[RecordedEvent],
        state: SlotState,
        applied: &mut usize,
    ) -> Result<Option<(usize, BoxError)>> {
        let wanted = match self.wanted(p, events) {
            Ok(wanted) => wanted.into_iter().map(|(i, _)| i).collect::<Vec<_>>(),
            Err((at, error)) => {
                // Upcasting failed: that event is the culprit; the ones before it are applied first.
                if at > 0 {
                    match self.try_batch(p, slot, &events[..at], state, None).await {
                        Ok(n) => *applied += n,
                        Err(BatchError::Infra(e)) => return Err(e),
                        Err(BatchError::Apply { index, error }) => {
                            return Ok(Some((index.unwrap_or(0), error)));
                        }
                    }
                }
                return Ok(Some((at, error)));
            }
        };
        let mut start = 0;
        for end in wanted
            .iter()
            .map(|i| i + 1)
            .chain(std::iter::once(events.len()))
        {
            if end <= start {
                continue;
            }
            match self
                .try_batch(p, slot, &events[start..end], state, None)
                .await
            {
                Ok(n) => *applied += n,
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { index, error }) => {
                    return Ok(Some((start + index.unwrap_or(end - 1 - start), error)));
                }
            }
            start = end;
        }
        Ok(None)
    }

    /// Applies one page of events to `slot`, handling failing events by the projection's policy.
    /// Returns `false` when `stop` interrupted a retry backoff (the page is then not complete).
    #[allow(clippy::too_many_arguments)]
    async fn process_page(
        &self,
        p: &Registered,
        slot: &mut Slot,
        events: &[RecordedEvent],
        state: SlotState,
        parked: &mut usize,
        throughput: Option<f64>,
        stop: &Shutdown,
    ) -> Result<bool> {
        let mut rest = events;
        let mut applied = 0;
        while !rest.is_empty() {
            match self.try_batch(p, slot, rest, state, throughput).await {
                Ok(n) => {
                    applied += n;
                    break;
                }
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { index, error }) => {
                    let found = match index {
                        Some(0) => Some((0, error)),
                        Some(index) => {
                            match self.try_batch(p, slot, &rest[..index], state, None).await {
                                Ok(n) => {
                                    applied += n;
                                    Some((index, error))
                                }
                                Err(BatchError::Infra(e)) => return Err(e),
                                // The events before it fail too (at commit, say): find the first one that
                                // fails, one by one.
                                Err(BatchError::Apply { .. }) => {
                                    self.one_by_one(p, slot, rest, state, &mut applied).await?
                                }
                            }
                        }
                        // Which event failed is unknown: retry them one by one; the failing one alone meets
                        // the policy.
                        None => self.one_by_one(p, slot, rest, state, &mut applied).await?,
                    };
                    let Some((index, error)) = found else {
                        break;
                    };
                    let Some(poison) = rest.get(index) else {
                        break;
                    };
                    match self
                        .handle_poison(p, slot, poison, error, state, stop)
                        .await?
                    {
                        Poison::Applied => {}
                        Poison::Parked => *parked += 1,
                        Poison::Interrupted => return Ok(false),
                    }
                    applied += 1;
                    rest = &rest[index + 1..];
                }
            }
        }
        debug!(applied, "page applied");
        Ok(true)
    }

    /// The batch after `slot.checkpoint`: from the read-ahead when it is at that position, else read directly.
    /// A full batch read directly starts a read-ahead after it; a short batch or an error from the read-ahead
    /// ends it (the next call reads directly again).
    async fn next_page(
        &self,
        p: &Registered,
        slot: &Slot,
        ahead: &mut Option<ReadAhead>,
    ) -> annals::Result<Vec<RecordedEvent>> {
        let batch = p.options.batch_size;
        if let Some(reader) = ahead.as_mut().filter(|r| r.after() == slot.checkpoint) {
            let events = reader.next(batch).await;
            if !matches!(&events, Ok(events) if events.len() >= batch) {
                *ahead = None;
            }
            return events;
        }
        let events = self.store.read_all(slot.checkpoint, batch).await?;
        *ahead = match events.last() {
            Some(last) if events.len() >= batch && p.options.read_ahead > 0 => {
                Some(ReadAhead::start(
                    Arc::clone(&self.store),
                    last.position,
                    batch.max(p.options.read_ahead),
                    READ_AHEAD_PAGES,
                ))
            }
            _ => None,
        };
        Ok(events)
    }

    /// Retries, parks or stops at a failing event.
    async fn handle_poison(
        &self,
        p: &Registered,
        slot: &mut Slot,
        event: &RecordedEvent,
        first: BoxError,
        state: SlotState,
        stop: &Shutdown,
    ) -> Result<Poison> {
        let policy = p.options.failure_policy;
        let mut error = first;
        let mut attempts = 1;
        while attempts <= policy.retries {
            let delay = policy.delay(attempts - 1);
            warn!(projection = %p.name, position = event.position.get(), attempt = attempts,
                  ?delay, error = %error, "projection failed on an event; retrying");
            if sleep_or_shutdown(delay, &mut stop.clone()).await {
                return Ok(Poison::Interrupted);
            }
            attempts += 1;
            match self
                .try_batch(p, slot, std::slice::from_ref(event), state, None)
                .await
            {
                Ok(_) => return Ok(Poison::Applied),
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { error: e, .. }) => error = e,
            }
        }
        if policy.park {
            warn!(projection = %p.name, position = event.position.get(), stream = %event.stream_id,
                  event_type = %event.event_type, error = %error, "parking event");
            let tx = self
                .backend
                .begin(
                    slot,
                    self.owner,
                    self.lease_ttl,
                    Some(slot.checkpoint),
                    false,
                )
                .await?;
            tx.commit(Commit {
                checkpoint: Some(event.position),
                park: vec![parked_from(event, error.to_string(), attempts)],
                ..Commit::default()
            })
            .await?;
            slot.checkpoint = event.position;
            self.notify(slot);
            return Ok(Poison::Parked);
        }
        let failure = Error::ProjectionFailed {
            projection: p.name.clone(),
            position: event.position,
            stream: event.stream_id.clone(),
            event_type: event.event_type.clone(),
            event_id: event.event_id,
            attempts,
            cause: error.to_string(),
        };
        let message = failure.to_string();
        tracing::error!(error = %message, "projection stopped");
        self.backend.fail(slot, self.owner, &message).await?;
        Err(failure)
    }

    /// Runs one projection live until shutdown: acquires its lease, catches up, follows new events, re-acquires
    /// after losing ownership, rebuilds when its version changed.
    pub(crate) async fn run(&self, p: &Registered, mut shutdown: Shutdown) -> Result<()> {
        let mut backoff = Duration::from_millis(100);
        // How often a waiting runner asks again: a dead owner's session frees its lock at once, so the takeover
        // waits at most this long after the server noticed the death (never the whole TTL).
        let poll =
            (self.lease_ttl / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        loop {
            if is_shut(&shutdown) {
                return Ok(());
            }
            let slot = match self
                .backend
                .acquire_live(p, self.owner, self.lease_ttl)
                .await
            {
                Ok(Acquired::Slot(slot)) => slot,
                Ok(Acquired::Busy) => {
                    if sleep_or_shutdown(poll, &mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) if e.is_transient() => {
                    warn!(projection = %p.name, error = %e, "cannot acquire the projection; retrying");
                    if sleep_or_shutdown(backoff, &mut shutdown).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if slot.version > p.version {
                self.backend.release(&slot, self.owner).await?;
                return Err(Error::VersionAhead {
                    projection: p.name.clone(),
                    stored: slot.version,
                    code: p.version,
                });
            }
            if slot.version < p.version {
                info!(projection = %p.name, from = slot.version, to = p.version,
                      "projection version changed; rebuilding while the old version serves reads");
                self.backend.release(&slot, self.owner).await?;
                match self.rebuild(p, &|_| {}, shutdown.clone()).await {
                    Ok(_) => continue,
                    Err(e) if e.is_transient() => {
                        if sleep_or_shutdown(poll, &mut shutdown).await {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if slot.fresh {
                p.reset_hook().await?;
            }
            info!(projection = %p.name, checkpoint = slot.checkpoint.get(), generation = slot.generation,
                  "runner owns the projection");
            let mut slot = slot;
            match self.follow(p, &mut slot, &mut shutdown).await {
                Ok(()) => {
                    self.backend.release(&slot, self.owner).await?;
                    return Ok(());
                }
                Err(Error::LostOwnership { .. }) => {
                    debug!(projection = %p.name, "lost ownership; re-acquiring");
                }
                Err(e) if e.is_transient() => {
                    warn!(projection = %p.name, error = %e, "projection runner hit an error; retrying");
                    if sleep_or_shutdown(backoff, &mut shutdown).await {
                        let _ = self.backend.release(&slot, self.owner).await;
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    let _ = self.backend.release(&slot, self.owner).await;
                    return Err(e);
                }
            }
        }
    }

    /// Catches up and follows the store on an owned live slot until shutdown.
    async fn follow(&self, p: &Registered, slot: &mut Slot, shutdown: &mut Shutdown) -> Result<()> {
        let heartbeat = (self.lease_ttl / 3).max(Duration::from_millis(10));
        let batch = p.options.batch_size;
        let mut live = false;
        let mut pending_caught_up = true;
        let mut parked = 0;
        let mut ahead = None;
        let mut rate = Rate::new();
        self.notify(slot);
        loop {
            if is_shut(shutdown) {
                return Ok(());
            }
            let events = self.next_page(p, slot, &mut ahead).await?;
            if events.is_empty() {
                if !live {
                    self.backend
                        .renew(slot, self.owner, self.lease_ttl, SlotState::Live)
                        .await?;
                    live = true;
                }
                if pending_caught_up {
                    p.caught_up_hook(slot.checkpoint).await;
                    pending_caught_up = false;
                }
                let waited = tokio::select! {
                    head = self.store.wait_for_events(slot.checkpoint, heartbeat) => Some(head?),
                    r = shutdown.wait_for(|s| *s) => { let _ = r; None }
                };
                match waited {
                    None => return Ok(()),
                    Some(head) if head <= slot.checkpoint => {
                        self.backend
                            .renew(slot, self.owner, self.lease_ttl, SlotState::Live)
                            .await?;
                    }
                    Some(_) => {}
                }
                continue;
            }
            let state = if events.len() >= batch {
                live = false;
                SlotState::CatchingUp
            } else {
                live = true;
                SlotState::Live
            };
            pending_caught_up = true;
            let span = info_span!("projection_batch", projection = %p.name,
                                  from = slot.checkpoint.get(), events = events.len());
            self.process_page(p, slot, &events, state, &mut parked, rate.get(), shutdown)
                .instrument(span)
                .await?;
            rate.add(events.len());
        }
    }

    /// Builds the projection's current version into a fresh generation and swaps it in when caught up.
    pub(crate) async fn rebuild(
        &self,
        p: &Registered,
        progress: &(dyn Fn(Progress) + Send + Sync),
        cancel: Shutdown,
    ) -> Result<RebuildReport> {
        let span = info_span!("projection_rebuild", projection = %p.name, version = p.version);
        self.rebuild_inner(p, progress, cancel)
            .instrument(span)
            .await
    }

    async fn rebuild_inner(
        &self,
        p: &Registered,
        progress: &(dyn Fn(Progress) + Send + Sync),
        cancel: Shutdown,
    ) -> Result<RebuildReport> {
        let mut slot = match self
            .backend
            .acquire_building(p, self.owner, self.lease_ttl)
            .await?
        {
            Acquired::Slot(slot) => slot,
            Acquired::Busy => {
                return Err(Error::Busy {
                    projection: p.name.clone(),
                    what: "rebuild",
                });
            }
        };
        if slot.fresh {
            p.reset_hook().await?;
        }
        let started = Instant::now();
        let resumed_from = slot.checkpoint;
        let mut total = self.store.head().await?.get();
        let mut events_read = 0u64;
        let mut parked = 0usize;
        let report = |slot: &Slot, outcome, events, parked| RebuildReport {
            name: p.name.clone(),
            version: p.version,
            outcome,
            checkpoint: slot.checkpoint,
            resumed_from,
            events,
            elapsed: started.elapsed(),
            parked,
        };
        info!(
            resumed_from = resumed_from.get(),
            head = total,
            "rebuild started"
        );
        let mut ahead = None;
        let mut rate = Rate::new();
        progress(Progress {
            done: slot.checkpoint.get(),
            total: total.max(slot.checkpoint.get()),
            events: 0,
            elapsed: started.elapsed(),
        });
        loop {
            if is_shut(&cancel) {
                self.backend.release(&slot, self.owner).await?;
                info!(
                    checkpoint = slot.checkpoint.get(),
                    "rebuild cancelled; it will resume from here"
                );
                return Ok(report(
                    &slot,
                    RebuildOutcome::Cancelled,
                    events_read,
                    parked,
                ));
            }
            let read = self.next_page(p, &slot, &mut ahead).await;
            let events = match read {
                Ok(events) => events,
                Err(e) => {
                    let _ = self.backend.release(&slot, self.owner).await;
                    return Err(e.into());
                }
            };
            if events.is_empty() {
                match self.swap(p, &mut slot).await {
                    Ok(true) => {
                        info!(
                            checkpoint = slot.checkpoint.get(),
                            "rebuild complete; new version is live"
                        );
                        progress(Progress {
                            done: slot.checkpoint.get(),
                            total: total.max(slot.checkpoint.get()),
                            events: events_read,
                            elapsed: started.elapsed(),
                        });
                        return Ok(report(
                            &slot,
                            RebuildOutcome::Completed,
                            events_read,
                            parked,
                        ));
                    }
                    Ok(false) => continue,
                    Err(e) => {
                        let _ = self.backend.release(&slot, self.owner).await;
                        return Err(e);
                    }
                }
            }
            events_read += events.len() as u64;
            match self
                .process_page(
                    p,
                    &mut slot,
                    &events,
                    SlotState::Rebuilding,
                    &mut parked,
                    rate.get(),
                    &cancel,
                )
                .await
            {
                // Interrupted or not, the loop looks at `cancel` next.
                Ok(_) => {}
                Err(e) => {
                    let _ = self.backend.release(&slot, self.owner).await;
                    return Err(e);
                }
            }
            rate.add(events.len());
            total = total.max(slot.checkpoint.get());
            progress(Progress {
                done: slot.checkpoint.get(),
                total,
                events: events_read,
                elapsed: started.elapsed(),
            });
        }
    }

    /// Tries to make the building `slot` live: locks the live generation, applies whatever the live one has
    /// processed beyond the rebuild's checkpoint, and swaps. Returns `false` when an event failed in the final
    /// catch-up (the caller processes it with the failure policy and tries again).
    async fn swap(&self, p: &Registered, slot: &mut Slot) -> Result<bool> {
        let mut tx = self
            .backend
            .begin(
                slot,
                self.owner,
                self.lease_ttl,
                Some(slot.checkpoint),
                true,
            )
            .await?;
        let live = tx.live_checkpoint().unwrap_or(Position::START);
        let mut checkpoint = slot.checkpoint;
        let mut writes = DocBuffer::default();
        while checkpoint < live {
            let events = self
                .store
                .read_all(checkpoint, p.options.batch_size)
                .await?;
            let Some(last) = events.last() else { break };
            let last = last.position;
            // One buffer for every page: later pages read what earlier ones wrote in this transaction.
            match self.apply_into(p, tx.as_mut(), &events, &mut writes).await {
                Ok(_) => {}
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { .. }) => return Ok(false),
            }
            checkpoint = last;
        }
        let caught_up = checkpoint > slot.checkpoint;
        match tx
            .commit(Commit {
                writes: writes.into_writes(),
                checkpoint: Some(checkpoint),
                state: Some(SlotState::Live),
                swap: true,
                ..Commit::default()
            })
            .await
        {
            Ok(()) => {}
            // A write of the final catch-up refused for good: the rebuild loop applies those events under the
            // failure policy and swaps again.
            Err(e) if caught_up && !e.is_transient() && !matches!(e, Error::SwapRefused { .. }) => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        slot.checkpoint = checkpoint;
        slot.live = true;
        self.notify(slot);
        Ok(true)
    }

    /// Applies the parked events of the live generation again, in position order; removes those that succeed.
    /// Takes the live lease for the duration and gives it back on every way out, failures included.
    pub(crate) async fn replay_parked(&self, p: &Registered) -> Result<ReplayReport> {
        let parked = self.backend.parked(&p.name).await?;
        if parked.is_empty() {
            return Ok(ReplayReport::default());
        }
        let slot = match self
            .backend
            .acquire_live(p, self.owner, self.lease_ttl)
            .await?
        {
            Acquired::Slot(slot) => slot,
            Acquired::Busy => {
                return Err(Error::Busy {
                    projection: p.name.clone(),
                    what: "live read model",
                });
            }
        };
        let replayed = self.replay_owned(p, &slot, parked).await;
        let released = self.backend.release(&slot, self.owner).await;
        let report = replayed?;
        released?;
        Ok(report)
    }

    async fn replay_owned(
        &self,
        p: &Registered,
        slot: &Slot,
        parked: Vec<crate::status::ParkedEvent>,
    ) -> Result<ReplayReport> {
        let mut report = ReplayReport::default();
        for parked in parked {
            let Some(event) = self
                .store
                .read_all(Position(parked.position.get().saturating_sub(1)), 1)
                .await?
                .into_iter()
                .find(|e| e.position == parked.position)
            else {
                continue;
            };
            let tx = self
                .backend
                .begin(slot, self.owner, self.lease_ttl, None, false)
                .await?;
            let mut tx = tx;
            let mut buffer = DocBuffer::default();
            let applied = match self
                .apply_into(p, tx.as_mut(), std::slice::from_ref(&event), &mut buffer)
                .await
            {
                Ok(_) => tx
                    .commit(Commit {
                        writes: buffer.into_writes(),
                        unpark: vec![parked.position],
                        ..Commit::default()
                    })
                    .await
                    .map_err(|e| commit_failure(e, Some(0))),
                Err(e) => {
                    drop(tx);
                    Err(e)
                }
            };
            match applied {
                Ok(()) => report.replayed += 1,
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { error, .. }) => {
                    let tx = self
                        .backend
                        .begin(slot, self.owner, self.lease_ttl, None, false)
                        .await?;
                    tx.commit(Commit {
                        park: vec![parked_from(&event, error.to_string(), parked.attempts + 1)],
                        ..Commit::default()
                    })
                    .await?;
                    report.still_failing += 1;
                }
            }
        }
        Ok(report)
    }
}
