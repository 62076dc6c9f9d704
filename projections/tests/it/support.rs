//! Shared test fixtures: a counting document projection, event writers, a from-scratch comparison.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals::{EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use annals_memory::MemoryStore;
use annals_postgres::PostgresStore;
use annals_projections::{BoxError, Documents, Projection, Projections, async_trait};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

/// Per stream: how many events were applied, their amounts' sum, the last position, and which runner applied
/// the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    pub sum: u64,
    pub last: u64,
}

/// Folds `Deposited {amount}` events into one [`Tally`] per stream, and one `seen/<position>` marker per event
/// (so a double application or a skipped event shows).
pub struct Tallies {
    pub version: u32,
    /// Slows every event down (for "kill it mid-batch" tests).
    pub delay: Duration,
    /// Counts every call of `apply`.
    pub calls: Arc<AtomicU64>,
    /// Written into each `seen` marker: which runner applied it.
    pub tag: String,
}

impl Tallies {
    pub fn new() -> Self {
        Self {
            version: 1,
            delay: Duration::ZERO,
            calls: Arc::default(),
            tag: "a".to_owned(),
        }
    }

    pub fn tagged(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            ..Self::new()
        }
    }
}

#[derive(Debug, Deserialize)]
struct Deposited {
    amount: u64,
}

#[async_trait]
impl Projection for Tallies {
    fn name(&self) -> &str {
        "tallies"
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn event_types(&self) -> &[&str] {
        &["Deposited"]
    }

    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let Deposited { amount } = event.payload.parse()?;
        let mut tally = docs
            .get::<Tally>("tally", &event.stream_id)
            .await?
            .unwrap_or_default();
        tally.count += 1;
        tally.sum += amount;
        tally.last = event.position.get();
        docs.put("tally", &event.stream_id, &tally)?;
        let seen = format!("{:020}", event.position.get());
        if docs.get_json("seen", &seen).await?.is_some() {
            return Err(format!("event at {} applied twice", event.position).into());
        }
        docs.put("seen", seen, &json!({"by": self.tag, "v": self.version}))?;
        Ok(())
    }
}

/// Appends `per_stream` deposits of 1..=per_stream to each of `streams` streams named `<prefix>-<i>`, plus one
/// unrelated `Noise` event per stream (which the projection skips).
pub async fn write_events(store: &dyn EventStore, prefix: &str, streams: usize, per_stream: u64) {
    for s in 0..streams {
        let id = StreamId::new(format!("{prefix}-{s}")).unwrap();
        let mut events: Vec<NewEvent> = (1..=per_stream)
            .map(|amount| NewEvent::new("Deposited", json!({ "amount": amount })))
            .collect();
        events.push(NewEvent::new("Noise", json!({})));
        store
            .append(&id, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
}

/// Every document of the read model, by collection and key.
pub async fn snapshot(projections: &Projections) -> BTreeMap<(String, String), serde_json::Value> {
    let reader = projections.documents("tallies").unwrap();
    let mut out = BTreeMap::new();
    for collection in ["tally", "seen"] {
        for (key, value) in reader
            .list::<serde_json::Value>(collection, "")
            .await
            .unwrap()
        {
            out.insert((collection.to_owned(), key), value);
        }
    }
    out
}

/// The read model a from-scratch rebuild in memory produces from `store`.
pub async fn from_scratch(
    store: impl EventStore + 'static,
) -> BTreeMap<(String, String), serde_json::Value> {
    let fresh = Projections::memory(store).with(Tallies::new());
    fresh.rebuild("tallies").await.unwrap();
    snapshot(&fresh).await
}

/// Drops the runner tag from `seen` markers (different runners write different tags).
pub fn untagged(
    mut docs: BTreeMap<(String, String), serde_json::Value>,
) -> BTreeMap<(String, String), serde_json::Value> {
    for ((collection, _), value) in docs.iter_mut() {
        if collection == "seen" {
            *value = json!({"v": value["v"]});
        }
    }
    docs
}

/// Waits for `condition` with a deadline.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A migrated PostgreSQL event store on `pool`.
pub async fn pg_store(pool: &PgPool) -> PostgresStore {
    let store = PostgresStore::from_pool(pool.clone());
    store.migrate().await.unwrap();
    store
}

/// A fresh memory store.
pub fn memory_store() -> MemoryStore {
    MemoryStore::new()
}

/// Runs `projections` in a task; the returned sender stops it.
pub fn spawn_run(
    projections: &Projections,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<annals_projections::Result<()>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let p = projections.clone();
    let handle = tokio::spawn(async move {
        p.run(async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, handle)
}

/// The live checkpoint has reached the store's head.
pub async fn caught_up(projections: &Projections, store: &dyn EventStore) -> bool {
    let head = store.head().await.unwrap();
    projections
        .documents("tallies")
        .unwrap()
        .position()
        .await
        .unwrap()
        >= head
        && head > Position::START
}

/// A scratch directory with one event store file, removed when dropped.
#[cfg(feature = "sqlite")]
pub struct ScratchFile {
    pub dir: std::path::PathBuf,
}

#[cfg(feature = "sqlite")]
impl ScratchFile {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("annals-proj-sqlite-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.join("events.db")
    }

    /// A migrated store on the file.
    pub async fn store(&self) -> annals_sqlite::SqliteStore {
        let store = annals_sqlite::SqliteStore::open(self.path()).await.unwrap();
        store.migrate().await.unwrap();
        store
    }
}

#[cfg(feature = "sqlite")]
impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
