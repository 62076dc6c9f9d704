//! The clients: each runs random steps (a [`Plan`]) through every path a store offers until the run's deadline,
//! and records every operation in the [`History`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::{
    AppendResult, CachedRepository, CommandError, CommandId, Error, EventStore, Executed,
    ExpectedVersion, NewEvent, Repository, StreamId, StreamVersion,
};

use super::faults::FaultSwitch;
use super::history::{Fault, History, Kind, Op, Outcome, Write};
use super::path::ExtraPath;
use super::plan::{AppendPlan, Path, Plan};
use super::rng::Rng;
use super::stock::{Stock, StockCommand, StockEvent, Tag};

/// What every client of a run shares.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) history: Arc<History>,
    pub(crate) streams: Vec<StreamId>,
    pub(crate) paths: Vec<Arc<dyn ExtraPath>>,
    pub(crate) deadline: Instant,
    pub(crate) seed: u64,
}

/// A client: its generator, its view of the store (with faults), a repository and a write cache of its own
/// (as a separate process would have), the versions it last saw and the command ids it used.
pub(crate) struct Client {
    pub(crate) index: usize,
    rng: Rng,
    pub(crate) store: Arc<FaultSwitch>,
    pub(crate) repository: Repository<Stock>,
    pub(crate) cache: CachedRepository<Stock, Arc<dyn EventStore>>,
    pub(crate) seen: HashMap<usize, StreamVersion>,
    pub(crate) commands: Vec<(CommandId, StockCommand, usize)>,
}

/// Runs client `index` until the deadline; returns how many steps it took.
pub(crate) async fn run_client(shared: Arc<Shared>, index: usize) -> usize {
    let mut client = Client::new(&shared, index);
    let mut steps = 0;
    while Instant::now() < shared.deadline {
        client.step(&shared).await;
        steps += 1;
    }
    steps
}

impl Client {
    fn new(shared: &Shared, index: usize) -> Self {
        let store = Arc::new(FaultSwitch::new(shared.store.clone()));
        let dyn_store: Arc<dyn EventStore> = store.clone();
        let repository = Repository::<Stock>::new(dyn_store.clone())
            .with_unavailable_retries(2, Duration::from_millis(1));
        let cached = Repository::<Stock>::new(dyn_store)
            .with_unavailable_retries(2, Duration::from_millis(1));
        Self {
            index,
            rng: Rng::new(shared.seed, index as u64 + 1),
            store,
            repository: repository.clone(),
            cache: CachedRepository::new(cached, 64),
            seen: HashMap::new(),
            commands: Vec::new(),
        }
    }

    async fn step(&mut self, shared: &Shared) {
        let plan = Plan::draw(
            &mut self.rng,
            shared.streams.len(),
            !shared.paths.is_empty(),
        );
        self.store.arm(plan.fault);
        let cancel = plan.cancel;
        let interrupt = interruption(&plan);
        let work = self.run(shared, &plan);
        if cancel {
            let dropped = tokio::select! {
                biased;
                () = work => false,
                () = interrupt => true,
            };
            if dropped {
                shared.history.cancelled(self.index);
            }
        } else {
            work.await;
        }
        self.store.arm(Fault::None);
    }

    async fn run(&mut self, shared: &Shared, plan: &Plan) {
        match plan.path {
            Path::Append => self.append(shared, plan).await,
            Path::Session => self.session(shared, plan).await,
            Path::Execute | Path::ExecuteOnce | Path::Cached => self.command(shared, plan).await,
            Path::Extra => self.extra(shared, plan).await,
        }
    }

    /// A new operation of this client (start, end and outcome are set by [`History::begin`]).
    pub(crate) fn op(&self, shared: &Shared, kind: Kind, stream: usize, fault: Fault) -> Op {
        Op {
            id: shared.history.next_id(),
            client: self.index,
            kind,
            stream: shared.streams[stream].clone(),
            expected: None,
            write: None,
            fault,
            start: 0,
            end: 0,
            outcome: Outcome::Unknown(String::new()),
        }
    }

