//! `fold-all`: fold every event of the store, in global order, into per-cart state (what a replay or an
//! in-memory read model does).
//!
//! Annals visits the global order with `EventStore::fold_all` (the PostgreSQL store streams the rows to the
//! visitor, in statements of up to 100,000 rows, with no page of events allocated, reading only what a fold reads:
//! position, stream, version, type, schema version, payload), decodes each event into `CartEvent` and applies it
//! to its cart. Baseline: one ordered SELECT of the columns it needs (position, stream, type, payload), streamed,
//! decoded with serde and folded the same way: the cheapest correct shape (one statement, no paging, nothing
//! materialized it does not use).
//!
//! A second line, `fold-all-envelopes`, folds the same log through `EventStore::visit_all` (whole envelopes:
//! event id, `recorded_at` and metadata too) against the same baseline, for code that needs them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{Aggregate, EventStore, Position, RecordedEvent};
use futures::TryStreamExt as _;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool};

use crate::domain::{Cart, CartEvent, ItemAdded, stream_name};
use crate::harness::{self, Phase, Workload};
use crate::raw;
use crate::scenarios::fill;
use crate::settings::Settings;

/// Events in the store by default.
pub(crate) const DEFAULT_EVENTS: usize = 100_000;
/// Events per cart.
pub(crate) const PER_STREAM: usize = 100;

/// Folds per measured run of `fold-all`: one fold of 100,000 events takes 120–170 ms here, short enough for one
/// stall of the virtual machine to decide a run (0.74 in one reference run, 0.99 and 0.94 in the others), so each
/// run times three in a row (rates and CPU are per event over all three). The growth curve's larger logs fold once per run.
const PASSES: usize = 3;

