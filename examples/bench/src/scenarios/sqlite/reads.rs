//! The SQLite read scenarios, each over files filled once (not measured):
//! - `sqlite-load-10k`: `Repository::load` of one stream of 10,000 events, ten loads per run, against `fetch-all`
//!   (rows collected, then decoded and folded) and `streamed` (each row decoded and folded as it arrives);
//! - `sqlite-fold-all`: 100,000 events (1,000 carts of 100) folded in global order through `fold_all`, three
//!   folds per run, against one ordered SELECT of position, stream, type and payload, streamed and folded alike;
//! - `sqlite-fold-1m`: the same fold over 1,000,000 events (1,000 carts of 1,000), one fold per run, with each
//!   side's peak resident memory (`VmHWM`, reset before each run).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::{Aggregate, EventStore, Position, RecordedEvent, Repository, StreamId, StreamVersion};
use futures::TryStreamExt as _;
use sqlx::SqlitePool;
use sqlx::types::Json;

use super::Filled;
use crate::domain::{Cart, CartEvent, ItemAdded, stream_name};
use crate::harness::{self, Phase, Workload, median};
use crate::raw_sqlite;
use crate::scenarios::growth::peak;
use crate::settings::Settings;

/// Events in the `sqlite-load-10k` stream by default.
const LOAD_EVENTS: usize = 10_000;
/// Loads per measured run of `sqlite-load-10k`.
const LOADS_PER_RUN: usize = 10;
/// Events of `sqlite-fold-all` by default, and per cart.
const FOLD_EVENTS: usize = 100_000;
const FOLD_PER_CART: usize = 100;
/// Folds per run of `sqlite-fold-all`.
const FOLD_PASSES: usize = 3;
/// Events of `sqlite-fold-1m`, and per cart.
const MILLION: usize = 1_000_000;
const MILLION_PER_CART: usize = 1_000;

/// `sqlite-load-10k`.
pub(crate) async fn load(settings: &Settings, name: &str) -> anyhow::Result<String> {
    let events = settings.events.unwrap_or(LOAD_EVENTS).max(1);
    eprintln!(
        "{name}: one stream of {events} events, loaded and folded ({LOADS_PER_RUN} loads per run)"
    );
    let stream = stream_name(0);
    let filled = Filled::new(settings, &[stream.as_str()], events).await?;
    let workload = Load {
        repository: Repository::new(filled.store.clone()),
        stream: StreamId::new(stream.as_str())?,
        pool: filled.pool.clone(),
        events,
    };
    let timings = harness::measure(name, &workload, settings.runs, &settings.sides).await;
    filled.close().await;
    Ok(harness::latency_line(name, &timings?))
}

struct Load {
    repository: Repository<Cart, Arc<dyn EventStore>>,
    stream: StreamId,
    pool: SqlitePool,
    events: usize,
}

impl Workload for Load {
    fn baselines(&self) -> &'static [&'static str] {
        &["fetch-all", "streamed"]
    }

    async fn annals(&self, _phase: Phase) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut loaded = self.repository.load(&self.stream).await?;
        for _ in 1..LOADS_PER_RUN {
            loaded = self.repository.load(&self.stream).await?;
        }
        let elapsed = started.elapsed() / u32::try_from(LOADS_PER_RUN)?;
        anyhow::ensure!(
            loaded.version == StreamVersion(self.events as u64)
                && loaded.state.lines == self.events as u64,
            "Annals loaded version {} with {} lines, expected {}",
            loaded.version,
            loaded.state.lines,
            self.events
        );
        Ok(elapsed)
    }

    async fn raw(&self, index: usize, _phase: Phase) -> anyhow::Result<Duration> {
        let stream = self.stream.as_str();
        let load = async || -> anyhow::Result<(Cart, i64)> {
            if index == 1 {
                return raw_sqlite::fold(&self.pool, stream).await;
            }
            let (history, version) = raw_sqlite::load(&self.pool, stream).await?;
            Ok((Cart::from_events(&history), version))
        };
        let started = Instant::now();
        let (mut cart, mut version) = load().await?;
        for _ in 1..LOADS_PER_RUN {
            (cart, version) = load().await?;
        }
        let elapsed = started.elapsed() / u32::try_from(LOADS_PER_RUN)?;
        anyhow::ensure!(
            version == self.events as i64 && cart.lines == self.events as u64,
            "the baseline loaded version {version} with {} lines, expected {}",
            cart.lines,
            self.events
        );
        Ok(elapsed)
    }
}

/// `sqlite-fold-all`.
pub(crate) async fn fold_all(settings: &Settings, name: &str) -> anyhow::Result<String> {
    let wanted = settings.events.unwrap_or(FOLD_EVENTS).max(1);
    let per_cart = FOLD_PER_CART.min(wanted);
    fold(
        settings,
        name,
        wanted / per_cart * per_cart,
        per_cart,
        FOLD_PASSES,
    )
    .await
}

/// `sqlite-fold-1m`.
pub(crate) async fn fold_million(settings: &Settings, name: &str) -> anyhow::Result<String> {
    fold(settings, name, MILLION, MILLION_PER_CART, 1).await
}

