//! A projection's effects outside its read model ([`Projection::effects`](crate::Projection::effects)), run
//! before a batch's transaction opens: how far through a batch they got within the time a batch may take.

use std::time::{Duration, Instant};

use annals::RecordedEvent;

use super::batch::{BatchError, classify};
use super::{Engine, Kind, Registered};

/// How far the effects of a batch got: the events before `done` had theirs; `failed` is the failure of the
/// event at `done` when that is why they stopped (else the time ran out, or every event is done).
pub(super) struct EffectsDone {
    pub(super) done: usize,
    pub(super) failed: Option<BatchError>,
}

impl Engine {
    /// How long a batch's effects may take before the batch is cut: a third of the lease, so the commit that
    /// follows them (which renews the lease) comes well inside it.
    fn effects_budget(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// Runs the effects of `events`' wanted events in order, outside any transaction, until one fails or the
    /// budget has run out (checked before each event but the first, so every call makes progress).
    pub(super) async fn run_effects(
        &self,
        p: &Registered,
        events: &[RecordedEvent],
    ) -> EffectsDone {
        let all = EffectsDone {
            done: events.len(),
            failed: None,
        };
        let projection = match &p.kind {
            Kind::Docs(projection) => projection,
            #[cfg(feature = "postgres")]
            Kind::Sql(_) => return all,
            Kind::Leased => return all,
        };
        let started = Instant::now();
        let budget = self.effects_budget();
        let mut first = true;
        for (index, event) in events.iter().enumerate() {
            let current = match self.current(event) {
                Ok(current) => current,
                Err(error) => {
                    return EffectsDone {
                        done: index,
                        failed: Some(BatchError::Apply {
                            index: Some(index),
                            error,
                        }),
                    };
                }
            };
            if !p.wants(&current) {
                continue;
            }
            if !first && started.elapsed() >= budget {
                return EffectsDone {
                    done: index,
                    failed: None,
                };
            }
            first = false;
            if let Err(error) = projection.effects(&current).await {
                return EffectsDone {
                    done: index,
                    failed: Some(classify(Some(index), error)),
                };
            }
        }
        all
    }
}
