//! [`Projections`]: the set of projections of an application, on one backend, and everything you do with them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use annals::{EventStore, Position};
#[cfg(feature = "postgres")]
use sqlx::PgPool;
use tokio::sync::{OnceCell, watch};
use uuid::Uuid;

use crate::backend::memory::MemoryBackend;
#[cfg(feature = "postgres")]
use crate::backend::postgres::PostgresBackend;
#[cfg(feature = "sqlite")]
use crate::backend::sqlite::SqliteBackend;
use crate::backend::{Acquired, Backend};
use crate::error::{Error, Result, check_name};
use crate::lease::Lease;
use crate::policy::ProjectionOptions;
use crate::projection::Projection;
#[cfg(feature = "postgres")]
use crate::projection::SqlProjection;
use crate::reader::{DocumentReader, wait_for};
use crate::runner::{Engine, Kind, Registered};
use crate::status::{ParkedEvent, Progress, RebuildReport, ReplayReport, State, Status};
use crate::supervisor::Supervisor;

/// The projections of an application: registered once, then run, queried, rebuilt and operated.
///
/// Events come from any [`EventStore`]; read models, checkpoints, leases and dead letters live in the backend
/// chosen by the constructor: [`Projections::memory`] (process memory) or [`Projections::postgres`]. Cheap to
/// clone; clones share everything.
#[derive(Clone)]
pub struct Projections {
    engine: Arc<Engine>,
    registered: Arc<Vec<Registered>>,
    error: Option<Arc<Error>>,
    migrated: Arc<OnceCell<()>>,
    running: Arc<Mutex<Vec<String>>>,
    /// Runs each runner of [`run`](Self::run) and starts again one that ended on a transient error.
    supervisor: Supervisor,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projections")
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

/// Options of one rebuild: progress reporting and cancellation.
#[derive(Default)]
pub struct RebuildOptions {
    progress: Option<Box<dyn Fn(Progress) + Send + Sync>>,
    cancel: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for RebuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RebuildOptions").finish_non_exhaustive()
    }
}

impl RebuildOptions {
    /// No progress reporting, not cancellable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `progress` after every batch.
    pub fn on_progress(mut self, progress: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Cancels the rebuild (after the current batch) when `cancel` completes. A cancelled rebuild resumes from
    /// its checkpoint next time.
    pub fn cancel_on(mut self, cancel: impl Future<Output = ()> + Send + 'static) -> Self {
        self.cancel = Some(Box::pin(cancel));
        self
    }
}

/// Turns a future into a shutdown receiver, driven by a spawned task.
fn shutdown_from(
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
) -> watch::Receiver<bool> {
    if let Some(signal) = signal {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = signal => { let _ = tx.send(true); }
                () = tx.closed() => {}
            }
        });
        rx
    } else {
        // One sender for every call without a signal, alive for the whole process: never cancelled, and
        // nothing leaks per call.
        NEVER.get_or_init(|| watch::channel(false).0).subscribe()
    }
}

/// The sender behind every never-cancelled shutdown receiver.
static NEVER: std::sync::OnceLock<watch::Sender<bool>> = std::sync::OnceLock::new();

impl Projections {
    /// Projections whose read models live in process memory, reading events from `store`.
    pub fn memory(store: impl EventStore + 'static) -> Self {
        Self::with_backend(Arc::new(store), Arc::new(MemoryBackend::default()))
    }

    /// Projections whose read models, checkpoints, leases and dead letters live in PostgreSQL (`pool`), in the
    /// schema `annals_projections` (metadata) and one schema per read model (`rm_<name>`), reading events from
    /// `store`. The tables are created on first use (or by [`migrate`](Self::migrate)).
    #[cfg(feature = "postgres")]
    pub fn postgres(store: impl EventStore + 'static, pool: PgPool) -> Self {
        Self::with_backend(
            Arc::new(store),
            Arc::new(PostgresBackend::new(pool, "annals_projections", "rm_")),
        )
    }

