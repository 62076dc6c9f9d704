//! [`Supervisor`]: runs long-lived runners (projection runners, a process manager's timers, a relay, an inbox
//! consumer) and starts again, after a capped, jittered pause, one that ended on a transient error, without end;
//! one that ended on a permanent error stays stopped and is reported. Its view of each runner is what `status`
//! shows.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use annals::RetryPolicy;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The restart policy of [`Supervisor::new`]: up to half a second before the first restart, doubling to at most
/// 30 s, jittered, without end.
pub const DEFAULT_RESTARTS: RetryPolicy =
    RetryPolicy::forever(Duration::from_millis(500), Duration::from_secs(30));

/// What a supervised runner is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Supervised {
    /// Running (started, or started again after a transient failure).
    Running,
    /// Ended on a transient error; it starts again at `next_attempt_at`.
    Restarting {
        /// Restarts since it last ran without failing (1 for the first).
        attempt: u32,
        /// The error it ended on.
        last_error: String,
        /// When it starts again.
        next_attempt_at: SystemTime,
    },
    /// Ended on a permanent error and stays stopped (the error is logged and here).
    Failed {
        /// The error it ended on.
        error: String,
    },
    /// Ended because it was asked to stop (shutdown), or finished.
    Stopped,
}

impl fmt::Display for Supervised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Running => f.write_str("running"),
            Self::Restarting {
                attempt,
                last_error,
                next_attempt_at,
            } => {
                let wait = next_attempt_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                write!(
                    f,
                    "restarting (attempt {attempt}, next in {:.1} s): {last_error}",
                    wait.as_secs_f64()
                )
            }
            Self::Failed { error } => write!(f, "failed for good: {error}"),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

/// The supervisor's view of one runner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerStatus {
    /// The runner's name (a projection's or process manager's name, `relay`, ...).
    pub name: String,
    /// What it is doing.
    pub state: Supervised,
    /// How many times it was started again since the supervisor started it.
    pub restarts: u64,
}

/// Runs runners and starts again each one that ended on a transient error, pausing by its [`RetryPolicy`]
/// (without end, the pause capped); reports each runner's state ([`status`](Self::status)). Cheap to clone:
/// clones share the states.
///
/// A runner is a closure that starts a run given a stop signal (a future that completes at shutdown) and
/// returns its outcome; the caller tells which errors are transient. A run that returns `Ok` or ends at
/// shutdown ends supervision; a permanent error ends it too and is returned.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use annals::RetryPolicy;
/// use annals_projections::{Supervised, Supervisor};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = Supervisor::with_policy(RetryPolicy::forever(Duration::from_millis(1), Duration::from_millis(5)));
/// let runs = AtomicU32::new(0);
/// // A runner that fails twice with a transient error, then runs until it is stopped.
/// let outcome = supervisor
///     .run(
///         "flaky",
///         std::future::pending::<()>(),
///         |_stop| {
///             let run = runs.fetch_add(1, Ordering::SeqCst);
///             async move { if run < 2 { Err("connection refused") } else { Ok(()) } }
///         },
///         |error: &&str| error.contains("refused"),
///     )
///     .await;
/// assert_eq!(outcome, Ok(()));
/// let status = &supervisor.status()[0];
/// assert_eq!((status.restarts, &status.state), (2, &Supervised::Stopped));
/// # }
/// ```
#[derive(Clone)]
pub struct Supervisor {
    policy: RetryPolicy,
    runners: Arc<Mutex<BTreeMap<String, RunnerStatus>>>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("policy", &self.policy)
            .field("runners", &self.status())
            .finish()
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    /// A supervisor restarting by [`DEFAULT_RESTARTS`].
    pub fn new() -> Self {
        Self::with_policy(DEFAULT_RESTARTS)
    }

    /// A supervisor restarting by `policy`; a bounded policy is made unbounded (the supervisor never gives up on
    /// a transient failure), keeping its pauses.
    pub fn with_policy(policy: RetryPolicy) -> Self {
        Self {
            policy: RetryPolicy::forever(policy.first(), policy.cap()),
            runners: Arc::default(),
        }
    }

    /// Every supervised runner's state, by name.
    pub fn status(&self) -> Vec<RunnerStatus> {
        self.lock().values().cloned().collect()
    }

    /// The state of runner `name`, if it is or was supervised.
    pub fn status_of(&self, name: &str) -> Option<RunnerStatus> {
        self.lock().get(name).cloned()
    }

