//! Reads (status, parked events, checkpoints, live documents) through the readers, and reset.

use annals::{EventId, Position, StreamId};
use serde_json::Value;

use super::batch::parse_doc;
use super::lease::drop_generation;
use super::schema::{DEAD_LETTERS, SLOT_COLUMNS, SLOTS};
use super::{SqliteBackend, column, int, non_negative, slot_from};
use crate::backend::Slot;
use crate::error::{Error, Result};
use crate::status::ParkedEvent;

impl SqliteBackend {
    pub(super) async fn read_slots(&self) -> Result<Vec<Slot>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SLOT_COLUMNS} FROM projection_slots ORDER BY name, generation"
        )))
        .fetch_all(&self.readers)
        .await
        .map_err(Error::db("read status"))?;
        rows.iter().map(|row| slot_from(row, false)).collect()
    }

    pub(super) async fn read_parked(&self, name: &str) -> Result<Vec<ParkedEvent>> {
        let rows = sqlx::query(
            "SELECT d.position, d.event_id, d.stream_id, d.event_type, d.error, d.attempts \
             FROM projection_dead_letters d JOIN projection_slots s ON s.name = d.name AND s.generation = d.generation \
             WHERE d.name = ?1 AND s.live = 1 ORDER BY d.position",
        )
        .bind(name)
        .fetch_all(&self.readers)
        .await
        .map_err(Error::db("list parked events"))?;
        let t = DEAD_LETTERS;
        let stored = |column: &'static str, reason: String| Error::StoredValue {
            table: t.to_owned(),
            column,
            reason,
        };
        rows.iter()
            .map(|r| {
                let stream: String = column(r, t, "stream_id")?;
                let event_id: String = column(r, t, "event_id")?;
                Ok(ParkedEvent {
                    position: Position(non_negative(r, t, "position")?),
                    event_id: EventId(
                        event_id
                            .parse()
                            .map_err(|e| stored("event_id", format!("{e}")))?,
                    ),
                    stream: StreamId::new(stream)
                        .map_err(|e| stored("stream_id", e.to_string()))?,
                    event_type: column(r, t, "event_type")?,
                    error: column(r, t, "error")?,
                    attempts: u32::try_from(non_negative(r, t, "attempts")?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    /// Drops every generation of `name` with its documents and dead letters, in one write transaction.
    pub(super) async fn drop_all(&self, name: &str) -> Result<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::db("reset"))?;
        let generations: Vec<i64> =
            sqlx::query_scalar("SELECT generation FROM projection_slots WHERE name = ?1")
                .bind(name)
                .fetch_all(&mut *tx)
                .await
                .map_err(Error::db("reset"))?;
        for generation in generations {
            drop_generation(&mut tx, name, u64::try_from(generation).unwrap_or(0)).await?;
        }
        // Dead letters or documents of a generation whose row is gone (none are written so; a hand-edited file).
        for statement in [
            "DELETE FROM projection_documents WHERE name = ?1",
            "DELETE FROM projection_dead_letters WHERE name = ?1",
        ] {
            sqlx::query(statement)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(Error::db("reset"))?;
        }
        tx.commit().await.map_err(Error::db("reset"))
    }

    pub(super) async fn read_checkpoint(&self, name: &str) -> Result<Position> {
        let row =
            sqlx::query("SELECT checkpoint FROM projection_slots WHERE name = ?1 AND live = 1")
                .bind(name)
                .fetch_optional(&self.readers)
                .await
                .map_err(Error::db("read checkpoint"))?;
        match row {
            None => Ok(Position::START),
            Some(row) => Ok(Position(non_negative(&row, SLOTS, "checkpoint")?)),
        }
    }

    pub(super) async fn read_doc(
        &self,
        name: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<Value>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT d.doc FROM projection_documents d JOIN projection_slots s \
             ON s.name = d.name AND s.generation = d.generation \
             WHERE s.name = ?1 AND s.live = 1 AND d.collection = ?2 AND d.key = ?3",
        )
        .bind(name)
        .bind(collection)
        .bind(key)
        .fetch_optional(&self.readers)
        .await
        .map_err(Error::db("read document"))?;
        text.map(|text| parse_doc(name, collection, key, &text))
            .transpose()
    }

    pub(super) async fn read_docs(
        &self,
        name: &str,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>> {
        let from = match after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.key, d.doc FROM projection_documents d JOIN projection_slots s \
             ON s.name = d.name AND s.generation = d.generation \
             WHERE s.name = ?1 AND s.live = 1 AND d.collection = ?2 \
               AND (d.key > ?3 OR (d.key = ?3 AND ?4 IS NULL)) AND (?5 IS NULL OR d.key < ?5) \
               AND substr(d.key, 1, length(?6)) = ?6 \
             ORDER BY d.key LIMIT ?7",
        )
        .bind(name)
        .bind(collection)
        .bind(from)
        .bind(after.filter(|a| *a >= prefix))
        .bind(prefix_end(prefix))
        .bind(prefix)
        .bind(int(limit as u64))
        .fetch_all(&self.readers)
        .await
        .map_err(Error::db("list documents"))?;
        rows.into_iter()
            .map(|(key, text)| {
                let doc = parse_doc(name, collection, &key, &text)?;
                Ok((key, doc))
            })
            .collect()
    }
}

/// The least string greater than every string that starts with `prefix` (`None`: no bound, for the empty
/// prefix or one of only `char::MAX`), so a prefix scan reads the primary key as a range. Strings compare as
/// their UTF-8 bytes, which is code point order.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends_bound_exactly_the_strings_with_the_prefix() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{d7ff}").as_deref(), Some("a\u{e000}"));
        assert_eq!(prefix_end("a\u{10ffff}").as_deref(), Some("b"));
        assert!("ab\u{10ffff}x" < prefix_end("ab").unwrap().as_str());
    }
}
