//! Conformance cases for command ids: the store's command record ([`EventStore::find_command`],
//! [`EventStore::record_command`]) and the [`Repository`]'s at-most-once execution on top of it.
//!
//! Run them with [`command_id_conformance!`](crate::command_id_conformance), like
//! [`store_conformance!`](crate::store_conformance).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    Aggregate, AppendResult, CommandError, CommandId, CommandOutcome, CommandRecord, Error, Event,
    EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, Repository, StreamId,
    StreamVersion,
};

/// Generates one test per command-id conformance case. See the [module docs](crate::testkit).
#[macro_export]
macro_rules! command_id_conformance {
    ($(#[$attr:meta])* fn($($arg:ident : $ty:ty),* $(,)?) -> $store:expr) => {
        $crate::__command_id_conformance_cases! {
            [$(#[$attr])*] [$($arg: $ty),*] [$store]
            command_records_are_found_by_id,
            the_first_record_of_an_id_wins,
            a_record_for_an_id_that_took_effect_is_refused,
            command_ids_replay_the_original_outcome,
            command_ids_remember_refusals_and_no_change,
            racing_repeats_have_one_effect,
            a_different_command_under_a_used_id_is_refused,
            a_repeat_after_a_lost_acknowledgement_has_one_effect,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __command_id_conformance_cases {
    ($attrs:tt $args:tt $store:tt $(,)?) => {};
    ([$($attr:tt)*] [$($args:tt)*] [$store:expr] $case:ident $(, $rest:ident)* $(,)?) => {
        $($attr)*
        async fn $case($($args)*) {
            let store: ::std::sync::Arc<dyn $crate::EventStore> = ::std::sync::Arc::new($store);
            $crate::testkit::command_ids::$case(store).await;
        }
        $crate::__command_id_conformance_cases! { [$($attr)*] [$($args)*] [$store] $($rest),* }
    };
}

/// A tally: `Add(n)` adds (0 is refused), `Take(n)` takes what is there (more is refused), `Check` changes
/// nothing.
#[derive(Debug, Default)]
pub struct Tally {
    /// The running total.
    pub total: u64,
}

/// What a [`Tally`] is asked to do.
#[derive(Debug, Clone)]
pub enum TallyCommand {
    /// Add `n` (refused when 0).
    Add(u64),
    /// Take `n` (refused when the total is smaller).
    Take(u64),
    /// Decide that nothing changes.
    Check,
}

/// What happened to a [`Tally`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TallyEvent {
    /// `n` was added.
    #[serde(rename = "TallyAdded")]
    Added {
        /// How much.
        n: u64,
    },
    /// `n` was taken.
    #[serde(rename = "TallyTaken")]
    Taken {
        /// How much.
        n: u64,
    },
}
impl Event for TallyEvent {}

/// Why a [`Tally`] refused.
#[derive(Debug, thiserror::Error)]
pub enum TallyError {
    /// `Add(0)`.
    #[error("cannot add zero")]
    Zero,
    /// `Take(n)` with too little.
    #[error("cannot take {wanted}, only {total} there")]
    TooLittle {
        /// Asked for.
        wanted: u64,
        /// There.
        total: u64,
    },
}

impl Aggregate for Tally {
    type Command = TallyCommand;
    type Event = TallyEvent;
    type Error = TallyError;

    fn decide(&self, command: &TallyCommand) -> Result<Vec<TallyEvent>, TallyError> {
        match *command {
            TallyCommand::Add(0) => Err(TallyError::Zero),
            TallyCommand::Add(n) => Ok(vec![TallyEvent::Added { n }]),
            TallyCommand::Take(n) if n > self.total => Err(TallyError::TooLittle {
                wanted: n,
                total: self.total,
            }),
            TallyCommand::Take(n) => Ok(vec![TallyEvent::Taken { n }]),
            TallyCommand::Check => Ok(vec![]),
        }
    }

    fn apply(&mut self, event: &TallyEvent) {
        match event {
            TallyEvent::Added { n } => self.total += n,
            TallyEvent::Taken { n } => self.total -= n,
        }
    }
}

/// A store whose appends fail with [`Error::Unavailable`] a given number of times, either before reaching the
/// inner store (the append did not happen) or after it (the append committed, its acknowledgement was lost).
pub struct FailingAppends<S> {
    inner: S,
    failures: AtomicU32,
    after_commit: bool,
}

impl<S> FailingAppends<S> {
    /// Fails the next `failures` appends after they committed (lost acknowledgements).
    pub fn losing_acknowledgements(inner: S, failures: u32) -> Self {
        Self {
            inner,
            failures: AtomicU32::new(failures),
            after_commit: true,
        }
    }

    /// Fails the next `failures` appends before they reach the store.
    pub fn unreachable(inner: S, failures: u32) -> Self {
        Self {
            inner,
            failures: AtomicU32::new(failures),
            after_commit: false,
        }
    }

    /// How many failures are left to inject.
    pub fn failures_left(&self) -> u32 {
        self.failures.load(Ordering::SeqCst)
    }
}

#[crate::async_trait]
impl<S: EventStore> EventStore for FailingAppends<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> crate::Result<AppendResult> {
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !fail {
            return self.inner.append(stream, expected, events).await;
        }
        if self.after_commit {
            self.inner.append(stream, expected, events).await?;
        }
        Err(Error::Unavailable {
            operation: "append",
            source: "injected failure: the connection broke".into(),
        })
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> crate::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(&self, after: Position, limit: usize) -> crate::Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
    async fn head(&self) -> crate::Result<Position> {
        self.inner.head().await
    }
    async fn visit_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> crate::Result<()> + Send),
    ) -> crate::Result<Position> {
        self.inner.visit_all(after, visit).await
    }
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> crate::Result<Position> {
        self.inner.wait_for_events(after, timeout).await
    }
    async fn find_command(&self, id: &CommandId) -> crate::Result<Option<CommandRecord>> {
        self.inner.find_command(id).await
    }
    async fn record_command(&self, record: CommandRecord) -> crate::Result<CommandRecord> {
        self.inner.record_command(record).await
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

fn id(name: &str) -> CommandId {
    CommandId::new(name).unwrap()
}

fn refusal(command_id: &str, stream_name: &str, reason: &str) -> CommandRecord {
    CommandRecord {
        command_id: id(command_id),
        stream: stream(stream_name),
        version: StreamVersion(3),
        position: Position(7),
        outcome: CommandOutcome::Refused {
            reason: reason.to_owned(),
        },
        recorded_at: chrono::DateTime::UNIX_EPOCH,
    }
}

fn tallies(store: Arc<dyn EventStore>) -> Repository<Tally> {
    Repository::new(store)
}

async fn stream_len(store: &Arc<dyn EventStore>, name: &str) -> usize {
    store.load_stream(&stream(name)).await.unwrap().len()
}

pub async fn command_records_are_found_by_id(store: Arc<dyn EventStore>) {
    assert_eq!(store.find_command(&id("none")).await.unwrap(), None);
    let record = refusal("cmd-1", "tally-1", "cannot add zero: 'quoted' ünïcödé");
    let held = store.record_command(record.clone()).await.unwrap();
    assert_eq!(
        (&held.command_id, &held.stream),
        (&record.command_id, &record.stream)
    );
    assert_eq!(
        (held.version, held.position),
        (record.version, record.position)
    );
    assert_eq!(held.outcome, record.outcome);
    assert!(
        held.recorded_at > chrono::DateTime::UNIX_EPOCH,
        "the store sets recorded_at"
    );
    let found = store.find_command(&id("cmd-1")).await.unwrap();
    assert_eq!(found.as_ref(), Some(&held), "found as recorded");
    let unchanged = CommandRecord {
        outcome: CommandOutcome::Unchanged,
        ..refusal("cmd-2", "tally-1", "")
    };
    store.record_command(unchanged).await.unwrap();
    let found = store.find_command(&id("cmd-2")).await.unwrap().unwrap();
    assert_eq!(found.outcome, CommandOutcome::Unchanged);
}

pub async fn the_first_record_of_an_id_wins(store: Arc<dyn EventStore>) {
    let first = store
        .record_command(refusal("cmd", "tally-1", "first"))
        .await
        .unwrap();
    let again = store
        .record_command(refusal("cmd", "tally-2", "second"))
        .await
        .unwrap();
    assert_eq!(
        again, first,
        "a later record of the same id returns the first"
    );
    let racers = (0..16).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .record_command(refusal("raced", "tally-1", &format!("racer {i}")))
                .await
                .unwrap()
        })
    });
    let held: Vec<CommandRecord> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        held.iter().all(|h| *h == held[0]),
        "every racer sees the one winner: {held:?}"
    );
}

