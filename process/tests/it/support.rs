//! A small domain for the tests: jobs that add an amount to a capped counter, through a process manager.
//!
//! - `job-<id>` streams hold `JobRequested { counter, amount, at? }` (written by the test), then the process's own
//!   events (`JobStarted`, `JobDone`, `JobFailed`) and `JobCancelled` (written by the test).
//! - `counter-<name>` streams hold `Added { amount, job }`; a counter refuses to go past 100.
//! - The process: requested → started + `Add` (or a timer when `at` is set); `Added` for the job → done;
//!   `Add` refused → failed with the reason.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::{
    Aggregate, CommandError, EventStore, ExpectedVersion, Metadata, NewEvent, Position,
    RecordedEvent, Repository, StreamId,
};
use annals_process::{
    BoxError, CommandContext, CommandSender, Decision, Input, ProcessManager, Routed, Sent,
    async_trait,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Status {
    #[default]
    None,
    Waiting,
    Started,
    Done,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Default)]
pub struct Job {
    pub status: Status,
    pub counter: String,
    pub amount: u64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEvent {
    #[serde(rename = "JobRequested")]
    Requested {
        counter: String,
        amount: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    #[serde(rename = "JobStarted")]
    Started {},
    #[serde(rename = "JobDone")]
    Done {},
    #[serde(rename = "JobFailed")]
    Failed { reason: String },
    #[serde(rename = "JobCancelled")]
    Cancelled {},
}
impl annals::Event for JobEvent {}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    #[error("not cancellable")]
    NotCancellable,
}

/// Commands to a job itself (what an API would send): request and cancel.
#[derive(Debug, Clone)]
pub enum JobCommand {
    Request {
        counter: String,
        amount: u64,
        at: Option<DateTime<Utc>>,
    },
    Cancel,
}

impl Aggregate for Job {
    type Command = JobCommand;
    type Event = JobEvent;
    type Error = JobError;

    fn decide(&self, command: &JobCommand) -> Result<Vec<JobEvent>, JobError> {
        match command {
            JobCommand::Request {
                counter,
                amount,
                at,
            } => Ok(vec![JobEvent::Requested {
                counter: counter.clone(),
                amount: *amount,
                at: *at,
            }]),
            JobCommand::Cancel if matches!(self.status, Status::Waiting) => {
                Ok(vec![JobEvent::Cancelled {}])
            }
            JobCommand::Cancel => Err(JobError::NotCancellable),
        }
    }

