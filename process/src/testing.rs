//! A given/when/then fixture for process managers: given these earlier events of the instance, when this event
//! (or timer, or refusal), then these commands, these new process events, these timers. Pure, no store.
//!
//! ```
//! # use annals_process::testing::given;
//! # fn doc<P: annals_process::ProcessManager>(pm: &P, trigger: P::Trigger, started: <P::State as annals::Aggregate>::Event, command: P::Command)
//! # where <P::State as annals::Aggregate>::Event: PartialEq + std::fmt::Debug + Clone, P::Command: PartialEq, P::Timer: PartialEq {
//! given(pm, "t-1", [])
//!     .when_event(trigger)
//!     .then_events([started])
//!     .then_commands([command]);
//! # }
//! ```

use std::fmt::Debug;

use annals::Aggregate;

use crate::decision::{Decision, TimerRequest};
use crate::process::{Input, ProcessManager};

type EventOf<P> = <<P as ProcessManager>::State as Aggregate>::Event;

/// Starts a scenario: the stream of `instance` already holds `events`.
pub fn given<'a, P: ProcessManager>(
    pm: &'a P,
    instance: &'a str,
    events: impl IntoIterator<Item = EventOf<P>>,
) -> Given<'a, P> {
    let mut state = P::State::default();
    for event in events {
        state.apply(&event);
    }
    Given {
        pm,
        instance,
        state,
    }
}

/// The instance's state built from the given events.
pub struct Given<'a, P: ProcessManager> {
    pm: &'a P,
    instance: &'a str,
    state: P::State,
}

impl<'a, P: ProcessManager> Given<'a, P> {
    /// Decides on an event of the log, as [`ProcessManager::route`] would hand it over.
    pub fn when_event(self, trigger: P::Trigger) -> Then<P> {
        let decision = self
            .pm
            .decide(self.instance, &self.state, Input::Event(&trigger));
        Then { decision }
    }

    /// Decides on a timer coming due.
    pub fn when_timer(self, payload: P::Timer) -> Then<P> {
        let decision = self
            .pm
            .decide(self.instance, &self.state, Input::Timer(&payload));
        Then { decision }
    }

    /// Decides on a refused command.
    pub fn when_refused(self, command: P::Command, reason: &str) -> Then<P> {
        let decision = self.pm.decide(
            self.instance,
            &self.state,
            Input::Refused {
                command: &command,
                reason,
            },
        );
        Then { decision }
    }

    /// The state the given events folded into.
    pub fn state(&self) -> &P::State {
        &self.state
    }
}

/// The decision, ready for assertions. Each `then_*` checks one part; chain them.
pub struct Then<P: ProcessManager> {
    decision: Decision<P>,
}

impl<P: ProcessManager> Then<P>
where
    EventOf<P>: PartialEq + Debug,
    P::Command: PartialEq,
    P::Timer: PartialEq,
{
    /// Asserts the process's new events.
    ///
    /// # Panics
    /// When they differ (this is a test assertion).
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = EventOf<P>>) -> Self {
        let expected: Vec<_> = expected.into_iter().collect();
        assert_eq!(self.decision.events, expected, "the process's new events");
        self
    }

    /// Asserts the commands issued.
    ///
    /// # Panics
    /// When they differ.
    #[track_caller]
    pub fn then_commands(self, expected: impl IntoIterator<Item = P::Command>) -> Self {
        let expected: Vec<_> = expected.into_iter().collect();
        assert_eq!(self.decision.commands, expected, "the commands issued");
        self
    }

    /// Asserts the timers set or cancelled.
    ///
    /// # Panics
    /// When they differ.
    #[track_caller]
    pub fn then_timers(self, expected: impl IntoIterator<Item = TimerRequest<P::Timer>>) -> Self {
        let expected: Vec<_> = expected.into_iter().collect();
        assert_eq!(
            self.decision.timers, expected,
            "the timers set or cancelled"
        );
        self
    }

    /// Asserts that the decision does nothing at all.
    ///
    /// # Panics
    /// When it does something.
    #[track_caller]
    pub fn then_nothing(self) {
        assert!(
            self.decision.is_empty(),
            "expected no events, commands or timers, got {:?}",
            self.decision
        );
    }

    /// The decision, for other assertions.
    pub fn decision(self) -> Decision<P> {
        self.decision
    }
}
