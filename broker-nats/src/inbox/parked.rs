//! Parking: a message the inbox cannot apply is kept in `<schema>.inbox_parked` with its reason and
//! terminated at the broker; [`Parked`] is how it is listed.

use async_nats::jetstream::{AckKind, Message};
use sqlx::AssertSqlSafe;
use tracing::warn;

use super::{Handler, Inbox, Outcome, fence};
use crate::error::{Error, Result};

/// A parked message: one the inbox could not apply, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Parked {
    /// The JetStream stream sequence.
    pub sequence: u64,
    /// The subject it arrived on.
    pub subject: String,
    /// The event id, when its header was readable.
    pub event_id: Option<uuid::Uuid>,
    /// Why it was parked.
    pub reason: String,
    /// How many times the handler failed with an error of its own (0 for malformed messages; transient
    /// database errors are never counted).
    pub attempts: u32,
}

impl<H: Handler> Inbox<H> {
    /// Records the message in `inbox_parked` with `reason` and moves the order fence of its Annals `stream`
    /// (when known) past it, in one transaction, then terminates it at the broker.
    pub(super) async fn park(
        &self,
        message: &Message,
        sequence: u64,
        event_id: Option<uuid::Uuid>,
        stream: Option<(&str, u64)>,
        reason: String,
        attempts: u32,
    ) -> Result<Outcome> {
        warn!(consumer = %self.name, sequence, subject = %message.subject, %reason, "parking the message");
        let headers: serde_json::Map<String, serde_json::Value> = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(k, v)| {
                let values: Vec<serde_json::Value> = v
                    .iter()
                    .map(|v| serde_json::Value::from(v.as_str()))
                    .collect();
                (k.to_string(), serde_json::Value::from(values))
            })
            .collect();
        let mut tx = self.pool.begin().await.map_err(Error::db("park message"))?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (consumer, sequence, subject, event_id, reason, attempts, headers, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (consumer, sequence) DO NOTHING",
            self.table("inbox_parked")
        )))
        .bind(&self.name)
        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
        .bind(message.subject.as_str())
        .bind(event_id)
        .bind(&reason)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .bind(sqlx::types::Json(serde_json::Value::Object(headers)))
        .bind(message.payload.as_ref())
        .execute(&mut *tx)
        .await
        .map_err(Error::db("park message"))?;
        if let Some((stream, version)) = stream {
            fence::pass(&mut tx, &self.options.schema, &self.name, stream, version)
                .await
                .map_err(Error::db("park message"))?;
        }
        tx.commit().await.map_err(Error::db("park message"))?;
        self.ack(message, AckKind::Term).await?;
        Ok(Outcome::Parked)
    }

    /// The parked messages of this consumer, oldest first.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn parked(&self) -> Result<Vec<Parked>> {
        use sqlx::Row;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT sequence, subject, event_id, reason, attempts FROM {} WHERE consumer = $1 ORDER BY sequence",
            self.table("inbox_parked")
        )))
        .bind(&self.name)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::db("list parked messages"))?;
        rows.iter()
            .map(|r| {
                let col = |c: &'static str| {
                    move |e| Error::Database {
                        operation: c,
                        source: e,
                    }
                };
                Ok(Parked {
                    sequence: u64::try_from(
                        r.try_get::<i64, _>("sequence")
                            .map_err(col("read inbox_parked.sequence"))?,
                    )
                    .unwrap_or(0),
                    subject: r
                        .try_get("subject")
                        .map_err(col("read inbox_parked.subject"))?,
                    event_id: r
                        .try_get("event_id")
                        .map_err(col("read inbox_parked.event_id"))?,
                    reason: r
                        .try_get("reason")
                        .map_err(col("read inbox_parked.reason"))?,
                    attempts: u32::try_from(
                        r.try_get::<i32, _>("attempts")
                            .map_err(col("read inbox_parked.attempts"))?,
                    )
                    .unwrap_or(0),
                })
            })
            .collect()
    }
}
