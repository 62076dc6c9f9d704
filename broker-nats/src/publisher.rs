//! [`Publisher`]: publishes a batch of events to JetStream, pipelined, keeping each stream's events in order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use annals::RecordedEvent;
use async_nats::jetstream::context::{Context, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::error::Error;
use crate::headers::headers_of;
use crate::subject::Subjects;

/// What publishing one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// Events acknowledged by the broker (each exactly once in this count).
    pub events: usize,
    /// Of those, how many the broker reported as duplicates (already stored inside its duplicate window).
    pub duplicates: usize,
    /// Messages sent again after a timed-out or lost acknowledgement.
    pub resent: usize,
}

/// What publishing a page that may stop early did ([`Publisher::publish_until`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Page {
    /// What was acknowledged (every acknowledged event counts, also those after the first unacknowledged one).
    pub published: Published,
    /// How many leading events of the page (in its order) are acknowledged: the checkpoint may move past them.
    pub acked: usize,
    /// Why the page stopped before every event was acknowledged, when it failed (`None` when it was complete or
    /// stopped at the caller's instant).
    pub failure: Option<Error>,
}

/// Publishes events to JetStream with a bounded number of acknowledgements in flight.
///
/// **Order.** At most one message per Annals stream is unacknowledged at any time; messages of different
/// streams are pipelined. A message whose acknowledgement timed out or was lost with the connection has an
/// unknown outcome: it is sent again with the same `Nats-Msg-Id` (the event id) before any later event of its
/// stream is sent, so a retry can never land after its successor (nats-server #2384).
///
/// **Acknowledgements.** Every acknowledgement future is awaited; none is dropped, even when the batch fails.
#[derive(Debug, Clone)]
pub struct Publisher {
    context: Context,
    subjects: Subjects,
    max_in_flight: usize,
    attempts: u32,
    url: String,
}

/// How a message's attempt ended.
enum Outcome {
    Acked { duplicate: bool },
    Unknown(String),
    Refused(String),
}

impl Publisher {
    /// A publisher on `client` with `max_in_flight` acknowledgements outstanding at most (at least 1), waiting
    /// `ack_timeout` for each and sending a message at most `attempts` times (at least 1).
    pub fn new(
        client: async_nats::Client,
        subjects: Subjects,
        max_in_flight: usize,
        ack_timeout: Duration,
        attempts: u32,
    ) -> Self {
        let max_in_flight = max_in_flight.max(1);
        let url = client.server_info().host.clone();
        let context = async_nats::jetstream::ContextBuilder::new()
            .timeout(ack_timeout)
            .max_ack_inflight(max_in_flight)
            .backpressure_on_inflight(true)
            .build(client);
        Self {
            context,
            subjects,
            max_in_flight,
            attempts: attempts.max(1),
            url,
        }
    }

    /// The subjects it publishes to.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The JetStream context it publishes through.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Publishes `events` (in position order) and returns when every one is acknowledged.
    ///
    /// # Errors
    /// The index of the first event (in the slice's order) that was not acknowledged, with
    /// [`Error::Publish`]: every event before that index is acknowledged. Before returning, every outstanding
    /// acknowledgement is awaited.
    pub async fn publish(
        &self,
        events: &[&RecordedEvent],
    ) -> std::result::Result<Published, (usize, Error)> {
        let page = self.publish_page(events, None).await;
        match page.failure {
            None if page.acked == events.len() => Ok(page.published),
            failure => Err((
                page.acked,
                failure.unwrap_or_else(|| Error::Publish {
                    position: events
                        .get(page.acked)
                        .map_or(annals::Position::START, |e| e.position),
                    attempts: 0,
                    transient: true,
                    cause: "not every event was sent".to_owned(),
                }),
            )),
        }
    }

    /// Publishes `events` (in position order) like [`publish`](Self::publish), but sends nothing (no first
    /// attempt, no re-send) from the instant `stop` holds on: the caller moves it (later when it renewed the lease
    /// it publishes under, earlier when it lost it). Then it awaits every outstanding acknowledgement and says
    /// how many leading events are acknowledged. Whatever is not is published again by the next page.
    pub async fn publish_until(
        &self,
        events: &[&RecordedEvent],
        stop: watch::Receiver<Instant>,
    ) -> Page {
        self.publish_page(events, Some(stop)).await
    }

