//! A message turned into a [`Delivery`]: headers parsed, payload checked to be JSON, event decoded (and
//! upcast); or the reason it cannot be, which parks it.

use annals::{Event, Payload, RecordedEvent};
use async_nats::jetstream::Message;

use super::Delivery;
use crate::headers::FeedHeaders;

/// Why a message cannot be delivered to the handler.
pub(super) struct Malformed {
    /// The event id, when its header was readable.
    pub(super) event_id: Option<uuid::Uuid>,
    /// The Annals stream and version, when the headers were readable (the order fence moves past it).
    pub(super) stream: Option<(String, u64)>,
    /// What is wrong, naming the header or the decode error.
    pub(super) reason: String,
}

/// Decodes `message` (JetStream sequence `sequence`) into a delivery of `E`.
pub(super) fn delivery<E: Event>(
    message: &Message,
    sequence: u64,
) -> Result<Delivery<E>, Malformed> {
    let headers = FeedHeaders::parse(message.headers.as_ref()).map_err(|reason| Malformed {
        event_id: None,
        stream: None,
        reason,
    })?;
    let event_id = Some(headers.event_id.0);
    let stream = Some((
        headers.stream_id.as_str().to_owned(),
        headers.stream_version.0,
    ));
    let payload = std::str::from_utf8(&message.payload)
        .map_err(|e| e.to_string())
        .and_then(|s| Payload::from_json(s).map_err(|e| e.to_string()))
        .map_err(|e| Malformed {
            event_id,
            stream: stream.clone(),
            reason: format!("the payload is not JSON: {e}"),
        })?;
    let recorded = RecordedEvent {
        event_id: headers.event_id,
        stream_id: headers.stream_id.clone(),
        stream_version: headers.stream_version,
        position: headers.position,
        recorded_at: headers.recorded_at,
        event_type: headers.event_type.clone(),
        schema_version: headers.schema_version,
        payload,
        metadata: annals::Metadata {
            correlation_id: headers.correlation_id.clone(),
            causation_id: headers.causation_id.clone(),
            ..annals::Metadata::default()
        },
    };
    let event = recorded.decode::<E>().map_err(|e| Malformed {
        event_id,
        stream,
        reason: format!("the event does not decode: {e}"),
    })?;
    Ok(Delivery {
        headers,
        event,
        sequence,
    })
}
