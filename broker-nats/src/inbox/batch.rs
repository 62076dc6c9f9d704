//! A batch of messages applied in order: runs of decodable messages go to the handler in one transaction
//! each, malformed ones are parked between them; a transient failure retries the run in place, and a message
//! whose handler fails for a reason of its own is taken out: the messages before it are applied again without
//! it, it is retried alone (then parked), and the batch goes on after it.

use async_nats::jetstream::{AckKind, Message};
use tokio::sync::watch;
use tracing::warn;

use super::attempt::{Attempt, Failure};
use super::decode;
use super::{Delivery, Handler, Inbox, Outcome, pause};
use crate::error::Result;

/// How a consumed message is settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settle {
    /// Applied or a duplicate: acknowledge.
    Ack,
    /// Held back by the order fence: hand it back for a later redelivery.
    Hold,
    /// Parked: already terminated.
    Done,
}

impl From<Outcome> for Settle {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Applied | Outcome::Duplicate => Self::Ack,
            Outcome::Held => Self::Hold,
            Outcome::Parked => Self::Done,
        }
    }
}

impl From<Attempt> for Settle {
    fn from(attempt: Attempt) -> Self {
        match attempt {
            Attempt::Applied | Attempt::Duplicate => Self::Ack,
            Attempt::Held => Self::Hold,
        }
    }
}

/// A decodable message of the batch: its index and its delivery.
type Item<E> = (usize, Delivery<E>);

impl<H: Handler> Inbox<H> {
    /// Applies `messages` in order; returns how each is to be settled, or `None` when told to stop meanwhile.
    /// Transient failures are retried in place (the messages stay in hand, kept from redelivery by progress
    /// acknowledgements), with the run loop's backoff in `failures`.
    ///
    /// # Errors
    /// An error that retrying cannot fix.
    pub(super) async fn consume(
        &self,
        messages: &[Message],
        failures: &mut u32,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<Option<Vec<Settle>>> {
        let mut settle = vec![Settle::Done; messages.len()];
        let mut run: Vec<Item<H::Event>> = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            match decode::delivery::<H::Event>(message, sequence) {
                Ok(d) => run.push((i, d)),
                Err(m) => {
                    if !self
                        .apply_run(messages, &run, &mut settle, failures, stopped)
                        .await?
                    {
                        return Ok(None);
                    }
                    run.clear();
                    let stream = m.stream.as_ref().map(|(s, v)| (s.as_str(), *v));
                    let parked =
                        || self.park(message, sequence, m.event_id, stream, m.reason.clone(), 0);
                    if retrying(parked, failures, stopped).await?.is_none() {
                        return Ok(None);
                    }
                }
            }
        }
        if !self
            .apply_run(messages, &run, &mut settle, failures, stopped)
            .await?
        {
            return Ok(None);
        }
        Ok(Some(settle))
    }

    /// Applies a run of decodable messages in as few transactions as the handler's failures allow; `false`
    /// when told to stop meanwhile.
    async fn apply_run(
        &self,
        messages: &[Message],
        run: &[Item<H::Event>],
        settle: &mut [Settle],
        failures: &mut u32,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<bool> {
        let mut start = 0;
        // The run's message whose handler failed in a batch, with the cause: applied alone when reached.
        let mut culprit: Option<(usize, String)> = None;
        while start < run.len() {
            if let Some((_, cause)) = culprit.take_if(|(c, _)| *c == start) {
                let (i, d) = &run[start];
                let alone = || self.apply_one(&messages[*i], d, 1, Some(cause.clone()));
                let Some(outcome) = retrying(alone, failures, stopped).await? else {
                    return Ok(false);
                };
                settle[*i] = outcome.into();
                start += 1;
                continue;
            }
            let end = culprit.as_ref().map_or(run.len(), |(c, _)| *c);
            let batch: Vec<&Delivery<H::Event>> = run[start..end].iter().map(|(_, d)| d).collect();
            match self.attempt(&batch).await {
                Ok(outcomes) => {
                    for ((i, _), outcome) in run[start..end].iter().zip(outcomes) {
                        settle[*i] = outcome.into();
                    }
                    *failures = 0;
                    start = end;
                }
                Err(Failure::Transient(e)) => {
                    warn!(consumer = %self.name, error = %e, messages = end - start, "applying a batch failed; retrying");
                    for (i, _) in &run[start..end] {
                        // Still on it: the broker does not redeliver meanwhile.
                        let _ = messages[*i].ack_with(AckKind::Progress).await;
                    }
                    if pause(failures, stopped).await.is_none() {
                        return Ok(false);
                    }
                }
                Err(Failure::Permanent {
                    index: Some(k),
                    cause,
                }) => culprit = Some((start + k, cause)),
                Err(Failure::Permanent { index: None, cause }) if end - start == 1 => {
                    // A batch of one: the culprit is known.
                    culprit = Some((start, cause));
                }
                Err(Failure::Permanent { index: None, .. }) => {
                    // Some handler left the transaction unable to commit: find which, one message at a time.
                    for (i, d) in &run[start..end] {
                        let alone = || self.apply_one(&messages[*i], d, 0, None);
                        let Some(outcome) = retrying(alone, failures, stopped).await? else {
                            return Ok(false);
                        };
                        settle[*i] = outcome.into();
                    }
                    start = end;
                }
            }
        }
        Ok(true)
    }
}

/// Runs `work` until it succeeds or fails for good, pausing with backoff after each transient failure; `None`
/// when told to stop meanwhile.
async fn retrying<T, F, Fut>(
    mut work: F,
    failures: &mut u32,
    stopped: &mut watch::Receiver<bool>,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    loop {
        match work().await {
            Ok(done) => {
                *failures = 0;
                return Ok(Some(done));
            }
            Err(e) if e.is_transient() => {
                warn!(error = %e, "processing failed; retrying");
                if pause(failures, stopped).await.is_none() {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}
