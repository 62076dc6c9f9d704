//! One page published under the relay's lease: outside any database transaction, bounded in time, with the lease
//! renewed meanwhile and every send stopped before the lease could have expired (self-fencing).

use std::time::{Duration, Instant};

use annals::RecordedEvent;
use annals_projections::Lease;
use tokio::sync::{Notify, watch};
use tracing::warn;

use crate::error::Error;
use crate::publisher::Published;
use crate::relay::Relay;
use crate::relay_loop::bounded;

/// What publishing one page under the lease did.
pub(crate) struct LeasedPage {
    /// What the broker acknowledged.
    pub(crate) published: Published,
    /// How many leading events of the page are acknowledged (the checkpoint may move past them).
    pub(crate) acked: usize,
    /// Why publishing failed, if it did.
    pub(crate) failure: Option<Error>,
    /// Why the lease could not be kept (lost to another relay, or not renewable before the page).
    pub(crate) lost: Option<Error>,
}

/// How long before the lease could expire, by the relay's own clock, it stops sending: a fifth of the TTL.
pub(crate) fn fence_margin(ttl: Duration) -> Duration {
    ttl / 5
}

/// The instant from which the holder of `lease` sends nothing more.
fn fence(lease: &Lease) -> Instant {
    let margin = fence_margin(lease.ttl());
    lease
        .valid_until()
        .checked_sub(margin)
        .unwrap_or_else(Instant::now)
}

impl Relay {
    /// Publishes `events` while renewing `lease` every quarter of its TTL. No message is sent after a third of
    /// the TTL from the start (the page's time bound), nor after [`fence`] of the lease as last renewed; a
    /// renewal that finds the lease taken stops the sends at once. Every outstanding acknowledgement is
    /// awaited before it returns.
    pub(crate) async fn publish_leased(
        &self,
        lease: &mut Lease,
        events: &[&RecordedEvent],
        live: bool,
    ) -> LeasedPage {
        let ttl = lease.ttl();
        if lease.remaining() <= ttl / 2
            && let Err(e) = bounded("renewing the lease", ttl, lease.renew(live)).await
        {
            return LeasedPage {
                published: Published::default(),
                acked: 0,
                failure: None,
                lost: Some(e),
            };
        }
        let page_end = Instant::now() + ttl / 3;
        let (stop_tx, stop_rx) = watch::channel(page_end.min(fence(lease)));
        let done = Notify::new();
        let publish = async {
            let page = self.publisher.publish_until(events, stop_rx).await;
            done.notify_one();
            page
        };
        let renew = async {
            let period = (ttl / 4).max(Duration::from_millis(10));
            loop {
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = done.notified() => return None,
                }
                let wait = lease.remaining().max(period);
                match bounded("renewing the lease", wait, lease.renew(live)).await {
                    Ok(()) => {
                        stop_tx.send_replace(page_end.min(fence(lease)));
                    }
                    Err(Error::Projections(e))
                        if matches!(*e, annals_projections::Error::LostOwnership { .. }) =>
                    {
                        stop_tx.send_replace(Instant::now());
                        return Some(Error::Projections(e));
                    }
                    Err(e) => {
                        // The stop stays where the last renewal put it: the lease runs out by itself.
                        warn!(relay = %self.options.instance, error = %e,
                              "cannot renew the lease while publishing; stopping before it could expire");
                    }
                }
            }
        };
        let (page, lost) = tokio::join!(publish, renew);
        LeasedPage {
            published: page.published,
            acked: page.acked,
            failure: page.failure,
            lost,
        }
    }
}
