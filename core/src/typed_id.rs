//! [`Id`]: a validated, typed id of the streams of one category (`AccountId` ↔ stream `account-<id>`), so a service
//! does not write the same id type, its rules, its serde and its stream mapping for every aggregate.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::category::{Category, StreamKey};
use crate::command_id::CommandId;
use crate::ids::StreamId;

/// What one kind of [`Id`] is: its streams' category, how messages name it, and the prefix of the ids it
/// generates. Implement it on the aggregate (or any marker type) and name the id `Id<ThatType>`.
pub trait IdKind: 'static {
    /// The category of these ids' streams (`account` for `account-<id>`).
    const CATEGORY: Category;
    /// How error messages name such an id (`"account id"`).
    const NAME: &'static str;
    /// What [`Id::generate`] and [`Id::derived`] put before their UUID (`"acc-"`).
    const GENERATED_PREFIX: &'static str;
    /// The longest id, in characters.
    const MAX_LEN: usize = 64;
}

/// A validated id of kind `K`: 1 to [`IdKind::MAX_LEN`] characters among ASCII letters, digits, `-`, `_` and `.`,
/// whose stream is `<K::CATEGORY>-<id>`. It serializes as its text and deserializes through the same rules.
///
/// ```
/// use annals::{Category, Id, IdKind, StreamId, StreamKey};
///
/// struct Account;
/// impl IdKind for Account {
///     const CATEGORY: Category = Category::new("account");
///     const NAME: &'static str = "account id";
///     const GENERATED_PREFIX: &'static str = "acc-";
/// }
/// type AccountId = Id<Account>;
///
/// let id = AccountId::new("42").unwrap();
/// assert_eq!(id.stream().as_str(), "account-42");
/// assert_eq!(AccountId::from_stream(&StreamId::new("account-42").unwrap()), Some(id));
/// assert!(AccountId::generate().as_str().starts_with("acc-"));
/// let refused = AccountId::new("a/b").unwrap_err();
/// assert_eq!(refused.to_string(), r#"account id "a/b" contains '/'; allowed are letters, digits, '-', '_' and '.'"#);
/// ```
pub struct Id<K> {
    id: String,
    stream: StreamId,
    kind: PhantomData<fn() -> K>,
}

/// An id that breaks a rule of [`Id::new`]; the message names the id, its kind and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidId {
    message: String,
}

impl<K: IdKind> Id<K> {
    /// Validates `id`.
    ///
    /// # Errors
    /// [`InvalidId`] naming the rule `id` breaks.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
        let id = id.into();
        let refuse = |message: String| Err(InvalidId { message });
        let (name, max) = (K::NAME, K::MAX_LEN);
        let length = id.chars().count();
        if length == 0 || length > max {
            return refuse(format!(
                "{name} {id:?} must be 1 to {max} characters long, it has {length}"
            ));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return refuse(format!(
                "{name} {id:?} contains {bad:?}; allowed are letters, digits, '-', '_' and '.'"
            ));
        }
        match K::CATEGORY.stream(&id) {
            Ok(stream) => Ok(Self {
                id,
                stream,
                kind: PhantomData,
            }),
            Err(e) => refuse(format!("{name} {id:?}: {e}")),
        }
    }

    /// A fresh id: [`IdKind::GENERATED_PREFIX`] followed by a time-ordered UUID.
    ///
    /// # Panics
    /// Only when the kind's prefix and [`MAX_LEN`](IdKind::MAX_LEN) cannot hold 32 more characters, a
    /// programming error in the `IdKind` that the first call shows.
    pub fn generate() -> Self {
        Self::with_uuid(uuid::Uuid::now_v7())
    }

    /// The id a command creates when the caller names none, derived from its [`CommandId`] so that a retry of the
    /// command creates the same id (the prefix followed by the UUID of the command's first event).
    ///
    /// # Panics
    /// As [`generate`](Self::generate).
    pub fn derived(command_id: &CommandId) -> Self {
        Self::with_uuid(*command_id.event_id(0).as_uuid())
    }

    fn with_uuid(uuid: uuid::Uuid) -> Self {
        let id = format!("{}{}", K::GENERATED_PREFIX, uuid.simple());
        Self::new(id)
            .unwrap_or_else(|e| panic!("IdKind {}: a generated id is invalid: {e}", K::NAME))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The id's stream, `<category>-<id>`.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }
}

impl<K: IdKind> StreamKey for Id<K> {
    const CATEGORY: Category = K::CATEGORY;

    fn key(&self) -> &str {
        &self.id
    }

    fn from_key(key: &str) -> Option<Self> {
        Self::new(key).ok()
    }
}

impl<K> Clone for Id<K> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            stream: self.stream.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<K> Eq for Id<K> {}

impl<K> Hash for Id<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl<K> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl<K> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.id, f)
    }
}

impl<K> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl<K> AsRef<str> for Id<K> {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

impl<K> Serialize for Id<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.id)
    }
}

impl<'de, K: IdKind> Deserialize<'de> for Id<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        Self::new(id).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Order;
    impl IdKind for Order {
        const CATEGORY: Category = Category::new("order");
        const NAME: &'static str = "order id";
        const GENERATED_PREFIX: &'static str = "ord-";
        const MAX_LEN: usize = 40;
    }
    type OrderId = Id<Order>;

    #[test]
    fn the_rules_are_named_with_the_kind() {
        let refused = |id: &str| OrderId::new(id).unwrap_err().to_string();
        assert_eq!(
            refused(""),
            r#"order id "" must be 1 to 40 characters long, it has 0"#
        );
        assert!(refused(&"x".repeat(41)).contains("must be 1 to 40 characters long, it has 41"));
        assert!(refused("a b").contains("contains ' '"));
        assert!(refused("ü").contains("contains 'ü'"));
        assert_eq!(
            OrderId::new("a-b_c.9").unwrap().stream().as_str(),
            "order-a-b_c.9"
        );
    }

    #[test]
    fn generated_and_derived_ids_are_valid_and_derived_ones_repeat() {
        let id = OrderId::generate();
        assert!(id.as_str().starts_with("ord-") && id.as_str().len() == 36);
        let command = CommandId::new("key-1").unwrap();
        assert_eq!(OrderId::derived(&command), OrderId::derived(&command));
        assert_ne!(
            OrderId::derived(&command),
            OrderId::derived(&CommandId::new("key-2").unwrap())
        );
    }

    #[test]
    fn serde_round_trips_through_the_rules() {
        let id = OrderId::new("7").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""7""#);
        assert_eq!(serde_json::from_str::<OrderId>(r#""7""#).unwrap(), id);
        let refused = serde_json::from_str::<OrderId>(r#""a/b""#).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains(r#"order id "a/b" contains '/'"#)
        );
        assert_eq!(OrderId::from_stream(id.stream()), Some(id));
        assert_eq!(
            OrderId::from_stream(&StreamId::new("cart-7").unwrap()),
            None
        );
    }
}