    /// The expected version an append plan asks for, near the last version this client saw.
    pub(crate) fn expected(&self, plan: &AppendPlan) -> ExpectedVersion {
        let seen = self
            .seen
            .get(&plan.stream)
            .copied()
            .unwrap_or_default()
            .get();
        match plan.expected {
            0 => ExpectedVersion::Any,
            1 => ExpectedVersion::NoStream,
            2 => ExpectedVersion::StreamExists,
            _ => ExpectedVersion::Exact(StreamVersion((seen + plan.offset).saturating_sub(1))),
        }
    }

    /// Remembers the version an outcome names.
    pub(crate) fn observe(&mut self, stream: usize, outcome: &Outcome) {
        let version = match outcome {
            Outcome::Appended { version, .. }
            | Outcome::Executed { version, .. }
            | Outcome::Read { version, .. }
            | Outcome::Conflict { actual: version } => *version,
            _ => return,
        };
        self.seen.insert(stream, version);
    }

    async fn append(&mut self, shared: &Shared, plan: &Plan) {
        let stream = plan.first.stream;
        let expected = self.expected(&plan.first);
        let tag = shared.history.next_id();
        let events = tagged_events(tag, &plan.first, plan.malformed);
        // A malformed append must meet the store itself (a fault in front would answer for it).
        let fault = if plan.malformed {
            self.store.arm(Fault::None);
            Fault::None
        } else {
            plan.fault
        };
        let mut op = self.op(shared, Kind::Append, stream, fault);
        op.expected = Some(expected);
        op.write = Some(Write {
            tag,
            events: events.len(),
            action: None,
        });
        let retry = op.clone();
        let id = shared.history.begin(op);
        let result = self
            .store
            .append(&shared.streams[stream], expected, events.clone())
            .await;
        let mut outcome = append_outcome(&result);
        if plan.malformed && !matches!(result, Err(Error::InvalidAppend { .. })) {
            outcome =
                Outcome::Unexpected(format!("a malformed append was not refused: {result:?}"));
        }
        shared.history.finish(id, outcome.clone());
        self.observe(stream, &outcome);
        if matches!(result, Err(Error::Unavailable { .. })) && plan.resend {
            // A careful client sends an append of unknown outcome again, with the same event ids.
            self.store.arm(Fault::None);
            let id = shared.history.begin(Op {
                id: shared.history.next_id(),
                fault: Fault::None,
                ..retry
            });
            let result = self
                .store
                .append(&shared.streams[stream], expected, events)
                .await;
            let outcome = append_outcome(&result);
            shared.history.finish(id, outcome.clone());
            self.observe(stream, &outcome);
        }
    }

    async fn command(&mut self, shared: &Shared, plan: &Plan) {
        let stream = plan.first.stream;
        let (kind, command, once) = self.pick_command(shared, plan);
        let mut op = self.op(shared, kind, stream, plan.fault);
        op.write = Some(Write {
            tag: command.tag,
            events: command.action.events(),
            action: Some(command.action),
        });
        let kind = op.kind.clone();
        let id = shared.history.begin(op);
        let stream_id = &shared.streams[stream];
        let result = match (&kind, once) {
            (Kind::Cached, _) => self.cache.execute(stream_id, &command).await,
            (_, Some(once)) => {
                self.repository
                    .execute_once(stream_id, &once, &command)
                    .await
            }
            _ => self.repository.execute(stream_id, &command).await,
        };
        let outcome = command_outcome(&result);
        shared.history.finish(id, outcome.clone());
        self.observe(stream, &outcome);
    }