/// Fills both sides, warms up, measures and returns the result lines: `name` (through `fold_all`) and
/// `<name>-envelopes` (through `visit_all`).
pub(crate) async fn run(settings: &Settings, name: &str) -> anyhow::Result<Vec<String>> {
    let wanted = settings.events.unwrap_or(DEFAULT_EVENTS).max(1);
    let per_stream = PER_STREAM.min(wanted);
    let events = wanted / per_stream * per_stream;
    let names: Vec<String> = (0..events / per_stream).map(stream_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    eprintln!(
        "{name}: {events} events over {} carts, visited with fold_all (and with visit_all)",
        names.len()
    );
    fill::prefilled(settings, 2, &names, per_stream, async |filled| {
        let (runs, sides) = (settings.runs, &settings.sides);
        let lean =
            measure_filled(settings, name, &filled, (events, per_stream), runs, PASSES).await?;
        let whole = format!("{name}-envelopes");
        let workload = FoldAll::new(&filled, events, per_stream, Envelope::Whole, PASSES);
        let timings = harness::measure(&whole, &workload, runs, sides).await?;
        Ok(vec![
            lean,
            harness::rate_line(&whole, events * PASSES, &timings),
        ])
    })
    .await
}

/// Which read the Annals side folds through.
#[derive(Debug, Clone, Copy)]
enum Envelope {
    /// `EventStore::fold_all`: what a fold reads.
    Lean,
    /// `EventStore::visit_all`: whole envelopes.
    Whole,
}

/// Measures the fold over `filled` (`events` events, `per_stream` per cart), `passes` folds per run, and returns
/// the result line.
pub(crate) async fn measure_filled(
    settings: &Settings,
    name: &str,
    filled: &fill::Filled,
    (events, per_stream): (usize, usize),
    runs: usize,
    passes: usize,
) -> anyhow::Result<String> {
    let workload = FoldAll::new(filled, events, per_stream, Envelope::Lean, passes);
    let timings = harness::measure(name, &workload, runs, &settings.sides).await?;
    Ok(harness::rate_line(name, events * passes.max(1), &timings))
}

struct FoldAll {
    store: Arc<dyn EventStore>,
    pool: PgPool,
    select: String,
    events: usize,
    per_stream: usize,
    envelope: Envelope,
    /// Folds per run; a run reports the time of all of them.
    passes: usize,
}

impl FoldAll {
    fn new(
        filled: &fill::Filled,
        events: usize,
        per_stream: usize,
        envelope: Envelope,
        passes: usize,
    ) -> Self {
        Self {
            store: filled.store.clone(),
            pool: filled.raw_pool.pool.clone(),
            select: format!(
                "SELECT position, stream_id, event_type, payload FROM \"{}\".events ORDER BY position",
                filled.raw_schema
            ),
            events,
            per_stream,
            envelope,
            passes: passes.max(1),
        }
    }

    /// The time of `self.passes` folds by `fold`, run one after another (the result line counts
    /// `events × passes` events, so that rates and CPU per event are per fold).
    async fn passes(
        &self,
        fold: impl AsyncFn() -> anyhow::Result<Duration>,
    ) -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for _ in 0..self.passes {
            total += fold().await?;
        }
        Ok(total)
    }

    fn check(&self, side: &str, read: usize, carts: &HashMap<String, Cart>) -> anyhow::Result<()> {
        let lines = carts.get(&stream_name(0)).map_or(0, |cart| cart.lines);
        anyhow::ensure!(
            read == self.events && lines == self.per_stream as u64,
            "{side} folded {read} events and cart 0 to {lines} lines, expected {} and {}",
            self.events,
            self.per_stream
        );
        Ok(())
    }

    /// One fold through the store, timed.
    async fn fold_annals(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut carts = HashMap::new();
        let mut after = Position::START;
        let mut ordered = true;
        let mut read = 0;
        let mut visit = |event: &RecordedEvent| {
            ordered &= event.position > after;
            after = event.position;
            fold(&mut carts, event.stream_id.as_str(), &event.decode()?);
            read += 1;
            Ok(())
        };
        let last = match self.envelope {
            Envelope::Lean => self.store.fold_all(Position::START, &mut visit).await?,
            Envelope::Whole => self.store.visit_all(Position::START, &mut visit).await?,
        };
        let elapsed = started.elapsed();
        anyhow::ensure!(ordered, "the visit went backwards");
        anyhow::ensure!(
            last == after,
            "the visit returned {last}, but visited up to {after}"
        );
        self.check("Annals", read, &carts)?;
        Ok(elapsed)
    }

    /// One fold of the baseline table, timed.
    async fn fold_raw(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut rows = sqlx::query_as::<_, (i64, String, String, Json<ItemAdded>)>(AssertSqlSafe(
            self.select.as_str(),
        ))
        .fetch(&self.pool);
        let mut carts = HashMap::new();
        let mut after = 0;
        let mut read = 0;
        while let Some((position, stream, event_type, Json(item))) = rows.try_next().await? {
            anyhow::ensure!(position > after, "the baseline went backwards");
            after = position;
            fold(&mut carts, &stream, &raw::decode(&event_type, item)?);
            read += 1;
        }
        drop(rows);
        let elapsed = started.elapsed();
        self.check("the baseline", read, &carts)?;
        Ok(elapsed)
    }
}

/// Applies `event` to the cart of `stream`, allocating the key only for a cart not seen before.
fn fold(carts: &mut HashMap<String, Cart>, stream: &str, event: &CartEvent) {
    match carts.get_mut(stream) {
        Some(cart) => cart.apply(event),
        None => {
            let mut cart = Cart::default();
            cart.apply(event);
            carts.insert(stream.to_owned(), cart);
        }
    }
}

impl Workload for FoldAll {
    async fn annals(&self, _phase: Phase) -> anyhow::Result<Duration> {
        self.passes(async || self.fold_annals().await).await
    }

    async fn raw(&self, _index: usize, _phase: Phase) -> anyhow::Result<Duration> {
        self.passes(async || self.fold_raw().await).await
    }
}
