//! The [`EventStore`] trait every store implements.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::command_id::CommandId;
use crate::command_record::CommandRecord;
use crate::error::Result;
use crate::event::{NewEvent, RecordedEvent};
use crate::expected::ExpectedVersion;
use crate::ids::{Position, StreamId, StreamVersion};
use crate::session::{CommandSession, StoreSession};

/// Events per [`read_all`](EventStore::read_all) page of the default [`visit_all`](EventStore::visit_all): a
/// visit of a long log costs one round trip per thousand events, and holds no more than one page of envelopes in
/// memory at a time.
pub const VISIT_ALL_PAGE: usize = 1_000;

/// What an append recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append (the version of its last event).
    pub stream_version: StreamVersion,
    /// Position of the first appended event.
    pub first_position: Position,
    /// Position of the last appended event.
    pub last_position: Position,
}

/// An append-only store of event streams with a store-wide order.
///
/// Hold one as `Arc<dyn EventStore>` or as a generic parameter; `Arc<S>` implements the trait too.
///
/// # Implementing
/// Run the conformance suite (`annals::store_conformance!`, feature `testkit`) against the implementation;
/// it pins every rule below. In short:
/// - [`append`](EventStore::append) writes all events or none, at consecutive stream versions starting after the
///   current one, at increasing positions, only if `expected` matches the stream's version. Appending events whose
///   ids are already stored (same stream, same order, same types and payloads) at the same expected version
///   writes nothing and returns the original result.
/// - [`read_all`](EventStore::read_all) never returns a position while an append that could still be given a
///   lower position is in flight: a reader that checkpoints the last position it saw never skips an event.
///   [`visit_all`](EventStore::visit_all) keeps the same rule.
/// - [`wait_for_events`](EventStore::wait_for_events) wakes up without busy polling.
///
/// # Errors
/// Every method returns [`enum@crate::Error`]; see its variants for what each means to a caller.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream` if its version matches `expected`, atomically.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult>;

    /// Reads up to `limit` events of `stream` with versions `>= from`, in version order. A stream with no events
    /// reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Reads up to `limit` events with positions `> after`, in position order (one page of the global stream).
    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// The position of the last event that [`read_all`](EventStore::read_all) would return now
    /// ([`Position::START`] for an empty store).
    async fn head(&self) -> Result<Position>;

    /// Waits until an event after `after` can be read, or until `timeout` has passed, and returns the head
    /// then. Returns at once when the head is already past `after`.
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<Position>;

    /// The highest position the store has handed out to an append (committed, still committing, or rolled
    /// back), [`Position::START`] when none: every position a write answered with is at most this, so a position
    /// beyond it was never handed out, while one at or below it that is beyond [`head`](EventStore::head) is
    /// held back only by appends still in flight. Never below `head` as read before it.
    ///
    /// The default is [`head`](EventStore::head): right for stores whose appends become readable as they are
    /// given their positions (the memory store, under its write lock; SQLite, in its one write transaction).
    /// Stores with gaps in flight override it (PostgreSQL: the position sequence's last value).
    async fn allocated_head(&self) -> Result<Position> {
        self.head().await
    }

    /// Reads every event of `stream`, in version order.
    async fn load_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>> {
        self.read_stream(stream, StreamVersion::FIRST, usize::MAX)
            .await
    }

    /// Hands every event of `stream` to `visit`, in version order, and stops at the first error `visit` returns.
    /// [`Repository::load`](crate::Repository::load) folds aggregates through it.
    ///
    /// The default reads the whole stream with [`load_stream`](EventStore::load_stream) first. Stores that
    /// receive events one by one override it to visit each as it arrives, so decoding and folding overlap the
    /// read and the stream is never held in memory whole.
    async fn visit_stream(
        &self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<()> {
        for event in &self.load_stream(stream).await? {
            visit(event)?;
        }
        Ok(())
    }

    /// Hands every event with a position above `after`, up to the head as of the call, to `visit` in position
    /// order, and returns the position of the last event visited (`after` when there was none). Stops at the
    /// first error `visit` returns and returns that error. A fold of the global order (a replay, an in-memory read
    /// model) runs through it without a page of events allocated per read.
    ///
    /// The head as of the call is the position [`head`](EventStore::head) would return when the visit starts:
    /// the visit hands over exactly the events [`read_all`](EventStore::read_all) would return from `after` then,
    /// and none appended while it runs. Like `read_all`, it never hands over a position while an append that
    /// could still be given a lower position is in flight, so the returned position is a checkpoint to call it
    /// again from without skipping an event.
    ///
    /// The default asks [`head`](EventStore::head) once, then reads pages of [`VISIT_ALL_PAGE`] events with
    /// `read_all` up to that head. Stores that receive events one by one override it to visit each as it
    /// arrives.
    async fn visit_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<Position> {
        let head = self.head().await?;
        let mut last = after;
        while last < head {
            let page = self.read_all(last, VISIT_ALL_PAGE).await?;
            if page.is_empty() {
                break;
            }
            for event in page.iter().take_while(|e| e.position <= head) {
                visit(event)?;
                last = event.position;
            }
            if page.last().is_none_or(|e| e.position >= head) {
                break;
            }
        }
        Ok(last)
    }

    /// As [`visit_all`](EventStore::visit_all), with the same order, bound and gap safety, except that a store may
    /// leave out what a fold of domain events does not read: each event's id (then
    /// [`EventId::NIL`](crate::EventId::NIL)), `recorded_at` (then
    /// [`DateTime::MIN_UTC`](chrono::DateTime::MIN_UTC)) and metadata (then empty). Position, stream, version,
    /// event type, schema version and payload are always the stored ones, so
    /// [`RecordedEvent::decode`](crate::RecordedEvent::decode) and its errors work as after `visit_all`.
    ///
    /// A replay into memory or a rebuild that never looks at metadata, ids or timestamps reads through it: on
    /// PostgreSQL each row is about a fifth narrower, which is what such a read is bound by. The default is
    /// `visit_all`.
    async fn fold_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<Position> {
        self.visit_all(after, visit).await
    }

    /// Opens a [`CommandSession`] for one command attempt: the stream read and the append(s) the
    /// [`Repository`](crate::Repository) makes for it. The default sends each call to this store's own
    /// [`visit_stream`](EventStore::visit_stream) and [`append`](EventStore::append); a store that checks out a
    /// connection per operation overrides it to serve both on one connection.
    fn command_session(&self) -> Box<dyn CommandSession + '_> {
        Box::new(StoreSession(self))
    }

    /// The record of `command_id`'s outcome when that outcome appended nothing (a refusal, or no change); see
    /// [`CommandRecord`]. `None` when the id has no record. The [`Repository`](crate::Repository) asks this for
    /// commands executed under a command id; applications do not call it.
    ///
    /// The default has no record: stores that support command ids override both this and
    /// [`record_command`](EventStore::record_command) (the conformance cases in
    /// `annals::testkit::command_records` pin the rules).
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) from the default; the store's error otherwise.
    async fn find_command(&self, command_id: &CommandId) -> Result<Option<CommandRecord>> {
        let _ = command_id;
        Err(crate::Error::Unsupported {
            operation: "find_command",
        })
    }

    /// Records `record` unless its command id has a record already, atomically, and returns the record that
    /// holds the id: the given one (with the store's `recorded_at`) or the earlier one. Recording the same
    /// record again is a no-op.
    ///
    /// # Errors
    /// [`Error::CommandIdUsed`](crate::Error::CommandIdUsed) when an event with the id's first derived event id
    /// ([`CommandId::event_id`]`(0)`) is stored: the id already took effect. [`Error::Unsupported`](crate::Error::Unsupported)
    /// from the default.
    async fn record_command(&self, record: CommandRecord) -> Result<CommandRecord> {
        let _ = record;
        Err(crate::Error::Unsupported {
            operation: "record_command",
        })
    }
}

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for Arc<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        (**self).append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        (**self).read_stream(stream, from, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        (**self).read_all(after, limit).await
    }

    async fn head(&self) -> Result<Position> {
        (**self).head().await
    }

    async fn allocated_head(&self) -> Result<Position> {
        (**self).allocated_head().await
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<Position> {
        (**self).wait_for_events(after, timeout).await
    }

    async fn load_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>> {
        (**self).load_stream(stream).await
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<()> {
        (**self).visit_stream(stream, visit).await
    }

    async fn visit_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<Position> {
        (**self).visit_all(after, visit).await
    }

    async fn fold_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<()> + Send),
    ) -> Result<Position> {
        (**self).fold_all(after, visit).await
    }

    fn command_session(&self) -> Box<dyn CommandSession + '_> {
        (**self).command_session()
    }

    async fn find_command(&self, command_id: &CommandId) -> Result<Option<CommandRecord>> {
        (**self).find_command(command_id).await
    }

    async fn record_command(&self, record: CommandRecord) -> Result<CommandRecord> {
        (**self).record_command(record).await
    }
}