    /// The command of a step: a fresh one, or (for `execute_once`) sometimes an earlier id with its command.
    fn pick_command(
        &mut self,
        shared: &Shared,
        plan: &Plan,
    ) -> (Kind, StockCommand, Option<CommandId>) {
        let fresh = StockCommand {
            tag: shared.history.next_id(),
            action: plan.action,
        };
        match plan.path {
            Path::Cached => (Kind::Cached, fresh, None),
            Path::ExecuteOnce => {
                let earlier = usize::try_from(plan.pick % (self.commands.len().max(1) as u64))
                    .ok()
                    .and_then(|i| self.commands.get(i))
                    .filter(|(_, _, stream)| *stream == plan.first.stream)
                    .filter(|_| plan.repeat)
                    .cloned();
                let (id, command, repeat) = match earlier {
                    Some((id, command, _)) => (id, command, true),
                    None => {
                        let Ok(id) = CommandId::new(format!("c{}-{}", self.index, fresh.tag))
                        else {
                            return (Kind::Execute, fresh, None);
                        };
                        self.commands
                            .push((id.clone(), fresh.clone(), plan.first.stream));
                        (id, fresh, false)
                    }
                };
                let kind = Kind::ExecuteOnce {
                    id: id.as_str().to_owned(),
                    repeat,
                };
                (kind, command, Some(id))
            }
            _ => (Kind::Execute, fresh, None),
        }
    }
}

/// A future that ends when a cancelled operation is to be dropped: after some yields or some microseconds.
fn interruption(plan: &Plan) -> impl std::future::Future<Output = ()> + use<> {
    let (yields, micros) = (plan.cancel_yields, plan.cancel_micros);
    async move {
        if micros > 0 {
            tokio::time::sleep(Duration::from_micros(micros)).await;
        } else {
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The events of an append: restocks or shipments tagged `(tag, index)`; a malformed one has a NUL character
/// in its event type.
pub(crate) fn tagged_events(tag: u64, plan: &AppendPlan, malformed: bool) -> Vec<NewEvent> {
    (0..plan.events)
        .map(|i| {
            let (n, op, i) = (plan.amount, tag, u32::try_from(i).unwrap_or_default());
            let event = if plan.ship {
                StockEvent::Shipped { n, op, i }
            } else {
                StockEvent::Restocked { n, op, i }
            };
            let payload = serde_json::json!({ "n": n, "op": op, "i": i });
            let event_type = match (&event, malformed) {
                (_, true) => "Restocked\u{0}",
                (StockEvent::Shipped { .. }, _) => "Shipped",
                (StockEvent::Restocked { .. }, _) => "Restocked",
            };
            NewEvent::new(event_type, payload)
        })
        .collect()
}

/// What an append's answer means for the model.
pub(crate) fn append_outcome(result: &crate::Result<AppendResult>) -> Outcome {
    match result {
        Ok(done) => Outcome::Appended {
            version: done.stream_version,
            first: done.first_position,
            last: done.last_position,
        },
        Err(Error::Conflict { actual, .. }) => Outcome::Conflict { actual: *actual },
        Err(Error::InvalidAppend { reason, .. }) => Outcome::Failed(reason.clone()),
        Err(unavailable @ Error::Unavailable { .. }) => Outcome::Unknown(unavailable.to_string()),
        Err(other) => Outcome::Unexpected(other.to_string()),
    }
}

/// What a command's answer means for the model. A command that fails with a store error stored nothing: only
/// [`CommandError::OutcomeUnknown`] leaves its effect open.
pub(crate) fn command_outcome(
    result: &Result<Executed<Stock>, CommandError<super::stock::OutOfStock>>,
) -> Outcome {
    match result {
        Ok(done) => Outcome::Executed {
            version: done.version,
            position: done.position,
            events: done.events.len(),
            replayed: done.replayed,
        },
        Err(CommandError::Rejected(refusal)) => Outcome::Refused {
            wanted: refusal.wanted,
            units: refusal.units,
        },
        Err(CommandError::Conflict { .. }) => Outcome::GaveUp,
        Err(unknown @ CommandError::OutcomeUnknown { .. }) => Outcome::Unknown(unknown.to_string()),
        Err(CommandError::Store(unavailable @ Error::Unavailable { .. })) => {
            Outcome::Failed(format!("the command answered Store({unavailable})"))
        }
        Err(other) => Outcome::Unexpected(other.to_string()),
    }
}

/// The tags of events read, in order.
pub(crate) fn tag_of(event: &crate::RecordedEvent) -> Option<Tag> {
    Tag::of(event)
}