    /// Like [`postgres`](Self::postgres), with the metadata schema and the read-model schema prefix named
    /// (`prefix` + projection name; the prefix must be lowercase ASCII letters, digits or `_`).
    ///
    /// # Errors
    /// [`Error::Config`] when a name is not a plain lowercase identifier.
    #[cfg(feature = "postgres")]
    pub fn postgres_in(
        store: impl EventStore + 'static,
        pool: PgPool,
        schema: &str,
        prefix: &str,
    ) -> Result<Self> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.len() <= 20
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !plain(schema) || !plain(prefix) {
            return Err(Error::Config {
                reason: format!(
                    "schema {schema:?} and prefix {prefix:?} must be 1 to 20 lowercase ASCII letters, digits or '_'"
                ),
            });
        }
        Ok(Self::with_backend(
            Arc::new(store),
            Arc::new(PostgresBackend::new(pool, schema, prefix)),
        ))
    }

    /// Projections whose read models, checkpoints, leases and dead letters live in the SQLite file of `store`
    /// (feature `sqlite`), beside its events, reading events from it. The tables (`projection_*`) are created on
    /// first use (or by [`migrate`](Self::migrate)); several processes may run and operate them on one file.
    ///
    /// Ownership is a lease row with a fencing token (ADR 0008): the lease TTL defaults to
    /// [`SQLITE_LEASE_TTL`](crate::SQLITE_LEASE_TTL) (1 s), renewed about three times per period, so a dead
    /// owner's projections are taken over within about a second; an owner whose lease was taken can never commit
    /// again.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(store: annals_sqlite::SqliteStore) -> Self {
        let backend = Arc::new(SqliteBackend::new(&store));
        Self::with_backend(Arc::new(store), backend).lease_ttl(crate::SQLITE_LEASE_TTL)
    }

    fn with_backend(store: Arc<dyn EventStore>, backend: Arc<dyn Backend>) -> Self {
        Self {
            engine: Arc::new(Engine {
                store,
                backend,
                owner: Uuid::now_v7(),
                lease_ttl: Duration::from_secs(10),
                notifiers: Mutex::new(HashMap::new()),
                upcasters: Vec::new(),
            }),
            registered: Arc::new(Vec::new()),
            error: None,
            migrated: Arc::new(OnceCell::new()),
            running: Arc::default(),
            supervisor: Supervisor::new(),
        }
    }

    /// Runs the runners of [`run`](Self::run) under `supervisor` (by default one of their own, restarting by
    /// [`DEFAULT_RESTARTS`](crate::DEFAULT_RESTARTS)), so that one supervisor reports every runner of a service.
    pub fn with_supervisor(mut self, supervisor: Supervisor) -> Self {
        self.supervisor = supervisor;
        self
    }

    /// The supervisor the runners of [`run`](Self::run) run under: their restarts and states.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// How long a runner's ownership lasts without renewal (default 10 s). Runners renew it about three times
    /// per period. On PostgreSQL, ownership also ends with the owner's database session: when the owning
    /// process dies (crash, SIGKILL, a network loss the server notices), another runner takes over within a
    /// fraction of a second, without waiting for the TTL; the TTL bounds the wait only for an owner that hangs
    /// with its session open. In memory, the TTL alone. Between 30 ms and 24 h (values outside are clamped).
    /// Set it while building the set, before cloning it or handing out readers.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.engine = Arc::new(Engine {
            store: Arc::clone(&self.engine.store),
            backend: Arc::clone(&self.engine.backend),
            owner: self.engine.owner,
            lease_ttl: ttl.clamp(Duration::from_millis(30), Duration::from_secs(24 * 3600)),
            notifiers: Mutex::new(HashMap::new()),
            upcasters: self.engine.upcasters.clone(),
        });
        self
    }

    /// Upcasts the events of `E`'s vocabulary before any projection sees them: on every path (live, catch-up,
    /// rebuild, replay of parked events) a stored event that [`Event::upcast`](annals::Event::upcast) rewrites
    /// reaches projections under its current name, with its current payload and schema version, and the
    /// [`event_types`](Projection::event_types) filters see that name. So an event renamed by its upcaster
    /// (`MoneyAdded` to `MoneyDeposited`) reaches a projection listing `MoneyDeposited`. Register each event type
    /// of the application once; the first whose upcaster rewrites an event wins. Call it while building the set.
    ///
    /// # Errors
    /// An upcaster's refusal fails that event (the projection's failure policy decides), naming stream,
    /// version, position and type.
    pub fn upcasting<E: annals::Event>(mut self) -> Self {
        let upcaster = crate::runner::upcaster::<E>();
        // Registered once per type (each typed projection registers its type's): a second copy of the same
        // function would only cost a call per event. Two functions at one address have the same machine code, so
        // skipping one of them never changes what projections see.
        if self
            .engine
            .upcasters
            .iter()
            .any(|known| std::ptr::fn_addr_eq(*known, upcaster))
        {
            return self;
        }
        let mut upcasters = self.engine.upcasters.clone();
        upcasters.push(upcaster);
        self.engine = Arc::new(Engine {
            store: Arc::clone(&self.engine.store),
            backend: Arc::clone(&self.engine.backend),
            owner: self.engine.owner,
            lease_ttl: self.engine.lease_ttl,
            notifiers: Mutex::new(HashMap::new()),
            upcasters,
        });
        self
    }

    /// Registers a document projection with default options (batch 500, failure policy stop).
    pub fn with(self, projection: impl Projection) -> Self {
        self.with_options(projection, ProjectionOptions::default())
    }

    /// Registers a document projection with options.
    pub fn with_options(self, projection: impl Projection, options: ProjectionOptions) -> Self {
        let name = projection.name().to_owned();
        let version = projection.version();
        let event_types = projection
            .event_types()
            .iter()
            .map(|t| (*t).to_owned())
            .collect();
        self.register(Registered {
            name,
            version,
            event_types,
            kind: Kind::Docs(Arc::new(projection)),
            options,
        })
    }

    /// Registers a SQL projection (PostgreSQL backend only) with default options.
    #[cfg(feature = "postgres")]
    pub fn with_sql(self, projection: impl SqlProjection) -> Self {
        self.with_sql_options(projection, ProjectionOptions::default())
    }

    /// Registers a SQL projection (PostgreSQL backend only) with options.
    #[cfg(feature = "postgres")]
    pub fn with_sql_options(
        self,
        projection: impl SqlProjection,
        options: ProjectionOptions,
    ) -> Self {
        let name = projection.name().to_owned();
        let version = projection.version();
        let event_types = projection
            .event_types()
            .iter()
            .map(|t| (*t).to_owned())
            .collect();
        let is_memory = self.engine.backend.schema_of("x").is_none();
        let mut this = self.register(Registered {
            name: name.clone(),
            version,
            event_types,
            kind: Kind::Sql(Arc::new(projection)),
            options,
        });
        if is_memory && this.error.is_none() {
            this.error = Some(Arc::new(Error::SqlNeedsPostgres { name }));
        }
        this
    }

    /// Registers `name` as a projection that its caller processes itself: no runner, rebuild or replay touches
    /// it; the caller takes its lease with [`try_lease`](Self::try_lease), does its work between checkpoints
    /// (outside any backend transaction) and commits each checkpoint through the [`Lease`]. It has a
    /// checkpoint, a lease, a status and a document read model (for the holder's own bookkeeping) like any
    /// registered projection, on every backend; [`reset`](Self::reset) makes its holder start again from the first
    /// event.
    pub fn leased(self, name: &str) -> Self {
        self.register(Registered {
            name: name.to_owned(),
            version: 1,
            event_types: Vec::new(),
            kind: Kind::Leased,
            options: ProjectionOptions::default(),
        })
    }

    /// Takes the live lease of `name` (registered with [`leased`](Self::leased)) when it is free, expired or
    /// already this set's; `None` while another owner holds it. Another owner's lease is taken over only once
    /// it has expired or was released (on PostgreSQL, not as soon as its session ends: the holder's work outside
    /// the backend may still be going on).
    ///
    /// # Errors
    /// [`Error::UnknownProjection`]; [`Error::Config`] when `name` was not registered with `leased`; database
    /// errors.
    pub async fn try_lease(&self, name: &str) -> Result<Option<Lease>> {
        let p = self.find(name)?;
        if !matches!(p.kind, Kind::Leased) {
            return Err(Error::Config {
                reason: format!(
                    "projection {name:?} is run by a runner; only a leased one hands out its lease"
                ),
            });
        }
        self.migrate().await?;
        let started = std::time::Instant::now();
        let ttl = self.engine.lease_ttl;
        match self
            .engine
            .backend
            .acquire_live_after_expiry(p.target(), self.engine.owner, ttl)
            .await?
        {
            Acquired::Busy => Ok(None),
            Acquired::Slot(slot) => Ok(Some(Lease {
                backend: Arc::clone(&self.engine.backend),
                owner: self.engine.owner,
                ttl,
                slot,
                valid_until: started + ttl,
                notifier: self.engine.notifier(&p.name),
            })),
        }
    }

    /// Makes the set invalid with `error` (the first error wins): every use of it then answers the error.
    pub(crate) fn refuse(mut self, error: Error) -> Self {
        if self.error.is_none() {
            self.error = Some(Arc::new(error));
        }
        self
    }

    fn register(mut self, registered: Registered) -> Self {
        if self.error.is_none() {
            if let Err(e) = check_name(&registered.name) {
                self.error = Some(Arc::new(e));
            } else if self.registered.iter().any(|r| r.name == registered.name) {
                self.error = Some(Arc::new(Error::DuplicateName {
                    name: registered.name.clone(),
                }));
            }
        }
        Arc::make_mut(&mut self.registered).push(registered);
        self
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.registered.iter().map(|r| r.name.as_str()).collect()
    }

    fn valid(&self) -> Result<()> {
        match &self.error {
            None => Ok(()),
            Some(e) => Err(match &**e {
                Error::InvalidName { name, reason } => Error::InvalidName {
                    name: name.clone(),
                    reason,
                },
                Error::DuplicateName { name } => Error::DuplicateName { name: name.clone() },
                Error::SqlNeedsPostgres { name } => Error::SqlNeedsPostgres { name: name.clone() },
                other => Error::Config {
                    reason: other.to_string(),
                },
            }),
        }
    }

    fn find(&self, name: &str) -> Result<&Registered> {
        self.valid()?;
        self.registered
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::UnknownProjection {
                name: name.to_owned(),
                known: self.names().into_iter().map(str::to_owned).collect(),
            })
    }

    /// Creates the backend's tables if they do not exist (idempotent; other methods call it on first use).
    ///
    /// # Errors
    /// [`Error::Database`] when PostgreSQL refuses.
    pub async fn migrate(&self) -> Result<()> {
        self.valid()?;
        self.migrated
            .get_or_try_init(|| self.engine.backend.migrate())
            .await
            .map(|_| ())
    }

    /// Runs every registered projection until `shutdown` completes: each catches up from its checkpoint in
    /// batches, then follows new events as they are appended. A projection owned by another process waits and
    /// takes over when that owner stops or dies. A projection whose version changed is rebuilt (blue/green)
    /// first.
    ///
    /// Returns `Ok` after `shutdown`, once every runner has committed its current batch and released its
    /// lease. A projection that stops at a failing event (policy stop) ends alone; the others continue. Each
    /// runner runs under the [`supervisor`](Self::supervisor): one that ends on a transient error (the store
    /// or database down longer than its retries, [`Error::Interrupted`]) is started again, after a capped,
    /// jittered pause, without end; [`status`](Self::status) shows its restarts.
    ///
    /// # Errors
    /// When every runner has ended on an error before `shutdown`, the first error (for example
    /// [`Error::ProjectionFailed`]); configuration errors at once.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        self.migrate().await?;
        let names: Vec<String> = self.registered.iter().map(|r| r.name.clone()).collect();
        {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(name) = names.iter().find(|n| running.contains(n)) {
                return Err(Error::Busy {
                    projection: name.clone(),
                    what: "live read model",
                });
            }
            running.extend(names.iter().cloned());
        }
        let stop = shutdown_from(Some(Box::pin(shutdown)));
        let mut tasks = tokio::task::JoinSet::new();
        for p in self.registered.iter().cloned() {
            if matches!(p.kind, Kind::Leased) {
                continue;
            }
            let engine = Arc::clone(&self.engine);
            let stop = stop.clone();
            let supervisor = self.supervisor.clone();
            tasks.spawn(async move {
                let name = p.name.clone();
                let start = move |stop| {
                    let (engine, p) = (Arc::clone(&engine), p.clone());
                    async move { engine.run(&p, stop).await }
                };
                let result = supervisor
                    .run_until(&name, stop, start, Error::is_transient)
                    .await;
                if let Err(e) = &result {
                    tracing::error!(projection = %name, error = %e, "projection runner ended");
                }
                result
            });
        }
        let mut first_error = None;
        let mut all_failed = true;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => all_failed = false,
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(join) => {
                    first_error.get_or_insert(Error::Config {
                        reason: format!("a projection runner panicked: {join}"),
                    });
                }
            }
        }
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|n| !names.contains(n));
        match first_error {
            Some(e) if all_failed => Err(e),
            _ => Ok(()),
        }
    }

    /// Rebuilds `name` from the first event without downtime (blue/green): its current version is built into
    /// fresh storage while the live read model keeps serving reads (and keeps being advanced by its runner);
    /// when the new one has caught up it becomes the live one in one transaction and the old one is dropped.
    /// Reads pages of events, never the whole log. Resumes a cancelled rebuild of the same version.
    ///
    /// # Errors
    /// [`Error::UnknownProjection`]; [`Error::HasSideEffects`] for a projection registered with side effects
    /// (a process manager); [`Error::Busy`] when another process is rebuilding it;
    /// [`Error::ProjectionFailed`] when an event fails and the policy says stop; store and database errors.
    pub async fn rebuild(&self, name: &str) -> Result<RebuildReport> {
        self.rebuild_with(name, RebuildOptions::default()).await
    }

    /// [`rebuild`](Self::rebuild) with progress reporting and cancellation.
    ///
    /// # Errors
    /// As for [`rebuild`](Self::rebuild).
    pub async fn rebuild_with(&self, name: &str, options: RebuildOptions) -> Result<RebuildReport> {
        let p = self.find(name)?.clone();
        refuse_replay(&p)?;
        refuse_leased(&p)?;
        self.migrate().await?;
        let cancel = shutdown_from(options.cancel);
        let progress = options.progress.unwrap_or_else(|| Box::new(|_| {}));
        self.engine.rebuild(&p, &*progress, cancel).await
    }

    /// Drops `name`'s read model, checkpoint and parked events (with downtime: it reads as empty until a runner
    /// has caught up again). A runner of it, in any process, starts over from the first event.
    ///
    /// # Errors
    /// [`Error::UnknownProjection`]; [`Error::HasSideEffects`] for a projection registered with side effects (a
    /// process manager); database errors.
    pub async fn reset(&self, name: &str) -> Result<()> {
        let p = self.find(name)?;
        refuse_replay(p)?;
        self.migrate().await?;
        self.engine.backend.reset(&p.name).await?;
        self.engine.notifier(&p.name).send_replace(Position::START);
        Ok(())
    }

    /// The status of every registered projection, in registration order.
    ///
    /// # Errors
    /// Store and database errors.
    pub async fn status(&self) -> Result<Vec<Status>> {
        self.valid()?;
        self.migrate().await?;
        let head = self.engine.store.head().await?;
        let slots = self.engine.backend.slots().await?;
        let mut out = Vec::with_capacity(self.registered.len());
        for p in self.registered.iter() {
            let live = slots.iter().find(|s| s.name == p.name && s.live);
            let building = slots.iter().find(|s| s.name == p.name && !s.live);
            let checkpoint = live.map_or(Position::START, |s| s.checkpoint);
            let state = match (live, building) {
                (_, Some(b)) if b.owned => State::Rebuilding {
                    checkpoint: b.checkpoint,
                    version: b.version,
                },
                (None, _) => State::NotStarted,
                (Some(s), _) => match s.state {
                    crate::status::SlotState::Failed => State::Failed {
                        error: s.error.clone().unwrap_or_default(),
                    },
                    _ if !s.owned => State::Stopped,
                    crate::status::SlotState::Live => State::Live,
                    crate::status::SlotState::CatchingUp => State::CatchingUp,
                    _ => State::Stopped,
                },
            };
            let parked = if live.is_some() {
                self.engine.backend.parked(&p.name).await?.len()
            } else {
                0
            };
            out.push(Status {
                name: p.name.clone(),
                version: p.version,
                stored_version: live.map(|s| s.version),
                checkpoint,
                head,
                lag: head.get().saturating_sub(checkpoint.get()),
                events_per_second: live.filter(|s| s.owned).map_or(0.0, |s| s.throughput)
                    + building.filter(|s| s.owned).map_or(0.0, |s| s.throughput),
                state,
                parked,
                runner: self.supervisor.status_of(&p.name),
            });
        }
        Ok(out)
    }

    /// The query handle of document projection `name`.
    ///
    /// # Errors
    /// [`Error::UnknownProjection`].
    pub fn documents(&self, name: &str) -> Result<DocumentReader> {
        let p = self.find(name)?;
        Ok(DocumentReader {
            name: p.name.clone(),
            backend: Arc::clone(&self.engine.backend),
            changes: self.engine.notifier(&p.name).subscribe(),
            max_wait: crate::reader::DEFAULT_MAX_WAIT,
        })
    }

    /// The stable schema SQL projection `name` is read from (`rm_<name>`; PostgreSQL only, `None` in memory).
    ///
    /// # Errors
    /// [`Error::UnknownProjection`].
    pub fn schema(&self, name: &str) -> Result<Option<String>> {
        let p = self.find(name)?;
        Ok(self.engine.backend.schema_of(&p.name))
    }

    /// Waits until projection `name` has processed `position`, at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Lagging`] on timeout; [`Error::UnknownProjection`]; database errors.
    pub async fn wait_for_position(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<Position> {
        let p = self.find(name)?;
        self.migrate().await?;
        let changes = self.engine.notifier(&p.name).subscribe();
        wait_for(&*self.engine.backend, &p.name, changes, position, timeout).await
    }

    /// The events `name` parked (failure policy park), in position order.
    ///
    /// # Errors
    /// [`Error::UnknownProjection`]; database errors.
    pub async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>> {
        let p = self.find(name)?;
        self.migrate().await?;
        self.engine.backend.parked(&p.name).await
    }

    /// Applies `name`'s parked events again, in position order, removing each one that now succeeds (after the
    /// projection was fixed). Must not run while another process owns the projection.
    ///
    /// # Errors
    /// [`Error::Busy`] when another process owns the projection; store and database errors.
    pub async fn replay_parked(&self, name: &str) -> Result<ReplayReport> {
        let p = self.find(name)?.clone();
        refuse_leased(&p)?;
        self.migrate().await?;
        self.engine.replay_parked(&p).await
    }
}

/// Refuses to rebuild or replay `p` when its lease holder processes it (there is no code to run).
fn refuse_leased(p: &Registered) -> Result<()> {
    if matches!(p.kind, Kind::Leased) {
        return Err(Error::Config {
            reason: format!(
                "projection {:?} is processed by the holder of its lease; reset it instead",
                p.name
            ),
        });
    }
    Ok(())
}

/// Refuses to replay `p` from the first event when it was registered with side effects.
fn refuse_replay(p: &Registered) -> Result<()> {
    match p.options.side_effects {
        Some(why) => Err(Error::HasSideEffects {
            name: p.name.clone(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncancellable_shutdowns_share_one_sender_and_leave_nothing_behind() {
        let receivers: Vec<_> = (0..1_000).map(|_| shutdown_from(None)).collect();
        assert!(receivers.iter().all(|r| !*r.borrow()));
        let sender = NEVER.get().expect("created on first use");
        assert!(sender.receiver_count() >= 1_000);
        drop(receivers);
        // Every receiver is gone and no sender was created (or forgotten) per call.
        assert!(sender.receiver_count() < 1_000);
    }
}
