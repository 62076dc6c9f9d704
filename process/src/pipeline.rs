//! Handling ahead of the runner: while the projections runner hands the process one event at a time, the
//! pipeline reads the log a little further and starts handling the next events of *other* instances at once
//! (events of one instance stay in order). When the runner reaches such an event it waits for that handling
//! instead of starting it. Safe because every handling is idempotent: one that ran ahead of the checkpoint and
//! is lost in a crash runs again after it, with no second effect; one that failed is simply done again, in
//! order, by the runner.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use annals::Position;
use tokio::sync::watch;

use crate::handling::{Owned, Work};
use crate::process::ProcessManager;
use crate::runner::Inner;

/// `None` while running; then whether it succeeded.
type Done = watch::Receiver<Option<bool>>;

#[derive(Default)]
struct State {
    /// Handlings started ahead, by the position of their event.
    ahead: BTreeMap<Position, Done>,
    /// The last handling started per instance, by its event's position (the next one of that instance waits
    /// for it). A failed one stays until the runner has passed its position: the runner does it again, and
    /// the instance's later inputs must wait for that, not run ahead of it.
    tails: HashMap<String, (Position, Done)>,
    /// The log has been read ahead up to here.
    read_up_to: Position,
    /// The last position the runner reached.
    runner_at: Position,
}

pub(crate) struct Pipeline {
    state: Mutex<State>,
    /// How many handlings may run ahead of the runner (0: none).
    pub(crate) depth: usize,
}

impl Pipeline {
    pub(crate) fn new(depth: usize) -> Self {
        Self {
            state: Mutex::default(),
            depth,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the handling started ahead for the event at `position`, dropping any left behind before it (the
    /// runner restarted from an earlier checkpoint, or skipped them).
    fn take(&self, position: Position) -> Option<Done> {
        let mut state = self.state();
        let later = state.ahead.split_off(&position);
        state.ahead = later;
        let taken = state.ahead.remove(&position);
        state.runner_at = state.runner_at.max(position);
        if state.read_up_to < position {
            state.read_up_to = position;
        }
        taken
    }
}

/// Whether the handling started ahead for `position` succeeded (`false` when there was none, or it failed:
/// the caller then handles the event itself).
pub(crate) async fn handled_ahead<P: ProcessManager>(inner: &Inner<P>, position: Position) -> bool {
    let Some(mut done) = inner.pipeline.take(position) else {
        return false;
    };
    matches!(
        done.wait_for(Option::is_some).await.map(|v| *v),
        Ok(Some(true))
    )
}

/// Reads the log ahead of `position` and starts handling the routed events, when fewer than half the depth are
/// running ahead.
pub(crate) async fn top_up<P: ProcessManager>(inner: &Arc<Inner<P>>) {
    let pipeline = &inner.pipeline;
    let (from, room) = {
        let mut state = pipeline.state();
        let runner_at = state.runner_at;
        state
            .tails
            .retain(|_, (position, done)| match *done.borrow() {
                None => true,
                Some(succeeded) => !succeeded && *position > runner_at,
            });
        let running = state.ahead.len();
        if pipeline.depth == 0 || running > pipeline.depth / 2 {
            return;
        }
        (state.read_up_to, pipeline.depth - running)
    };
    let events = match inner.store.read_all(from, room).await {
        Ok(events) => events,
        Err(error) => {
            tracing::debug!(process = %inner.name, %error, "cannot read ahead; the runner handles events itself");
            return;
        }
    };
    for event in events {
        let position = event.position;
        let routed = match inner.pm.route(&event) {
            Ok(Some(routed)) => routed,
            // Not for this process, or a routing error the runner will report when it gets there.
            Ok(None) | Err(_) => {
                pipeline.state().read_up_to = position;
                continue;
            }
        };
        let (tx, rx) = watch::channel(None);
        let before = {
            let mut state = pipeline.state();
            if state.read_up_to >= position {
                // The runner got here first.
                continue;
            }
            state.read_up_to = position;
            state.ahead.insert(position, rx.clone());
            state
                .tails
                .insert(routed.instance.clone(), (position, rx))
                .map(|(_, done)| done)
        };
        let inner = Arc::clone(inner);
        tokio::spawn(async move {
            // An instance with a parked input: its later inputs are the runner's to park, in order.
            if !matches!(
                inner
                    .timers
                    .parked
                    .first_of(&inner.name, &routed.instance)
                    .await,
                Ok(None)
            ) {
                let _ = tx.send(Some(false));
                return;
            }
            if let Some(mut before) = before
                && !matches!(
                    before.wait_for(Option::is_some).await.map(|v| *v),
                    Ok(Some(true))
                )
            {
                // An earlier handling of this instance failed: leave this one to the runner, in order.
                let _ = tx.send(Some(false));
                return;
            }
            let correlation = event
                .metadata
                .correlation_id
                .clone()
                .unwrap_or_else(|| event.event_id.to_string());
            let outcome = inner
                .handle(Work {
                    instance: &routed.instance,
                    starts: routed.starts,
                    cause: event.event_id.0,
                    correlation,
                    input: Owned::Event(&routed.trigger),
                })
                .await;
            if let Err(error) = &outcome {
                tracing::debug!(process = %inner.name, %error, "a handling ahead failed; the runner will do it again");
            }
            let _ = tx.send(Some(outcome.is_ok()));
        });
    }
}
