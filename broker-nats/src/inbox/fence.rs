//! The per-stream order fence: `<schema>.inbox_streams` keeps, per consumer and Annals stream, the last version
//! applied (and since when a later one waits for a gap). A batch locks its streams' rows, applies what comes
//! next in each stream and holds back what would overtake an earlier event not applied yet (one held by an
//! instance that died, or by another instance's open transaction). So each stream's events are applied in
//! order whatever the broker redelivers and however many instances share the durable consumer (ADR 0011).

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgConnection};

use crate::error::Error;

/// A stream's row in the fence, as the batch's transaction locked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Mark {
    /// The last version applied (0: none yet).
    pub(super) version: u64,
    /// A later event has waited for a gap longer than the order wait: the next one is applied anyway.
    pub(super) gap_expired: bool,
}

/// What the fence decides for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Next in its stream (or older than what was applied: a duplicate or a re-publish, which the inbox row
    /// decides): recorded and, unless a duplicate, handed to the handler.
    Apply,
    /// An earlier event of its stream is not applied yet: handed back to the broker, not recorded.
    Hold,
}

/// A stream's new row after the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Update {
    pub(super) stream: String,
    pub(super) version: u64,
    /// Something of the stream was held back in this batch.
    pub(super) held: bool,
    /// The version moved in this batch.
    pub(super) advanced: bool,
}

/// The fence's decisions for a batch of `(stream, version)` deliveries, in delivery order.
pub(super) fn plan(
    deliveries: &[(&str, u64)],
    marks: &HashMap<String, Mark>,
) -> (Vec<Verdict>, Vec<Update>) {
    let mut state: HashMap<&str, (Mark, Update)> = HashMap::new();
    let verdicts = deliveries
        .iter()
        .map(|&(stream, version)| {
            let (mark, update) = state.entry(stream).or_insert_with(|| {
                let mark = marks.get(stream).copied().unwrap_or_default();
                let update = Update {
                    stream: stream.to_owned(),
                    version: mark.version,
                    held: false,
                    advanced: false,
                };
                (mark, update)
            });
            if version <= mark.version {
                Verdict::Apply
            } else if version == mark.version + 1 || mark.gap_expired {
                *mark = Mark {
                    version,
                    gap_expired: false,
                };
                update.version = version;
                update.advanced = true;
                Verdict::Apply
            } else {
                update.held = true;
                Verdict::Hold
            }
        })
        .collect();
    let mut updates: Vec<Update> = state
        .into_values()
        .map(|(_, u)| u)
        .filter(|u| u.held || u.advanced)
        .collect();
    updates.sort_by(|a, b| a.stream.cmp(&b.stream));
    (verdicts, updates)
}

/// The fence table's definition (created by the inbox's migration).
pub(super) fn create_sql(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}.inbox_streams (
             consumer text NOT NULL,
             stream_id text NOT NULL,
             version bigint NOT NULL,
             held_since timestamptz,
             PRIMARY KEY (consumer, stream_id)
         );"
    )
}

/// Seeds a new fence from the inbox rows a consumer already has (an inbox made before the fence existed).
pub(super) fn seed_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.inbox_streams (consumer, stream_id, version)
         SELECT consumer, stream_id, max(stream_version) FROM {schema}.inbox GROUP BY consumer, stream_id
         ON CONFLICT DO NOTHING"
    )
}

/// Locks the rows of `streams` (sorted, distinct: concurrent batches lock in one order and cannot deadlock),
/// creating missing ones at version 0; returns the marks and the transaction's id.
pub(super) async fn lock(
    conn: &mut PgConnection,
    schema: &str,
    consumer: &str,
    streams: &[&str],
    gap_wait: Duration,
) -> Result<(HashMap<String, Mark>, i64), Error> {
    let rows: Vec<(String, i64, bool, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO {schema}.inbox_streams AS f (consumer, stream_id, version)
         SELECT $1, s, 0 FROM unnest($2::text[]) AS s ORDER BY s
         ON CONFLICT (consumer, stream_id) DO UPDATE SET version = f.version
         RETURNING f.stream_id, f.version,
                   coalesce(f.held_since < now() - make_interval(secs => $3), false), txid_current()"
    )))
    .bind(consumer)
    .bind(streams)
    .bind(gap_wait.as_secs_f64())
    .fetch_all(conn)
    .await
    .map_err(|source| Error::Database {
        operation: "lock the order fence",
        source,
    })?;
    let xid = rows.first().map_or(0, |r| r.3);
    let marks = rows
        .into_iter()
        .map(|(stream, version, gap_expired, _)| {
            let version = u64::try_from(version).unwrap_or(0);
            (
                stream,
                Mark {
                    version,
                    gap_expired,
                },
            )
        })
        .collect();
    Ok((marks, xid))
}

