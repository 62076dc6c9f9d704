//! Upcasting: every event brought up to date by the registered event types before projections see it.

use std::borrow::Cow;

use annals::{Event, Payload, RecordedEvent};

use super::Engine;
use crate::error::BoxError;

/// Brings an event written under an older name or schema version up to date (see
/// [`Projections::upcasting`](crate::Projections::upcasting)): `None` when it is current.
pub(crate) type Upcaster =
    fn(&RecordedEvent) -> std::result::Result<Option<RecordedEvent>, BoxError>;

/// The [`Upcaster`] of event type `E`: the event as `E::upcast` rewrites it (name and payload), with the
/// rewritten event's current schema version.
pub(crate) fn upcaster<E: Event>() -> Upcaster {
    |event| {
        let Some((name, payload)) =
            E::upcast(&event.event_type, event.schema_version, &event.payload)
                .map_err(|reason| event.decode_error(format!("upcasting failed: {reason}")))?
        else {
            return Ok(None);
        };
        let payload = Payload::from(payload);
        let decoded = E::decode(&name, &payload).map_err(|e| event.decode_error(e))?;
        let mut current = event.clone();
        current.event_type = name;
        current.schema_version = decoded.schema_version();
        current.payload = payload;
        Ok(Some(current))
    }
}

impl Engine {
    /// The event as projections see it: brought up to date by the registered upcasters.
    pub(super) fn current<'e>(
        &self,
        event: &'e RecordedEvent,
    ) -> std::result::Result<Cow<'e, RecordedEvent>, BoxError> {
        for upcast in &self.upcasters {
            if let Some(current) = upcast(event)? {
                return Ok(Cow::Owned(current));
            }
        }
        Ok(Cow::Borrowed(event))
    }
}
