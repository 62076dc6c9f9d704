//! The highest position found safe to read, remembered per store and tied to the server it was found on.
//!
//! Safety is permanent on one server: every position at or below a safe bound is committed or will never exist.
//! It is not across servers: after a fail-over, a restore or a sequence reset, the database can hand out positions
//! below a bound remembered from before. So the bound is kept with the identity of the server that computed it,
//! every page read below it checks in the same statement that it still runs on that server (its postmaster start
//! time, which a restart or a fail-over to another server changes) and that the position sequence has not gone
//! back below the bound, and the bound is forgotten whenever a read finds the store unavailable. The system
//! identifier is recorded with the bound (it tells servers apart in a debug print) but not compared by the page
//! guard: reading it reads the control file, which a guard run on every page should not.

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};

/// Which server instance a bound was computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Server {
    pub(crate) system_identifier: i64,
    pub(crate) started_at: DateTime<Utc>,
}

/// A bound and the server it is safe on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SafeBound {
    pub(crate) server: Server,
    pub(crate) bound: u64,
}

/// The remembered bound, shared by a store's clones.
#[derive(Debug, Default)]
pub(crate) struct KnownBound(Mutex<Option<SafeBound>>);

impl KnownBound {
    pub(crate) fn get(&self) -> Option<SafeBound> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the bound (the connection broke: the next server may be another one).
    pub(crate) fn forget(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Records a bound just computed, when the sequence's last value was `last_drawn`; returns the bound to read
    /// up to. On the same server the bound only grows; a new server, or a remembered bound above the sequence
    /// (the sequence was reset or restored), replaces what was remembered.
    pub(crate) fn record(&self, fresh: SafeBound, last_drawn: u64) -> SafeBound {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = match *known {
            Some(old) if old.server == fresh.server && old.bound <= last_drawn => SafeBound {
                server: old.server,
                bound: old.bound.max(fresh.bound),
            },
            Some(old) => {
                tracing::warn!(
                    ?old,
                    ?fresh,
                    last_drawn,
                    "the server changed or its position sequence went back; forgot the remembered safe bound"
                );
                fresh
            }
            None => fresh,
        };
        *known = Some(kept);
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(started: i64) -> Server {
        Server {
            system_identifier: 7,
            started_at: DateTime::<Utc>::from_timestamp(started, 0).unwrap_or_default(),
        }
    }

    fn bound(started: i64, bound: u64) -> SafeBound {
        SafeBound {
            server: server(started),
            bound,
        }
    }

    #[test]
    fn a_bound_grows_on_one_server_and_is_replaced_on_another() {
        let known = KnownBound::default();
        assert_eq!(known.record(bound(1, 10), 10), bound(1, 10));
        // A concurrent reader's older, lower bound does not shrink it.
        assert_eq!(known.record(bound(1, 8), 12), bound(1, 10));
        // After a fail-over or restart (another start time) what was safe before counts for nothing.
        assert_eq!(known.record(bound(2, 4), 4), bound(2, 4));
        // The same server, but its sequence went back below the bound (a reset, a restore).
        known.record(bound(2, 50), 50);
        assert_eq!(known.record(bound(2, 3), 3), bound(2, 3));
        // A broken connection forgets it.
        known.forget();
        assert_eq!(known.get(), None);
    }
}