pub async fn a_record_for_an_id_that_took_effect_is_refused(store: Arc<dyn EventStore>) {
    let used = id("used");
    let event = NewEvent::new("TallyAdded", serde_json::json!({"n": 1})).with_id(used.event_id(0));
    store
        .append(&stream("tally-9"), ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    match store.record_command(refusal("used", "tally-1", "x")).await {
        Err(Error::CommandIdUsed {
            command_id,
            stream: s,
        }) => {
            assert_eq!(command_id, used);
            assert_eq!(s, stream("tally-9"), "names the stream holding the effect");
        }
        other => panic!("expected CommandIdUsed, got {other:?}"),
    }
    assert_eq!(store.find_command(&used).await.unwrap(), None);
}

pub async fn command_ids_replay_the_original_outcome(store: Arc<dyn EventStore>) {
    let repo = tallies(store.clone());
    let s = stream("tally-1");
    let first = repo
        .execute_once(&s, &id("add-5"), &TallyCommand::Add(5))
        .await
        .unwrap();
    assert!(!first.replayed);
    repo.execute(&s, &TallyCommand::Add(1)).await.unwrap();
    repo.execute_once(&s, &id("add-2"), &TallyCommand::Add(2))
        .await
        .unwrap();
    let again = repo
        .execute_once(&s, &id("add-5"), &TallyCommand::Add(5))
        .await
        .unwrap();
    assert!(again.replayed, "the repeat is a replay");
    assert_eq!(again.version, first.version);
    assert_eq!(again.position, first.position);
    assert_eq!(again.state.total, 5, "the state as of the original outcome");
    assert_eq!(again.events, vec![TallyEvent::Added { n: 5 }]);
    assert_eq!(
        stream_len(&store, "tally-1").await,
        3,
        "nothing appended by the repeat"
    );
    let events = store.load_stream(&s).await.unwrap();
    assert_eq!(
        events[0].event_id,
        id("add-5").event_id(0),
        "derived event id"
    );
    assert_eq!(events[0].metadata.command_id.as_deref(), Some("add-5"));
    assert_eq!(events[1].metadata.command_id, None);
}

pub async fn command_ids_remember_refusals_and_no_change(store: Arc<dyn EventStore>) {
    let repo = tallies(store.clone());
    let s = stream("tally-1");
    let refused = repo
        .execute_once(&s, &id("take-10"), &TallyCommand::Take(10))
        .await
        .unwrap_err();
    let CommandError::Rejected(original) = refused else {
        panic!("expected a refusal, got {refused:?}")
    };
    repo.execute(&s, &TallyCommand::Add(20)).await.unwrap();
    // The tally could give 10 now, but the id's answer was a refusal, and stays one.
    match repo
        .execute_once(&s, &id("take-10"), &TallyCommand::Take(10))
        .await
    {
        Err(CommandError::Rejected(again)) => assert_eq!(again.to_string(), original.to_string()),
        other => panic!("expected the original refusal, got {other:?}"),
    }
    assert_eq!(stream_len(&store, "tally-1").await, 1);
    let checked = repo
        .execute_once(&s, &id("check"), &TallyCommand::Check)
        .await
        .unwrap();
    assert!(!checked.replayed && checked.events.is_empty());
    repo.execute(&s, &TallyCommand::Add(1)).await.unwrap();
    let again = repo
        .execute_once(&s, &id("check"), &TallyCommand::Check)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        (again.version, again.position),
        (checked.version, checked.position)
    );
    assert_eq!(
        again.state.total, 20,
        "the state as of the original outcome"
    );
}

