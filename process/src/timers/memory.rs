//! Timers in process memory: a map by key and an index by due time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use annals::async_trait;
use chrono::{DateTime, Utc};

use super::{Timer, TimerCounts, TimerStore};
use crate::error::Result;

type Key = (String, String, String);

#[derive(Debug)]
struct Slot {
    timer: Timer,
    claimed_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct State {
    by_key: BTreeMap<Key, Slot>,
    /// `(process, due, instance, key)`: the polling path, read as a range.
    by_due: BTreeSet<(String, DateTime<Utc>, String, String)>,
}

impl State {
    fn remove(&mut self, key: &Key) -> Option<Slot> {
        let slot = self.by_key.remove(key)?;
        self.by_due.remove(&(
            key.0.clone(),
            slot.timer.due_at,
            key.1.clone(),
            key.2.clone(),
        ));
        Some(slot)
    }
}

/// The memory equivalent of the `process_timers` table.
#[derive(Debug, Default)]
pub(crate) struct MemoryTimers {
    state: Mutex<State>,
}

fn key_of(timer: &Timer) -> Key {
    (
        timer.process.clone(),
        timer.instance.clone(),
        timer.key.clone(),
    )
}

fn later(by: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX)
}

impl MemoryTimers {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl TimerStore for MemoryTimers {
    async fn schedule(&self, timer: &Timer) -> Result<()> {
        let mut state = self.state();
        let key = key_of(timer);
        if state
            .by_key
            .get(&key)
            .is_some_and(|s| s.timer.fire_id == timer.fire_id)
        {
            return Ok(());
        }
        state.remove(&key);
        state.by_due.insert((
            timer.process.clone(),
            timer.due_at,
            timer.instance.clone(),
            timer.key.clone(),
        ));
        let mut timer = timer.clone();
        timer.attempts = 0;
        state.by_key.insert(
            key,
            Slot {
                timer,
                claimed_until: None,
            },
        );
        Ok(())
    }

    async fn cancel(&self, process: &str, instance: &str, key: &str) -> Result<bool> {
        let key = (process.to_owned(), instance.to_owned(), key.to_owned());
        Ok(self.state().remove(&key).is_some())
    }

    async fn claim_due(
        &self,
        process: &str,
        limit: usize,
        claim_for: Duration,
        max_attempts: u32,
    ) -> Result<Vec<Timer>> {
        let now = Utc::now();
        let mut state = self.state();
        let due: Vec<Key> = state
            .by_due
            .range(
                (
                    process.to_owned(),
                    DateTime::<Utc>::MIN_UTC,
                    String::new(),
                    String::new(),
                )..,
            )
            .take_while(|(p, at, _, _)| p == process && *at <= now)
            .map(|(p, _, i, k)| (p.clone(), i.clone(), k.clone()))
            .collect();
        let mut claimed = Vec::new();
        for key in due {
            if claimed.len() >= limit {
                break;
            }
            let Some(slot) = state.by_key.get_mut(&key) else {
                continue;
            };
            if slot.timer.attempts >= max_attempts || slot.claimed_until.is_some_and(|c| c > now) {
                continue;
            }
            slot.timer.attempts += 1;
            slot.claimed_until = Some(later(claim_for));
            claimed.push(slot.timer.clone());
        }
        Ok(claimed)
    }

    async fn complete(&self, timer: &Timer) -> Result<()> {
        let mut state = self.state();
        let key = key_of(timer);
        if state
            .by_key
            .get(&key)
            .is_some_and(|s| s.timer.fire_id == timer.fire_id)
        {
            state.remove(&key);
        }
        Ok(())
    }

    async fn release(&self, timer: &Timer, retry_in: Duration, error: &str) -> Result<()> {
        let mut state = self.state();
        if let Some(slot) = state.by_key.get_mut(&key_of(timer))
            && slot.timer.fire_id == timer.fire_id
        {
            slot.claimed_until = Some(later(retry_in));
            tracing::debug!(error, "timer released after a failed firing");
        }
        Ok(())
    }

    async fn next_due(&self, process: &str, max_attempts: u32) -> Result<Option<DateTime<Utc>>> {
        let state = self.state();
        Ok(state
            .by_key
            .values()
            .filter(|s| s.timer.process == process && s.timer.attempts < max_attempts)
            .map(|s| match s.claimed_until {
                Some(c) if c > s.timer.due_at => c,
                _ => s.timer.due_at,
            })
            .min())
    }

    async fn unpark(&self, process: &str, max_attempts: u32) -> Result<u64> {
        let mut state = self.state();
        let mut unparked = 0;
        for slot in state.by_key.values_mut() {
            if slot.timer.process == process && slot.timer.attempts >= max_attempts {
                slot.timer.attempts = 0;
                slot.claimed_until = None;
                unparked += 1;
            }
        }
        Ok(unparked)
    }

    async fn counts(&self, process: &str, max_attempts: u32) -> Result<TimerCounts> {
        let state = self.state();
        let mut counts = TimerCounts::default();
        for slot in state.by_key.values().filter(|s| s.timer.process == process) {
            if slot.timer.attempts >= max_attempts {
                counts.parked += 1;
            } else {
                counts.pending += 1;
            }
        }
        Ok(counts)
    }
}
