//! Counting round trips: every statement sqlx runs is logged as a `sqlx::query` event; a tracing layer counts
//! those events while counting is switched on (off, sqlx does not even format them). Pings on acquire are not
//! statements: they are counted through the pools' `before_acquire` hook (`harness::acquires`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

static COUNTING: AtomicBool = AtomicBool::new(false);
static STATEMENTS: AtomicUsize = AtomicUsize::new(0);
static NOTIFIES: AtomicUsize = AtomicUsize::new(0);

/// The start of the statement the PostgreSQL store's background notifier sends (off the append's path).
const NOTIFIER: &str = "set_config('synchronous_commit',";

/// Looks for the notifier's statement in an event's `summary` field.
struct Summary(bool);

impl tracing::field::Visit for Summary {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "summary" && value.contains(NOTIFIER) {
            self.0 = true;
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" && format!("{value:?}").contains(NOTIFIER) {
            self.0 = true;
        }
    }
}

/// The layer that counts `sqlx::query` events.
pub(crate) struct StatementCounter;

impl<S: Subscriber> Layer<S> for StatementCounter {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.target() == "sqlx::query" {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.target() == "sqlx::query" && COUNTING.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut summary = Summary(false);
        event.record(&mut summary);
        if summary.0 {
            NOTIFIES.fetch_add(1, Ordering::Relaxed);
        } else {
            STATEMENTS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Switches counting on or off.
pub(crate) fn count(on: bool) {
    COUNTING.store(on, Ordering::Relaxed);
}

/// Round trips so far: statements, plus the pings of pinged pools' acquires; the store's background NOTIFYs
/// apart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trips {
    statements: usize,
    notifies: usize,
    acquires: usize,
}

/// A snapshot of the counters, to subtract from a later one.
pub(crate) fn snapshot() -> Trips {
    Trips {
        statements: STATEMENTS.load(Ordering::Relaxed),
        notifies: NOTIFIES.load(Ordering::Relaxed),
        acquires: crate::harness::acquires(),
    }
}

impl Trips {
    /// Round trips since `earlier` on the operations' own path (statements, and each acquire as a ping when
    /// `pinged`), and the background NOTIFYs sent meanwhile (with their acquires' pings).
    pub(crate) fn since(self, earlier: Trips, pinged: bool) -> (usize, usize) {
        let statements = self.statements - earlier.statements;
        let notifies = self.notifies - earlier.notifies;
        let acquires = if pinged {
            self.acquires - earlier.acquires
        } else {
            0
        };
        // Every NOTIFY acquired a connection of its own too.
        let notify_pings = if pinged { notifies.min(acquires) } else { 0 };
        (
            statements + acquires - notify_pings,
            notifies + notify_pings,
        )
    }
}
