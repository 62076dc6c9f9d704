//! The relay's loop: take the lease, then page by page read the log, publish outside any transaction, commit the
//! checkpoint under the lease; start again with backoff after a transient failure.

use std::future::Future;
use std::time::Duration;

use annals_projections::Lease;
use chrono::Utc;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::relay::{Relay, Retrying};
use crate::relay_stats::{STATS_COLLECTION, STATS_KEY, Stats};

/// Whether shutdown was asked for.
pub(crate) type Stopped = watch::Receiver<bool>;

/// Runs `operation` on the checkpoint database, giving up after `after` ([`Error::TimedOut`]): an unanswered
/// database never holds the relay beyond its lease.
pub(crate) async fn bounded<T, E: Into<Error>>(
    operation: &'static str,
    after: Duration,
    f: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(after, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(Error::TimedOut { operation, after }),
    }
}

impl Relay {
    /// Runs the relay until `shutdown` completes: ensures the stream, takes the lease (waiting while another
    /// relay holds it, until it expires or is released), catches up from the checkpoint and follows the log.
    /// A transient failure (broker or database out of reach, a lost lease) ends the current ownership and the
    /// loop starts again from the checkpoint with backoff (200 ms doubling to 30 s), for as long as it lasts;
    /// [`status`](Self::status) shows the retry. Nothing is checkpointed past an event the broker has not
    /// acknowledged.
    ///
    /// # Errors
    /// Permanent failures only: a stream that does not fit ([`Error::StreamMismatch`]), a message JetStream
    /// refuses ([`Error::Publish`] with the position), invalid configuration.
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
            let result = match self.ensure_stream().await {
                Ok(()) => self.own(&stopped, &mut backoff).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    self.set_retrying(|r| *r = None);
                    return Ok(());
                }
                Err(e) if e.is_transient() => {
                    warn!(relay = %self.options.instance, error = %e,
                          "the relay stopped on a transient failure; starting again from its checkpoint");
                    self.set_retrying(|r| match r {
                        Some(r) => {
                            r.error = e.to_string();
                            r.attempts += 1;
                        }
                        None => {
                            *r = Some(Retrying {
                                error: e.to_string(),
                                attempts: 1,
                                since: Utc::now(),
                            });
                        }
                    });
                    if backoff.wait(&stopped).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes the lease and publishes under it until shutdown (`Ok`) or a failure; gives the lease up on the way
    /// out (records a permanent failure in it).
    async fn own(&self, stopped: &Stopped, backoff: &mut Backoff) -> Result<()> {
        let Some(mut lease) = self.acquire(stopped).await? else {
            return Ok(());
        };
        info!(relay = %self.options.instance, checkpoint = lease.checkpoint().get(), "relay owns the feed");
        let ttl = self.options.lease_ttl;
        let result = self.follow(&mut lease, stopped, backoff).await;
        match &result {
            Err(Error::Projections(e))
                if matches!(**e, annals_projections::Error::LostOwnership { .. }) =>
            {
                debug!(relay = %self.options.instance, "lost the lease");
            }
            Err(e) if !e.is_transient() => {
                let _ = bounded("recording the failure", ttl, lease.fail(&e.to_string())).await;
            }
            _ => {
                let _ = bounded("releasing the lease", ttl, lease.release()).await;
            }
        }
        result
    }

    /// Waits for the lease (polling while another relay holds it); `None` on shutdown.
    async fn acquire(&self, stopped: &Stopped) -> Result<Option<Lease>> {
        let ttl = self.options.lease_ttl;
        let poll = (ttl / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        loop {
            if *stopped.borrow() {
                return Ok(None);
            }
            let projections = &self.projections;
            let name = &self.options.name;
            if let Some(lease) =
                bounded("taking the lease", ttl, projections.try_lease(name)).await?
            {
                return Ok(Some(lease));
            }
            let mut rx = stopped.clone();
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                _ = rx.wait_for(|s| *s) => return Ok(None),
            }
        }
    }

    /// Catches up and follows the log while the lease is ours, until shutdown.
    async fn follow(
        &self,
        lease: &mut Lease,
        stopped: &Stopped,
        backoff: &mut Backoff,
    ) -> Result<()> {
        let ttl = self.options.lease_ttl;
        let heartbeat = (ttl / 3).max(Duration::from_millis(10));
        let batch = self.options.batch_size;
        let mut stats: Stats = bounded(
            "reading the relay's counters",
            ttl,
            self.projections
                .documents(&self.options.name)?
                .get(STATS_COLLECTION, STATS_KEY),
        )
        .await?
        .unwrap_or_default();
        let mut live = false;
        loop {
            if *stopped.borrow() {
                return Ok(());
            }
            let from = lease.checkpoint();
            let events = bounded("reading the log", ttl, self.store.read_all(from, batch)).await?;
            if events.is_empty() {
                if !live || lease.remaining() < ttl / 2 {
                    bounded("renewing the lease", ttl, lease.renew(true)).await?;
                    live = true;
                }
                let mut rx = stopped.clone();
                tokio::select! {
                    head = self.store.wait_for_events(from, heartbeat) => { head?; }
                    _ = rx.wait_for(|s| *s) => return Ok(()),
                }
                continue;
            }
            live = events.len() < batch;
            let refs: Vec<_> = events.iter().collect();
            let page = self.publish_leased(lease, &refs, live).await;
            stats.add(&page.published);
            if page.acked > 0 {
                let last = events[page.acked - 1].position;
                let doc = stats.checkpointed(last.get());
                bounded(
                    "committing the checkpoint",
                    ttl,
                    lease.commit(last, vec![doc], live),
                )
                .await?;
                info!(relay = %self.options.instance, from = from.get() + 1, to = last.get(),
                      events = page.published.events, duplicates = page.published.duplicates,
                      resent = page.published.resent, "published batch");
                backoff.reset();
                self.set_retrying(|r| *r = None);
            }
            if let Some(e) = page.failure.or(page.lost) {
                return Err(e);
            }
            if page.acked < events.len() && lease.remaining().is_zero() {
                return Err(Error::TimedOut {
                    operation: "renewing the lease while publishing",
                    after: ttl,
                });
            }
        }
    }
}

/// Exponential backoff between attempts of the relay's outer loop: 200 ms doubling to 30 s.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(Duration::from_millis(200))
    }

    /// Starts over from the shortest wait (after progress).
    pub(crate) fn reset(&mut self) {
        self.0 = Duration::from_millis(200);
    }

    /// Waits; returns whether shutdown came first.
    pub(crate) async fn wait(&mut self, stopped: &Stopped) -> bool {
        let delay = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
        let mut rx = stopped.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            _ = rx.wait_for(|s| *s) => true,
        }
    }
}
