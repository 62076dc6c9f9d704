//! The store's PostgreSQL schema (namespace): name validation and the statements that name it.

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::error::Error;

/// The schema a store uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "annals";

/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_IDENTIFIER_LEN: usize = 63;

/// Checks that `schema` is a plain identifier, so it can be quoted into statements without surprises.
pub(crate) fn validate(schema: &str) -> Result<(), Error> {
    let invalid = |reason| {
        Err(Error::InvalidSchema {
            schema: schema.to_owned(),
            reason,
        })
    };
    let Some(first) = schema.chars().next() else {
        return invalid("it is empty");
    };
    if schema.len() > MAX_IDENTIFIER_LEN {
        return invalid("it is longer than 63 bytes");
    }
    if !(first.is_ascii_alphabetic() || first == '_') {
        return invalid("it must start with an ASCII letter or an underscore");
    }
    if !schema
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return invalid("it may contain only ASCII letters, digits and underscores");
    }
    if schema.to_ascii_lowercase().starts_with("pg_") {
        return invalid("names starting with pg_ are reserved by PostgreSQL");
    }
    Ok(())
}

/// `schema` as a quoted identifier. Only called on validated names, which contain no quotes.
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// The NOTIFY channel of a schema: one per schema, so tenants sharing a database wake only their own waiters.
/// Cut to PostgreSQL's identifier length; two long names sharing a prefix share a channel, which costs only
/// spurious wake-ups.
pub(crate) fn channel(schema: &str) -> String {
    let mut channel = format!("annals.{schema}");
    channel.truncate(MAX_IDENTIFIER_LEN);
    channel
}

/// Every statement the store runs at runtime, with the schema's name spliced in once.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub(crate) append: SqlStr,
    pub(crate) append_one: SqlStr,
    pub(crate) append_next: SqlStr,
    pub(crate) load: SqlStr,
    pub(crate) fold: SqlStr,
    pub(crate) fold_lean: SqlStr,
    pub(crate) read_below: SqlStr,
    pub(crate) read_below_lean: SqlStr,
    pub(crate) safe_position: SqlStr,
    pub(crate) head: SqlStr,
    pub(crate) allocated: SqlStr,
    pub(crate) await_oldest_append: SqlStr,
    pub(crate) by_ids: SqlStr,
    pub(crate) version: SqlStr,
}

/// The columns of a stream read; `read::decode_row` reads them by index in this order.
///
/// Every read shape sends the schema version as `nullif(schema_version, 1)`: NULL for version 1, almost every
/// event's. On PostgreSQL 15 a NULL costs the server no send function call and no allocation, and a value costs
/// about a tenth of the server's time for a 10,000-event stream read (measured with `COPY … TO '/dev/null' (FORMAT
/// binary)`, see `docs/benchmarks.md`). `read::envelope` reads NULL as 1.
const EVENT_COLUMNS: &str = "position, stream_version, event_id, recorded_at, nullif(schema_version, 1), event_type, payload, metadata";

/// The columns of a command's fold of a stream (no `recorded_at`, no metadata); `read::FOLD_ROW` says where
/// each stands.
const FOLD_COLUMNS: &str =
    "position, stream_version, event_id, nullif(schema_version, 1), event_type, payload";

