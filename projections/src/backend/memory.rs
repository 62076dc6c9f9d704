//! The in-memory backend: documents, checkpoints, leases and dead letters in process memory, with the same
//! semantics as PostgreSQL (a batch and its checkpoint commit together, one owner per generation, blue/green
//! generations swapped atomically).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use annals::{Position, async_trait};
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use super::{Acquired, Backend, BatchTx, Commit, Slot, Target};
use crate::documents::DocSource;
use crate::error::{Error, Result};
use crate::status::{ParkedEvent, SlotState};

/// A generation's documents: collection, then key (so lookups borrow, and keys of a collection sort together).
type Docs = Arc<RwLock<BTreeMap<String, BTreeMap<String, Value>>>>;

#[derive(Debug)]
struct MemSlot {
    generation: u64,
    version: u32,
    checkpoint: Position,
    state: SlotState,
    error: Option<String>,
    throughput: f64,
    owner: Option<Uuid>,
    lease_until: Instant,
    docs: Docs,
    /// Held for the whole of a batch, like PostgreSQL's row lock.
    batch_lock: Arc<tokio::sync::Mutex<()>>,
    parked: BTreeMap<Position, ParkedEvent>,
    fresh: bool,
}

impl MemSlot {
    fn new(generation: u64, version: u32, live: bool) -> Self {
        Self {
            generation,
            version,
            checkpoint: Position::START,
            state: if live {
                SlotState::CatchingUp
            } else {
                SlotState::Rebuilding
            },
            error: None,
            throughput: 0.0,
            owner: None,
            lease_until: Instant::now(),
            docs: Docs::default(),
            batch_lock: Arc::default(),
            parked: BTreeMap::new(),
            fresh: true,
        }
    }

    fn owned_by_other(&self, owner: Uuid) -> bool {
        self.owner.is_some_and(|o| o != owner) && self.lease_until > Instant::now()
    }

    fn take(&mut self, owner: Uuid, ttl: Duration) {
        self.owner = Some(owner);
        self.lease_until = deadline(ttl);
    }

    fn view(&self, name: &str, live: bool) -> Slot {
        Slot {
            name: name.to_owned(),
            generation: self.generation,
            version: self.version,
            live,
            checkpoint: self.checkpoint,
            state: self.state,
            error: self.error.clone(),
            throughput: self.throughput,
            owned: self.owner.is_some() && self.lease_until > Instant::now(),
            fresh: self.fresh,
            fence: 0,
        }
    }
}