/// Checks the shape of an append before any I/O: at least one event, no empty event type, no nil event id
/// ([`EventId::NIL`](crate::EventId::NIL)), no event id twice, and
/// nothing some store cannot keep (a NUL character in an event type, payload or metadata; a schema version above
/// [`MAX_SCHEMA_VERSION`](crate::MAX_SCHEMA_VERSION)). Stores call this first so every store rejects the same
/// input with the same error.
///
/// # Errors
/// [`Error::InvalidAppend`](crate::Error::InvalidAppend) naming the offending event's index.
pub fn check_append(stream: &StreamId, events: &[NewEvent]) -> Result<()> {
    let invalid = |reason: String| crate::Error::InvalidAppend {
        stream: stream.clone(),
        reason,
    };
    if events.is_empty() {
        return Err(invalid("the batch has no events".to_owned()));
    }
    // A lone event cannot repeat an id: the set (an allocation and a seeded hasher) only for batches.
    let mut seen =
        (events.len() > 1).then(|| std::collections::HashSet::with_capacity(events.len()));
    for (index, event) in events.iter().enumerate() {
        if event.event_type.is_empty() {
            return Err(invalid(format!("event #{index} has an empty event type")));
        }
        if event.event_id == crate::EventId::NIL {
            return Err(invalid(format!(
                "event #{index} has the nil event id, which reads that leave ids out hand over"
            )));
        }
        if let Some(reason) = crate::storable::unstorable(index, event) {
            return Err(invalid(reason));
        }
        if let Some(seen) = seen.as_mut()
            && !seen.insert(event.event_id)
        {
            return Err(invalid(format!(
                "event #{index} repeats the event id {} of an earlier event in the batch",
                event.event_id
            )));
        }
    }
    Ok(())
}

