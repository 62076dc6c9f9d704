//! The live loop: own the live generation, catch up, follow new events, take over from a dead owner, rebuild
//! when the projection's version changed.

use std::time::Duration;

use annals::RetryPolicy;

use tracing::{Instrument, debug, info, info_span, warn};

use super::rate::Rate;
use super::{Engine, Registered, Shutdown, is_shut, sleep_or_shutdown};
use crate::backend::{Acquired, Slot};
use crate::error::{Error, Result};
use crate::status::SlotState;

/// How often in a row a live runner retries a transient failure itself (at most 3 s in all, pauses up to 2 s)
/// before it ends with the error for its supervisor to start it again (and show it in `status`).
const RUNNER_RETRIES: RetryPolicy =
    RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(2), 4);

impl Engine {
    /// Runs one projection live until shutdown: acquires its lease, catches up, follows new events, re-acquires
    /// after losing ownership, rebuilds when its version changed.
    pub(crate) async fn run(&self, p: &Registered, mut shutdown: Shutdown) -> Result<()> {
        // Transient failures (acquiring, following) are retried here a bounded number of times in a row, by the
        // one retry policy; past them the runner ends with the error, and a `Supervisor` starts it again.
        let mut pauses = RUNNER_RETRIES.pauses();
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
                .acquire_live(p.target(), self.owner, self.lease_ttl)
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
                    let Some(pause) = pauses.next() else {
                        return Err(e);
                    };
                    warn!(projection = %p.name, error = %e, "cannot acquire the projection; retrying");
                    if sleep_or_shutdown(pause, &mut shutdown).await {
                        return Ok(());
                    }
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
            pauses = RUNNER_RETRIES.pauses();
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
                Err(e) if e.is_transient() && !matches!(e, Error::Interrupted { .. }) => {
                    let Some(pause) = pauses.next() else {
                        let _ = self.backend.release(&slot, self.owner).await;
                        return Err(e);
                    };
                    warn!(projection = %p.name, error = %e, "projection runner hit an error; retrying");
                    if sleep_or_shutdown(pause, &mut shutdown).await {
                        let _ = self.backend.release(&slot, self.owner).await;
                        return Ok(());
                    }
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
}