pub async fn racing_repeats_have_one_effect(store: Arc<dyn EventStore>) {
    let repo = tallies(store.clone());
    let s = stream("tally-1");
    repo.execute(&s, &TallyCommand::Add(1)).await.unwrap();
    let racers = (0..16).map(|_| {
        let (repo, s) = (repo.clone(), s.clone());
        tokio::spawn(async move {
            repo.execute_once(&s, &id("raced"), &TallyCommand::Add(7))
                .await
                .unwrap()
        })
    });
    let done: Vec<_> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for d in &done {
        assert_eq!(
            (d.version, d.position, d.state.total),
            (done[0].version, done[0].position, 8)
        );
    }
    assert_eq!(stream_len(&store, "tally-1").await, 2, "one effect");
    let refusals = (0..16).map(|_| {
        let (repo, s) = (repo.clone(), s.clone());
        tokio::spawn(async move {
            repo.execute_once(&s, &id("raced-refusal"), &TallyCommand::Take(100))
                .await
        })
    });
    for outcome in futures::future::join_all(refusals).await {
        assert!(matches!(
            outcome.unwrap(),
            Err(CommandError::Rejected(TallyError::TooLittle { .. }))
        ));
    }
    assert_eq!(stream_len(&store, "tally-1").await, 2);
}

