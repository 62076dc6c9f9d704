//! `growth`: how cost grows with the work. Three curves, each point against its baseline:
//! - `load-<n>`: loading one stream of 10, 100, 1,000 and 10,000 events (time of one load);
//! - `fold-all-<n>` and `rebuild-postgres-<n>`: the global fold and a PostgreSQL read-model rebuild over logs of
//!   100,000 and 1,000,000 events (`--growth-max` caps the size), each line with the process's peak resident
//!   memory during the measured runs, which must stay bounded by page and batch sizes, not the log's length;
//! - `command-w<n>`: command throughput with 1, 2, 8 and 32 writers (against the `dedicated` baseline).

use crate::domain::stream_name;
use crate::scenarios::{command, fill, fold_all, load_stream, rebuild};
use crate::settings::Settings;

/// The stream lengths of the load curve, with the loads per run that keep each run long enough to time.
const LOADS: [(usize, usize); 4] = [(10, 500), (100, 200), (1_000, 20), (10_000, 10)];
/// The log sizes of the fold and rebuild curves.
const LOGS: [usize; 2] = [100_000, 1_000_000];
/// The writer counts of the command curve.
const WRITERS: [usize; 4] = [1, 2, 8, 32];
/// Commands per run on every point of the command curve.
const CURVE_COMMANDS: usize = 4_000;

/// Runs every curve; returns one line per point.
pub(crate) async fn run(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for (events, loads) in LOADS {
        lines.push(
            load_stream::run_sized(settings, &format!("load-{events}"), events, loads).await?,
        );
    }
    for events in LOGS.into_iter().filter(|n| *n <= settings.growth_max) {
        lines.extend(logs(settings, events).await?);
    }
    for writers in WRITERS {
        let commands = settings.commands.unwrap_or(CURVE_COMMANDS).max(writers);
        let scenario = command::Commands::new(settings, writers, commands, false).await?;
        let line = scenario.measure(&format!("command-w{writers}")).await;
        scenario.close().await;
        lines.push(line?);
    }
    Ok(lines)
}

/// The fold and rebuild points over one log of `events` events (filled once for both).
async fn logs(settings: &Settings, events: usize) -> anyhow::Result<Vec<String>> {
    // 1,000 events per cart: the fill appends in batches of 1,000, and the rebuild upserts as many carts.
    let per_stream = 1_000;
    let names: Vec<String> = (0..events / per_stream).map(stream_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // Big logs get one measured run per side (after the warm-up pass), to bound the total time.
    let runs = if events >= 1_000_000 {
        1
    } else {
        settings.runs
    };
    eprintln!("growth: filling {events} events over {} carts", names.len());
    fill::prefilled(settings, 4, &names, per_stream, async |filled| {
        let mut lines = Vec::new();
        let name = format!("fold-all-{events}");
        peak::reset();
        let line =
            fold_all::measure_filled(settings, &name, &filled, (events, per_stream), runs, 1)
                .await?;
        lines.push(format!("{line} | peak rss {}", peak::read()));
        let name = format!("rebuild-postgres-{events}");
        peak::reset();
        let line = rebuild::measure_filled(
            settings,
            &name,
            rebuild::Target::Postgres,
            &filled,
            events,
            per_stream,
            runs,
        )
        .await?;
        lines.push(format!("{line} | peak rss {}", peak::read()));
        Ok(lines)
    })
    .await
}

/// The process's peak resident set size (Linux: `VmHWM`, reset through `/proc/self/clear_refs`).
pub(crate) mod peak {
    /// Starts a new peak from the current resident size.
    pub(crate) fn reset() {
        if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
            eprintln!("  (cannot reset the peak RSS: {e})");
        }
    }

    /// The peak since the last reset in KiB, if the system tells.
    pub(crate) fn kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    }

    /// The peak since the last reset, as `<n> MiB` (or `unknown`).
    pub(crate) fn read() -> String {
        kib().map_or_else(|| "unknown".to_owned(), |kb| format!("{} MiB", kb / 1024))
    }
}
