//! Two processes on one file: the test binary runs itself again as a child process (the test `child_process`,
//! which does nothing unless [`CHILD_DB`] is set), and parent and child each append to streams of their own
//! and to one shared stream while following the global order. Afterwards nothing is lost, doubled or skipped:
//! every appended event is stored exactly once, at positions `1..=TOTAL`, each stream's versions run from 1 in
//! position order, and each follower saw exactly that order.

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::{EventId, EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use annals_sqlite::{Settings, SqliteStore};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{TempDb, contiguous, open, stream};

/// Set in the child's environment: the database file.
const CHILD_DB: &str = "ANNALS_SQLITE_CHILD_DB";
/// Set in the child's environment: where it writes its report.
const CHILD_OUT: &str = "ANNALS_SQLITE_CHILD_OUT";
/// Rounds each process appends: two events to one of its own streams, then one to the shared stream.
const ROUNDS: u64 = 60;
/// Events each process appends.
const PER_PROCESS: u64 = ROUNDS * 3;
/// Events in the file at the end.
const TOTAL: u64 = PER_PROCESS * 2;

fn settings() -> Settings {
    Settings::default().with_poll_interval(Duration::from_millis(20))
}

/// What one process appended (event ids) and what its follower saw (positions and event ids, in order).
struct Report {
    appended: Vec<EventId>,
    followed: Vec<(u64, EventId)>,
}

impl Report {
    fn to_json(&self) -> Value {
        json!({
            "appended": self.appended.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "followed": self.followed.iter().map(|(p, id)| json!([p, id.to_string()])).collect::<Vec<_>>(),
        })
    }

    fn from_json(value: &Value) -> Self {
        let id = |v: &Value| EventId(v.as_str().unwrap().parse().unwrap());
        Self {
            appended: value["appended"]
                .as_array()
                .unwrap()
                .iter()
                .map(id)
                .collect(),
            followed: value["followed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| (pair[0].as_u64().unwrap(), id(&pair[1])))
                .collect(),
        }
    }
}

/// The other process: its name, and for the parent the child process, so that a child that died fails the test
/// at once instead of at a deadline.
#[derive(Clone)]
struct Other {
    name: &'static str,
    process: Option<Arc<Mutex<Option<Child>>>>,
}

impl Other {
    /// Fails the test, with the child's output, if the child exited before its work was seen.
    fn check(&self) {
        let Some(process) = &self.process else { return };
        let mut process = process.lock().unwrap();
        let exited = process
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_some());
        if exited {
            let output = process.take().unwrap().wait_with_output().unwrap();
            panic!(
                "the child exited early ({}): {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// Follows the global order from the start until it has seen `total` events, failing after a deadline.
async fn follow(store: SqliteStore, total: u64, other: Other) -> Vec<(u64, EventId)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let mut after = Position::START;
    while (seen.len() as u64) < total {
        assert!(
            Instant::now() < deadline,
            "the follower saw only {} events",
            seen.len()
        );
        other.check();
        store
            .wait_for_events(after, Duration::from_secs(1))
            .await
            .unwrap();
        for event in store.read_all(after, 64).await.unwrap() {
            seen.push((event.position.get(), event.event_id));
            after = event.position;
        }
    }
    seen
}

/// Waits until `other` has stored an event in its first stream: the two processes' appends overlap.
async fn meet(store: &SqliteStore, other: &Other) {
    let theirs = stream(&format!("{}-0", other.name));
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.load_stream(&theirs).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{} never appended", other.name);
        other.check();
        let head = store.head().await.unwrap();
        store
            .wait_for_events(head, Duration::from_secs(1))
            .await
            .unwrap();
    }
}

/// One process's share: [`ROUNDS`] rounds of appends (meeting the other process half-way), with a follower.
async fn work(store: &SqliteStore, me: &str, other: Other) -> Report {
    let follower = tokio::spawn(follow(store.clone(), TOTAL, other.clone()));
    let shared = stream("shared-1");
    let mut appended = Vec::new();
    for round in 0..ROUNDS {
        if round == ROUNDS / 2 {
            meet(store, &other).await;
        }
        let own = StreamId::new(format!("{me}-{}", round % 4)).unwrap();
        let pair: Vec<NewEvent> = (0..2)
            .map(|i| NewEvent::new("Appended", json!({"by": me, "round": round, "i": i})))
            .collect();
        let single = vec![NewEvent::new("Shared", json!({"by": me, "round": round}))];
        appended.extend(pair.iter().chain(&single).map(|e| e.event_id));
        store
            .append(&own, ExpectedVersion::Any, pair)
            .await
            .unwrap();
        store
            .append(&shared, ExpectedVersion::Any, single)
            .await
            .unwrap();
    }
    Report {
        appended,
        followed: follower.await.unwrap(),
    }
}

/// The child's side; a no-op in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let (Ok(db), Ok(out)) = (std::env::var(CHILD_DB), std::env::var(CHILD_OUT)) else {
        return;
    };
    let store = SqliteStore::open_with(&db, settings()).await.unwrap();
    store.verify().await.unwrap();
    let parent = Other {
        name: "parent",
        process: None,
    };
    let report = work(&store, "child", parent).await;
    std::fs::write(out, report.to_json().to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_append_to_and_follow_one_file() {
    let db = TempDb::new();
    let out = TempDb::new();
    let store = open(&db, settings()).await;
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cross_process::child_process", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_DB, db.path())
        .env(CHILD_OUT, out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = Arc::new(Mutex::new(Some(child)));
    let other = Other {
        name: "child",
        process: Some(child.clone()),
    };
    let mine = work(&store, "parent", other).await;
    let child = child.lock().unwrap().take().unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "the child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs =
        Report::from_json(&serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap());

    let all = store.read_all(Position::START, usize::MAX).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.get()).collect();
    assert_eq!(
        positions,
        contiguous(TOTAL),
        "positions 1..={TOTAL}, none skipped or doubled"
    );
    let order: Vec<(u64, EventId)> = all.iter().map(|e| (e.position.get(), e.event_id)).collect();
    let stored: HashSet<EventId> = all.iter().map(|e| e.event_id).collect();
    let appended: HashSet<EventId> = mine
        .appended
        .iter()
        .chain(&theirs.appended)
        .copied()
        .collect();
    assert_eq!(
        appended.len() as u64,
        TOTAL,
        "every appended id is distinct"
    );
    assert_eq!(
        stored, appended,
        "every appended event is stored, and nothing else"
    );
    assert_eq!(
        mine.followed, order,
        "the parent's follower saw the global order"
    );
    assert_eq!(
        theirs.followed, order,
        "the child's follower saw the global order"
    );

    let mut versions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for event in &all {
        versions
            .entry(event.stream_id.as_str())
            .or_default()
            .push(event.stream_version.get());
    }
    for (stream, versions) in &versions {
        assert_eq!(
            *versions,
            contiguous(versions.len() as u64),
            "versions of {stream}"
        );
    }
    assert_eq!(versions["shared-1"].len() as u64, ROUNDS * 2);
}