/// The columns of a lean fold (`CommandSession::fold_stream`, `EventStore::fold_all`): what decoding and folding
/// read, no event id either; `read::LEAN_ROW` says where each stands.
const LEAN_COLUMNS: &str =
    "position, stream_version, nullif(schema_version, 1), event_type, payload";

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let s = quoted(schema);
        let sql = |text: String| AssertSqlSafe(text).into_sql_str();
        Self {
            append: sql(format!(
                "SELECT o_outcome, o_stream_version, o_first_position, o_last_position \
                 FROM {s}.append_events($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            )),
            // The fast path of a single event in the store's own transaction (`append_one.rs`): the locks of
            // `append_events` in its order, carried by data flow rather than by where the planner puts a qual.
            // `l` takes the stream lock (the same two keys: `hashtext(<schema>)`, `hashtext(<stream>)`) and
            // reads the version; its volatile target list keeps it from being pulled up, and `OFFSET 0` keeps
            // the check from being pushed into it (where the planner would copy the version's subquery once
            // per reference). `m` filters on the check, then takes the gap marker, and only the row it yields
            // draws `nextval`. No row back: the check failed.
            append_one: sql(format!(
                "INSERT INTO {s}.events \
                     (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata) \
                 SELECT pg_catalog.nextval('{s}.events_position_seq'::regclass), $1::text, m.current + 1, \
                        $3::uuid, $4::text, $5::integer, $6::jsonb, $7::jsonb \
                 FROM (SELECT l.current, \
                              pg_catalog.pg_advisory_xact_lock_shared(({s}.schema_tag() << 48) | coalesce( \
                                  pg_catalog.pg_sequence_last_value('{s}.events_position_seq'::regclass), 0) \
                              ) AS marker \
                       FROM (SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('{schema}'), \
                                        pg_catalog.hashtext($1::text)) AS locked, \
                                    (SELECT coalesce(pg_catalog.max(e.stream_version), 0) FROM {s}.events e \
                                      WHERE e.stream_id = $1::text) AS current \
                             OFFSET 0) l \
                       WHERE $2::bigint = -1 OR ($2::bigint = -2 AND l.current > 0) \
                          OR $2::bigint = l.current) m \
                 RETURNING position, stream_version"
            )),
            // The fast path after a read (`append_next.rs`): the event goes in at the version the caller gives
            // ($2, the read's version + 1), only if the version before it is stored ($2 = 1 needs none): a read
            // the server does not back (a promoted standby lacking the last commits) leaves no hole, and the
            // statement returns no row. The stream lock is taken first (`l`, kept from being pulled up by its
            // volatile target list and OFFSET 0), so that `append_events`' version read, under the same lock,
            // stays final beside it; then the gap marker, first by data flow: `nextval`'s argument is the
            // `CASE` that takes it (the lock's `void` result is never NULL, so the argument is always the
            // sequence). The unique key `(stream_id, stream_version)` refuses a version taken since the read.
            append_next: sql(format!(
                "INSERT INTO {s}.events \
                     (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata) \
                 SELECT pg_catalog.nextval(CASE WHEN pg_catalog.pg_advisory_xact_lock_shared( \
                            ({s}.schema_tag() << 48) | coalesce( \
                                pg_catalog.pg_sequence_last_value('{s}.events_position_seq'::regclass), 0)) IS NULL \
                            THEN NULL ELSE '{s}.events_position_seq'::regclass END), \
                        $1::text, $2::bigint, $3::uuid, $4::text, $5::integer, $6::jsonb, $7::jsonb \
                 FROM (SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('{schema}'), \
                                  pg_catalog.hashtext($1::text)) AS locked \
                       OFFSET 0) l \
                 WHERE $2::bigint = 1 OR EXISTS (SELECT 1 FROM {s}.events p \
                                                  WHERE p.stream_id = $1::text AND p.stream_version = $2::bigint - 1) \
                 RETURNING position"
            )),
            load: sql(format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events \
                 WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3"
            )),
            fold: stream_fold(&s, FOLD_COLUMNS),
            fold_lean: stream_fold(&s, LEAN_COLUMNS),
            read_below: read_below(&s, EVENT_COLUMNS),
            read_below_lean: read_below(&s, LEAN_COLUMNS),
            safe_position: sql(format!(
                "SELECT {s}.safe_position(), \
                        coalesce(pg_sequence_last_value('{s}.events_position_seq'::regclass), 0), \
                        (SELECT system_identifier FROM pg_control_system()), pg_postmaster_start_time()"
            )),
            head: sql(format!("SELECT {s}.head_position()")),
            allocated: sql(format!(
                "SELECT coalesce(pg_sequence_last_value('{s}.events_position_seq'::regclass), 0)"
            )),
            await_oldest_append: sql(format!("SELECT {s}.await_oldest_append($1)")),
            by_ids: sql(format!(
                "SELECT {EVENT_COLUMNS}, stream_id FROM {s}.events WHERE event_id = ANY($1)"
            )),
            version: sql(format!(
                "SELECT coalesce(max(stream_version), 0) FROM {s}.events WHERE stream_id = $1"
            )),
        }
    }
}

/// A fold's read of a whole stream, in version order, reading `columns`.
fn stream_fold(s: &str, columns: &str) -> SqlStr {
    AssertSqlSafe(format!(
        "SELECT {columns} FROM {s}.events WHERE stream_id = $1 ORDER BY stream_version"
    ))
    .into_sql_str()
}

/// The guarded range statement of the global order, reading `columns` and then `stream_id`. The guard (an init
/// plan, evaluated once): still the server the bound was found on ($4, its start time), and the sequence has not
/// gone back below the bound. When it fails no row is returned and the reader asks for a fresh bound.
fn read_below(s: &str, columns: &str) -> SqlStr {
    AssertSqlSafe(format!(
        "SELECT {columns}, stream_id FROM {s}.events \
         WHERE position > $1 AND position <= $2 \
           AND (SELECT pg_postmaster_start_time() = $4 \
                   AND $2 <= coalesce(pg_sequence_last_value('{s}.events_position_seq'::regclass), 0)) \
         ORDER BY position LIMIT $3"
    ))
    .into_sql_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_validated() {
        for ok in [
            "annals",
            "tenant_42",
            "_private",
            "Mixed_Case",
            &"a".repeat(63),
        ] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("", "empty"),
            ("1tenant", "start with"),
            ("has space", "only ASCII"),
            ("quo\"te", "only ASCII"),
            ("ünï", "start with"),
            ("pg_catalog", "reserved"),
            (&"a".repeat(64), "63 bytes"),
        ] {
            match validate(bad) {
                Err(Error::InvalidSchema { schema, reason }) => {
                    assert_eq!(schema, bad);
                    assert!(reason.contains(needle), "{bad:?}: {reason}");
                }
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
    }
}
