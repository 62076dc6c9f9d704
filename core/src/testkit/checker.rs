//! A seeded, randomized, model-based concurrency checker for event stores (Jepsen's Elle, FoundationDB's
//! simulation tests and TigerBeetle's VOPR are the anchors).
//!
//! Concurrent clients issue random operations over a handful of streams, through every path a store offers
//! (appends with each [`ExpectedVersion`](crate::ExpectedVersion), command sessions, `Repository::execute` and
//! `execute_once` with repeated command ids, each client's own `CachedRepository`, and the store's own paths
//! through [`ExtraPath`]), while followers read the global order and the harness injects faults from the client
//! side: futures dropped at an await, lost acknowledgements and unavailable appends (`FailingAppends`), and
//! killed connections ([`ConnectionKiller`]). Every operation is recorded with its start, end and answer; at the
//! end the history is checked against a sequential model of an event store (see `docs/testing.md`, "The model
//! checker"). A failure prints `checker seed <N>` first and how to replay it.
//!
//! ```text
//! let config = Config::from_env("memory")?;          // ANNALS_CHECK_SEED, ANNALS_CHECK_SECS
//! Checker::new(Arc::new(MemoryStore::new()), config).run().await.map_err(|f| panic!("{f}"));
//! ```
//!
//! Each client's choices come from a generator seeded with the seed and the client's index, so a seed replays
//! the same sequence of choices; the interleaving is whatever real concurrency makes of them, so a replay finds
//! a race again with high probability, not certainty.

mod config;
mod faults;
mod follower;
mod history;
mod model;
mod path;
mod plan;
mod report;
mod rng;
mod sessions;
mod stock;
mod stored;
mod transactions;
mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::{EventStore, Position, StreamId};

pub use config::{Config, ConfigError, DEFAULT_DURATION, SECS_VARIABLE, SEED_VARIABLE};
pub use faults::ConnectionKiller;
pub use history::{Fault, Kind, NEVER, Op, Outcome, Write};
pub use path::{ExtraPath, Finish, PathAppend, PathReport, PathRequest};
pub use report::{Failure, Summary, Violation};
pub use stock::{Action, OutOfStock, Stock, StockCommand, StockEvent, Tag};

use follower::{Follower, Mode};
use history::History;
use rng::Rng;
use stored::Stored;
use workload::Shared;

/// One checker run against a store: build it, add the store's own paths and fault hooks, [`run`](Checker::run).
pub struct Checker {
    store: Arc<dyn EventStore>,
    config: Config,
    paths: Vec<Arc<dyn ExtraPath>>,
    killer: Option<Arc<dyn ConnectionKiller>>,
}

impl Checker {
    /// A run against `store` (fresh and empty) with `config`.
    pub fn new(store: Arc<dyn EventStore>, config: Config) -> Self {
        Self {
            store,
            config,
            paths: Vec::new(),
            killer: None,
        }
    }

    /// Adds a store-specific write path the clients use beside the common ones.
    pub fn with_path(mut self, path: Arc<dyn ExtraPath>) -> Self {
        self.paths.push(path);
        self
    }

    /// Kills connections with `killer` a few times a second while the clients run.
    pub fn with_killer(mut self, killer: Arc<dyn ConnectionKiller>) -> Self {
        self.killer = Some(killer);
        self
    }

