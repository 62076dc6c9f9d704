//! A given/when/then fixture for aggregates: given these past events, when this command, then these new events
//! or this error. Pure and synchronous, no store involved.
//!
//! ```
//! # use annals::Aggregate;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Default)] struct Switch { on: bool }
//! # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)] enum SwitchEvent { TurnedOn }
//! # impl annals::Event for SwitchEvent {}
//! # #[derive(Debug, PartialEq, thiserror::Error)] #[error("already on")] struct AlreadyOn;
//! # impl Aggregate for Switch {
//! #     type Command = (); type Event = SwitchEvent; type Error = AlreadyOn;
//! #     fn decide(&self, _: &()) -> Result<Vec<SwitchEvent>, AlreadyOn> {
//! #         if self.on { Err(AlreadyOn) } else { Ok(vec![SwitchEvent::TurnedOn]) }
//! #     }
//! #     fn apply(&mut self, _: &SwitchEvent) { self.on = true; }
//! # }
//! use annals::testing::given;
//!
//! given::<Switch>([]).when(()).then([SwitchEvent::TurnedOn]);
//! given::<Switch>([SwitchEvent::TurnedOn]).when(()).then_error(AlreadyOn);
//! ```

use std::fmt::Debug;

use crate::aggregate::Aggregate;

/// Starts a scenario: the aggregate's stream already holds `events`.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let history: Vec<A::Event> = events.into_iter().collect();
    Given {
        state: A::from_events(&history),
    }
}

/// The state built from the given events.
pub struct Given<A> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` against the given state.
    pub fn when(self, command: A::Command) -> When<A> {
        let outcome = self.state.decide(&command);
        When {
            state: self.state,
            outcome,
        }
    }

    /// The state the given events folded into, for assertions on state.
    pub fn state(&self) -> &A {
        &self.state
    }
}

/// The outcome of the command, ready for assertions.
pub struct When<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> When<A>
where
    A::Event: PartialEq + Debug,
    A::Error: Debug,
{
    /// Asserts that the command produced exactly `expected`, and returns the state after applying them.
    ///
    /// # Panics
    /// When the command was refused or produced other events.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.outcome {
            Ok(events) => {
                assert_eq!(
                    events, expected,
                    "the command produced other events than expected"
                );
                let mut state = self.state;
                for event in &events {
                    state.apply(event);
                }
                state
            }
            Err(error) => {
                panic!("expected events {expected:?}, but the command was refused: {error:?}")
            }
        }
    }

    /// Asserts that the command was refused with `expected`.
    ///
    /// # Panics
    /// When the command succeeded or failed differently.
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        match self.outcome {
            Ok(events) => {
                panic!("expected the error {expected:?}, but the command produced {events:?}")
            }
            Err(error) => assert_eq!(error, expected, "the command failed with another error"),
        }
    }

    /// Asserts that the command was refused with an error for which `check` holds.
    ///
    /// # Panics
    /// When the command succeeded or `check` returns false.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&A::Error) -> bool) {
        match self.outcome {
            Ok(events) => panic!("expected an error, but the command produced {events:?}"),
            Err(error) => assert!(
                check(&error),
                "the command failed with an unexpected error: {error:?}"
            ),
        }
    }

    /// The raw outcome, for custom assertions.
    pub fn outcome(self) -> Result<Vec<A::Event>, A::Error> {
        self.outcome
    }
}
