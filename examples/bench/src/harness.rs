//! What every scenario shares: scratch schemas, pools, the warm-up/measure loop, CPU accounting, medians and the
//! result line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::cpu::{self, Cpu};

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

static POOL_SEQ: AtomicUsize = AtomicUsize::new(0);
/// Acquires of idle connections, over every pool (see [`acquires`]).
static ACQUIRES: AtomicUsize = AtomicUsize::new(0);

/// How many idle connections the bench's pools have handed out so far. On a pool that tests connections before
/// acquire (sqlx's default) each one cost a ping, which the round-trip count adds to the statements.
pub(crate) fn acquires() -> usize {
    ACQUIRES.load(Ordering::Relaxed)
}

/// A pool of `connections` connections to `url` whose acquires do not ping (what a hand-written application
/// tuned for speed uses), all opened before it is returned so that no measured run pays for connecting.
pub(crate) async fn pool(url: &str, connections: u32) -> anyhow::Result<Pool> {
    pool_with(
        url,
        connections,
        PgPoolOptions::new().test_before_acquire(false),
    )
    .await
}

/// The pool the Annals side uses: the options `annals_postgres` recommends (what `PostgresStore::connect`
/// builds), sized to `connections`.
pub(crate) async fn annals_pool(url: &str, connections: u32) -> anyhow::Result<Pool> {
    pool_with(
        url,
        connections,
        annals_postgres::PostgresStore::pool_options(),
    )
    .await
}

/// A side's pool and the server processes behind its connections.
#[derive(Clone)]
pub(crate) struct Pool {
    pub(crate) pool: PgPool,
    /// Whether every acquire pings the server first.
    pub(crate) pinged: bool,
    application_name: String,
}

/// A pool of `connections` connections built from `options`, all opened before it is returned. Its connections
/// carry a unique `application_name`, so [`Pool::server_pids`] can find the server processes serving them.
pub(crate) async fn pool_with(
    url: &str,
    connections: u32,
    options: PgPoolOptions,
) -> anyhow::Result<Pool> {
    let seq = POOL_SEQ.fetch_add(1, Ordering::Relaxed);
    let application_name = format!("annals-bench-{}-{seq}", std::process::id());
    let connect: PgConnectOptions = url
        .parse()
        .context("cannot parse --database-url / DATABASE_URL")?;
    let pinged = options.get_test_before_acquire();
    let pool = options
        .max_connections(connections)
        .min_connections(connections)
        .before_acquire(|_, _| {
            Box::pin(async {
                ACQUIRES.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            })
        })
        .connect_with(connect.application_name(&application_name))
        .await
        .context("cannot connect to PostgreSQL (set --database-url or DATABASE_URL)")?;
    let mut held = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        held.push(pool.acquire().await.context("cannot open a connection")?);
    }
    drop(held);
    Ok(Pool {
        pool,
        pinged,
        application_name,
    })
}

impl Pool {
    /// The process ids of the server backends serving this pool's connections.
    pub(crate) async fn server_pids(&self) -> anyhow::Result<Vec<i32>> {
        Ok(
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
                .bind(&self.application_name)
                .fetch_all(&self.pool)
                .await?,
        )
    }
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

/// One scenario's sides: Annals and one or more hand-written baselines. Each call does the whole run, setup
/// included, and returns the time of the measured part alone.
pub(crate) trait Workload {
    /// The baselines' names, the strongest candidate first (the ratio is taken against whichever is fastest).
    fn baselines(&self) -> &'static [&'static str] {
        &["raw"]
    }
    /// Runs the Annals side once.
    async fn annals(&self, phase: Phase) -> anyhow::Result<Duration>;
    /// Runs baseline `index` (of [`Workload::baselines`]) once.
    async fn raw(&self, index: usize, phase: Phase) -> anyhow::Result<Duration>;
    /// The pool of the Annals side (`None` to skip server CPU accounting for it).
    fn annals_pool(&self) -> Option<&Pool> {
        None
    }
    /// The pool of baseline `index`.
    fn raw_pool(&self, _index: usize) -> Option<&Pool> {
        None
    }
    /// Round trips per unit of work in the last run, if the workload counts them (`None` skips the counting
    /// pass): on the work's own path, and the store's background NOTIFYs.
    fn round_trips(&self) -> Option<(f64, f64)> {
        None
    }
}

/// Which sides a run measures (`--only`): `annals`, `raw` (every baseline) or one baseline by name; all of
/// them when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sides(pub(crate) Option<String>);

impl Sides {
    fn annals(&self) -> bool {
        self.0.as_deref().is_none_or(|only| only == "annals")
    }

    fn baseline(&self, name: &str) -> bool {
        self.0
            .as_deref()
            .is_none_or(|only| only == "raw" || only == name)
    }
}

