//! The error type of the projections crate.

use annals::{EventId, Position, StreamId};

/// A boxed error returned by projection code (`?` converts any error into it).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while running, rebuilding, querying or operating projections.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No projection of this name is registered. Fix the name; `known` lists the registered ones.
    #[error("unknown projection {name:?}; known projections: {}", known.join(", "))]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// Every registered name.
        known: Vec<String>,
    },

    /// The projection has effects outside its read model (it was registered with
    /// [`ProjectionOptions::with_side_effects`](crate::ProjectionOptions::with_side_effects)), so replaying the
    /// log through it (`rebuild`, `reset`) would repeat them. Nothing was changed. Fix what needs fixing going
    /// forward instead (retry parked inputs, start a new version under a new name from the current head).
    #[error("projection {name:?} cannot be rebuilt or reset: {why}")]
    HasSideEffects {
        /// The projection.
        name: String,
        /// What a replay would repeat, as declared at registration.
        why: &'static str,
    },

    /// A projection name breaks the naming rule (1 to 40 characters of `a-z`, `0-9` and `_`, starting with a
    /// letter). Rename the projection: the name is also a checkpoint key and part of table names.
    #[error("invalid projection name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// Two registered projections share a name. Give each a unique name.
    #[error("two projections are registered under the name {name:?}")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },

    /// A SQL projection was registered on the in-memory backend. Use document projections there, or PostgreSQL.
    #[error("projection {name:?} writes SQL tables and needs the PostgreSQL backend")]
    SqlNeedsPostgres {
        /// The projection's name.
        name: String,
    },

    /// A projection could not apply an event because of a transient failure (the store or database
    /// unavailable: its error, or an error in its source chain, is [`annals::Error::Unavailable`], a transient
    /// [`Error`] or a transient database error) that outlasted its failure policy's retries. The event is neither
    /// parked nor skipped; the runner ends, and a [`Supervisor`](crate::Supervisor) starts it again at that event.
    #[error(
        "projection {projection:?} could not apply the event at position {position} for now, after {attempts} \
         attempt(s): {cause}"
    )]
    Interrupted {
        /// The projection's name.
        projection: String,
        /// Global position of the event.
        position: Position,
        /// How many times it was tried.
        attempts: u32,
        /// The last transient error, as text.
        cause: String,
    },

    /// A projection could not apply an event and its failure policy says stop. Fix the projection or the data
    /// and restart, or park the event (failure policy `park`). Events before it are applied and checkpointed;
    /// nothing after it is lost.
    #[error(
        "projection {projection:?} failed at position {position} (stream {stream:?}, event type {event_type:?}, \
         event id {event_id}) after {attempts} attempt(s): {cause}"
    )]
    ProjectionFailed {
        /// The projection's name.
        projection: String,
        /// Global position of the failing event.
        position: Position,
        /// Stream of the failing event.
        stream: StreamId,
        /// Type of the failing event.
        event_type: String,
        /// Id of the failing event.
        event_id: EventId,
        /// How many times it was tried.
        attempts: u32,
        /// Why it failed (the projection's error, as text).
        cause: String,
    },

    /// Another process (or runner) owns this projection (or its rebuild) right now. Wait for it, or stop it;
    /// a dead owner's lease expires after the lease time-to-live.
    #[error("projection {projection:?} is busy: its {what} is owned by another runner")]
    Busy {
        /// The projection's name.
        projection: String,
        /// `"live read model"` or `"rebuild"`.
        what: &'static str,
    },

    /// The stored read model was built by a newer version of the projection than this process runs. Deploy the
    /// newer code here too (or reset the projection).
    #[error(
        "projection {projection:?}: the read model is at version {stored}, this process runs version {code}"
    )]
    VersionAhead {
        /// The projection's name.
        projection: String,
        /// Version of the stored read model.
        stored: u32,
        /// Version of the code in this process.
        code: u32,
    },

    /// Waiting for a read model to reach a position timed out (HTTP 504 for read-your-writes). Retry later.
    #[error(
        "projection {projection:?} has processed up to position {reached}, not yet {position}, after waiting {waited_ms} ms"
    )]
    Lagging {
        /// The projection's name.
        projection: String,
        /// The position waited for.
        position: Position,
        /// The position it had reached.
        reached: Position,
        /// How long it waited, in milliseconds.
        waited_ms: u64,
    },

    /// A document could not be serialized or deserialized. The stored JSON does not fit the type asked for
    /// (or the value cannot be JSON): fix the type or rebuild the projection.
    #[error("document {collection:?}/{key:?}: {source}")]
    Document {
        /// The document's collection.
        collection: String,
        /// The document's key.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A projection's own set-up code failed: [`SqlProjection::setup`](crate::SqlProjection::setup) or the
    /// [`Projection::reset`](crate::Projection::reset) hook. Fix the projection; nothing was applied.
    #[error("projection {projection:?}: {hook} failed: {cause}")]
    Hook {
        /// The projection's name.
        projection: String,
        /// `"setup"` or `"reset"`.
        hook: &'static str,
        /// The projection's error, as text.
        cause: String,
    },

    /// Invalid configuration (schema name, batch size, ...). Fix the configuration.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// The event store failed. Usually retryable when it is [`annals::Error::Unavailable`].
    #[error(transparent)]
    Store(#[from] annals::Error),

    /// The read-model database failed (features `postgres`, `sqlite`). [`is_transient`](Error::is_transient) tells
    /// the kinds apart: SQLite's by result code (busy, locked, I/O, full disk, memory are transient; constraints, a
    /// corrupt or read-only file permanent), PostgreSQL's by SQLSTATE: connection loss, serialization failures, deadlocks, resource exhaustion and shutdowns are
    /// retried by the runner (elsewhere retry later); data exceptions, integrity violations, program limits and
    /// undefined objects are permanent (inside a batch they go to the projection's failure policy; elsewhere fix
    /// the cause).
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[error("read-model database: {operation} failed: {source}")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// A value stored in the read-model database's bookkeeping cannot be read or is out of range (a negative
    /// checkpoint or generation, a missing column). Nothing was applied: fix the named row (or reset the
    /// projection); the runner never reads a corrupt checkpoint as 0.
    #[error("read-model database: table {table}, column {column}: {reason}")]
    StoredValue {
        /// The table, schema-qualified.
        table: String,
        /// The column.
        column: &'static str,
        /// What is wrong with the value.
        reason: String,
    },

    /// A document write was refused because the read-model storage cannot hold it (a key longer than
    /// [`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES), a NUL character in a key or in the document). Both backends refuse
    /// the same writes. The event goes to the projection's failure policy: fix the projection or park the event.
    #[error("document {collection:?}/{key:?} refused: {reason}")]
    InvalidDocument {
        /// The document's collection.
        collection: String,
        /// The document's key (cut to 100 characters).
        key: String,
        /// Why it cannot be stored.
        reason: String,
    },

    /// A blue/green swap was refused because objects outside the read model depend on the live generation
    /// (views, foreign keys, ...), which switching over would drop. Drop them, swap (rebuild again: it resumes),
    /// then recreate them against the new generation. `dependents` names each object.
    #[error(
        "projection {projection:?}: cannot swap in the rebuilt read model, objects outside it depend on the live one: {}",
        dependents.join(", ")
    )]
    SwapRefused {
        /// The projection's name.
        projection: String,
        /// The dependent objects, as PostgreSQL describes them (`rule _RETURN on view public.v`, ...).
        dependents: Vec<String>,
    },

    /// This runner lost ownership of the projection (its lease expired and another runner took over, or a
    /// rebuild swapped the read model). The runner re-acquires ownership by itself; elsewhere retry.
    #[error("lost ownership of projection {projection:?}")]
    LostOwnership {
        /// The projection's name.
        projection: String,
    },
}

