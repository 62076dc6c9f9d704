//! Process managers (sagas) for Annals: a business action that spans several aggregates, as a process that
//! reacts to events, issues commands, remembers where it is, survives crashes, and compensates when a later step
//! is refused.
//!
//! - A [`ProcessManager`] is pure: it routes events to instances (by a correlation such as a transfer id) and,
//!   given an instance's state and an [`Input`] (an event, a timer, a refused command), returns a [`Decision`]:
//!   its own new events, the commands to issue, the timers to set.
//! - Its state is event-sourced in its own stream per instance (`{category}-{instance}`).
//! - A [`Process`] runs it on top of the projections runner (checkpoint, lease, failure policy; see
//!   [`Process::register`]) with a [`CommandSender`] and durable [`Timers`] (memory or PostgreSQL).
//! - Handled once in effect: everything a handling does is named after its cause (event ids, command ids,
//!   timer ids), so handling an input again after a crash anywhere is recognised and has no second effect.
//! - [`testing::given`]: given/when/then for decisions.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use annals::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
//! use annals_memory::MemoryStore;
//! use annals_process::{
//!     BoxError, CommandContext, CommandSender, Decision, Input, Process, ProcessManager, Routed, Sent,
//!     Timers, async_trait, default_options,
//! };
//! use annals_projections::Projections;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Default)] struct Shipping { requested: bool }
//! # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! # enum ShippingEvent { #[serde(rename = "ShipmentRequested")] Requested {} }
//! # impl annals::Event for ShippingEvent {}
//! # #[derive(Debug, thiserror::Error)] #[error("no commands")] struct NoCommands;
//! # impl annals::Aggregate for Shipping {
//! #     type Command = (); type Event = ShippingEvent; type Error = NoCommands;
//! #     fn decide(&self, _: &()) -> Result<Vec<ShippingEvent>, NoCommands> { Err(NoCommands) }
//! #     fn apply(&mut self, _: &ShippingEvent) { self.requested = true; }
//! # }
//!
//! /// When an order is placed, ask the warehouse to ship it (once).
//! struct ShipOrders;
//!
//! #[derive(Debug, Clone, PartialEq)]
//! struct Ship { order: String }
//!
//! impl ProcessManager for ShipOrders {
//!     type State = Shipping;
//!     type Trigger = ();
//!     type Command = Ship;
//!     type Timer = ();
//!
//!     fn name(&self) -> &str { "shipping" }
//!
//!     fn route(&self, event: &RecordedEvent) -> Result<Option<Routed<()>>, BoxError> {
//!         let order = event.stream_id.as_str().strip_prefix("order-");
//!         Ok(order.filter(|_| event.event_type == "OrderPlaced").map(|o| Routed::start(o, ())))
//!     }
//!
//!     fn decide(&self, order: &str, state: &Shipping, input: Input<'_, Self>) -> Decision<Self> {
//!         match input {
//!             Input::Event(()) if !state.requested => Decision::none()
//!                 .event(ShippingEvent::Requested {})
//!                 .command(Ship { order: order.to_owned() }),
//!             _ => Decision::none(),
//!         }
//!     }
//! }
//!
//! /// The warehouse: here, a list of what it was asked to ship.
//! #[derive(Clone, Default)]
//! struct Warehouse(Arc<Mutex<Vec<Ship>>>);
//!
//! #[async_trait]
//! impl CommandSender<Ship> for Warehouse {
//!     async fn send(&self, command: &Ship, _: &CommandContext) -> Result<Sent, BoxError> {
//!         self.0.lock().unwrap().push(command.clone());
//!         Ok(Sent::Accepted)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let warehouse = Warehouse::default();
//! let process = Process::new(ShipOrders, store.clone(), warehouse.clone(), Timers::memory());
//! let projections = process.register(Projections::memory(store.clone()), default_options());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let runner = tokio::spawn({
//!     let projections = projections.clone();
//!     async move { projections.run(async { let _ = stopped.await; }).await }
//! });
//!
//! let placed = NewEvent::new("OrderPlaced", serde_json::json!({}));
//! let at = store.append(&StreamId::new("order-1")?, ExpectedVersion::NoStream, vec![placed]).await?;
//! projections.wait_for_position("shipping", at.last_position, std::time::Duration::from_secs(5)).await?;
//! assert_eq!(*warehouse.0.lock().unwrap(), [Ship { order: "1".into() }]);
//! assert!(process.load("1").await?.is_some_and(|s| s.state.requested));
//!
//! let _ = stop.send(());
//! runner.await??;
//! # Ok(())
//! # }
//! ```
//!
//! The guide is `docs/process-managers.md` (handling once, compensation, timers, what is eventually
//! consistent), with the bank's transfers as the worked example.

mod command;
mod decision;
mod due_range;
mod error;
mod handling;
mod ids;
mod options;
mod parked;
mod parking;
mod pipeline;
mod process;
mod runner;
mod status;
pub mod testing;
mod timers;

pub use command::{CommandContext, CommandSender, Sent};
pub use decision::{Decision, TimerRequest};
pub use due_range::timer_due_range;
pub use error::{BoxError, Error, Result};
pub use options::ProcessOptions;
pub use parked::{ParkedInput, RetryReport};
pub use process::{Input, ProcessManager, Routed};
pub use runner::{Process, ProcessProjection, TIMER_POLL_RETRIES, default_options};
pub use status::ProcessStatus;
pub use timers::Timers;

/// Re-exported so senders implement [`CommandSender`] with the same `async_trait`.
pub use annals::async_trait;