/// One side's measured runs.
#[derive(Debug, Default, Clone)]
pub(crate) struct Side {
    pub(crate) name: String,
    pub(crate) times: Vec<Duration>,
    /// Client CPU (this process, every thread) of each run.
    pub(crate) client_cpu: Vec<Duration>,
    /// CPU of the server backends behind the side's pool, each run (empty when unknown).
    pub(crate) server_cpu: Vec<Duration>,
    /// Round trips per unit of work (on the work's path, background NOTIFYs), from one counting run after the
    /// measured ones.
    pub(crate) round_trips: Option<(f64, f64)>,
}

/// The measured sides: Annals first, then the baselines.
#[derive(Debug, Default)]
pub(crate) struct Timings {
    pub(crate) annals: Side,
    pub(crate) baselines: Vec<Side>,
}

impl Timings {
    /// The baseline with the fastest median (the strongest), if any ran.
    pub(crate) fn strongest(&self) -> Option<&Side> {
        self.baselines
            .iter()
            .filter(|b| !b.times.is_empty())
            .min_by_key(|b| median(&b.times))
    }

    /// The baselines that ran, but for `strongest`: the weaker reference lines.
    fn others<'t>(&'t self, strongest: &'t Side) -> impl Iterator<Item = &'t Side> {
        self.baselines
            .iter()
            .filter(move |b| b.name != strongest.name && !b.times.is_empty())
    }
}

async fn timed(
    pool: Option<&Pool>,
    side: &mut Side,
    run: impl Future<Output = anyhow::Result<Duration>>,
) -> anyhow::Result<Duration> {
    let pids = match pool {
        Some(pool) => pool.server_pids().await?,
        None => Vec::new(),
    };
    let server_before = cpu::processes(&pids);
    let client_before = cpu::own();
    let elapsed = run.await?;
    let client = cpu::own().saturating_sub(client_before);
    let server = cpu::processes(&pids).saturating_sub(server_before);
    side.times.push(elapsed);
    side.client_cpu.push(client.into());
    if !pids.is_empty() {
        side.server_cpu.push(server.into());
    }
    Ok(elapsed)
}

