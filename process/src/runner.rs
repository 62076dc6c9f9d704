//! [`Process`]: a process manager wired to its store, its command sender and its timers, driven by the
//! projections runner (checkpoint, lease, failure policy) and a timer poller.

use std::future::Future;
use std::sync::Arc;

use annals::{Aggregate, EventStore, Loaded, Position, RecordedEvent, Repository, async_trait};
use annals_projections::{
    Documents, FailurePolicy, Projection, ProjectionOptions, Projections, Supervisor,
};

use crate::command::CommandSender;
use crate::error::{BoxError, Error, Result};
use crate::handling::{Owned, Work};
use crate::options::ProcessOptions;
use crate::pipeline::Pipeline;
use crate::process::ProcessManager;
use crate::status::ProcessStatus;
use crate::timers::Timers;

/// The document collection of a process's open instances (key: instance).
const OPEN: &str = "open";

pub(crate) struct Inner<P: ProcessManager> {
    pub(crate) pm: P,
    pub(crate) name: String,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) sender: Arc<dyn CommandSender<P::Command>>,
    pub(crate) timers: Timers,
    pub(crate) options: ProcessOptions,
    pub(crate) pipeline: Pipeline,
}

/// A process manager with everything it needs to run: the store its instances live in, the sender of its
/// commands and its timers.
///
/// Register it in a [`Projections`] set ([`register`](Self::register)): the projections runner then feeds it
/// the log in order, with a checkpoint, an exclusive lease and the failure policy, exactly like a read model.
/// Run [`run_timers`](Self::run_timers) beside it. Cheap to clone.
pub struct Process<P: ProcessManager> {
    pub(crate) inner: Arc<Inner<P>>,
}

