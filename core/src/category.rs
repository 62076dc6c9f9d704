//! Stream categories and typed ids: `AccountId` ↔ stream `account-<id>` without string surgery.

use crate::ids::{InvalidStreamId, InvalidStreamIdReason, StreamId};

/// A family of streams named `<category>-<key>`, one per aggregate instance (for example `account-42`).
///
/// ```
/// use annals::{Category, StreamId};
///
/// const ACCOUNTS: Category = Category::new("account");
/// let stream = ACCOUNTS.stream("42").unwrap();
/// assert_eq!(stream.as_str(), "account-42");
/// assert_eq!(ACCOUNTS.key_of(&stream), Some("42"));
/// assert_eq!(ACCOUNTS.key_of(&StreamId::new("order-42").unwrap()), None);
/// assert_eq!(ACCOUNTS.key_of(&StreamId::new("account-").unwrap()), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Category(&'static str);

impl Category {
    /// The category `name` (its streams are `<name>-<key>`). Use a name without `-`, so that a stream's category
    /// is unambiguous.
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    /// The category's name.
    pub const fn name(&self) -> &'static str {
        self.0
    }

    /// The stream of `key` in this category: `<name>-<key>`.
    ///
    /// # Errors
    /// [`InvalidStreamId`] when the joined id breaks a rule of [`StreamId::new`] (too long, a control character),
    /// or the key is empty.
    pub fn stream(&self, key: &str) -> Result<StreamId, InvalidStreamId> {
        if key.is_empty() {
            // `<name>-` alone names no instance.
            return Err(InvalidStreamId {
                id: format!("{}-", self.0),
                reason: InvalidStreamIdReason::Empty,
            });
        }
        StreamId::new(format!("{}-{key}", self.0))
    }

    /// The key of `stream` when it belongs to this category (`Some("42")` for `account-42`), `None` otherwise.
    pub fn key_of<'a>(&self, stream: &'a StreamId) -> Option<&'a str> {
        stream
            .as_str()
            .strip_prefix(self.0)?
            .strip_prefix('-')
            .filter(|key| !key.is_empty())
    }

    /// Whether `stream` belongs to this category.
    pub fn contains(&self, stream: &StreamId) -> bool {
        self.key_of(stream).is_some()
    }
}

/// A typed id of the streams of one [`Category`]: implement it for `AccountId` and ask any stream "which account
/// is this?" with [`from_stream`](StreamKey::from_stream).
///
/// ```
/// use annals::{Category, StreamId, StreamKey};
///
/// #[derive(Debug, PartialEq)]
/// struct AccountId(String);
///
/// impl StreamKey for AccountId {
///     const CATEGORY: Category = Category::new("account");
///     fn key(&self) -> &str { &self.0 }
///     fn from_key(key: &str) -> Option<Self> { Some(Self(key.to_owned())) }
/// }
///
/// let id = AccountId("42".into());
/// let stream = id.stream_id().unwrap();
/// assert_eq!(stream.as_str(), "account-42");
/// assert_eq!(AccountId::from_stream(&stream), Some(id));
/// assert_eq!(AccountId::from_stream(&StreamId::new("order-1").unwrap()), None);
/// ```
pub trait StreamKey: Sized {
    /// The category of these ids' streams.
    const CATEGORY: Category;

    /// The id as the key part of its stream's name.
    fn key(&self) -> &str;

    /// The id a stream key stands for, `None` when `key` is not a valid id.
    fn from_key(key: &str) -> Option<Self>;

    /// The id's stream: `<category>-<key>`.
    ///
    /// # Errors
    /// [`InvalidStreamId`] when the stream's name breaks a rule of [`StreamId::new`].
    fn stream_id(&self) -> Result<StreamId, InvalidStreamId> {
        Self::CATEGORY.stream(self.key())
    }

    /// The id whose stream is `stream`, `None` for a stream of another category or an invalid key.
    fn from_stream(stream: &StreamId) -> Option<Self> {
        Self::CATEGORY.key_of(stream).and_then(Self::from_key)
    }

    /// The id whose stream is `stream`, as [`from_stream`](Self::from_stream), with an error naming the stream and
    /// the category it was expected in.
    ///
    /// # Errors
    /// [`ForeignStream`] for a stream of another category or whose key is not a valid id.
    fn of_stream(stream: &StreamId) -> Result<Self, ForeignStream> {
        Self::from_stream(stream).ok_or_else(|| ForeignStream {
            stream: stream.clone(),
            category: Self::CATEGORY,
        })
    }
}

/// A stream that does not hold an id of the category asked for: another category, or a key that is not a valid
/// id ([`StreamKey::of_stream`], [`Recorded::stream_key`](crate::Recorded::stream_key)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream {stream} does not hold a valid id of the category {:?}", category.name())]
pub struct ForeignStream {
    /// The stream.
    pub stream: StreamId,
    /// The category it was expected in.
    pub category: Category,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_whatever_follows_the_category_and_its_dash() {
        let accounts = Category::new("account");
        let stream = |s: &str| StreamId::new(s).unwrap();
        assert_eq!(accounts.key_of(&stream("account-a-b")), Some("a-b"));
        assert_eq!(
            accounts.key_of(&stream("accounts-1")),
            None,
            "another category"
        );
        assert_eq!(accounts.key_of(&stream("account")), None);
        assert!(accounts.stream("").is_err(), "an empty key names no stream");
        assert!(accounts.stream("x\ny").is_err());
        assert!(accounts.contains(&accounts.stream("ü").unwrap()));
    }

    #[derive(Debug, PartialEq)]
    struct AccountId(String);

    impl StreamKey for AccountId {
        const CATEGORY: Category = Category::new("account");
        fn key(&self) -> &str {
            &self.0
        }
        fn from_key(key: &str) -> Option<Self> {
            key.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| Self(key.to_owned()))
        }
    }

    #[test]
    fn a_stream_of_another_category_or_with_an_invalid_key_is_named_in_the_error() {
        let stream = |s: &str| StreamId::new(s).unwrap();
        assert_eq!(
            AccountId::of_stream(&stream("account-42")),
            Ok(AccountId("42".into()))
        );
        for foreign in ["order-42", "account-4x2"] {
            let error = AccountId::of_stream(&stream(foreign)).unwrap_err();
            assert_eq!(error.stream, stream(foreign));
            assert_eq!(
                error.to_string(),
                format!("stream {foreign} does not hold a valid id of the category \"account\"")
            );
        }
    }
}