/// Warms each side up once, then alternates `runs` measured runs of each (Annals first), so that drift in the
/// machine's state hits every side alike.
pub(crate) async fn measure(
    name: &str,
    workload: &impl Workload,
    runs: usize,
    sides: &Sides,
) -> anyhow::Result<Timings> {
    let baselines = workload.baselines();
    let with_annals = sides.annals();
    if with_annals {
        workload
            .annals(Phase::Warmup)
            .await
            .with_context(|| format!("{name}: Annals warm-up"))?;
    }
    for (index, baseline) in baselines.iter().enumerate() {
        if sides.baseline(baseline) {
            workload
                .raw(index, Phase::Warmup)
                .await
                .with_context(|| format!("{name}: {baseline} baseline warm-up"))?;
        }
    }
    let mut timings = Timings {
        annals: Side {
            name: "annals".to_owned(),
            ..Side::default()
        },
        baselines: baselines
            .iter()
            .map(|b| Side {
                name: (*b).to_owned(),
                ..Side::default()
            })
            .collect(),
    };
    for run in 1..=runs {
        let mut line = format!("  {name} run {run}/{runs}:");
        if with_annals {
            let t = timed(
                workload.annals_pool(),
                &mut timings.annals,
                workload.annals(Phase::Measure),
            )
            .await
            .with_context(|| format!("{name}: Annals run {run}"))?;
            line.push_str(&format!(" annals {:.1}ms", millis(t)));
        }
        for (index, side) in timings.baselines.iter_mut().enumerate() {
            if sides.baseline(&side.name) {
                let t = timed(
                    workload.raw_pool(index),
                    side,
                    workload.raw(index, Phase::Measure),
                )
                .await
                .with_context(|| format!("{name}: {} baseline run {run}", side.name))?;
                line.push_str(&format!(" {} {:.1}ms", side.name, millis(t)));
            }
        }
        eprintln!("{line}");
    }
    if workload.round_trips().is_some() {
        // One more run per side at warm-up size with statement counting on (it is not timed).
        crate::trips::count(true);
        let counted = async {
            if with_annals {
                workload.annals(Phase::Warmup).await?;
                timings.annals.round_trips = workload.round_trips();
            }
            for (index, side) in timings.baselines.iter_mut().enumerate() {
                if sides.baseline(&side.name) {
                    workload.raw(index, Phase::Warmup).await?;
                    side.round_trips = workload.round_trips();
                }
            }
            anyhow::Ok(())
        }
        .await;
        crate::trips::count(false);
        counted.with_context(|| format!("{name}: counting round trips"))?;
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

pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn micros_per(d: Duration, units: usize) -> f64 {
    d.as_secs_f64() * 1e6 / units.max(1) as f64
}

/// The CPU part of a line: client (and, when known, server) CPU per unit of work of Annals and the strongest
/// baseline, medians over the runs.
fn cpu_part(units: usize, annals: &Side, raw: Option<&Side>) -> String {
    let per = |samples: &[Duration]| micros_per(median(samples), units);
    let mut part = format!(" | client cpu/unit annals {:.1}us", per(&annals.client_cpu));
    if let Some(raw) = raw.filter(|r| !r.client_cpu.is_empty()) {
        let (a, r) = (per(&annals.client_cpu), per(&raw.client_cpu));
        part.push_str(&format!(
            " raw {r:.1}us ({:.2}x)",
            a / r.max(f64::MIN_POSITIVE)
        ));
    }
    if let Some((a, notify)) = annals.round_trips {
        part.push_str(&format!(
            " | round trips/unit annals {a:.2} (+{notify:.2} notify)"
        ));
        if let Some((r, _)) = raw.and_then(|r| r.round_trips) {
            part.push_str(&format!(" raw {r:.2}"));
        }
    }
    if !annals.server_cpu.is_empty() {
        part.push_str(&format!(
            " | server cpu/unit annals {:.1}us",
            per(&annals.server_cpu)
        ));
        if let Some(raw) = raw.filter(|r| !r.server_cpu.is_empty()) {
            part.push_str(&format!(" raw {:.1}us", per(&raw.server_cpu)));
        }
    }
    part
}

/// `bench <name>: annals <n>/s raw <n>/s ratio <annals/raw> | <baseline>[; <other> <n>/s ratio <r>] | cpu...`,
/// where each side did `units` units of work per run and `raw` is the strongest baseline.
pub(crate) fn rate_line(name: &str, units: usize, timings: &Timings) -> String {
    let rate = |d: Duration| units as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE);
    let annals = rate(median(&timings.annals.times));
    let Some(strongest) = timings.strongest() else {
        return format!(
            "bench {name}: annals {annals:.0}/s{}",
            cpu_part(units, &timings.annals, None)
        );
    };
    let raw = rate(median(&strongest.times));
    let mut line = format!(
        "bench {name}: annals {annals:.0}/s raw {raw:.0}/s ratio {:.2} | {}",
        annals / raw,
        strongest.name
    );
    for other in timings.others(strongest) {
        let r = rate(median(&other.times));
        line.push_str(&format!(
            "; {} {r:.0}/s ratio {:.2}",
            other.name,
            annals / r
        ));
    }
    if !timings.annals.times.is_empty() {
        line.push_str(&cpu_part(units, &timings.annals, Some(strongest)));
    }
    line
}

/// `bench <name>: annals <n>ms raw <n>ms ratio <raw/annals> | <baseline>`.
pub(crate) fn latency_line(name: &str, timings: &Timings) -> String {
    let annals = millis(median(&timings.annals.times));
    let Some(strongest) = timings.strongest() else {
        return format!("bench {name}: annals {annals:.1}ms");
    };
    let raw = millis(median(&strongest.times));
    let mut line = format!(
        "bench {name}: annals {annals:.1}ms raw {raw:.1}ms ratio {:.2} | {}",
        raw / annals.max(f64::MIN_POSITIVE),
        strongest.name
    );
    for other in timings.others(strongest) {
        let r = millis(median(&other.times));
        line.push_str(&format!(
            "; {} {r:.1}ms ratio {:.2}",
            other.name,
            r / annals.max(f64::MIN_POSITIVE)
        ));
    }
    line
}

impl From<Cpu> for Duration {
    fn from(value: Cpu) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    fn side(name: &str, times: &[u64]) -> Side {
        Side {
            name: name.to_owned(),
            times: ms(times),
            ..Side::default()
        }
    }

    #[test]
    fn median_of_three_is_the_middle_one() {
        assert_eq!(median(&ms(&[30, 10, 20])), Duration::from_millis(20));
        assert_eq!(median(&ms(&[])), Duration::ZERO);
    }

    #[test]
    fn lines_put_higher_is_better_in_the_ratio_against_the_strongest_baseline() {
        let mut timings = Timings {
            annals: side("annals", &[2_000, 2_000, 2_000]),
            baselines: vec![
                side("pooled", &[1_600, 1_600, 1_600]),
                side("dedicated", &[1_000, 1_000, 1_000]),
            ],
        };
        timings.annals.client_cpu = ms(&[400]);
        timings.baselines[1].client_cpu = ms(&[100]);
        assert_eq!(
            rate_line("command-1", 10_000, &timings),
            "bench command-1: annals 5000/s raw 10000/s ratio 0.50 | dedicated; pooled 6250/s ratio 0.80 \
             | client cpu/unit annals 40.0us raw 10.0us (4.00x)"
        );
        assert_eq!(
            latency_line("load-10k", &timings),
            "bench load-10k: annals 2000.0ms raw 1000.0ms ratio 0.50 | dedicated; pooled 1600.0ms ratio 0.80"
        );
    }
}