impl<P: ProcessManager> Clone for Process<P> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<P: ProcessManager> std::fmt::Debug for Process<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl<P: ProcessManager> Process<P> {
    /// `pm`, keeping its instances in `store`, sending its commands through `sender`, with `timers`.
    pub fn new(
        pm: P,
        store: impl EventStore + 'static,
        sender: impl CommandSender<P::Command>,
        timers: Timers,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: pm.name().to_owned(),
                pm,
                store: Arc::new(store),
                sender: Arc::new(sender),
                timers,
                options: ProcessOptions::default(),
                pipeline: Pipeline::new(ProcessOptions::default().read_ahead),
            }),
        }
    }

    /// Sets the options (call before cloning or registering).
    pub fn with_options(mut self, options: ProcessOptions) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.options = options;
            inner.pipeline = Pipeline::new(options.read_ahead);
        }
        self
    }

    /// The process manager's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The process manager.
    pub fn manager(&self) -> &P {
        &self.inner.pm
    }

    /// The projection that feeds the process manager from the log. Prefer [`register`](Self::register).
    pub fn projection(&self) -> ProcessProjection<P> {
        ProcessProjection {
            process: self.clone(),
        }
    }

    /// Registers the process manager in `projections` with `options` (use [`default_options`]'s failure
    /// policy unless you have a reason not to). It is registered with side effects: `rebuild` and `reset` of it
    /// are refused ([`annals_projections::Error::HasSideEffects`]), since replaying the log would send its
    /// commands and schedule its timers again (and, once command records are purged, a command refused long ago
    /// could now succeed).
    pub fn register(&self, projections: Projections, options: ProjectionOptions) -> Projections {
        projections.with_options(
            self.projection(),
            options.with_side_effects(
                "it is a process manager: replaying the log would send its commands and schedule its timers again",
            ),
        )
    }

    /// Handles one event of the log: routes the event and, when it is for an instance, decides and carries the
    /// decision out. The runner does the same for every event, except that it parks an input whose handling
    /// fails permanently ([`Error::is_permanent`]) instead of returning the error (see [`parked`](Self::parked)).
    ///
    /// # Errors
    /// Store, sender and timer failures, and decisions that break the rules ([`enum@Error`]).
    pub async fn handle_event(&self, event: &RecordedEvent) -> Result<()> {
        match self.inner.route_event(event)? {
            Some(routed) => self.inner.handle_routed(event, &routed).await,
            None => Ok(()),
        }
    }

    /// The instance's state as stored (`None` when it has not started).
    ///
    /// # Errors
    /// [`Error::Store`] when the store fails or an event does not decode.
    pub async fn load(&self, instance: &str) -> Result<Option<Loaded<P::State>>> {
        let stream = self.inner.stream_of(instance)?;
        let loaded = Repository::<P::State, _>::new(Arc::clone(&self.inner.store))
            .load(&stream)
            .await
            .map_err(|source| Error::Store {
                process: self.inner.name.clone(),
                source,
            })?;
        Ok((loaded.version.get() > 0).then_some(loaded))
    }

    /// Fires the timers of this process that are due now (at most one batch); returns how many fired. A timer
    /// whose handling fails is given back and fired again later, with backoff, until it is parked.
    ///
    /// # Errors
    /// [`Error::Timers`] when the timer store fails.
    pub async fn fire_due_timers(&self) -> Result<usize> {
        let inner = &self.inner;
        let options = &inner.options;
        let due = inner
            .timers
            .store
            .claim_due(
                &inner.name,
                options.timer_batch,
                options.timer_claim,
                options.timer_attempts,
            )
            .await?;
        let mut fired = 0;
        for timer in due {
            let outcome = async {
                let payload: P::Timer =
                    serde_json::from_value(timer.payload.clone()).map_err(|source| {
                        Error::TimerPayload {
                            process: inner.name.clone(),
                            instance: timer.instance.clone(),
                            key: timer.key.clone(),
                            source,
                        }
                    })?;
                inner
                    .handle(Work {
                        instance: &timer.instance,
                        starts: false,
                        cause: timer.fire_id,
                        correlation: timer
                            .correlation_id
                            .clone()
                            .unwrap_or_else(|| timer.fire_id.to_string()),
                        input: Owned::Timer(payload),
                    })
                    .await
            }
            .await;
            match outcome {
                Ok(()) => {
                    inner.timers.store.complete(&timer).await?;
                    fired += 1;
                }
                Err(error) => {
                    let retry_in = options.timer_retry_in(timer.attempts);
                    tracing::warn!(process = %inner.name, instance = %timer.instance, key = %timer.key,
                        attempts = timer.attempts, ?retry_in, %error, "a timer failed to fire; it will be retried");
                    inner
                        .timers
                        .store
                        .release(&timer, retry_in, &error.to_string())
                        .await?;
                }
            }
        }
        Ok(fired)
    }

    /// Polls for due timers and fires them until `shutdown` completes. A timer store failure is logged and
    /// polled again after a pause (the one retry policy: from the poll interval, doubling up to 30 s), at most
    /// [`TIMER_POLL_RETRIES`] times in a row; then it ends with the error, for a supervisor to start it again
    /// ([`run_timers_supervised`](Self::run_timers_supervised)).
    ///
    /// # Errors
    /// The timer store's (or the store's) error once it failed [`TIMER_POLL_RETRIES`] + 1 times in a row.
    pub async fn run_timers(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let inner = &self.inner;
        let options = inner.options;
        let policy = annals::RetryPolicy::new(
            options.timer_poll,
            std::time::Duration::from_secs(30),
            TIMER_POLL_RETRIES,
        );
        tokio::pin!(shutdown);
        let mut pauses = policy.pauses();
        loop {
            let wake = inner.timers.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let pause = match self.fire_due_timers().await {
                Ok(fired) if fired >= options.timer_batch => std::time::Duration::ZERO,
                Ok(_) => {
                    pauses = policy.pauses();
                    match inner
                        .timers
                        .store
                        .next_due(&inner.name, options.timer_attempts)
                        .await
                    {
                        Ok(Some(due)) => (due - chrono::Utc::now())
                            .to_std()
                            .unwrap_or(std::time::Duration::from_millis(20))
                            .clamp(std::time::Duration::from_millis(5), options.timer_poll),
                        Ok(None) => options.timer_poll,
                        Err(error) => {
                            tracing::warn!(process = %inner.name, %error, "cannot read the next due timer");
                            options.timer_poll
                        }
                    }
                }
                Err(error) => {
                    let Some(pause) = pauses.next() else {
                        tracing::error!(process = %inner.name, %error, "timer polling kept failing; the poller ends");
                        return Err(error);
                    };
                    tracing::warn!(process = %inner.name, %error, ?pause, "timer polling failed; backing off");
                    pause
                }
            };
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(pause) => {}
                () = &mut wake => {}
            }
        }
    }

    /// The name under which [`run_timers_supervised`](Self::run_timers_supervised) reports the timer poller:
    /// `<process>/timers`.
    pub fn timers_runner_name(&self) -> String {
        format!("{}/timers", self.inner.name)
    }

    /// [`run_timers`](Self::run_timers) under `supervisor` (use the [`Projections::supervisor`] the process is
    /// registered in, so that [`status`](Self::status) shows it): a poller that ended on a transient failure is
    /// started again, after a capped, jittered pause, without end.
    ///
    /// # Errors
    /// A permanent error the poller ended on.
    pub async fn run_timers_supervised(
        &self,
        supervisor: &Supervisor,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        supervisor
            .run(
                &self.timers_runner_name(),
                shutdown,
                |stop| self.run_timers(stop.wait()),
                |error: &Error| !error.is_permanent(),
            )
            .await
    }

    /// The process manager's status: its runner's checkpoint, lag and state, its open instances and timers.
    ///
    /// # Errors
    /// [`Error::Projections`] when the process is not registered in `projections` or the backend fails;
    /// [`Error::Timers`].
    pub async fn status(&self, projections: &Projections) -> Result<ProcessStatus> {
        let inner = &self.inner;
        let statuses = projections.status().await?;
        let Some(status) = statuses.into_iter().find(|s| s.name == inner.name) else {
            return Err(Error::from(annals_projections::Error::UnknownProjection {
                name: inner.name.clone(),
                known: projections.names().into_iter().map(str::to_owned).collect(),
            }));
        };
        let open = projections
            .documents(&inner.name)?
            .list::<serde_json::Value>(OPEN, "")
            .await?
            .len();
        let timers = inner
            .timers
            .store
            .counts(&inner.name, inner.options.timer_attempts)
            .await?;
        let parked_inputs = inner.timers.parked.count(&inner.name).await?;
        Ok(ProcessStatus {
            name: status.name,
            checkpoint: status.checkpoint,
            head: status.head,
            lag: status.lag,
            state: status.state,
            open_instances: open as u64,
            timers_pending: timers.pending,
            timers_parked: timers.parked,
            parked_events: status.parked,
            parked_inputs,
            runner: status.runner,
            timers_runner: projections
                .supervisor()
                .status_of(&self.timers_runner_name()),
        })
    }
}

