//! [`CachedRepository`]: an opt-in, bounded, version-checked write-side cache of aggregate states in front of a
//! [`Repository`].
//!
//! A command on a cached stream decides on the cached state and appends expecting exactly the cached version, in
//! one round trip to the store: no read, no decoding, no fold. The expected-version check is what keeps this
//! correct: if anyone else (another process, another repository) appended in the meantime, the append is a
//! conflict, the entry is evicted, and the command runs again through the repository (load, decide, append,
//! with its retries), exactly as without the cache. Any other failure also evicts the entry, so the cache only
//! ever holds states read from or confirmed by the store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use crate::aggregate::Aggregate;
use crate::error::Error;
use crate::event::{Metadata, NewEvent};
use crate::expected::ExpectedVersion;
use crate::ids::{Position, StreamId, StreamVersion};
use crate::repository::{CommandError, Executed, Loaded, Repository};
use crate::store::EventStore;

/// A [`Repository`] with a bounded cache of the aggregates it last wrote. Cheap to clone: clones share the
/// cache. Use one per aggregate type per process; commands from other processes or repositories are detected
/// by the expected-version check and cost one extra round trip (the conflict), never a wrong decision.
///
/// ```
/// # use annals::{Aggregate, Event};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)] enum Ev { #[serde(rename = "E")] E }
/// # impl Event for Ev {}
/// # #[derive(Debug, Default, Clone)] struct Counter(u64);
/// # impl Aggregate for Counter {
/// #     type Command = (); type Event = Ev; type Error = std::convert::Infallible;
/// #     fn decide(&self, _: &()) -> Result<Vec<Ev>, Self::Error> { Ok(vec![Ev::E]) }
/// #     fn apply(&mut self, _: &Ev) { self.0 += 1 }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use annals::{CachedRepository, Repository, StreamId};
/// use annals_memory::MemoryStore;
///
/// let counters = CachedRepository::new(Repository::<Counter, _>::new(MemoryStore::new()), 10_000);
/// let id = StreamId::new("counter-1")?;
/// counters.execute(&id, &()).await?; // loads (nothing yet), decides, appends, caches version 1
/// let done = counters.execute(&id, &()).await?; // decides on the cached state, appends expecting version 1
/// assert_eq!(done.state.0, 2);
/// # Ok(())
/// # }
/// ```
pub struct CachedRepository<A, S> {
    repository: Repository<A, S>,
    cache: Arc<Mutex<Entries<A>>>,
}

impl<A, S: Clone> Clone for CachedRepository<A, S> {
    fn clone(&self) -> Self {
        Self {
            repository: self.repository.clone(),
            cache: self.cache.clone(),
        }
    }
}

/// The cached states, at most `capacity`, the oldest written evicted first.
struct Entries<A> {
    capacity: usize,
    tick: u64,
    states: HashMap<StreamId, (Loaded<A>, u64)>,
    /// Streams in the order they were cached (with the tick of that write; older ticks of a stream are stale).
    order: VecDeque<(StreamId, u64)>,
}

impl<A> Entries<A> {
    fn put(&mut self, stream: &StreamId, loaded: Loaded<A>) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        self.states.insert(stream.clone(), (loaded, self.tick));
        self.order.push_back((stream.clone(), self.tick));
        while self.states.len() > self.capacity {
            let Some((oldest, tick)) = self.order.pop_front() else {
                break;
            };
            if self.states.get(&oldest).is_some_and(|(_, t)| *t == tick) {
                self.states.remove(&oldest);
            }
        }
        // Rewritten streams leave stale entries behind: keep the queue within twice the capacity.
        if self.order.len() > 2 * self.capacity + 16 {
            let states = &self.states;
            self.order
                .retain(|(s, t)| states.get(s).is_some_and(|(_, current)| current == t));
        }
    }
}

/// What the fast path found.
enum Fast<A: Aggregate> {
    /// The command is done (accepted, rejected, or failed).
    Done(Result<Executed<A>, CommandError<A::Error>>),
    /// The cached state was stale (a conflict); the entry is gone.
    Stale,
}