    /// Runs the clients and followers for the configured time, reads the store back and checks the history.
    /// Prints the seed first (to stderr, which the test harness shows with a failure).
    ///
    /// # Errors
    /// A [`Failure`] naming the seed, the rules the history breaks and the operations involved.
    pub async fn run(self) -> Result<Summary, Failure> {
        let config = self.config.clone();
        eprintln!(
            "checker seed {} ({}): {} clients on {} streams for {:?}; {}",
            config.seed,
            config.label,
            config.clients,
            config.streams,
            config.duration,
            config.replay_hint()
        );
        let streams = (0..config.streams)
            .map(|i| StreamId::new(format!("stock-{i}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::setup(&config, e.to_string()))?;
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let followers = self.start_followers(&stop);
        let killer = self.start_killer(&stop);
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            history: history.clone(),
            streams: streams.clone(),
            paths: self.paths.clone(),
            deadline: tokio::time::Instant::now() + config.duration,
            seed: config.seed,
        });
        let mut clients = JoinSet::new();
        for index in 0..config.clients {
            clients.spawn(workload::run_client(shared.clone(), index));
        }
        let panicked = join_clients(clients, shared.deadline + GRACE).await;
        stop.store(true, Ordering::SeqCst);
        let killed = match killer {
            Some(task) => task.await.unwrap_or_default(),
            None => 0,
        };
        let mut seen = Vec::new();
        for task in followers {
            if let Ok(follower) = task.await {
                seen.push(follower);
            }
        }
        if !panicked.is_empty() {
            return Err(Failure::setup(
                &config,
                format!("a client panicked: {panicked:?}"),
            ));
        }
        self.check(&config, &history, &streams, seen, killed).await
    }

    async fn check(
        &self,
        config: &Config,
        history: &History,
        streams: &[StreamId],
        mut followers: Vec<Follower>,
        killed: usize,
    ) -> Result<Summary, Failure> {
        let head = settle(&*self.store).await;
        let stored = read_back(&*self.store, streams)
            .await
            .map_err(|e| Failure::setup(config, format!("reading the store back failed: {e}")))?;
        let ops = history.ops();
        let mut violations = model::check(&ops, &stored);
        let stuck = history.pending();
        if !stuck.is_empty() {
            violations.push(Violation::new(
                "every operation answers",
                format!(
                    "{} operation(s) had not answered {GRACE:?} after the run's end, and were dropped",
                    stuck.len()
                ),
                stuck,
            ));
        }
        let head = stored.global.last().map_or(head, |e| e.position);
        for follower in &mut followers {
            follower.catch_up(&*self.store, head).await;
            violations.extend(follower_violations(follower, &stored, head));
        }
        let followed = followers.iter().map(|f| f.seen.len()).collect();
        let summary = Summary::of(&ops, stored.global.len(), killed, followed);
        if violations.is_empty() {
            Ok(summary)
        } else {
            Err(Failure::new(config, violations, &ops, summary))
        }
    }

    fn start_followers(&self, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Follower>> {
        (0..self.config.followers)
            .map(|i| {
                let mode = if i % 2 == 0 {
                    Mode::Pages
                } else {
                    Mode::Visits
                };
                tokio::spawn(follower::follow(self.store.clone(), mode, stop.clone()))
            })
            .collect()
    }

    fn start_killer(&self, stop: &Arc<AtomicBool>) -> Option<tokio::task::JoinHandle<usize>> {
        let killer = self.killer.clone()?;
        let (stop, mut rng) = (stop.clone(), Rng::new(self.config.seed, 0));
        Some(tokio::spawn(async move {
            let mut killed = 0;
            while !stop.load(Ordering::SeqCst) {
                // Pacing, not synchronisation: a few kills a second.
                tokio::time::sleep(Duration::from_millis(rng.between(100, 400))).await;
                killed += killer.kill(rng.next_u64()).await.unwrap_or_default();
            }
            killed
        }))
    }
}

/// How long after the run's end the clients may take to finish their last operation before they are stopped.
const GRACE: Duration = Duration::from_secs(30);

/// Waits for the clients until `until`, then stops those still running; returns the panics.
async fn join_clients(mut clients: JoinSet<usize>, until: tokio::time::Instant) -> Vec<String> {
    let mut panicked = Vec::new();
    loop {
        match tokio::time::timeout_at(until, clients.join_next()).await {
            Ok(Some(Err(error))) if error.is_panic() => panicked.push(error.to_string()),
            Ok(Some(_)) => {}
            Ok(None) => return panicked,
            Err(_) => {
                // Their pending operations stay pending: the checks report them.
                clients.abort_all();
                while let Some(joined) = clients.join_next().await {
                    if let Err(error) = joined
                        && error.is_panic()
                    {
                        panicked.push(error.to_string());
                    }
                }
                return panicked;
            }
        }
    }
}

/// Waits until no event arrives for half a second (operations whose futures were dropped may still land), at
/// most about ten seconds; returns the head then.
async fn settle(store: &dyn EventStore) -> Position {
    let mut head = Position::START;
    for _ in 0..20 {
        match store
            .wait_for_events(head, Duration::from_millis(500))
            .await
        {
            Ok(next) if next == head => break,
            Ok(next) => head = next,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    head
}

/// Reads the store back, retrying a few times while it is unavailable (a connection killed at the end).
async fn read_back(store: &dyn EventStore, streams: &[StreamId]) -> crate::Result<Stored> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match Stored::read(store, streams).await {
            Err(error) if error.is_retryable() && attempt < 5 => {
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            other => return other,
        }
    }
}

/// A follower must have seen exactly the global order up to `head`, each event once, in position order.
fn follower_violations(follower: &Follower, stored: &Stored, head: Position) -> Vec<Violation> {
    let rule = "a follower sees every event once, in position order, nothing skipped";
    let mut violations: Vec<Violation> = follower
        .problems
        .iter()
        .map(|p| Violation::new(rule, p.clone(), vec![]))
        .collect();
    let seen: Vec<_> = follower
        .seen
        .iter()
        .filter(|(p, _)| *p <= head)
        .copied()
        .collect();
    let global: Vec<_> = stored
        .global
        .iter()
        .map(|e| (e.position, e.event_id))
        .collect();
    if seen != global {
        let at = seen
            .iter()
            .zip(&global)
            .position(|(a, b)| a != b)
            .unwrap_or(seen.len().min(global.len()));
        violations.push(Violation::new(
            rule,
            format!(
                "{:?} follower saw {} events, the global order holds {}; first difference at index {at}: saw {:?}, \
                 stored {:?}",
                follower.mode,
                seen.len(),
                global.len(),
                seen.get(at).map(|e| e.0),
                global.get(at).map(|e| e.0)
            ),
            vec![],
        ));
    }
    violations
}
