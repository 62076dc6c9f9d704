//! A stored event's payload: the JSON text as the store holds it, parsed only when someone asks.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, IgnoredAny};
use serde::ser::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// The payload of a [`RecordedEvent`](crate::RecordedEvent): valid JSON text, shared and immutable.
///
/// Stores hand the text over as they read it; nothing is parsed until the payload is decoded, so reading a
/// stream costs one parse per event, straight into the domain type ([`RecordedEvent::decode`]), and cloning an
/// event is cheap. Parse it yourself with [`Payload::parse`] or [`Payload::to_value`].
///
/// Equality is JSON equality (key order and whitespace do not matter), because stores may normalise the text:
/// PostgreSQL's `jsonb`, for one, reorders keys.
///
/// ```
/// use annals::Payload;
/// use serde_json::json;
///
/// let payload = Payload::from(json!({"amount": 5}));
/// assert_eq!(payload.as_str(), r#"{"amount":5}"#);
/// assert_eq!(payload.to_value().unwrap()["amount"], 5);
/// assert_eq!(payload, json!({"amount": 5}));
/// assert_eq!(Payload::from_json(r#"{ "amount" : 5 }"#).unwrap(), payload);
/// assert!(Payload::from_json("{oops").is_err());
/// ```
///
/// [`RecordedEvent::decode`]: crate::RecordedEvent::decode
#[derive(Clone)]
pub struct Payload(Arc<str>);

impl Payload {
    /// A payload from JSON text, checked to be one valid JSON value.
    ///
    /// # Errors
    /// The parser's error (with line and column) when `json` is not valid JSON.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<IgnoredAny>(json)?;
        Ok(Self(Arc::from(json)))
    }

    /// A payload from JSON text a store's database has already checked (PostgreSQL's `jsonb`, for one, only
    /// ever holds and returns valid JSON), without checking it again: the text is parsed once, when decoded.
    ///
    /// Text that is not valid JSON is not undefined behaviour: decoding it fails with
    /// [`Error::Decode`](crate::Error::Decode) naming the event, and it equals no other payload. Use
    /// [`Payload::from_json`] for text from anywhere else.
    pub fn from_stored_json(json: &str) -> Self {
        Self(Arc::from(json))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the payload into `T`.
    ///
    /// # Errors
    /// The serde error when the payload does not fit `T`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// Parses the payload into a JSON [`Value`].
    ///
    /// # Errors
    /// Only for JSON nested deeper than `serde_json` accepts (128 levels).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        self.parse()
    }
}

impl From<&Value> for Payload {
    fn from(value: &Value) -> Self {
        // `Value`'s `Display` writes compact JSON and cannot fail.
        Self(Arc::from(value.to_string()))
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self::from(&value)
    }
}

impl From<&RawValue> for Payload {
    fn from(raw: &RawValue) -> Self {
        Self(Arc::from(raw.get()))
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 || matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value().is_ok_and(|value| value == *other)
    }
}

impl PartialEq<Payload> for Value {
    fn eq(&self, other: &Payload) -> bool {
        other == self
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({})", self.0)
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equality_ignores_key_order_and_whitespace() {
        let a = Payload::from_json(r#"{"b": 1, "a": [true, null]}"#).unwrap();
        let b = Payload::from(json!({"a": [true, null], "b": 1}));
        assert_eq!(a, b);
        assert_ne!(a, Payload::from(json!({"a": [true], "b": 1})));
        assert_eq!(json!({"b": 1, "a": [true, null]}), a);
    }

    #[test]
    fn serializes_as_the_json_it_holds() {
        let payload = Payload::from(json!({"n": 1, "s": "x\"y"}));
        let text = serde_json::to_string(&json!({ "payload": payload })).unwrap();
        assert_eq!(text, r#"{"payload":{"n":1,"s":"x\"y"}}"#);
        let back: Payload = serde_json::from_str(r#"{"s":"x\"y","n":1}"#).unwrap();
        assert_eq!(back, payload);
    }

    #[test]
    fn rejects_text_that_is_not_one_json_value() {
        for bad in ["", "{", "[1,]", "1 2", "{\"a\":1}}"] {
            assert!(Payload::from_json(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
