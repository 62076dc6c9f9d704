//! The faults the harness causes from the client side: [`FaultSwitch`], a client's store that sends the appends of
//! one operation through [`FailingAppends`] (lost acknowledgements, unavailable appends), and
//! [`ConnectionKiller`], a store test's hook that kills connections.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::testkit::command_ids::FailingAppends;
use crate::{
    AppendResult, CommandId, CommandRecord, CommandSession, EventStore, ExpectedVersion, NewEvent,
    Position, RecordedEvent, Result, StoreSession, StreamId, StreamVersion,
};

use super::history::Fault;

/// Kills connections of the store under test from outside it, as a crashed proxy or a restarted server would
/// (PostgreSQL: `pg_terminate_backend` of a backend connected to the test's database, never the hook's own).
/// The checker calls it from a task of its own a few times a second while the clients run.
#[crate::async_trait]
pub trait ConnectionKiller: Send + Sync {
    /// Kills one connection chosen with `pick` (a random number), and says how many it killed.
    ///
    /// # Errors
    /// The hook's own failure, as text; the checker counts it and goes on.
    async fn kill(&self, pick: u64) -> std::result::Result<usize, String>;
}

/// A client's view of the store: every call goes to the store, except that the appends of an operation armed
/// with a [`Fault`] go through a [`FailingAppends`] around it. Unarmed, its command sessions are the store's own
/// (a store's one-connection session stays under test); armed, a session sends its append through the fault.
pub(crate) struct FaultSwitch {
    store: Arc<dyn EventStore>,
    armed: Mutex<Option<Arc<dyn EventStore>>>,
}

impl FaultSwitch {
    pub(crate) fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            armed: Mutex::new(None),
        }
    }

    /// Sends the appends from now on through `fault` (none: straight to the store).
    pub(crate) fn arm(&self, fault: Fault) {
        let failing: Option<Arc<dyn EventStore>> = match fault {
            Fault::None => None,
            Fault::LostAcks(n) => Some(Arc::new(FailingAppends::losing_acknowledgements(
                self.store.clone(),
                n,
            ))),
            Fault::Unreachable(n) => {
                Some(Arc::new(FailingAppends::unreachable(self.store.clone(), n)))
            }
        };
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = failing;
    }

    fn target(&self) -> Option<Arc<dyn EventStore>> {
        self.armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[crate::async_trait]
impl EventStore for FaultSwitch {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        match self.target() {
            Some(failing) => failing.append(stream, expected, events).await,
            None => self.store.append(stream, expected, events).await,
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.store.read_stream(stream, from, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.store.read_all(after, limit).await
    }

    async fn head(&self) -> Result<Position> {
        self.store.head().await
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<Position> {
        self.store.wait_for_events(after, timeout).await
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<()> {
        self.store.visit_stream(stream, visit).await
    }

    fn command_session(&self) -> Box<dyn CommandSession + '_> {
        if self.target().is_some() {
            Box::new(StoreSession(self))
        } else {
            self.store.command_session()
        }
    }

    async fn find_command(&self, command_id: &CommandId) -> Result<Option<CommandRecord>> {
        self.store.find_command(command_id).await
    }

    async fn record_command(&self, record: CommandRecord) -> Result<CommandRecord> {
        self.store.record_command(record).await
    }
}