    /// How many restarts there were, over every runner.
    pub fn restarts_total(&self) -> u64 {
        self.lock().values().map(|r| r.restarts).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RunnerStatus>> {
        self.runners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, name: &str, state: Supervised, restarted: bool) {
        let mut runners = self.lock();
        let entry = runners
            .entry(name.to_owned())
            .or_insert_with(|| RunnerStatus {
                name: name.to_owned(),
                state: Supervised::Running,
                restarts: 0,
            });
        entry.state = state;
        if restarted {
            entry.restarts += 1;
        }
    }

    /// Runs `start` until `shutdown` completes, starting it again after each transient error (see the type's
    /// docs). Each run gets a stop signal that completes at shutdown.
    ///
    /// # Errors
    /// The permanent error a run ended on.
    pub async fn run<E, F, Fut>(
        &self,
        name: &str,
        shutdown: impl Future<Output = ()> + Send + 'static,
        mut start: F,
        transient: impl Fn(&E) -> bool,
    ) -> Result<(), E>
    where
        E: fmt::Display,
        F: FnMut(Stop) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let (stop, stopped) = watch::channel(false);
        // Ended with this call, even when its future is dropped.
        let _relay = AbortOnDrop(tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        }));
        self.run_until(name, stopped, |rx| start(Stop(rx)), transient)
            .await
    }

    /// [`run`](Self::run) with the stop signal as a watch channel that turns `true` (or closes) at shutdown.
    pub(crate) async fn run_until<E, F, Fut>(
        &self,
        name: &str,
        mut stopped: watch::Receiver<bool>,
        mut start: F,
        transient: impl Fn(&E) -> bool,
    ) -> Result<(), E>
    where
        E: fmt::Display,
        F: FnMut(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let mut pauses = self.policy.pauses();
        let mut attempt = 0;
        self.set(name, Supervised::Running, false);
        loop {
            let outcome = start(stopped.clone()).await;
            let shut = *stopped.borrow();
            match outcome {
                Ok(()) => {
                    self.set(name, Supervised::Stopped, false);
                    return Ok(());
                }
                Err(_) if shut => {
                    self.set(name, Supervised::Stopped, false);
                    return Ok(());
                }
                Err(e) if transient(&e) => {
                    attempt += 1;
                    let pause = pauses.next().unwrap_or(self.policy.cap());
                    warn!(runner = name, attempt, error = %e, ?pause,
                          "runner stopped on a transient error; starting it again");
                    self.set(
                        name,
                        Supervised::Restarting {
                            attempt,
                            last_error: e.to_string(),
                            next_attempt_at: SystemTime::now() + pause,
                        },
                        false,
                    );
                    let shutdown = tokio::select! {
                        () = tokio::time::sleep(pause) => false,
                        r = stopped.wait_for(|s| *s) => { let _ = r; true }
                    };
                    if shutdown {
                        self.set(name, Supervised::Stopped, false);
                        return Ok(());
                    }
                    info!(runner = name, attempt, "starting the runner again");
                    self.set(name, Supervised::Running, true);
                }
                Err(e) => {
                    error!(runner = name, error = %e,
                           "runner stopped on a permanent error; it is not started again");
                    self.set(
                        name,
                        Supervised::Failed {
                            error: e.to_string(),
                        },
                        false,
                    );
                    return Err(e);
                }
            }
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The stop signal a supervised run gets: completes at shutdown.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Waits for shutdown (also when the supervisor is gone).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Whether shutdown came.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

impl IntoFuture for Stop {
    type Output = ();
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick() -> Supervisor {
        Supervisor::with_policy(RetryPolicy::new(
            Duration::from_millis(1),
            Duration::from_millis(4),
            1,
        ))
    }

    #[tokio::test]
    async fn transient_failures_restart_without_end_and_a_permanent_one_stops_for_good() {
        let supervisor = quick();
        let runs = AtomicU32::new(0);
        // Many more transient failures than the bounded policy given would allow: the supervisor never gives up.
        let outcome = supervisor
            .run(
                "flaky",
                std::future::pending::<()>(),
                |_stop| {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match run {
                            0..50 => Err("transient"),
                            _ => Err("permanent"),
                        }
                    }
                },
                |e: &&str| *e == "transient",
            )
            .await;
        assert_eq!(outcome, Err("permanent"));
        assert_eq!(runs.load(Ordering::SeqCst), 51);
        let status = supervisor.status_of("flaky").unwrap();
        assert_eq!(status.restarts, 50);
        assert_eq!(
            status.state,
            Supervised::Failed {
                error: "permanent".into()
            }
        );
        assert_eq!(supervisor.restarts_total(), 50);
    }

    #[tokio::test]
    async fn shutdown_during_the_pause_ends_supervision() {
        let supervisor = Supervisor::with_policy(RetryPolicy::forever(
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        ));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let supervisor = supervisor.clone();
            async move {
                supervisor
                    .run(
                        "stuck",
                        async {
                            let _ = rx.await;
                        },
                        |_stop| async { Err::<(), _>("transient") },
                        |_: &&str| true,
                    )
                    .await
            }
        });
        // Wait until it is paused before its first restart, then stop it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !matches!(
            supervisor.status_of("stuck").map(|s| s.state),
            Some(Supervised::Restarting { attempt: 1, .. })
        ) {
            assert!(tokio::time::Instant::now() < deadline, "never restarting");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tx.send(()).unwrap();
        assert_eq!(task.await.unwrap(), Ok(()));
        assert_eq!(
            supervisor.status_of("stuck").unwrap().state,
            Supervised::Stopped
        );
    }
}