/// Decides what an append whose event ids are (partly) stored already means, given the stored events that carry
/// any of those ids (`stored`, in any order) and the stream's current version.
///
/// It is a retry of an earlier append, and succeeds with that append's result, when every id is stored, in this
/// stream, in the same order at consecutive versions, with the same types and payloads, and `expected` matches the
/// version the stream had before them. Anything else is an error.
///
/// # Errors
/// [`Error::EventIdReused`](crate::Error::EventIdReused) when the stored events are not a faithful copy of this
/// append; [`Error::Conflict`](crate::Error::Conflict) when they are, but `expected` does not match where they were
/// written.
pub fn resolve_replayed_append(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
    stored: &[RecordedEvent],
    current: StreamVersion,
) -> Result<AppendResult> {
    let by_id: std::collections::HashMap<_, _> = stored.iter().map(|e| (e.event_id, e)).collect();
    let first_stored = events.iter().find_map(|e| by_id.get(&e.event_id)).copied();
    let Some(first_stored) = first_stored else {
        return Err(crate::Error::Backend {
            operation: "append",
            source: "resolve_replayed_append called without any stored event".into(),
        });
    };
    let base = first_stored.stream_version.get().saturating_sub(1);
    for (index, event) in events.iter().enumerate() {
        let faithful = by_id.get(&event.event_id).filter(|s| {
            s.stream_id == *stream
                && s.stream_version.get() == base + 1 + index as u64
                && s.event_type == event.event_type
                && s.payload == event.payload
        });
        if faithful.is_none() {
            // Name the first id of the batch that is stored: either this one (stored elsewhere or differently) or,
            // when this one is missing, the stored one that makes the batch a partial replay.
            let (index, culprit) = match by_id.get(&event.event_id) {
                Some(s) => (index, *s),
                None => events
                    .iter()
                    .enumerate()
                    .find_map(|(i, e)| by_id.get(&e.event_id).map(|s| (i, *s)))
                    .unwrap_or((index, first_stored)),
            };
            return Err(crate::Error::EventIdReused {
                event_id: culprit.event_id,
                index,
                stream: stream.clone(),
                existing_stream: culprit.stream_id.clone(),
                existing_version: culprit.stream_version,
            });
        }
    }
    if !expected.matches(StreamVersion(base)) {
        return Err(crate::Error::Conflict {
            stream: stream.clone(),
            expected,
            actual: current,
        });
    }
    let last = events
        .last()
        .and_then(|e| by_id.get(&e.event_id))
        .copied()
        .unwrap_or(first_stored);
    Ok(AppendResult {
        stream_version: last.stream_version,
        first_position: first_stored.position,
        last_position: last.position,
    })
}