/// Fills `events` events over carts of `per_cart`, measures `passes` folds per run and returns the line, with
/// the sides' peak resident memory.
async fn fold(
    settings: &Settings,
    name: &str,
    events: usize,
    per_cart: usize,
    passes: usize,
) -> anyhow::Result<String> {
    let names: Vec<String> = (0..events / per_cart).map(stream_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    eprintln!(
        "{name}: {events} events over {} carts, folded with fold_all ({passes} per run)",
        names.len()
    );
    let filled = Filled::new(settings, &names, per_cart).await?;
    let workload = Fold {
        store: filled.store.clone(),
        pool: filled.pool.clone(),
        events,
        per_cart,
        passes,
        peaks: Mutex::new((Vec::new(), Vec::new())),
    };
    let timings = harness::measure(name, &workload, settings.runs, &settings.sides).await;
    filled.close().await;
    let mut line = harness::rate_line(name, events * passes, &timings?);
    let (annals, raw) = workload
        .peaks
        .into_inner()
        .map_err(|_| anyhow::anyhow!("peak record poisoned"))?;
    line.push_str(&format!(
        " | peak rss annals {} raw {}",
        peaks(&annals),
        peaks(&raw)
    ));
    Ok(line)
}

/// `<median> MiB (<run>, <run>, …)` of peak resident sizes in KiB.
fn peaks(kib: &[u64]) -> String {
    let as_durations: Vec<Duration> = kib.iter().map(|k| Duration::from_millis(*k)).collect();
    let runs: Vec<String> = kib.iter().map(|k| format!("{}", k / 1024)).collect();
    format!(
        "{} MiB ({})",
        median(&as_durations).as_millis() / 1024,
        runs.join(", ")
    )
}

struct Fold {
    store: Arc<dyn EventStore>,
    pool: SqlitePool,
    events: usize,
    per_cart: usize,
    passes: usize,
    /// Peak resident KiB of each measured run: Annals, the baseline.
    peaks: Mutex<(Vec<u64>, Vec<u64>)>,
}

impl Fold {
    fn check(&self, side: &str, read: usize, carts: &HashMap<String, Cart>) -> anyhow::Result<()> {
        let lines = carts.get(&stream_name(0)).map_or(0, |cart| cart.lines);
        anyhow::ensure!(
            read == self.events && lines == self.per_cart as u64,
            "{side} folded {read} events and cart 0 to {lines} lines, expected {} and {}",
            self.events,
            self.per_cart
        );
        Ok(())
    }

    /// Runs `passes` folds by `one` after a reset of the peak resident size; records the peak of a measured run.
    async fn timed(
        &self,
        phase: Phase,
        annals: bool,
        one: impl AsyncFn() -> anyhow::Result<Duration>,
    ) -> anyhow::Result<Duration> {
        peak::reset();
        let mut total = Duration::ZERO;
        for _ in 0..self.passes {
            total += one().await?;
        }
        if phase == Phase::Measure
            && let Some(kib) = peak::kib()
        {
            let mut peaks = self
                .peaks
                .lock()
                .map_err(|_| anyhow::anyhow!("peak record poisoned"))?;
            match annals {
                true => peaks.0.push(kib),
                false => peaks.1.push(kib),
            }
        }
        Ok(total)
    }

    async fn fold_annals(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut carts = HashMap::new();
        let mut after = Position::START;
        let mut ordered = true;
        let mut read = 0;
        let mut visit = |event: &RecordedEvent| {
            ordered &= event.position > after;
            after = event.position;
            apply(&mut carts, event.stream_id.as_str(), &event.decode()?);
            read += 1;
            Ok(())
        };
        let last = self.store.fold_all(Position::START, &mut visit).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(ordered, "the visit went backwards");
        anyhow::ensure!(
            last == after,
            "the visit returned {last}, but visited up to {after}"
        );
        self.check("Annals", read, &carts)?;
        Ok(elapsed)
    }

    async fn fold_raw(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut rows =
            sqlx::query_as::<_, (i64, String, String, Json<ItemAdded>)>(raw_sqlite::select_all())
                .fetch(&self.pool);
        let mut carts = HashMap::new();
        let mut after = 0;
        let mut read = 0;
        while let Some((position, stream, event_type, Json(item))) = rows.try_next().await? {
            anyhow::ensure!(position > after, "the baseline went backwards");
            after = position;
            apply(&mut carts, &stream, &crate::raw::decode(&event_type, item)?);
            read += 1;
        }
        drop(rows);
        let elapsed = started.elapsed();
        self.check("the baseline", read, &carts)?;
        Ok(elapsed)
    }
}

/// Applies `event` to the cart of `stream`, allocating the key only for a cart not seen before.
fn apply(carts: &mut HashMap<String, Cart>, stream: &str, event: &CartEvent) {
    match carts.get_mut(stream) {
        Some(cart) => cart.apply(event),
        None => {
            let mut cart = Cart::default();
            cart.apply(event);
            carts.insert(stream.to_owned(), cart);
        }
    }
}

impl Workload for Fold {
    async fn annals(&self, phase: Phase) -> anyhow::Result<Duration> {
        self.timed(phase, true, async || self.fold_annals().await)
            .await
    }

    async fn raw(&self, _index: usize, phase: Phase) -> anyhow::Result<Duration> {
        self.timed(phase, false, async || self.fold_raw().await)
            .await
    }
}