/// Writes the batch's updates (rows locked by [`lock`]).
pub(super) async fn write(
    conn: &mut PgConnection,
    schema: &str,
    consumer: &str,
    updates: &[Update],
) -> Result<(), sqlx::Error> {
    if updates.is_empty() {
        return Ok(());
    }
    let streams: Vec<&str> = updates.iter().map(|u| u.stream.as_str()).collect();
    let versions: Vec<i64> = updates
        .iter()
        .map(|u| i64::try_from(u.version).unwrap_or(i64::MAX))
        .collect();
    let held: Vec<bool> = updates.iter().map(|u| u.held).collect();
    let advanced: Vec<bool> = updates.iter().map(|u| u.advanced).collect();
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {schema}.inbox_streams AS f SET version = u.version,
             held_since = CASE WHEN NOT u.held THEN NULL WHEN u.advanced THEN now()
                               ELSE coalesce(f.held_since, now()) END
         FROM unnest($2::text[], $3::bigint[], $4::bool[], $5::bool[]) AS u(stream_id, version, held, advanced)
         WHERE f.consumer = $1 AND f.stream_id = u.stream_id"
    )))
    .bind(consumer)
    .bind(streams)
    .bind(versions)
    .bind(held)
    .bind(advanced)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Moves a stream's fence past a parked event (never back), so its later events are not held for it.
pub(super) async fn pass(
    conn: &mut PgConnection,
    schema: &str,
    consumer: &str,
    stream: &str,
    version: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {schema}.inbox_streams AS f (consumer, stream_id, version) VALUES ($1, $2, $3)
         ON CONFLICT (consumer, stream_id)
         DO UPDATE SET version = greatest(f.version, excluded.version), held_since = NULL"
    )))
    .bind(consumer)
    .bind(stream)
    .bind(i64::try_from(version).unwrap_or(i64::MAX))
    .execute(conn)
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(list: &[(&str, u64, bool)]) -> HashMap<String, Mark> {
        list.iter()
            .map(|&(s, version, gap_expired)| {
                (
                    s.to_owned(),
                    Mark {
                        version,
                        gap_expired,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_next_version_applies_and_a_later_one_waits_for_the_gap() {
        let (verdicts, updates) = plan(
            &[("a", 1), ("b", 3), ("a", 2), ("a", 4), ("b", 1)],
            &marks(&[("b", 1, false)]),
        );
        use Verdict::{Apply, Hold};
        assert_eq!(verdicts, [Apply, Hold, Apply, Hold, Apply]);
        assert_eq!(
            updates,
            [
                Update {
                    stream: "a".into(),
                    version: 2,
                    held: true,
                    advanced: true
                },
                Update {
                    stream: "b".into(),
                    version: 1,
                    held: true,
                    advanced: false
                },
            ]
        );
    }

    #[test]
    fn an_expired_gap_lets_the_next_event_through_once() {
        let (verdicts, updates) = plan(&[("a", 5), ("a", 7)], &marks(&[("a", 2, true)]));
        assert_eq!(verdicts, [Verdict::Apply, Verdict::Hold]);
        assert_eq!(updates[0].version, 5);
    }

    #[test]
    fn older_events_apply_without_moving_the_fence() {
        let (verdicts, updates) = plan(&[("a", 2), ("a", 2)], &marks(&[("a", 4, false)]));
        assert_eq!(verdicts, [Verdict::Apply, Verdict::Apply]);
        assert!(updates.is_empty());
    }
}