pub async fn a_different_command_under_a_used_id_is_refused(store: Arc<dyn EventStore>) {
    let repo = tallies(store.clone());
    let (s, other) = (stream("tally-1"), stream("tally-2"));
    repo.execute_once(&s, &id("k"), &TallyCommand::Add(5))
        .await
        .unwrap();
    let reused = |outcome: Result<_, CommandError<TallyError>>, what: &str| match outcome {
        Err(CommandError::CommandIdReused { command_id, .. }) => {
            assert_eq!(command_id, id("k"), "{what}")
        }
        other => panic!("{what}: expected CommandIdReused, got {other:?}"),
    };
    reused(
        repo.execute_once(&s, &id("k"), &TallyCommand::Add(6)).await,
        "other amount",
    );
    reused(
        repo.execute_once(&s, &id("k"), &TallyCommand::Take(1))
            .await,
        "other command",
    );
    reused(
        repo.execute_once(&s, &id("k"), &TallyCommand::Check).await,
        "no-change command",
    );
    reused(
        repo.execute_once(&other, &id("k"), &TallyCommand::Add(5))
            .await,
        "other stream",
    );
    reused(
        repo.execute_once(&other, &id("k"), &TallyCommand::Add(0))
            .await,
        "refused on another stream",
    );
    assert_eq!(stream_len(&store, "tally-1").await, 1);
    assert_eq!(stream_len(&store, "tally-2").await, 0);
    // A refusal's id, reused.
    let refused = repo.execute_once(&s, &id("r"), &TallyCommand::Add(0)).await;
    assert!(matches!(
        refused,
        Err(CommandError::Rejected(TallyError::Zero))
    ));
    let reused_refusal = repo.execute_once(&s, &id("r"), &TallyCommand::Add(1)).await;
    assert!(
        matches!(reused_refusal, Err(CommandError::CommandIdReused { .. })),
        "{reused_refusal:?}"
    );
    let elsewhere = repo
        .execute_once(&other, &id("r"), &TallyCommand::Add(0))
        .await;
    assert!(
        matches!(elsewhere, Err(CommandError::CommandIdReused { .. })),
        "{elsewhere:?}"
    );
    assert_eq!(stream_len(&store, "tally-1").await, 1);
}

pub async fn a_repeat_after_a_lost_acknowledgement_has_one_effect(store: Arc<dyn EventStore>) {
    let s = stream("tally-1");
    // Every try of the first command commits, then loses its acknowledgement: the outcome is unknown.
    let flaky = Arc::new(FailingAppends::losing_acknowledgements(store.clone(), 3));
    let repo = Repository::<Tally>::new(flaky.clone() as Arc<dyn EventStore>)
        .with_unavailable_retries(2, Duration::from_millis(1));
    match repo
        .execute_once(&s, &id("lost"), &TallyCommand::Add(3))
        .await
    {
        Err(CommandError::OutcomeUnknown {
            command_id,
            attempts,
            ..
        }) => {
            assert_eq!(command_id, Some(id("lost")));
            assert_eq!(attempts, 3);
        }
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(flaky.failures_left(), 0);
    // The caller retries under the same id later: one effect, the original outcome.
    let again = repo
        .execute_once(&s, &id("lost"), &TallyCommand::Add(3))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!((again.version, again.state.total), (StreamVersion(1), 3));
    assert_eq!(stream_len(&store, "tally-1").await, 1);
    // With retries left, the repository itself recovers from a lost acknowledgement.
    let flaky = Arc::new(FailingAppends::losing_acknowledgements(store.clone(), 1));
    let repo = Repository::<Tally>::new(flaky.clone() as Arc<dyn EventStore>)
        .with_unavailable_retries(3, Duration::from_millis(1));
    let done = repo.execute(&s, &TallyCommand::Add(4)).await.unwrap();
    assert_eq!((done.version, done.state.total), (StreamVersion(2), 7));
    assert_eq!(stream_len(&store, "tally-1").await, 2, "written once");
}