impl Error {
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { operation, source }
    }

    /// Whether retrying the same operation later may succeed (an unavailable store, a transient database
    /// failure (see below), a lost lease, a busy projection).
    ///
    /// Database errors are transient for connection and pool failures and the SQLSTATE classes `08`
    /// (connection exception), `40` (serialization failure, deadlock), `53` (insufficient resources), `57`
    /// (operator intervention: admin shutdown, query cancelled), `58` (system error) and `55P03` (lock not
    /// available); permanent for every other SQLSTATE (`22` data exception such as a NUL byte, `23` integrity
    /// violation, `54` program limit such as an index row too large, `42` undefined object or syntax, ...)
    /// and for driver errors about the data itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            #[cfg(any(feature = "postgres", feature = "sqlite"))]
            Self::Database { source, .. } => is_transient_database(source),
            Self::LostOwnership { .. } | Self::Busy { .. } | Self::Interrupted { .. } => true,
            _ => false,
        }
    }
}

/// Whether an error a projection returned is transient: the first error of its source chain that is an
/// [`annals::Error`], an [`Error`] or (feature `postgres`) a [`sqlx::Error`] decides (retryable, transient, see
/// [`is_transient_sqlx`]); an error with none of them in its chain is permanent.
pub fn is_transient_cause(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(store) = e.downcast_ref::<annals::Error>() {
            return store.is_retryable();
        }
        if let Some(own) = e.downcast_ref::<Error>() {
            return own.is_transient();
        }
        #[cfg(any(feature = "postgres", feature = "sqlite"))]
        if let Some(db) = e.downcast_ref::<sqlx::Error>() {
            return is_transient_database(db);
        }
        next = e.source();
    }
    false
}

