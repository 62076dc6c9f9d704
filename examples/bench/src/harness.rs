//! What every scenario shares: scratch schemas, the warm-up/measure loop, medians and the result line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// A fresh PostgreSQL schema that one run of one side writes into, dropped afterwards.
///
/// Runs never share tables, so every measured run starts from the same empty state, and nothing outside the
/// scratch schema is touched.
pub(crate) struct Scratch {
    pool: PgPool,
    name: String,
}

static SCRATCH_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Scratch {
    /// Creates `annals_bench_<label>_<pid>_<n>`.
    pub(crate) async fn create(pool: &PgPool, label: &str) -> anyhow::Result<Self> {
        let seq = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("annals_bench_{label}_{}_{seq}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
            .execute(pool)
            .await
            .with_context(|| format!("cannot create the scratch schema {name}"))?;
        Ok(Self {
            pool: pool.clone(),
            name,
        })
    }

    /// The schema's name (plain lower-case ASCII, safe to splice into SQL).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Drops the schema and everything in it.
    pub(crate) async fn drop(self) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{}\" CASCADE",
            self.name
        )))
        .execute(&self.pool)
        .await
        .with_context(|| format!("cannot drop the scratch schema {}", self.name))?;
        Ok(())
    }

    /// Runs `work` in this schema, then drops it whether `work` succeeded or not.
    pub(crate) async fn run<T>(
        self,
        work: impl AsyncFnOnce(&Scratch) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let result = work(&self).await;
        let dropped = self.drop().await;
        let value = result?;
        dropped?;
        Ok(value)
    }
}

/// A pool of `connections` connections to `url`, all opened before it is returned so that no measured run pays
/// for connecting.
pub(crate) async fn pool(url: &str, connections: u32) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .min_connections(connections)
        .connect(url)
        .await
        .context("cannot connect to PostgreSQL (set --database-url or DATABASE_URL)")?;
    let mut held = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        held.push(pool.acquire().await.context("cannot open a connection")?);
    }
    drop(held);
    Ok(pool)
}

/// Whether a run warms up (a smaller workload, not recorded) or is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Warmup,
    Measure,
}

impl Phase {
    /// `full` in a measured run, a tenth of it (at least one) when warming up.
    pub(crate) fn scale(self, full: usize) -> usize {
        match self {
            Self::Warmup => (full / 10).max(1),
            Self::Measure => full,
        }
    }
}

/// One scenario's two sides. Each call does the whole run, setup included, and returns the time of the measured
/// part alone.
pub(crate) trait Workload {
    /// Runs the Annals side once.
    async fn annals(&self, phase: Phase) -> anyhow::Result<Duration>;
    /// Runs the plain-sqlx baseline once.
    async fn raw(&self, phase: Phase) -> anyhow::Result<Duration>;
}

/// The measured times of both sides.
#[derive(Debug, Default)]
pub(crate) struct Timings {
    pub(crate) annals: Vec<Duration>,
    pub(crate) raw: Vec<Duration>,
}

/// Warms each side up once, then alternates `runs` measured runs of each (Annals first), so that drift in the
/// machine's state hits both sides alike.
pub(crate) async fn measure(
    name: &str,
    workload: &impl Workload,
    runs: usize,
) -> anyhow::Result<Timings> {
    workload
        .annals(Phase::Warmup)
        .await
        .with_context(|| format!("{name}: Annals warm-up"))?;
    workload
        .raw(Phase::Warmup)
        .await
        .with_context(|| format!("{name}: baseline warm-up"))?;
    let mut timings = Timings::default();
    for run in 1..=runs {
        let annals = workload
            .annals(Phase::Measure)
            .await
            .with_context(|| format!("{name}: Annals run {run}"))?;
        let raw = workload
            .raw(Phase::Measure)
            .await
            .with_context(|| format!("{name}: baseline run {run}"))?;
        eprintln!(
            "  {name} run {run}/{runs}: annals {:.1}ms raw {:.1}ms",
            millis(annals),
            millis(raw)
        );
        timings.annals.push(annals);
        timings.raw.push(raw);
    }
    Ok(timings)
}

/// The median (the lower middle one for an even count; zero for none).
pub(crate) fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// `bench <name>: annals <n>/s raw <n>/s ratio <annals/raw>`, where each side did `units` units of work per run.
pub(crate) fn rate_line(name: &str, units: usize, timings: &Timings) -> String {
    let rate = |d: Duration| units as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE);
    let annals = rate(median(&timings.annals));
    let raw = rate(median(&timings.raw));
    format!(
        "bench {name}: annals {annals:.0}/s raw {raw:.0}/s ratio {:.2}",
        annals / raw
    )
}

/// `bench <name>: annals <n>ms raw <n>ms ratio <raw/annals>`.
pub(crate) fn latency_line(name: &str, timings: &Timings) -> String {
    let annals = millis(median(&timings.annals));
    let raw = millis(median(&timings.raw));
    format!(
        "bench {name}: annals {annals:.1}ms raw {raw:.1}ms ratio {:.2}",
        raw / annals.max(f64::MIN_POSITIVE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn median_of_three_is_the_middle_one() {
        assert_eq!(median(&ms(&[30, 10, 20])), Duration::from_millis(20));
        assert_eq!(median(&ms(&[])), Duration::ZERO);
    }

    #[test]
    fn lines_put_higher_is_better_in_the_ratio() {
        let timings = Timings {
            annals: ms(&[2_000, 2_000, 2_000]),
            raw: ms(&[1_000, 1_000, 1_000]),
        };
        assert_eq!(
            rate_line("command-1", 10_000, &timings),
            "bench command-1: annals 5000/s raw 10000/s ratio 0.50"
        );
        assert_eq!(
            latency_line("load-10k", &timings),
            "bench load-10k: annals 2000.0ms raw 1000.0ms ratio 0.50"
        );
    }
}