/// The options a process manager is registered with by default: batches of 100 and a failure policy that
/// retries a failing input 8 times (backing off from 100 ms) and then stops, so a transient store failure never
/// skips an input and a persistent one is visible in `status`.
pub fn default_options() -> ProjectionOptions {
    ProjectionOptions::new()
        .batch_size(100)
        .failure_policy(FailurePolicy::retry(
            8,
            std::time::Duration::from_millis(100),
        ))
}

/// What the runner sees of a failure to handle an input: a permanent one is parked before it gets here; any
/// other (the store, the timer store or a command's target unavailable, an instance that kept changing) is
/// marked transient as [`annals::Error::Unavailable`], so that past the failure policy's retries the runner ends
/// with [`annals_projections::Error::Interrupted`] and its supervisor starts it again, rather than failing the
/// input for good.
fn transient_marked(error: Error) -> BoxError {
    if error.is_permanent() {
        Box::new(error)
    } else {
        Box::new(annals::Error::Unavailable {
            operation: "process manager input",
            source: Box::new(error),
        })
    }
}

/// How many times in a row [`Process::run_timers`] polls again after a failure before it ends with the error.
pub const TIMER_POLL_RETRIES: u32 = 8;

/// The [`Projection`] that feeds a [`Process`] from the log (see [`Process::register`]).
pub struct ProcessProjection<P: ProcessManager> {
    process: Process<P>,
}

impl<P: ProcessManager> std::fmt::Debug for ProcessProjection<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessProjection")
            .field("name", &self.process.inner.name)
            .finish()
    }
}

#[async_trait]
impl<P: ProcessManager> Projection for ProcessProjection<P> {
    fn name(&self) -> &str {
        &self.process.inner.name
    }

    /// Keeps the open instances (the handling itself is done in [`effects`](Projection::effects)).
    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        let inner = &self.process.inner;
        let own = event
            .stream_id
            .as_str()
            .strip_prefix(inner.pm.category())
            .and_then(|rest| rest.strip_prefix('-'));
        if let Some(instance) = own {
            let decoded: <P::State as Aggregate>::Event = event.decode()?;
            if inner.pm.is_final(&decoded) {
                docs.delete(OPEN, instance);
            } else {
                docs.put(
                    OPEN,
                    instance,
                    &serde_json::json!({"since": event.position}),
                )?;
            }
        }
        Ok(())
    }

    /// Handles the event (appends, timers, commands) before the runner opens the batch's transaction, so a
    /// slow or stalled command target never holds that transaction open.
    async fn effects(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let inner = &self.process.inner;
        if !crate::pipeline::handled_ahead(inner, event.position).await {
            inner
                .handle_or_park(event)
                .await
                .map_err(transient_marked)?;
        }
        crate::pipeline::top_up(inner).await;
        Ok(())
    }

    async fn caught_up(&self, position: Position) {
        tracing::trace!(process = %self.process.inner.name, %position, "caught up");
    }
}
