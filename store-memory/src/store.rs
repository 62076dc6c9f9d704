use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use annals::{
    AppendResult, CommandId, CommandRecord, EventId, EventStore, ExpectedVersion, NewEvent,
    Payload, Position, RecordedEvent, Result, StreamId, StreamVersion, async_trait, check_append,
    resolve_replayed_append,
};
use tokio::sync::watch;

/// An in-memory event store. Clones share the same events.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: RwLock<State>,
    /// The head position, published after every append; waiters subscribe to it.
    head: watch::Sender<Position>,
}

#[derive(Default)]
struct State {
    /// Every event in global order; the event at index `i` has position `i + 1`.
    log: Vec<RecordedEvent>,
    /// Per stream, the indexes of its events in `log`, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    /// Index of every event id in `log`.
    ids: HashMap<EventId, usize>,
    /// Outcomes of command ids that appended nothing (see [`EventStore::record_command`]).
    commands: HashMap<CommandId, CommandRecord>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("head", &*self.shared.head.borrow())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                head: watch::channel(Position::START).0,
            }),
        }
    }

    /// The number of events stored.
    pub fn len(&self) -> usize {
        self.read().log.len()
    }

    /// Whether no event is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the recorded outcomes (refusals, no-change decisions) of command ids recorded before `cutoff`, and
    /// returns how many were forgotten. A repeat of a forgotten command id runs the command again; outcomes with
    /// events are never forgotten (their event ids are the record). The store never expires records on its own.
    pub fn forget_commands_recorded_before(&self, cutoff: chrono::DateTime<chrono::Utc>) -> usize {
        let mut state = self.write();
        let before = state.commands.len();
        state
            .commands
            .retain(|_, record| record.recorded_at >= cutoff);
        before - state.commands.len()
    }

    // No code panics while holding the lock, so a poisoned lock still guards consistent data.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn version_of(&self, stream: &StreamId) -> StreamVersion {
        StreamVersion(self.streams.get(stream).map_or(0, |s| s.len() as u64))
    }

    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let current = self.version_of(stream);
        let stored: Vec<RecordedEvent> = events
            .iter()
            .filter_map(|e| self.ids.get(&e.event_id).map(|&i| self.log[i].clone()))
            .collect();
        if !stored.is_empty() {
            return resolve_replayed_append(stream, expected, &events, &stored, current);
        }
        if !expected.matches(current) {
            return Err(annals::Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: current,
            });
        }
        let recorded_at = chrono::Utc::now();
        let first_index = self.log.len();
        let indexes = self.streams.entry(stream.clone()).or_default();
        let mut version = current;
        for event in events {
            version = version.next();
            let index = self.log.len();
            indexes.push(index);
            self.ids.insert(event.event_id, index);
            self.log.push(RecordedEvent {
                event_id: event.event_id,
                stream_id: stream.clone(),
                stream_version: version,
                position: Position(index as u64 + 1),
                recorded_at,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: Payload::from(&event.payload),
                metadata: event.metadata,
            });
        }
        Ok(AppendResult {
            stream_version: version,
            first_position: Position(first_index as u64 + 1),
            last_position: Position(self.log.len() as u64),
        })
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        check_append(stream, &events)?;
        let count = events.len();
        let result = self.write().append(stream, expected, events)?;
        // Publish outside the lock; `send_if_modified` keeps the head monotonic when appends race here.
        self.shared.head.send_if_modified(|head| {
            let grew = result.last_position > *head;
            if grew {
                *head = result.last_position;
            }
            grew
        });
        tracing::trace!(%stream, count, position = result.last_position.get(), "appended");
        Ok(result)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let state = self.read();
        let Some(indexes) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(indexes
            .iter()
            .skip(skip)
            .take(limit)
            .map(|&i| state.log[i].clone())
            .collect())
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        let state = self.read();
        let start = usize::try_from(after.get())
            .unwrap_or(usize::MAX)
            .min(state.log.len());
        Ok(state.log[start..].iter().take(limit).cloned().collect())
    }

    async fn head(&self) -> Result<Position> {
        Ok(Position(self.read().log.len() as u64))
    }

    async fn find_command(&self, command_id: &CommandId) -> Result<Option<CommandRecord>> {
        Ok(self.read().commands.get(command_id).cloned())
    }

    async fn record_command(&self, mut record: CommandRecord) -> Result<CommandRecord> {
        let mut state = self.write();
        if let Some(&index) = state.ids.get(&record.command_id.event_id(0)) {
            return Err(annals::Error::CommandIdUsed {
                command_id: record.command_id,
                stream: state.log[index].stream_id.clone(),
            });
        }
        record.recorded_at = chrono::Utc::now();
        Ok(state
            .commands
            .entry(record.command_id.clone())
            .or_insert(record)
            .clone())
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<Position> {
        let mut head = self.shared.head.subscribe();
        if let Ok(Ok(position)) =
            tokio::time::timeout(timeout, head.wait_for(|position| *position > after)).await
        {
            return Ok(*position);
        }
        Ok(*head.borrow())
    }
}