    fn apply(&mut self, event: &JobEvent) {
        match event {
            JobEvent::Requested {
                counter, amount, ..
            } => {
                self.counter = counter.clone();
                self.amount = *amount;
                self.status = Status::Waiting;
            }
            JobEvent::Started {} => self.status = Status::Started,
            JobEvent::Done {} => self.status = Status::Done,
            JobEvent::Failed { reason } => {
                self.status = Status::Failed;
                self.reason = Some(reason.clone());
            }
            JobEvent::Cancelled {} => self.status = Status::Cancelled,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub counter: String,
    pub amount: u64,
    pub job: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wake {
    Start,
}

#[derive(Debug)]
pub enum Trigger {
    Requested { at: Option<DateTime<Utc>> },
    Cancelled,
    Added,
}

/// The process manager under test.
pub struct Jobs;

impl ProcessManager for Jobs {
    type State = Job;
    type Trigger = Trigger;
    type Command = Add;
    type Timer = Wake;

    fn name(&self) -> &str {
        "jobs"
    }

    fn category(&self) -> &str {
        "job"
    }

    fn route(&self, event: &RecordedEvent) -> Result<Option<Routed<Trigger>>, BoxError> {
        let stream = event.stream_id.as_str();
        if let Some(job) = stream.strip_prefix("job-") {
            return Ok(match event.decode::<JobEvent>()? {
                JobEvent::Requested { at, .. } => {
                    Some(Routed::start(job, Trigger::Requested { at }))
                }
                JobEvent::Cancelled {} => Some(Routed::advance(job, Trigger::Cancelled)),
                _ => None,
            });
        }
        if stream.starts_with("counter-") {
            let CounterEvent::Added { job, .. } = event.decode::<CounterEvent>()?;
            return Ok(Some(Routed::advance(job, Trigger::Added)));
        }
        Ok(None)
    }

    fn decide(&self, id: &str, job: &Job, input: Input<'_, Self>) -> Decision<Self> {
        let add = || Add {
            counter: job.counter.clone(),
            amount: job.amount,
            job: id.to_owned(),
        };
        match (job.status, input) {
            (Status::Waiting, Input::Event(Trigger::Requested { at: Some(at) })) => {
                Decision::none().schedule("start", *at, Wake::Start)
            }
            (
                Status::Waiting,
                Input::Event(Trigger::Requested { at: None }) | Input::Timer(Wake::Start),
            ) => Decision::none().event(JobEvent::Started {}).command(add()),
            (Status::Cancelled, Input::Event(Trigger::Cancelled)) => {
                Decision::none().cancel("start")
            }
            (Status::Started, Input::Event(Trigger::Added)) => {
                Decision::none().event(JobEvent::Done {})
            }
            (Status::Started, Input::Refused { reason, .. }) => {
                Decision::none().event(JobEvent::Failed {
                    reason: reason.to_owned(),
                })
            }
            _ => Decision::none(),
        }
    }

    fn is_final(&self, event: &JobEvent) -> bool {
        matches!(
            event,
            JobEvent::Done {} | JobEvent::Failed { .. } | JobEvent::Cancelled {}
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Counter {
    pub value: u64,
    pub jobs: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterEvent {
    #[serde(rename = "Added")]
    Added { amount: u64, job: String },
}
impl annals::Event for CounterEvent {}

#[derive(Debug, thiserror::Error)]
#[error("the counter would pass 100")]
pub struct TooMuch;

impl Aggregate for Counter {
    type Command = (u64, String);
    type Event = CounterEvent;
    type Error = TooMuch;

    fn decide(&self, (amount, job): &(u64, String)) -> Result<Vec<CounterEvent>, TooMuch> {
        if self.jobs.contains(job) {
            return Ok(vec![]);
        }
        if self.value + amount > 100 {
            return Err(TooMuch);
        }
        Ok(vec![CounterEvent::Added {
            amount: *amount,
            job: job.clone(),
        }])
    }

    fn apply(&mut self, CounterEvent::Added { amount, job }: &CounterEvent) {
        self.value += amount;
        self.jobs.insert(job.clone());
    }
}

/// Sends `Add` to the counters in the same store, and can be told to fail (as if the process crashed right
/// there) before or after the command takes effect.
#[derive(Clone)]
pub struct Counters {
    pub store: Arc<dyn EventStore>,
    pub sent: Arc<Mutex<Vec<(Add, uuid::Uuid)>>>,
    /// Fail this many sends *after* executing them (a crash after the command, before anything else).
    pub fail_after: Arc<AtomicU32>,
}

impl Counters {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            sent: Arc::default(),
            fail_after: Arc::default(),
        }
    }

    pub fn sends(&self) -> Vec<(Add, uuid::Uuid)> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl CommandSender<Add> for Counters {
    async fn send(&self, command: &Add, context: &CommandContext) -> Result<Sent, BoxError> {
        self.sent
            .lock()
            .unwrap()
            .push((command.clone(), context.command_id));
        let counter = StreamId::new(format!("counter-{}", command.counter))?;
        let outcome = Repository::<Counter, _>::new(Arc::clone(&self.store))
            .execute_with(
                &counter,
                &(command.amount, command.job.clone()),
                context.metadata.clone(),
            )
            .await;
        if self
            .fail_after
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("injected failure after the command took effect".into());
        }
        match outcome {
            Ok(_) => Ok(Sent::Accepted),
            Err(CommandError::Rejected(TooMuch)) => Ok(Sent::Refused {
                reason: "too_much".into(),
            }),
            Err(other) => Err(other.into()),
        }
    }
}

pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

/// Requests job `id` (as an API would) and returns the recorded request event.
pub async fn request(
    store: &dyn EventStore,
    id: &str,
    counter: &str,
    amount: u64,
    at: Option<DateTime<Utc>>,
) -> RecordedEvent {
    let event = NewEvent::from_event(&JobEvent::Requested {
        counter: counter.into(),
        amount,
        at,
    })
    .unwrap()
    .with_metadata(Metadata::correlated(format!("corr-{id}")));
    let stream = stream(&format!("job-{id}"));
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    store.load_stream(&stream).await.unwrap().remove(0)
}

/// Every event of the log after `after`, in order.
pub async fn log(store: &Arc<dyn EventStore>) -> Vec<RecordedEvent> {
    store.read_all(Position::START, 100_000).await.unwrap()
}

pub async fn counter_value(store: &Arc<dyn EventStore>, counter: &str) -> u64 {
    Repository::<Counter, _>::new(Arc::clone(store))
        .load(&stream(&format!("counter-{counter}")))
        .await
        .unwrap()
        .state
        .value
}

pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn pg_store(pool: sqlx::PgPool) -> annals_postgres::PostgresStore {
    let store = annals_postgres::PostgresStore::from_pool(pool);
    store.migrate().await.unwrap();
    store
}

/// A scratch directory holding one SQLite event store file, removed when dropped.
pub struct Scratch {
    dir: std::path::PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("annals-process-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    /// A migrated store on the file.
    pub async fn store(&self) -> annals_sqlite::SqliteStore {
        let store = annals_sqlite::SqliteStore::open(self.dir.join("events.db"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
