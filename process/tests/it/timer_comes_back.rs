//! Pins a known limit (docs/process-managers.md, "Timers and inputs handled again"): a timer cancelled by a later
//! input comes back when the input that scheduled it *and appended events* is handled again (it is decided again
//! on the state before its events), and fires as a new input. The process manager's guard (decide nothing on a
//! timer the state says is cancelled) is what keeps that firing without effect.

use std::sync::Arc;

use annals::{Aggregate, EventStore, ExpectedVersion, NewEvent, RecordedEvent};
use annals_memory::MemoryStore;
use annals_process::{
    BoxError, CommandContext, CommandSender, Decision, Input, Process, ProcessManager, Routed,
    Sent, Timers, async_trait,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::support::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum ReminderEvent {
    #[serde(rename = "ReminderRequested")]
    Requested { at: DateTime<Utc> },
    #[serde(rename = "ReminderArmed")]
    Armed {},
    #[serde(rename = "ReminderCancelled")]
    Cancelled {},
    #[serde(rename = "ReminderRang")]
    Rang {},
}
impl annals::Event for ReminderEvent {}

#[derive(Debug, Clone, Default)]
struct Reminder {
    at: Option<DateTime<Utc>>,
    armed: bool,
    cancelled: bool,
}

impl Aggregate for Reminder {
    type Command = ();
    type Event = ReminderEvent;
    type Error = std::convert::Infallible;

    fn decide(&self, (): &()) -> Result<Vec<ReminderEvent>, Self::Error> {
        Ok(vec![])
    }

    fn apply(&mut self, event: &ReminderEvent) {
        match event {
            ReminderEvent::Requested { at } => self.at = Some(*at),
            ReminderEvent::Armed {} => self.armed = true,
            ReminderEvent::Cancelled {} => self.cancelled = true,
            ReminderEvent::Rang {} => {}
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ring;

/// A request arms the reminder (an event) and schedules its ring (a timer); a cancellation cancels the timer.
struct Reminders;

impl ProcessManager for Reminders {
    type State = Reminder;
    type Trigger = ReminderEvent;
    type Command = ();
    type Timer = Ring;

    fn name(&self) -> &str {
        "reminders"
    }

    fn category(&self) -> &str {
        "reminder"
    }

    fn route(&self, event: &RecordedEvent) -> Result<Option<Routed<ReminderEvent>>, BoxError> {
        let Some(id) = event.stream_id.as_str().strip_prefix("reminder-") else {
            return Ok(None);
        };
        Ok(match event.decode::<ReminderEvent>()? {
            e @ ReminderEvent::Requested { .. } => Some(Routed::start(id, e)),
            e @ ReminderEvent::Cancelled {} => Some(Routed::advance(id, e)),
            _ => None,
        })
    }

    fn decide(&self, _: &str, state: &Reminder, input: Input<'_, Self>) -> Decision<Self> {
        match input {
            Input::Event(ReminderEvent::Requested { at }) if !state.armed => Decision::none()
                .event(ReminderEvent::Armed {})
                .schedule("ring", *at, Ring),
            Input::Event(ReminderEvent::Cancelled {}) => Decision::none().cancel("ring"),
            // The guard: a timer the state says is cancelled decides nothing.
            Input::Timer(Ring) if state.armed && !state.cancelled => {
                Decision::none().event(ReminderEvent::Rang {})
            }
            _ => Decision::none(),
        }
    }
}

/// The reminders issue no commands.
struct NoCommands;

#[async_trait]
impl CommandSender<()> for NoCommands {
    async fn send(&self, (): &(), _: &CommandContext) -> Result<Sent, BoxError> {
        Ok(Sent::Accepted)
    }
}

async fn append(store: &Arc<dyn EventStore>, event: ReminderEvent) -> RecordedEvent {
    let stream = stream("reminder-r1");
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::from_event(&event).unwrap()],
        )
        .await
        .unwrap();
    store.load_stream(&stream).await.unwrap().pop().unwrap()
}

async fn comes_back(store: Arc<dyn EventStore>, timers: Timers) {
    let process = Process::new(Reminders, Arc::clone(&store), NoCommands, timers);
    let requested = append(&store, ReminderEvent::Requested { at: Utc::now() }).await;
    process.handle_event(&requested).await.unwrap();
    let cancelled = append(&store, ReminderEvent::Cancelled {}).await;
    process.handle_event(&cancelled).await.unwrap();

    // The request handled again (a runner that crashed before its checkpoint): decided again on the state before
    // its `ReminderArmed`, it schedules the ring again, under its old firing id: the cancelled timer is back.
    process.handle_event(&requested).await.unwrap();
    assert_eq!(
        process.fire_due_timers().await.unwrap(),
        1,
        "the cancelled timer came back (if this fails, the limit is fixed: update the docs)"
    );
    // It fired as an input, and the guard decided nothing on it.
    let types: Vec<String> = store
        .load_stream(&stream("reminder-r1"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        ["ReminderRequested", "ReminderArmed", "ReminderCancelled"]
    );
    assert_eq!(process.fire_due_timers().await.unwrap(), 0);
}

#[tokio::test]
async fn a_cancelled_timer_comes_back_when_an_input_that_appended_events_is_handled_again_memory() {
    comes_back(Arc::new(MemoryStore::new()), Timers::memory()).await;
}

#[sqlx::test(migrations = false)]
async fn a_cancelled_timer_comes_back_when_an_input_that_appended_events_is_handled_again_postgres(
    pool: sqlx::PgPool,
) {
    let store = pg_store(pool).await;
    let timers = Timers::postgres(&store);
    comes_back(Arc::new(store), timers).await;
}