    async fn publish_page(
        &self,
        events: &[&RecordedEvent],
        stop: Option<watch::Receiver<Instant>>,
    ) -> Page {
        let stop_at = || stop.as_ref().map(|s| *s.borrow());
        let mut stats = Published::default();
        let mut acked = vec![false; events.len()];
        let mut tries = vec![0u32; events.len()];
        let mut busy: HashSet<&str> = HashSet::new();
        let mut held: HashMap<&str, VecDeque<usize>> = HashMap::new();
        let mut ready: VecDeque<usize> = VecDeque::new();
        let mut next = 0;
        let mut in_flight = FuturesUnordered::new();
        let mut failure: Option<(usize, u32, bool, String)> = None;
        let mut halted = false;
        // The last unknown outcome, reported when the page stops at its instant before it was acknowledged.
        let mut unknown: Option<String> = None;
        let mut bodies: Vec<Option<(String, Bytes)>> = vec![None; events.len()];

        loop {
            // Fill the window, unless the page failed or reached its stop (then only drain).
            while failure.is_none() && !halted && in_flight.len() < self.max_in_flight {
                let index = if let Some(i) = ready.pop_front() {
                    i
                } else if next < events.len() {
                    let i = next;
                    next += 1;
                    let stream = events[i].stream_id.as_str();
                    if busy.contains(stream) {
                        held.entry(stream).or_default().push_back(i);
                        continue;
                    }
                    i
                } else {
                    break;
                };
                let event = events[index];
                busy.insert(event.stream_id.as_str());
                if tries[index] > 0 {
                    let delay = backoff(tries[index]);
                    debug!(
                        position = event.position.get(),
                        attempt = tries[index] + 1,
                        ?delay,
                        "re-publishing"
                    );
                    tokio::time::sleep(delay).await;
                }
                if stop_at().is_some_and(|at| Instant::now() >= at) {
                    halted = true;
                    break;
                }
                tries[index] += 1;
                if tries[index] > 1 {
                    stats.resent += 1;
                }
                let (subject, payload) = bodies[index]
                    .get_or_insert_with(|| {
                        (
                            self.subjects.subject(&event.stream_id),
                            Bytes::copy_from_slice(event.payload.as_str().as_bytes()),
                        )
                    })
                    .clone();
                let message = PublishMessage::build()
                    .payload(payload)
                    .headers(headers_of(event));
                let sending = self.context.send_publish(subject, message);
                let sent = match stop_at() {
                    // A send that waits (a full client buffer) past the stop is abandoned unsent.
                    Some(at) => match tokio::time::timeout_at(at.into(), sending).await {
                        Ok(sent) => sent,
                        Err(_) => {
                            halted = true;
                            break;
                        }
                    },
                    None => sending.await,
                };
                in_flight.push(async move {
                    let outcome = match sent {
                        Ok(ack) => match ack.await {
                            Ok(ack) => Outcome::Acked {
                                duplicate: ack.duplicate,
                            },
                            Err(e) => classify(&e),
                        },
                        Err(e) => classify(&e),
                    };
                    (index, outcome)
                });
            }
            let Some((index, outcome)) = in_flight.next().await else {
                break;
            };
            let event = events[index];
            let stream = event.stream_id.as_str();
            match outcome {
                Outcome::Acked { duplicate } => {
                    acked[index] = true;
                    stats.events += 1;
                    stats.duplicates += usize::from(duplicate);
                    busy.remove(stream);
                    if let Some(i) = held.get_mut(stream).and_then(VecDeque::pop_front) {
                        ready.push_back(i);
                    }
                }
                Outcome::Unknown(cause) if tries[index] < self.attempts && failure.is_none() => {
                    unknown = Some(cause.clone());
                    warn!(position = event.position.get(), stream, attempt = tries[index], error = %cause,
                          url = %self.url, "acknowledgement lost or timed out; publishing again with the same message id");
                    // Stays busy: nothing later of this stream goes out before this one is acknowledged.
                    ready.push_front(index);
                }
                Outcome::Unknown(cause) => {
                    failure.get_or_insert((index, tries[index], true, cause));
                }
                Outcome::Refused(cause) => {
                    failure.get_or_insert((index, tries[index], false, cause));
                }
            }
        }
        let first = acked.iter().position(|a| !a).unwrap_or(events.len());
        if halted && first < events.len() {
            failure = failure.or(unknown.map(|cause| (first, tries[first], true, cause)));
        }
        Page {
            published: stats,
            acked: first,
            failure: failure.map(|(_, attempts, transient, cause)| Error::Publish {
                position: events
                    .get(first)
                    .map_or(annals::Position::START, |e| e.position),
                attempts,
                transient,
                cause,
            }),
        }
    }
}

/// Outcome unknown (publish again with the same id) or refused (retrying the same message cannot help).
fn classify(e: &PublishError) -> Outcome {
    let text = e.to_string();
    // An answer from JetStream's API (a 4xx/5xx error code): the server saw the message and refused it.
    let answered = std::error::Error::source(e)
        .is_some_and(|s| s.downcast_ref::<async_nats::jetstream::Error>().is_some());
    match e.kind() {
        // Timeouts and lost connections: the message may or may not be stored. No responders ("stream not
        // found") is what a restarting server answers before JetStream is back.
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending => Outcome::Unknown(text),
        PublishErrorKind::Other if !answered => Outcome::Unknown(text),
        _ => Outcome::Refused(text),
    }
}

/// The wait before attempt `n + 1` of one message: up to 50 ms, doubling, at most 2 s, jittered (the one retry
/// policy, [`annals::RetryPolicy`]).
fn backoff(n: u32) -> Duration {
    const RESEND: annals::RetryPolicy =
        annals::RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(2), 0);
    RESEND.pause(n)
}
