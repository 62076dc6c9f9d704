//! [`Documents`]: the backend-neutral read model a [`Projection`](crate::Projection) writes through.

use std::collections::HashMap;

use annals::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// Reads a document's committed JSON inside the batch's transaction (implemented by each backend).
#[async_trait]
pub(crate) trait DocSource: Send {
    async fn load(&mut self, collection: &str, key: &str) -> Result<Option<Value>>;
}

/// The longest document key (and collection name) both backends store, in bytes: PostgreSQL indexes
/// `(collection, key)` in a B-tree, whose entries must fit in a third of a page.
pub const MAX_KEY_BYTES: usize = 1024;

/// The error for a document write the backends cannot store.
pub(crate) fn refused(collection: &str, key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidDocument {
        collection: collection.chars().take(100).collect(),
        key: key.chars().take(100).collect(),
        reason: reason.into(),
    }
}

/// Checks a collection and key against what every backend can store.
pub(crate) fn check_key(collection: &str, key: &str) -> Result<()> {
    for (what, value) in [("collection", collection), ("key", key)] {
        if value.len() > MAX_KEY_BYTES {
            return Err(refused(
                collection,
                key,
                format!(
                    "the {what} is {} bytes long, more than the {MAX_KEY_BYTES} bytes a read model indexes",
                    value.len()
                ),
            ));
        }
        if value.contains('\0') {
            return Err(refused(
                collection,
                key,
                format!("the {what} holds a NUL character, which PostgreSQL text cannot store"),
            ));
        }
    }
    Ok(())
}

/// One entry of a batch's write-back buffer.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The current value in this batch (`None`: absent or deleted).
    pub(crate) value: Option<Value>,
    /// Whether this batch changed it.
    pub(crate) dirty: bool,
}

/// The documents read and written by one batch, by collection, then key (so lookups borrow the caller's strings).
#[derive(Debug, Default)]
pub(crate) struct DocBuffer {
    collections: HashMap<String, HashMap<String, Entry>>,
    /// The first write the backends cannot store (the event that made it fails).
    refused: Option<Error>,
}

impl DocBuffer {
    /// The first refused write since the last call, if any.
    pub(crate) fn take_refused(&mut self) -> Option<Error> {
        self.refused.take()
    }

    fn get(&self, collection: &str, key: &str) -> Option<&Entry> {
        self.collections.get(collection)?.get(key)
    }

    fn set(&mut self, collection: &str, key: &str, entry: Entry) {
        let entries = match self.collections.get_mut(collection) {
            Some(entries) => entries,
            None => self.collections.entry(collection.to_owned()).or_default(),
        };
        match entries.get_mut(key) {
            Some(slot) => *slot = entry,
            None => {
                entries.insert(key.to_owned(), entry);
            }
        }
    }

    /// The number of documents read or written.
    pub(crate) fn len(&self) -> usize {
        self.collections.values().map(HashMap::len).sum()
    }

    /// The changed documents: `Some` to upsert, `None` to delete.
    pub(crate) fn into_writes(self) -> Vec<(String, String, Option<Value>)> {
        let mut writes = Vec::new();
        for (collection, entries) in self.collections {
            for (key, entry) in entries {
                if entry.dirty {
                    writes.push((collection.clone(), key, entry.value));
                }
            }
        }
        writes
    }
}

/// The documents of one projection, inside one batch: `get`, `put` and `delete` JSON documents addressed by
/// `(collection, key)`.
///
/// Writes are buffered and committed together with the projection's checkpoint when the batch ends; reads see the
/// batch's own writes. Keys sort bytewise (so zero-pad numbers in keys you want listed in numeric order).
pub struct Documents<'a> {
    pub(crate) source: &'a mut dyn DocSource,
    pub(crate) buffer: &'a mut DocBuffer,
}

impl std::fmt::Debug for Documents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl Documents<'_> {
    /// The document at `(collection, key)`, or `None`.
    ///
    /// # Errors
    /// [`Error::Document`] when the stored JSON does not fit `T`; [`Error::Database`] when the read fails.
    pub async fn get<T: DeserializeOwned>(
        &mut self,
        collection: &str,
        key: impl AsRef<str>,
    ) -> Result<Option<T>> {
        let key = key.as_ref();
        let value = match self.buffer.get(collection, key) {
            Some(entry) => entry.value.as_ref(),
            None => {
                let value = self.source.load(collection, key).await?;
                self.buffer.set(
                    collection,
                    key,
                    Entry {
                        value,
                        dirty: false,
                    },
                );
                self.buffer
                    .get(collection, key)
                    .and_then(|entry| entry.value.as_ref())
            }
        };
        match value {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|source| Error::Document {
                    collection: collection.to_owned(),
                    key: key.to_owned(),
                    source,
                }),
        }
    }

    /// The raw JSON of the document at `(collection, key)`, or `None`.
    ///
    /// # Errors
    /// [`Error::Database`] when the read fails.
    pub async fn get_json(
        &mut self,
        collection: &str,
        key: impl AsRef<str>,
    ) -> Result<Option<Value>> {
        let key = key.as_ref();
        if let Some(entry) = self.buffer.get(collection, key) {
            return Ok(entry.value.clone());
        }
        let value = self.source.load(collection, key).await?;
        self.buffer.set(
            collection,
            key,
            Entry {
                value: value.clone(),
                dirty: false,
            },
        );
        Ok(value)
    }

    /// Stores `value` at `(collection, key)`, replacing any document there.
    ///
    /// # Errors
    /// [`Error::Document`] when `value` cannot be serialized to JSON; [`Error::InvalidDocument`] when the key or
    /// collection is longer than [`MAX_KEY_BYTES`] or holds a NUL character.
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        collection: &str,
        key: impl AsRef<str>,
        value: &T,
    ) -> Result<()> {
        let key = key.as_ref();
        check_key(collection, key)?;
        let value = serde_json::to_value(value).map_err(|source| Error::Document {
            collection: collection.to_owned(),
            key: key.to_owned(),
            source,
        })?;
        self.put_json(collection, key, value);
        Ok(())
    }

    /// Stores raw JSON at `(collection, key)`. A key the backends cannot store (see [`put`](Self::put)) fails the
    /// event being applied, with [`Error::InvalidDocument`].
    pub fn put_json(&mut self, collection: &str, key: impl AsRef<str>, value: Value) {
        if !self.checked(collection, key.as_ref()) {
            return;
        }
        self.buffer.set(
            collection,
            key.as_ref(),
            Entry {
                value: Some(value),
                dirty: true,
            },
        );
    }

    /// Deletes the document at `(collection, key)` (nothing happens when there is none).
    pub fn delete(&mut self, collection: &str, key: impl AsRef<str>) {
        if !self.checked(collection, key.as_ref()) {
            return;
        }
        self.buffer.set(
            collection,
            key.as_ref(),
            Entry {
                value: None,
                dirty: true,
            },
        );
    }

    /// Whether the key can be stored; records the refusal (which fails the event) when not.
    fn checked(&mut self, collection: &str, key: &str) -> bool {
        match check_key(collection, key) {
            Ok(()) => true,
            Err(e) => {
                self.buffer.refused.get_or_insert(e);
                false
            }
        }
    }
}