/// `now + ttl`, saturating: a TTL too long to represent (`Duration::MAX`) is a lease that never expires.
fn deadline(ttl: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Refuses what PostgreSQL cannot store (and SQLite refuses alike, so every backend stores the same documents) in a `jsonb` document: a NUL character in a string or an object key
/// (a key longer than [`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES) is refused earlier, by `Documents`).
pub(crate) fn storable(collection: &str, key: &str, value: &Value) -> Result<()> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if has_nul(value) {
        return Err(crate::documents::refused(
            collection,
            key,
            "the document holds a NUL character (\\u0000), which PostgreSQL's jsonb cannot store",
        ));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct MemProjection {
    live: Option<MemSlot>,
    building: Option<MemSlot>,
    last_generation: u64,
}

impl MemProjection {
    fn slot_mut(&mut self, generation: u64) -> Option<(&mut MemSlot, bool)> {
        if let Some(s) = self.live.as_mut().filter(|s| s.generation == generation) {
            return Some((s, true));
        }
        self.building
            .as_mut()
            .filter(|s| s.generation == generation)
            .map(|s| (s, false))
    }
}

/// The in-memory backend. Clones share state.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryBackend {
    projections: Arc<Mutex<HashMap<String, MemProjection>>>,
}

impl MemoryBackend {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, MemProjection>> {
        // No code panics while holding the lock, so a poisoned lock still guards consistent data.
        self.projections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lost(name: &str) -> Error {
        Error::LostOwnership {
            projection: name.to_owned(),
        }
    }

    fn live_docs(&self, name: &str) -> Option<Docs> {
        self.lock()
            .get(name)
            .and_then(|p| p.live.as_ref())
            .map(|s| Arc::clone(&s.docs))
    }
}

fn read_docs(
    docs: &Docs,
) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, BTreeMap<String, Value>>> {
    docs.read().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn migrate(&self) -> Result<()> {
        Ok(())
    }

    async fn acquire_live(&self, p: Target<'_>, owner: Uuid, ttl: Duration) -> Result<Acquired> {
        let mut all = self.lock();
        let entry = all.entry(p.name.to_owned()).or_default();
        if entry.live.is_none() {
            entry.last_generation += 1;
            entry.live = Some(MemSlot::new(entry.last_generation, p.version, true));
        }
        let Some(slot) = entry.live.as_mut() else {
            return Ok(Acquired::Busy);
        };
        if slot.owned_by_other(owner) {
            return Ok(Acquired::Busy);
        }
        slot.take(owner, ttl);
        if slot.state == SlotState::Failed {
            slot.state = SlotState::CatchingUp;
            slot.error = None;
        }
        let view = slot.view(p.name, true);
        slot.fresh = false;
        Ok(Acquired::Slot(view))
    }

    async fn acquire_building(
        &self,
        p: Target<'_>,
        owner: Uuid,
        ttl: Duration,
    ) -> Result<Acquired> {
        let mut all = self.lock();
        let entry = all.entry(p.name.to_owned()).or_default();
        if let Some(building) = &entry.building {
            if building.owned_by_other(owner) {
                return Ok(Acquired::Busy);
            }
            if building.version != p.version {
                entry.building = None;
            }
        }
        if entry.building.is_none() {
            entry.last_generation += 1;
            entry.building = Some(MemSlot::new(entry.last_generation, p.version, false));
        }
        let Some(slot) = entry.building.as_mut() else {
            return Ok(Acquired::Busy);
        };
        slot.take(owner, ttl);
        slot.state = SlotState::Rebuilding;
        let view = slot.view(p.name, false);
        slot.fresh = false;
        Ok(Acquired::Slot(view))
    }

    async fn release(&self, slot: &Slot, owner: Uuid) -> Result<()> {
        let mut all = self.lock();
        if let Some((s, _)) = all
            .get_mut(&slot.name)
            .and_then(|p| p.slot_mut(slot.generation))
            .filter(|(s, _)| s.owner == Some(owner))
        {
            s.owner = None;
            if s.state == SlotState::Live || s.state == SlotState::CatchingUp {
                s.state = SlotState::Stopped;
            }
            s.throughput = 0.0;
        }
        Ok(())
    }

    async fn renew(&self, slot: &Slot, owner: Uuid, ttl: Duration, state: SlotState) -> Result<()> {
        let mut all = self.lock();
        let (s, _) = all
            .get_mut(&slot.name)
            .and_then(|p| p.slot_mut(slot.generation))
            .filter(|(s, _)| s.owner == Some(owner))
            .ok_or_else(|| Self::lost(&slot.name))?;
        s.take(owner, ttl);
        s.state = state;
        if state == SlotState::Live {
            s.throughput = 0.0;
        }
        Ok(())
    }

    async fn fail(&self, slot: &Slot, owner: Uuid, error: &str) -> Result<()> {
        let mut all = self.lock();
        if let Some((s, _)) = all
            .get_mut(&slot.name)
            .and_then(|p| p.slot_mut(slot.generation))
            .filter(|(s, _)| s.owner == Some(owner))
        {
            s.state = SlotState::Failed;
            s.error = Some(error.to_owned());
            s.owner = None;
            s.throughput = 0.0;
        }
        Ok(())
    }

    async fn begin(
        &self,
        slot: &Slot,
        owner: Uuid,
        ttl: Duration,
        expected: Option<Position>,
        swap: bool,
    ) -> Result<Box<dyn BatchTx>> {
        let lost = || Self::lost(&slot.name);
        // Lock order: the live generation first, then the building one (as on PostgreSQL).
        let (live_lock, own_lock, docs) = {
            let mut all = self.lock();
            let p = all.get_mut(&slot.name).ok_or_else(lost)?;
            let live_lock = if swap {
                p.live.as_ref().map(|l| Arc::clone(&l.batch_lock))
            } else {
                None
            };
            let (s, _) = p.slot_mut(slot.generation).ok_or_else(lost)?;
            (live_lock, Arc::clone(&s.batch_lock), Arc::clone(&s.docs))
        };
        let mut guards = Vec::with_capacity(2);
        if let Some(l) = live_lock {
            guards.push(l.lock_owned().await);
        }
        guards.push(own_lock.lock_owned().await);
        let live_checkpoint = {
            let mut all = self.lock();
            let p = all.get_mut(&slot.name).ok_or_else(lost)?;
            let live_checkpoint = if swap {
                Some(p.live.as_ref().map_or(Position::START, |l| l.checkpoint))
            } else {
                None
            };
            let (s, _) = p.slot_mut(slot.generation).ok_or_else(lost)?;
            if s.owner != Some(owner) || expected.is_some_and(|e| e != s.checkpoint) {
                return Err(lost());
            }
            s.take(owner, ttl);
            live_checkpoint
        };
        Ok(Box::new(MemTx {
            backend: self.clone(),
            name: slot.name.clone(),
            generation: slot.generation,
            owner,
            expected,
            docs,
            live_checkpoint,
            ttl,
            _guards: guards,
        }))
    }

    async fn slots(&self) -> Result<Vec<Slot>> {
        let all = self.lock();
        let mut out = Vec::new();
        for (name, p) in all.iter() {
            if let Some(s) = &p.live {
                out.push(s.view(name, true));
            }
            if let Some(s) = &p.building {
                out.push(s.view(name, false));
            }
        }
        Ok(out)
    }

    async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>> {
        Ok(self
            .lock()
            .get(name)
            .and_then(|p| p.live.as_ref())
            .map(|s| s.parked.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn reset(&self, name: &str) -> Result<()> {
        let mut all = self.lock();
        if let Some(p) = all.get_mut(name) {
            p.live = None;
            p.building = None;
        }
        Ok(())
    }

    async fn checkpoint(&self, name: &str) -> Result<Position> {
        Ok(self
            .lock()
            .get(name)
            .and_then(|p| p.live.as_ref())
            .map_or(Position::START, |s| s.checkpoint))
    }

    async fn get_doc(&self, name: &str, collection: &str, key: &str) -> Result<Option<Value>> {
        let Some(docs) = self.live_docs(name) else {
            return Ok(None);
        };
        Ok(read_docs(&docs)
            .get(collection)
            .and_then(|c| c.get(key))
            .cloned())
    }

    async fn list_docs(
        &self,
        name: &str,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>> {
        let Some(docs) = self.live_docs(name) else {
            return Ok(Vec::new());
        };
        let docs = read_docs(&docs);
        let Some(collection) = docs.get(collection) else {
            return Ok(Vec::new());
        };
        let start = match after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after),
            _ => std::ops::Bound::Included(prefix),
        };
        Ok(collection
            .range::<str, _>((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn schema_of(&self, _name: &str) -> Option<String> {
        None
    }
}

struct MemTx {
    backend: MemoryBackend,
    name: String,
    generation: u64,
    owner: Uuid,
    expected: Option<Position>,
    docs: Docs,
    live_checkpoint: Option<Position>,
    ttl: Duration,
    _guards: Vec<OwnedMutexGuard<()>>,
}

#[async_trait]
impl DocSource for MemTx {
    async fn load(&mut self, collection: &str, key: &str) -> Result<Option<Value>> {
        Ok(read_docs(&self.docs)
            .get(collection)
            .and_then(|c| c.get(key))
            .cloned())
    }
}

#[async_trait]
impl BatchTx for MemTx {
    fn docs(&mut self) -> &mut dyn DocSource {
        self
    }

    fn live_checkpoint(&self) -> Option<Position> {
        self.live_checkpoint
    }

    async fn commit(self: Box<Self>, commit: Commit) -> Result<()> {
        let lost = || MemoryBackend::lost(&self.name);
        let mut all = self.backend.lock();
        let p = all.get_mut(&self.name).ok_or_else(lost)?;
        let (s, _) = p.slot_mut(self.generation).ok_or_else(lost)?;
        if s.owner != Some(self.owner) || self.expected.is_some_and(|e| e != s.checkpoint) {
            return Err(lost());
        }
        // All or nothing, like a PostgreSQL transaction: check every write before applying any.
        for (collection, key, value) in &commit.writes {
            if let Some(value) = value {
                storable(collection, key, value)?;
            }
        }
        {
            let mut docs = s.docs.write().unwrap_or_else(PoisonError::into_inner);
            for (collection, key, value) in commit.writes {
                match value {
                    Some(v) => {
                        docs.entry(collection).or_default().insert(key, v);
                    }
                    None => {
                        if let Some(documents) = docs.get_mut(&collection) {
                            documents.remove(&key);
                        }
                    }
                }
            }
        }
        s.take(self.owner, self.ttl);
        if let Some(c) = commit.checkpoint {
            s.checkpoint = c;
        }
        for parked in commit.park {
            s.parked.insert(parked.position, parked);
        }
        for position in commit.unpark {
            s.parked.remove(&position);
        }
        if let Some(state) = commit.state {
            s.state = state;
        }
        if let Some(t) = commit.throughput {
            s.throughput = t;
        }
        if commit.swap
            && let Some(mut building) = p.building.take()
        {
            building.owner = None;
            building.state = SlotState::Stopped;
            p.live = Some(building);
        }
        Ok(())
    }
}
