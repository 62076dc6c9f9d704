//! [`CachedRepository`]: an opt-in, bounded, version-checked write-side cache of aggregate states in front of a
//! [`Repository`].
//!
//! A command on a cached stream decides on the cached state. A decision that appends is checked by the store (the
//! append expects exactly the cached version; a conflict evicts the entry and the command runs through the
//! repository). A decision that appends nothing has no such check, so it is taken again after catching the
//! cached state up with the events stored beyond it. Every answer is thus one the repository could have given,
//! and the cache only ever holds states read from the store or written by an append it acknowledged.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use crate::aggregate::Aggregate;
use crate::error::Error;
use crate::event::Metadata;
use crate::expected::ExpectedVersion;
use crate::ids::StreamId;
use crate::repository::{CommandError, Executed, Loaded, Repository, decided, encode};
use crate::session::StoreSession;
use crate::store::EventStore;

/// A [`Repository`] with a bounded cache of the aggregates it last wrote. Cheap to clone: clones share the
/// cache. Use one per aggregate type per process. Commands from other processes or repositories cost one extra
/// round trip, never a decision on a stale state: an append decided on a stale entry conflicts (the command then
/// runs through the repository), and a refusal or no-change decided on any entry is taken again on the state
/// after the events stored beyond the entry (see [`CachedRepository::execute_with`]).
///
/// The cache trusts that what the store acknowledged stays stored. Do not put it in front of a store whose
/// appends can be rolled back after they were acknowledged (a unit of work): a state built on a rolled-back
/// append would stay cached, and while an append on it would still conflict, a refusal decided on it would not
/// be caught.
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
    /// Caches `loaded` as the state of `stream`, unless a later version of it is cached already (a command that
    /// finished after a later one must not take the cache back to its version).
    fn put(&mut self, stream: &StreamId, loaded: Loaded<A>) {
        if self.capacity == 0 {
            return;
        }
        if let Some((cached, _)) = self.states.get(stream)
            && cached.version > loaded.version
        {
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

    fn put(&self, stream: &StreamId, loaded: Loaded<A>) {
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

    /// Executes `command`. On a cached stream it decides on the cached state:
    /// - a decision that appends is appended expecting exactly the cached version (one round trip, no read);
    /// - a refusal or a decision without events is not final on a state another writer may have moved past:
    ///   the events stored after the cached version are read and applied (one round trip, usually empty) and
    ///   the command is decided again on that state; only this decision is answered, or appended expecting the
    ///   caught-up version.
    ///
    /// On a stream not cached, or when an append conflicts (the entry is evicted), the command runs through the
    /// repository ([`Repository::execute_with`]: load, decide, append, retries). Every state read or appended
    /// is cached.
    ///
    /// # Errors
    /// As [`Repository::execute_with`], on the cached path too: an append the store was unavailable for is
    /// retried with the same event ids as the repository's are ([`Repository::with_unavailable_retries`]), then
    /// answered with [`CommandError::OutcomeUnknown`]. Any failure evicts the entry.
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
            Ok(done) => self.put(
                stream,
                Loaded {
                    state: done.state.clone(),
                    version: done.version,
                    position: done.position,
                },
            ),
            Err(CommandError::Rejected(_)) => {}
            Err(_) => self.evict(stream),
        }
        executed
    }

    /// Decides on the cached state. A decision that appends is checked by the store (the append expects the
    /// cached version); one that appends nothing has no such check, so it is taken again on the stream's state
    /// after catching the cached one up, and only that decision is answered.
    async fn on_cached(
        &self,
        stream: &StreamId,
        command: &A::Command,
        metadata: &Metadata,
        cached: Loaded<A>,
    ) -> Fast<A> {
        if let Ok(events) = cached.state.decide(command)
            && !events.is_empty()
        {
            return self.append_decided(stream, metadata, cached, events).await;
        }
        // A refusal or no change on a state another writer may have moved past: not final yet.
        let current = match self.catch_up(stream, cached).await {
            Ok(Some(current)) => current,
            Ok(None) => return Fast::Stale,
            Err(error) => return Fast::Done(Err(error)),
        };
        match current.state.decide(command) {
            Ok(events) if !events.is_empty() => {
                self.append_decided(stream, metadata, current, events).await
            }
            Ok(events) => Fast::Done(Ok(decided(current, events, 0))),
            Err(rejected) => Fast::Done(Err(CommandError::Rejected(rejected))),
        }
    }

    /// The cached state brought up to the stream's current version: the events stored after the cached version
    /// (usually none), read and applied, and the result cached. `None` (the entry evicted) when what the store
    /// returned does not continue the cached version.
    async fn catch_up(
        &self,
        stream: &StreamId,
        cached: Loaded<A>,
    ) -> Result<Option<Loaded<A>>, CommandError<A::Error>> {
        let read = self
            .repository
            .store()
            .read_stream(stream, cached.version.next(), usize::MAX)
            .await;
        let newer = match read {
            Ok(newer) => newer,
            Err(error) => {
                self.evict(stream);
                return Err(CommandError::Store(error));
            }
        };
        if newer.is_empty() {
            return Ok(Some(cached));
        }
        let mut current = cached;
        for event in &newer {
            if event.stream_version != current.version.next() {
                self.evict(stream);
                return Ok(None);
            }
            match event.decode() {
                Ok(decoded) => current.state.apply(&decoded),
                Err(error) => {
                    self.evict(stream);
                    return Err(CommandError::Store(error));
                }
            }
            current.version = event.stream_version;
            current.position = event.position;
        }
        self.put(stream, current.clone());
        Ok(Some(current))
    }

    /// Appends what was decided on `loaded`, expecting exactly its version: the store's check that the state was
    /// current. On success the new state is cached; on a conflict the entry is evicted ([`Fast::Stale`]).
    async fn append_decided(
        &self,
        stream: &StreamId,
        metadata: &Metadata,
        loaded: Loaded<A>,
        events: Vec<A::Event>,
    ) -> Fast<A> {
        let Loaded {
            mut state, version, ..
        } = loaded;
        let new_events = match encode(&events, metadata, None) {
            Ok(new_events) => new_events,
            Err(error) => return Fast::Done(Err(CommandError::Store(error))),
        };
        // As the repository appends: an unavailable store is retried with the same event ids (bounded, backed
        // off), then the outcome is unknown.
        let appended = self
            .repository
            .append(
                &mut StoreSession(self.repository.store()),
                stream,
                None,
                ExpectedVersion::Exact(version),
                new_events,
            )
            .await;
        match appended {
            Ok(result) => {
                for event in &events {
                    state.apply(event);
                }
                let after = Loaded {
                    state,
                    version: result.stream_version,
                    position: result.last_position,
                };
                self.put(stream, after.clone());
                Fast::Done(Ok(decided(after, events, 0)))
            }
            Err(CommandError::Store(Error::Conflict { .. })) => {
                self.evict(stream);
                Fast::Stale
            }
            Err(other) => {
                // Evicted whatever the failure: after an unknown outcome the stream may hold the events or not.
                self.evict(stream);
                Fast::Done(Err(other))
            }
        }
    }
}
