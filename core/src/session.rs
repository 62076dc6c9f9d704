//! [`CommandSession`]: the stream read and the append of one command attempt, which a store may serve on one
//! connection.

use async_trait::async_trait;

use crate::error::Result;
use crate::event::{NewEvent, RecordedEvent};
use crate::expected::ExpectedVersion;
use crate::ids::StreamId;
use crate::store::{AppendResult, EventStore};

/// One attempt of a command against a store: [`visit_stream`](CommandSession::visit_stream) of the aggregate's
/// stream, then (after the decision) [`append`](CommandSession::append) of the new events, possibly appended
/// again with the same event ids after the store was unavailable. The [`Repository`](crate::Repository) opens
/// one per attempt with [`EventStore::command_session`] and drops it when the attempt ends.
///
/// Both methods keep every rule of the [`EventStore`] methods of the same name; a session only lets the store
/// serve them on one connection (one pool checkout instead of two). It holds no transaction: the append's
/// expected version is the concurrency control, as without a session.
#[async_trait]
pub trait CommandSession: Send {
    /// As [`EventStore::visit_stream`], except that a store may leave out what a fold does not read: the
    /// events' `recorded_at` (then [`DateTime::MIN_UTC`](chrono::DateTime::MIN_UTC)) and `metadata` (then
    /// empty). Every other field is the stored one.
    async fn visit_stream(
        &mut self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<()>;

    /// As [`visit_stream`](CommandSession::visit_stream), except that a store may also leave out the events'
    /// ids (then [`EventId::NIL`](crate::EventId::NIL)): what a fold of the state reads, and no more. The
    /// [`Repository`](crate::Repository) loads and decides through it; a command under a
    /// [`CommandId`](crate::CommandId), which looks for the id's derived event ids, reads through `visit_stream`.
    ///
    /// The default is `visit_stream`; a store whose read costs by the column overrides it.
    async fn fold_stream(
        &mut self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<()> {
        self.visit_stream(stream, visit).await
    }

    /// As [`EventStore::append`].
    async fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult>;
}

/// The session of a store that keeps no per-command state: each call goes to the store's own method.
/// [`EventStore::command_session`] returns it unless a store overrides that method.
pub struct StoreSession<'s, S: ?Sized>(pub &'s S);

#[async_trait]
impl<S: EventStore + ?Sized> CommandSession for StoreSession<'_, S> {
    async fn visit_stream(
        &mut self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<()> {
        self.0.visit_stream(stream, visit).await
    }

    async fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.0.append(stream, expected, events).await
    }
}