/// Whether a read-model database error may go away when the same work is tried again: SQLite's by its result
/// code (feature `sqlite`), PostgreSQL's by SQLSTATE ([`is_transient_sqlx`]).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn is_transient_database(e: &sqlx::Error) -> bool {
    #[cfg(feature = "sqlite")]
    if let sqlx::Error::Database(d) = e
        && d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
    {
        return crate::backend::sqlite::is_transient(e);
    }
    #[cfg(feature = "postgres")]
    return is_transient_sqlx(e);
    #[cfg(not(feature = "postgres"))]
    return crate::backend::sqlite::is_transient(e);
}

/// Whether a database error may go away when the same work is tried again.
///
/// Transient: connection and pool failures, and the SQLSTATE classes `08` (connection exception), `40`
/// (serialization failure `40001`, deadlock `40P01`), `53` (insufficient resources), `57` (operator
/// intervention: admin shutdown `57P01`, query cancelled), `58` (system error), and `55P03` (lock not
/// available). Permanent: every other SQLSTATE, among them `22` (data exception: a NUL byte, a value out of
/// range), `23` (integrity violation), `54` (program limit exceeded: an index row too large) and `42`
/// (undefined table, column or function; syntax), and driver errors about the data itself (a column that
/// cannot be decoded).
#[cfg(feature = "postgres")]
pub fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().is_some_and(|code| is_transient_sqlstate(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Whether a SQLSTATE names a transient condition (see [`is_transient_sqlx`]).
#[cfg(feature = "postgres")]
pub fn is_transient_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58")) || code == "55P03"
}

/// Checks a projection name: 1 to 40 characters of `a-z`, `0-9`, `_`, starting with a letter.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 40 {
        Some("it is longer than 40 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("it must start with a lowercase ASCII letter")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Some("only lowercase ASCII letters, digits and '_' are allowed")
    } else if name.contains("__") {
        Some("it must not contain \"__\" (reserved for generations)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "postgres")]
    #[test]
    fn sqlstates_are_classified_by_class() {
        for transient in [
            "08006", "08P01", "40001", "40P01", "53100", "53300", "57P01", "57014", "55P03",
        ] {
            assert!(is_transient_sqlstate(transient), "{transient}");
        }
        for permanent in [
            "22P05", "22021", "23505", "54000", "42P01", "42703", "XX000", "P0001",
        ] {
            assert!(!is_transient_sqlstate(permanent), "{permanent}");
        }
    }

    #[test]
    fn projection_names_follow_the_rule() {
        for ok in ["balances", "history_v2", "a"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("Balances", "lowercase"),
            ("2fast", "start"),
            ("has-dash", "only lowercase"),
            ("a__b", "__"),
            (&"x".repeat(41), "40"),
        ] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(
                err.contains(why) && err.contains(&format!("{bad:?}")),
                "{bad}: {err}"
            );
        }
    }
}
