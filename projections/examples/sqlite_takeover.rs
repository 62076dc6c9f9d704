//! Measures kill-to-takeover on SQLite: a child process owns a projection on an event store file (lease TTL
//! [`SQLITE_LEASE_TTL`], 1 s), is killed with SIGKILL, and this process's runner, already waiting, takes it
//! over. Prints, per run, the time from the kill to the new owner's lease and to the first new event it
//! processed, then the median of each.
//!
//! ```text
//! cargo run --release -p annals-projections --example sqlite_takeover -- 3
//! ```
//!
//! It works in a scratch directory of its own, removed at the end.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use annals::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use annals_projections::{
    BoxError, Documents, Projection, Projections, SQLITE_LEASE_TTL, async_trait,
};
use annals_sqlite::SqliteStore;
use anyhow::Context;

/// Counts events.
struct Count;

#[async_trait]
impl Projection for Count {
    fn name(&self) -> &str {
        "count"
    }

    async fn apply(&self, _: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        let n = docs.get::<u64>("count", "all").await?.unwrap_or(0);
        docs.put("count", "all", &(n + 1))?;
        Ok(())
    }
}

async fn projections(file: &Path) -> anyhow::Result<(SqliteStore, Projections)> {
    let store = SqliteStore::open(file).await?;
    store.migrate().await?;
    let projections = Projections::sqlite(store.clone()).with(Count);
    projections.migrate().await?;
    Ok((store, projections))
}

/// The owner of an unexpired lease on the live `count`, read from the file.
async fn owner(store: &SqliteStore) -> anyhow::Result<Option<String>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    Ok(sqlx::query_scalar(
        "SELECT owner FROM projection_slots WHERE name = 'count' AND live = 1 AND lease_until > ?1",
    )
    .bind(i64::try_from(now)?)
    .fetch_optional(store.reader_pool())
    .await?
    .flatten())
}

async fn wait_until<F, Fut>(what: &str, mut done: F) -> anyhow::Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if done().await? {
            return Ok(Instant::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(file) = std::env::var_os("ANNALS_TAKEOVER_CHILD") {
        let (_, projections) = projections(Path::new(&file)).await?;
        projections.run(std::future::pending()).await?;
        return Ok(());
    }
    let runs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .context("the argument is the number of runs")?
        .unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("annals-takeover-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir.join("events.db"), runs).await;
    std::fs::remove_dir_all(&dir)?;
    result
}

async fn measure(file: &Path, runs: usize) -> anyhow::Result<()> {
    let (store, parent) = projections(file).await?;
    let stream = StreamId::new("bench-1")?;
    let mut takeovers = Vec::new();
    let mut processed = Vec::new();
    println!(
        "run  kill->takeover  kill->first new event processed   (lease TTL {SQLITE_LEASE_TTL:?})"
    );
    for run in 1..=runs {
        let mut child = Command::new(std::env::current_exe()?)
            .env("ANNALS_TAKEOVER_CHILD", file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_until("the child to own the projection", || async {
            Ok(owner(&store).await?.is_some())
        })
        .await?;
        let child_owner = owner(&store).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn({
            let parent = parent.clone();
            async move {
                parent
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        // Let the parent's runner find the projection busy and start waiting; vary the moment of the kill within
        // the child's renewal period.
        tokio::time::sleep(Duration::from_millis(500 + 97 * run as u64)).await;
        let killed = Instant::now();
        child.kill()?;
        let appended = store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("Ticked", serde_json::json!({}))],
            )
            .await?;
        child.wait()?;
        let taken = wait_until("the takeover", || async {
            let now = owner(&store).await?;
            Ok(now.is_some() && now != child_owner)
        })
        .await?;
        let reader = parent.documents("count")?;
        let caught_up = wait_until("the new event", || async {
            Ok(reader.position().await? >= appended.last_position)
        })
        .await?;
        let (t, p) = (taken - killed, caught_up - killed);
        println!("{run:>3}  {:>11.1} ms  {:>11.1} ms", ms(t), ms(p));
        takeovers.push(t);
        processed.push(p);
        let _ = stop.send(());
        runner.await??;
    }
    for (what, mut figures) in [("takeover", takeovers), ("first event", processed)] {
        figures.sort();
        let median = figures[figures.len() / 2];
        println!(
            "kill->{what}: median {:.1} ms over {} runs",
            ms(median),
            figures.len()
        );
    }
    store.close().await;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
