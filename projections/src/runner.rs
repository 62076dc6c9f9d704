//! The engine shared by the live runner, rebuilds and replays: batches, failure policies, leases, swaps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use annals::{EventStore, Position, RecordedEvent};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use crate::backend::{Acquired, Backend, BatchTx, Commit, Slot, parked_from};
use crate::documents::{DocBuffer, Documents};
use crate::error::{BoxError, Error, Result};
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

/// Why a batch did not commit.
enum BatchError {
    /// The projection failed on the event at this index of the batch.
    Apply { index: usize, error: BoxError },
    /// Infrastructure (store, database, ownership).
    Infra(Error),
}

impl From<Error> for BatchError {
    fn from(e: Error) -> Self {
        Self::Infra(e)
    }
}

/// Whether an error from projection code is really an infrastructure failure (retry the batch, not a poison
/// event).
fn classify(index: usize, error: BoxError) -> BatchError {
    if let Some(e) = error.downcast_ref::<Error>()
        && matches!(e, Error::Database { .. } | Error::LostOwnership { .. })
    {
        return match error.downcast::<Error>() {
            Ok(e) => BatchError::Infra(*e),
            Err(error) => BatchError::Apply { index, error },
        };
    }
    if let Some(e) = error.downcast_ref::<sqlx::Error>()
        && is_connection_error(e)
    {
        return match error.downcast::<sqlx::Error>() {
            Ok(source) => BatchError::Infra(Error::Database {
                operation: "apply",
                source: *source,
            }),
            Err(error) => BatchError::Apply { index, error },
        };
    }
    BatchError::Apply { index, error }
}

pub(crate) fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    )
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

    /// Applies `events` inside `tx`, reading and writing documents through `buffer` (so a transaction that spans
    /// several pages sees its own earlier writes); returns how many events the projection wanted.
    async fn apply_into(
        &self,
        p: &Registered,
        tx: &mut dyn BatchTx,
        events: &[RecordedEvent],
        buffer: &mut DocBuffer,
    ) -> std::result::Result<usize, BatchError> {
        let wanted: Vec<(usize, &RecordedEvent)> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| p.wants(e))
            .collect();
        match &p.kind {
            Kind::Docs(projection) => {
                for &(index, event) in &wanted {
                    let mut docs = Documents {
                        source: tx.docs(),
                        buffer: &mut *buffer,
                    };
                    projection
                        .apply(event, &mut docs)
                        .await
                        .map_err(|e| classify(index, e))?;
                }
            }
            Kind::Sql(projection) => {
                let mut sql = tx.sql().ok_or_else(|| Error::SqlNeedsPostgres {
                    name: p.name.clone(),
                })?;
                let refs: Vec<&RecordedEvent> = wanted.iter().map(|(_, e)| *e).collect();
                projection
                    .apply_batch(&refs, &mut sql)
                    .await
                    .map_err(|(j, e)| classify(wanted.get(j).map_or(0, |w| w.0), e))?;
            }
        }
        Ok(wanted.len())
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
        let applied = self.apply_into(p, tx.as_mut(), events, &mut buffer).await?;
        tx.commit(Commit {
            writes: buffer.into_writes(),
            checkpoint: Some(last.position),
            state: Some(state),
            throughput,
            ..Commit::default()
        })
        .await?;
        slot.checkpoint = last.position;
        self.notify(slot);
        Ok(applied)
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
                    if index > 0 {
                        match self.try_batch(p, slot, &rest[..index], state, None).await {
                            Ok(n) => applied += n,
                            Err(BatchError::Infra(e)) => return Err(e),
                            // Not reproducible at the same place: start over from the checkpoint.
                            Err(BatchError::Apply { .. }) => continue,
                        }
                    }
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
        let poll = (self.lease_ttl / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
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
        tx.commit(Commit {
            writes: writes.into_writes(),
            checkpoint: Some(checkpoint),
            state: Some(SlotState::Live),
            swap: true,
            ..Commit::default()
        })
        .await?;
        slot.checkpoint = checkpoint;
        slot.live = true;
        self.notify(slot);
        Ok(true)
    }

    /// Applies the parked events of the live generation again, in position order; removes those that succeed.
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
            let mut tx = self
                .backend
                .begin(&slot, self.owner, self.lease_ttl, None, false)
                .await?;
            let mut buffer = DocBuffer::default();
            match self
                .apply_into(p, tx.as_mut(), std::slice::from_ref(&event), &mut buffer)
                .await
            {
                Ok(_) => {
                    tx.commit(Commit {
                        writes: buffer.into_writes(),
                        unpark: vec![parked.position],
                        ..Commit::default()
                    })
                    .await?;
                    report.replayed += 1;
                }
                Err(BatchError::Infra(e)) => return Err(e),
                Err(BatchError::Apply { error, .. }) => {
                    drop(tx);
                    let tx = self
                        .backend
                        .begin(&slot, self.owner, self.lease_ttl, None, false)
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
