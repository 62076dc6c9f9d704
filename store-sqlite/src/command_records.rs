//! The command record on SQLite: the `command_outcomes` table (`migrations/0002_command_outcomes.sql`), behind
//! [`EventStore::find_command`](annals::EventStore::find_command) and
//! [`EventStore::record_command`](annals::EventStore::record_command).

use annals::{CommandId, CommandOutcome, CommandRecord, Position, StreamId, StreamVersion};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, Row};

use crate::failure::{retry_busy, store_error};
use crate::row::{from_micros, micros};
use crate::store::SqliteStore;

const SELECT: &str = "SELECT command_id, stream_id, stream_version, position, outcome, reason, recorded_at \
                      FROM command_outcomes WHERE command_id = ?1";

impl SqliteStore {
    pub(crate) async fn find_command_row(
        &self,
        command_id: &CommandId,
    ) -> annals::Result<Option<CommandRecord>> {
        let retries = self.inner.settings.busy_retries;
        let row = retry_busy("find_command", retries, || async {
            sqlx::query(SELECT)
                .bind(command_id.as_str())
                .fetch_optional(&self.inner.readers)
                .await
                .map_err(|e| store_error("find_command", e))
        })
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Records `record` unless its id has a record or took effect, in one `BEGIN IMMEDIATE` transaction: the
    /// check for the id's first derived event and the insert see the same state.
    pub(crate) async fn record_command_row(
        &self,
        record: CommandRecord,
    ) -> annals::Result<CommandRecord> {
        // The same rule as PostgreSQL's `bigint` columns.
        let invalid = |what: &str| annals::Error::Backend {
            operation: "record_command",
            source: format!("{what} does not fit in a 64-bit signed integer").into(),
        };
        let version =
            i64::try_from(record.version.get()).map_err(|_| invalid("the stream version"))?;
        let position = i64::try_from(record.position.get()).map_err(|_| invalid("the position"))?;
        let retries = self.inner.settings.busy_retries;
        let record = &record;
        retry_busy("record_command", retries, || async move {
            let fail = |e| store_error("record_command", e);
            crate::writer::write(&self.inner.writer, "record_command", async |conn| {
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
                let used_in: Option<String> =
                    sqlx::query_scalar("SELECT stream_id FROM events WHERE event_id = ?1")
                        .bind(
                            record
                                .command_id
                                .event_id(0)
                                .as_uuid()
                                .as_bytes()
                                .as_slice(),
                        )
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(fail)?;
                if let Some(stream) = used_in {
                    return Err(annals::Error::CommandIdUsed {
                        command_id: record.command_id.clone(),
                        stream: StreamId::new(stream)?,
                    });
                }
                sqlx::query(
                    "INSERT INTO command_outcomes \
                 (command_id, stream_id, stream_version, position, outcome, reason, recorded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (command_id) DO NOTHING",
                )
                .bind(record.command_id.as_str())
                .bind(record.stream.as_str())
                .bind(version)
                .bind(position)
                .bind(record.outcome.kind())
                .bind(record.outcome.reason())
                .bind(micros(Utc::now()))
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
                let row = sqlx::query(SELECT)
                    .bind(record.command_id.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(fail)?;
                tx.commit().await.map_err(fail)?;
                decode(&row)
            })
            .await
        })
        .await
    }

    /// Forgets the recorded outcomes (refusals, no-change decisions) of command ids recorded before `cutoff`, and
    /// returns how many were deleted. A repeat of a forgotten command id runs the command again; outcomes with
    /// events are never forgotten (their event ids are the record). Nothing expires on its own: call this from a
    /// periodic job with your retention period (for example 30 days).
    ///
    /// # Errors
    /// The store's error when the delete fails.
    pub async fn forget_commands_recorded_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> annals::Result<u64> {
        let retries = self.inner.settings.busy_retries;
        retry_busy("forget_commands", retries, || async {
            let fail = |e| store_error("forget_commands", e);
            crate::writer::write(&self.inner.writer, "forget_commands", async |conn| {
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
                let done = sqlx::query("DELETE FROM command_outcomes WHERE recorded_at < ?1")
                    .bind(micros(cutoff))
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
                tx.commit().await.map_err(fail)?;
                Ok(done.rows_affected())
            })
            .await
        })
        .await
        .map_err(|e| self.on_file(e))
    }
}

fn decode(row: &SqliteRow) -> annals::Result<CommandRecord> {
    let corrupt = |column: &str, what: String| annals::Error::Backend {
        operation: "find_command",
        source: format!("command_outcomes.{column}: {what}").into(),
    };
    let text = |column: &str| -> annals::Result<String> {
        row.try_get::<String, _>(column)
            .map_err(|e| corrupt(column, e.to_string()))
    };
    let number = |column: &str| -> annals::Result<i64> {
        row.try_get(column)
            .map_err(|e| corrupt(column, e.to_string()))
    };
    let count = |column: &str| -> annals::Result<u64> {
        let value = number(column)?;
        u64::try_from(value).map_err(|_| corrupt(column, format!("negative value {value}")))
    };
    let command_id =
        CommandId::new(text("command_id")?).map_err(|e| corrupt("command_id", e.to_string()))?;
    let stream =
        StreamId::new(text("stream_id")?).map_err(|e| corrupt("stream_id", e.to_string()))?;
    let reason: Option<String> = row
        .try_get("reason")
        .map_err(|e| corrupt("reason", e.to_string()))?;
    let outcome = CommandOutcome::from_stored(&text("outcome")?, reason)
        .map_err(|e| corrupt("outcome", e))?;
    let at = number("recorded_at")?;
    Ok(CommandRecord {
        command_id,
        stream,
        version: StreamVersion(count("stream_version")?),
        position: Position(count("position")?),
        outcome,
        recorded_at: from_micros(at)
            .ok_or_else(|| corrupt("recorded_at", format!("{at} is out of range")))?,
    })
}
