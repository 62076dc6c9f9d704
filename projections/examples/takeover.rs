//! Measures kill-to-takeover on PostgreSQL: a child process owns a projection (lease TTL 60 s), is killed with
//! SIGKILL, and this process's runner, already waiting, takes it over. Prints, per run, the time from the kill
//! to the new owner's lease and to the first new event it processed.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run -p annals-projections --example takeover -- 10
//! ```
//!
//! It works in a scratch database of its own (`annals_takeover_<pid>`), dropped at the end.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use annals::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use annals_postgres::PostgresStore;
use annals_projections::{BoxError, Documents, Projection, Projections, async_trait};
use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(60);

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

async fn projections(url: &str) -> anyhow::Result<(PgPool, PostgresStore, Projections)> {
    let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
    let store = PostgresStore::from_pool(pool.clone());
    store.migrate().await?;
    let projections = Projections::postgres(store.clone(), pool.clone())
        .lease_ttl(TTL)
        .with(Count);
    projections.migrate().await?;
    Ok((pool, store, projections))
}

async fn owner(pool: &PgPool) -> anyhow::Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT owner FROM annals_projections.slots WHERE name = 'count' AND live \
         AND lease_until > clock_timestamp()",
    )
    .fetch_optional(pool)
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
    if let Ok(url) = std::env::var("ANNALS_TAKEOVER_CHILD") {
        let (_, _, projections) = projections(&url).await?;
        projections.run(std::future::pending()).await?;
        return Ok(());
    }
    let runs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .context("the argument is the number of runs")?
        .unwrap_or(5);
    let base: PgConnectOptions = std::env::var("DATABASE_URL")
        .context("set DATABASE_URL")?
        .parse()?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone())
        .await?;
    let database = format!("annals_takeover_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await?;
    let url = base.clone().database(&database).to_url_lossy().to_string();
    let result = measure(&url, runs).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    result
}

async fn measure(url: &str, runs: usize) -> anyhow::Result<()> {
    let (pool, store, parent) = projections(url).await?;
    let stream = StreamId::new("bench-1")?;
    let mut takeovers = Vec::new();
    let mut processed = Vec::new();
    println!("run  kill->takeover  kill->first new event processed   (lease TTL {TTL:?})");
    for run in 1..=runs {
        let mut child = Command::new(std::env::current_exe()?)
            .env("ANNALS_TAKEOVER_CHILD", url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_until("the child to own the projection", || async {
            Ok(owner(&pool).await?.is_some())
        })
        .await?;
        let child_owner = owner(&pool).await?;
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
        // Let the parent's runner find the projection busy and start waiting.
        tokio::time::sleep(Duration::from_millis(300)).await;
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
            let now = owner(&pool).await?;
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
        let max = figures.last().copied().unwrap_or_default();
        let min = figures.first().copied().unwrap_or_default();
        println!(
            "kill->{what}: min {:.1} ms, median {:.1} ms, max {:.1} ms over {} runs",
            ms(min),
            ms(median),
            ms(max),
            figures.len()
        );
    }
    pool.close().await;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
