//! Ownership on SQLite, where no session ends with its owner: a lease row with a fencing token. Two runners on
//! one file, one of them a child process killed with SIGKILL: the other takes over, nothing is applied twice or
//! skipped; and an owner whose lease was taken while it was inside a batch cannot commit that batch.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use annals::{EventStore, Position, RecordedEvent};
use annals_projections::{
    BoxError, Documents, Projection, ProjectionOptions, Projections, async_trait,
};
use annals_sqlite::SqliteStore;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::support::*;

/// A child process, killed (SIGKILL) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test on its own: the runner process `sigkilled_owner_is_taken_over_without_repeating_or_skipping`
/// starts and kills. Does nothing unless `ANNALS_SQLITE_CHILD_FILE` is set: then it runs the `tallies`
/// projection (tag `child`, 1 ms per event, batches of 50) on that file until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_child_runner_process() {
    let Some(file) = std::env::var_os("ANNALS_SQLITE_CHILD_FILE") else {
        return;
    };
    let store = SqliteStore::open(file).await.unwrap();
    let mut tallies = Tallies::tagged("child");
    tallies.delay = Duration::from_millis(1);
    let projections =
        Projections::sqlite(store).with_options(tallies, ProjectionOptions::new().batch_size(50));
    projections.run(std::future::pending()).await.unwrap();
}

async fn position(projections: &Projections) -> Position {
    projections
        .documents("tallies")
        .unwrap()
        .position()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_owner_is_taken_over_without_repeating_or_skipping() {
    let scratch = ScratchFile::new();
    let store = scratch.store().await;
    write_events(&store, "acc", 20, 100).await;
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sqlite_leases_and_fencing::sqlite_child_runner_process",
                "--nocapture",
            ])
            .env("ANNALS_SQLITE_CHILD_FILE", scratch.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let parent = Projections::sqlite(store.clone()).with_options(
        Tallies::tagged("parent"),
        ProjectionOptions::new().batch_size(50),
    );
    eventually(
        "the child to commit a few batches",
        Duration::from_secs(60),
        || {
            let parent = parent.clone();
            async move { position(&parent).await >= Position(300) }
        },
    )
    .await;
    // The parent's runner waits for the child's lease while the child works.
    let (stop, handle) = spawn_run(&parent);
    child.0.kill().unwrap(); // SIGKILL, mid-batch: its lease stays in the file
    child.0.wait().unwrap();
    let at_kill = position(&parent).await;
    assert!(
        at_kill < store.head().await.unwrap(),
        "the child finished before it was killed"
    );
    write_events(&store, "after", 5, 10).await;
    eventually(
        "the parent to take over and process everything",
        Duration::from_secs(60),
        || caught_up(&parent, &store),
    )
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    let docs = snapshot(&parent).await;
    let by = |tag: &str| {
        docs.iter()
            .filter(|((c, _), v)| c == "seen" && v["by"] == tag)
            .count()
    };
    // Position 300 counts the skipped `Noise` events too: the child applied about 297 deposits.
    assert!(
        by("child") >= 250 && by("parent") >= 50,
        "child {} parent {}",
        by("child"),
        by("parent")
    );
    // Every event exactly once: the same read model as a from-scratch rebuild (an event applied twice would
    // have failed the projection, one skipped would be missing).
    assert_eq!(untagged(docs), untagged(from_scratch(store.clone()).await));
    store.close().await;
}

/// A document projection whose runner `tag` waits at each event for a permit of `gate`, writing one `seen`
/// marker per event (failing on an event it already saw).
struct Gated {
    tag: &'static str,
    gate: Arc<Semaphore>,
    entered: Arc<AtomicU64>,
}

#[async_trait]
impl Projection for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await?.forget();
        let key = format!("{:020}", event.position.get());
        if docs.get_json("seen", &key).await?.is_some() {
            return Err(format!("event at {} applied twice", event.position).into());
        }
        docs.put("seen", key, &json!({"by": self.tag}))?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_whose_lease_was_taken_mid_batch_cannot_commit_it() {
    let scratch = ScratchFile::new();
    let store = scratch.store().await;
    write_events(&store, "acc", 3, 5).await;
    let head = store.head().await.unwrap();
    // A: its first batch stops at the gate, holding nothing but a lease it no longer renews.
    let (gate, entered) = (Arc::new(Semaphore::new(0)), Arc::new(AtomicU64::new(0)));
    let a = Projections::sqlite(store.clone())
        .lease_ttl(Duration::from_millis(200))
        .with(Gated {
            tag: "a",
            gate: Arc::clone(&gate),
            entered: Arc::clone(&entered),
        });
    let (stop_a, handle_a) = spawn_run(&a);
    eventually("A to be inside its batch", Duration::from_secs(20), || {
        let entered = Arc::clone(&entered);
        async move { entered.load(Ordering::SeqCst) > 0 }
    })
    .await;
    // B takes over once A's lease has run out, and processes every event.
    let b = Projections::sqlite(store.clone()).with(Gated {
        tag: "b",
        gate: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
        entered: Arc::default(),
    });
    let (stop_b, handle_b) = spawn_run(&b);
    let reader = b.documents("gated").unwrap();
    eventually(
        "B to take over and catch up",
        Duration::from_secs(20),
        || {
            let reader = reader.clone();
            async move { reader.position().await.unwrap() >= head }
        },
    )
    .await;
    // A goes on: its batch reaches the commit, which the fence refuses; stopping A waits for that batch.
    gate.add_permits(1_000);
    stop_a.send(()).unwrap();
    handle_a.await.unwrap().unwrap();
    assert!(entered.load(Ordering::SeqCst) > 1, "A applied its batch");
    let seen = reader.list::<serde_json::Value>("seen", "").await.unwrap();
    assert_eq!(seen.len() as u64, head.get(), "one marker per event");
    assert!(
        seen.iter().all(|(_, v)| v["by"] == "b"),
        "a stale owner committed: {seen:?}"
    );
    assert_eq!(reader.position().await.unwrap(), head);
    stop_b.send(()).unwrap();
    handle_b.await.unwrap().unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_on_one_file_apply_every_event_exactly_once() {
    let scratch = ScratchFile::new();
    let store = scratch.store().await;
    let second = scratch.store().await;
    write_events(&store, "acc", 10, 20).await;
    let mut slow = Tallies::tagged("one");
    slow.delay = Duration::from_millis(1);
    let one = Projections::sqlite(store.clone())
        .lease_ttl(Duration::from_millis(100))
        .with_options(slow, ProjectionOptions::new().batch_size(20));
    let two = Projections::sqlite(second.clone())
        .lease_ttl(Duration::from_millis(100))
        .with_options(
            Tallies::tagged("two"),
            ProjectionOptions::new().batch_size(20),
        );
    let (stop_one, one_done) = spawn_run(&one);
    let (stop_two, two_done) = spawn_run(&two);
    write_events(&second, "more", 10, 20).await;
    eventually(
        "both files' runners to finish",
        Duration::from_secs(60),
        || caught_up(&one, &store),
    )
    .await;
    stop_one.send(()).unwrap();
    stop_two.send(()).unwrap();
    one_done.await.unwrap().unwrap();
    two_done.await.unwrap().unwrap();
    assert_eq!(
        untagged(snapshot(&one).await),
        untagged(from_scratch(store.clone()).await)
    );
    store.close().await;
    second.close().await;
}
