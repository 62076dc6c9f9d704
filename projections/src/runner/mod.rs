//! The engine shared by the live runner, rebuilds and replays, one concept per file: the registration
//! ([`registered`]), upcasting ([`upcast`]), a projection's effects outside any transaction ([`effects`]), one
//! batch in one short transaction ([`batch`]), the next page of events ([`read`]), a page with failing events
//! under the failure policy ([`failing`]), the live loop ([`live`]), blue/green rebuilds ([`rebuild`]) and
//! replays of parked events ([`replay`]).
//!
//! The runner depends on the backends (through [`crate::backend::Backend`] and the
//! [`Target`](crate::backend::Target) it hands them), never the other way round.

mod batch;
mod effects;
mod failing;
mod live;
mod rate;
mod read;
mod rebuild;
mod registered;
mod replay;
mod upcast;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use annals::{EventStore, Position};
use tokio::sync::watch;
use uuid::Uuid;

use crate::backend::{Backend, Slot};

pub(crate) use registered::{Kind, Registered};
pub(crate) use upcast::{Upcaster, upcaster};

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
}
