//! Acknowledgements in the background: a batch's messages are settled with the broker (all at once, each
//! acknowledgement confirmed by the server) while the next batch is applied; at most one batch's are in flight.

use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::backoff::backoff;
use super::batch::Settle;

/// The first pause before a held-back message is redelivered; it doubles with each redelivery.
const HOLD_FIRST: Duration = Duration::from_millis(10);

/// The longest pause before a held-back message is redelivered.
const HOLD_CAP: Duration = Duration::from_secs(1);

/// The acknowledgements of the last batch, still in flight.
#[derive(Debug, Default)]
pub(super) struct Acks {
    in_flight: Option<JoinHandle<()>>,
}

impl Acks {
    /// Waits for the previous batch's acknowledgements, then sends this batch's in the background.
    pub(super) async fn send(
        &mut self,
        consumer: &str,
        messages: Vec<Message>,
        settle: Vec<Settle>,
    ) {
        self.flush().await;
        let consumer = consumer.to_owned();
        self.in_flight = Some(tokio::spawn(async move {
            let sent = messages
                .iter()
                .zip(settle)
                .map(|(m, s)| async move { (m, s, settle_one(m, s).await) });
            for (message, settle, result) in futures::future::join_all(sent).await {
                if let Err(error) = result {
                    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
                    // A lost acknowledgement means a redelivery, which the inbox absorbs as a duplicate.
                    warn!(%consumer, sequence, ?settle, %error, "settling a message with the broker failed");
                }
            }
            debug!(%consumer, "batch settled");
        }));
    }

    /// Waits until the acknowledgements in flight are sent.
    pub(super) async fn flush(&mut self) {
        if let Some(handle) = self.in_flight.take() {
            let _ = handle.await;
        }
    }
}

async fn settle_one(
    message: &Message,
    settle: Settle,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match settle {
        Settle::Ack => message.double_ack().await,
        Settle::Hold => {
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let n = u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX);
            message
                .ack_with(AckKind::Nak(Some(backoff(HOLD_FIRST, n, HOLD_CAP))))
                .await
        }
        Settle::Done => Ok(()),
    }
}
