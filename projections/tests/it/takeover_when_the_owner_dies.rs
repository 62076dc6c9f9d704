//! Ownership ends with the owner's PostgreSQL session: a runner process killed with SIGKILL is taken over long
//! before its lease could expire, while a paused owner whose session stays open (SIGSTOP) keeps the projection
//! until its lease expires, and its late commit is refused by the lease fence.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::{EventStore, Position};
use annals_projections::{ProjectionOptions, Projections};
use chrono::{DateTime, Utc};
use sqlx::{ConnectOptions, PgPool};
use uuid::Uuid;

use crate::leases_and_crashes::KillOnDrop;
use crate::support::*;

/// The child runner process (see `leases_and_crashes::child_runner_process`) on `pool`'s database, its stderr
/// lines collected.
fn spawn_child(pool: &PgPool, ttl_ms: u64, delay_ms: u64) -> (KillOnDrop, Arc<Mutex<Vec<String>>>) {
    let url = pool.connect_options().to_url_lossy().to_string();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "leases_and_crashes::child_runner_process",
            "--nocapture",
        ])
        .env("ANNALS_CHILD_RUNNER_URL", &url)
        .env("ANNALS_CHILD_TTL_MS", ttl_ms.to_string())
        .env("ANNALS_CHILD_DELAY_MS", delay_ms.to_string())
        .env("ANNALS_CHILD_LOG", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn({
        let lines = Arc::clone(&lines);
        move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        }
    });
    (KillOnDrop(child), lines)
}

fn signal(child: &KillOnDrop, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} failed");
}

/// The live slot of `tallies`: owner, lease end, and the server's clock.
async fn lease(pool: &PgPool) -> Option<(Option<Uuid>, Option<DateTime<Utc>>, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT owner, lease_until, clock_timestamp() FROM annals_projections.slots \
         WHERE name = 'tallies' AND live",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn position(projections: &Projections) -> Position {
    projections
        .documents("tallies")
        .unwrap()
        .position()
        .await
        .unwrap()
}

#[sqlx::test]
async fn owner_killed_with_sigkill_is_taken_over_long_before_its_60_s_lease_expires(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 20, 100).await;
    let ttl = Duration::from_secs(60);
    let (mut child, _log) = spawn_child(&pool, 60_000, 1);
    let parent = Projections::postgres(store.clone(), pool.clone())
        .lease_ttl(ttl)
        .with_options(
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
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let at_kill = position(&parent).await;
    assert!(
        at_kill < store.head().await.unwrap(),
        "the child finished before it was killed"
    );

    // The parent's runner takes over and processes new events; 15 s is far less than the dead child's 60 s
    // lease, so getting there proves the takeover did not wait for the TTL.
    let (stop, handle) = spawn_run(&parent);
    write_events(&store, "after", 5, 10).await;
    eventually(
        "the parent to take over and process the new events",
        Duration::from_secs(15),
        || caught_up(&parent, &store),
    )
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    let docs = snapshot(&parent).await;
    let by_parent = docs
        .iter()
        .filter(|((c, _), v)| c == "seen" && v["by"] == "parent")
        .count();
    assert!(by_parent >= 50, "parent applied {by_parent}");
    assert_eq!(untagged(docs), untagged(from_scratch(store).await));
}

#[sqlx::test]
async fn paused_owner_is_taken_over_only_after_its_lease_and_its_late_commit_is_refused(
    pool: PgPool,
) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 5, 10).await;
    let ttl = Duration::from_secs(3);
    let (child, log) = spawn_child(&pool, 3_000, 0);
    let parent = Projections::postgres(store.clone(), pool.clone())
        .lease_ttl(ttl)
        .with(Tallies::tagged("parent"));
    eventually("the child to catch up", Duration::from_secs(60), || {
        caught_up(&parent, &store)
    })
    .await;
    let (Some(child_owner), _, _) = lease(&pool).await.unwrap() else {
        panic!("the child owns the projection");
    };

    // Paused, its session open: the lock stays held, so only the lease's expiry lets the parent in.
    signal(&child, "-STOP");
    let paused_at = position(&parent).await;
    write_events(&store, "while_paused", 5, 10).await;
    let (stop, handle) = spawn_run(&parent);
    let mut child_lease = None::<DateTime<Utc>>;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (owner, until, now) = lease(&pool).await.unwrap();
        if owner == Some(child_owner) {
            child_lease = until.max(child_lease);
        } else if owner.is_some() {
            // Whoever owns it now, the paused child's lease had run out first.
            let expired = child_lease.unwrap();
            assert!(
                now >= expired,
                "taken over at {now}, before the paused owner's lease ended at {expired}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the parent never took over"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually(
        "the parent to process the events written while the child was paused",
        Duration::from_secs(30),
        || caught_up(&parent, &store),
    )
    .await;

    // Resumed, the child believes it owns the projection and tries to commit the new events: refused.
    signal(&child, "-CONT");
    eventually(
        "the child's late commit to be refused",
        Duration::from_secs(30),
        || {
            let log = Arc::clone(&log);
            async move {
                log.lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("lost ownership"))
            }
        },
    )
    .await;
    write_events(&store, "after", 5, 10).await;
    eventually("the parent to keep going", Duration::from_secs(30), || {
        caught_up(&parent, &store)
    })
    .await;
    assert_ne!(lease(&pool).await.unwrap().0, Some(child_owner));
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    let docs = snapshot(&parent).await;
    for ((collection, key), value) in &docs {
        if collection == "seen" && key.parse::<u64>().unwrap() > paused_at.get() {
            assert_eq!(value["by"], "parent", "event {key} applied by {value}");
        }
    }
    assert_eq!(untagged(docs), untagged(from_scratch(store).await));
}
