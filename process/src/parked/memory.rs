//! Parked inputs in process memory, for the memory store.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use annals::{Position, async_trait};

use super::{ParkedInput, ParkedStore};
use crate::error::Result;

/// The memory equivalent of the `process_parked` table: by process, then position.
#[derive(Debug, Default)]
pub(crate) struct MemoryParked {
    inputs: Mutex<BTreeMap<(String, Position), ParkedInput>>,
}

impl MemoryParked {
    fn inputs(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, Position), ParkedInput>> {
        self.inputs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn of<'a>(
        inputs: &'a BTreeMap<(String, Position), ParkedInput>,
        process: &str,
    ) -> impl Iterator<Item = &'a ParkedInput> {
        inputs
            .range((process.to_owned(), Position::START)..)
            .take_while(move |((p, _), _)| p == process)
            .map(|(_, input)| input)
    }
}

#[async_trait]
impl ParkedStore for MemoryParked {
    async fn park(&self, process: &str, input: &ParkedInput) -> Result<()> {
        let mut inputs = self.inputs();
        let key = (process.to_owned(), input.position);
        let attempts = inputs.get(&key).map_or(0, |earlier| earlier.attempts);
        let mut input = input.clone();
        input.attempts = attempts + 1;
        inputs.insert(key, input);
        Ok(())
    }

    async fn first_of(&self, process: &str, instance: &str) -> Result<Option<Position>> {
        let inputs = self.inputs();
        Ok(Self::of(&inputs, process)
            .find(|input| input.instance.as_deref() == Some(instance))
            .map(|input| input.position))
    }

    async fn list(&self, process: &str) -> Result<Vec<ParkedInput>> {
        Ok(Self::of(&self.inputs(), process).cloned().collect())
    }

    async fn remove(&self, process: &str, position: Position) -> Result<()> {
        self.inputs().remove(&(process.to_owned(), position));
        Ok(())
    }

    async fn count(&self, process: &str) -> Result<u64> {
        Ok(Self::of(&self.inputs(), process).count() as u64)
    }
}