impl<A, S> CachedRepository<A, S>
where
    A: Aggregate + Clone + Send + Sync,
    S: EventStore,
{
    /// Puts a cache of at most `capacity` aggregates in front of `repository` (0 caches nothing).
    pub fn new(repository: Repository<A, S>, capacity: usize) -> Self {
        Self {
            repository,
            cache: Arc::new(Mutex::new(Entries {
                capacity,
                tick: 0,
                states: HashMap::new(),
                order: VecDeque::new(),
            })),
        }
    }

    /// The repository behind the cache (its commands bypass the cache).
    pub fn repository(&self) -> &Repository<A, S> {
        &self.repository
    }

    /// How many aggregates are cached.
    pub fn cached(&self) -> usize {
        self.entries().states.len()
    }

    /// Drops the cached state of `stream`, if any.
    pub fn evict(&self, stream: &StreamId) {
        self.entries().states.remove(stream);
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries<A>> {
        // The map stays consistent under a panic elsewhere (every change is one insert or remove).
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, stream: &StreamId) -> Option<Loaded<A>> {
        self.entries().states.get(stream).map(|(l, _)| l.clone())
    }

    fn put(&self, stream: &StreamId, state: &A, version: StreamVersion, position: Position) {
        let loaded = Loaded {
            state: state.clone(),
            version,
            position,
        };
        self.entries().put(stream, loaded);
    }

    /// Executes `command` with fresh metadata (a new correlation id). See
    /// [`CachedRepository::execute_with`].
    ///
    /// # Errors
    /// As [`Repository::execute`].
    pub async fn execute(
        &self,
        stream: &StreamId,
        command: &A::Command,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        self.execute_with(stream, command, Metadata::default())
            .await
    }

    /// Executes `command`: on a cached stream, decides on the cached state and appends expecting the cached
    /// version (one round trip); otherwise, or when that append conflicts, through the repository
    /// ([`Repository::execute_with`]: load, decide, append, retries). Either way the resulting state is cached.
    ///
    /// # Errors
    /// As [`Repository::execute_with`]. A store failure on the cached path evicts the entry and is returned
    /// after one retry of the same append (same event ids, so a commit whose acknowledgement was lost is not
    /// written twice).
    pub async fn execute_with(
        &self,
        stream: &StreamId,
        command: &A::Command,
        mut metadata: Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        if metadata.correlation_id.is_none() {
            metadata.correlation_id = Some(uuid::Uuid::now_v7().to_string());
        }
        if let Some(loaded) = self.get(stream) {
            match self.on_cached(stream, command, &metadata, loaded).await {
                Fast::Done(result) => return result,
                Fast::Stale => {}
            }
        }
        let executed = self
            .repository
            .execute_with(stream, command, metadata)
            .await;
        match &executed {
            Ok(done) => self.put(stream, &done.state, done.version, done.position),
            Err(CommandError::Rejected(_)) => {}
            Err(_) => self.evict(stream),
        }
        executed
    }

    async fn on_cached(
        &self,
        stream: &StreamId,
        command: &A::Command,
        metadata: &Metadata,
        loaded: Loaded<A>,
    ) -> Fast<A> {
        let Loaded {
            mut state,
            version,
            position,
        } = loaded;
        // A rejection on the cached state is as final as on a loaded one: the state is the stream's at
        // `version`, and nothing is appended.
        let events = match state.decide(command) {
            Ok(events) => events,
            Err(rejected) => return Fast::Done(Err(CommandError::Rejected(rejected))),
        };
        if events.is_empty() {
            return Fast::Done(Ok(executed(state, version, position, events)));
        }
        let encoded = events
            .iter()
            .map(|e| NewEvent::from_event(e).map(|n| n.with_metadata(metadata.clone())))
            .collect::<Result<Vec<_>, _>>();
        let new_events = match encoded {
            Ok(new_events) => new_events,
            Err(error) => return Fast::Done(Err(CommandError::Store(error))),
        };
        let expected = ExpectedVersion::Exact(version);
        let store = self.repository.store();
        let mut appended = store.append(stream, expected, new_events.clone()).await;
        if matches!(appended, Err(Error::Unavailable { .. })) {
            appended = store.append(stream, expected, new_events).await;
        }
        match appended {
            Ok(result) => {
                for event in &events {
                    state.apply(event);
                }
                self.put(stream, &state, result.stream_version, result.last_position);
                Fast::Done(Ok(executed(
                    state,
                    result.stream_version,
                    result.last_position,
                    events,
                )))
            }
            Err(Error::Conflict { .. }) => {
                self.evict(stream);
                Fast::Stale
            }
            Err(other) => {
                self.evict(stream);
                Fast::Done(Err(CommandError::Store(other)))
            }
        }
    }
}

fn executed<A: Aggregate>(
    state: A,
    version: StreamVersion,
    position: Position,
    events: Vec<A::Event>,
) -> Executed<A> {
    Executed {
        state,
        version,
        position,
        events,
        retries: 0,
        replayed: false,
    }
}
