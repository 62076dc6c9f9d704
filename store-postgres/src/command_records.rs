//! The command record on PostgreSQL: the `command_outcomes` table (migration 0004), behind
//! [`EventStore::find_command`](annals::EventStore::find_command) and
//! [`EventStore::record_command`](annals::EventStore::record_command).

use annals::{CommandId, CommandOutcome, CommandRecord, Position, StreamId, StreamVersion};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use crate::failure::store_error;
use crate::schema::quoted;
use crate::store::PostgresStore;

const COLUMNS: &str =
    "command_id, stream_id, stream_version, position, outcome, reason, recorded_at";

impl PostgresStore {
    fn command_table(&self) -> String {
        format!("{}.command_outcomes", quoted(self.schema()))
    }

    pub(crate) async fn find_command_row(
        &self,
        command_id: &CommandId,
    ) -> annals::Result<Option<CommandRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE command_id = $1",
            self.command_table()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(command_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| store_error("find_command", e))?;
        row.as_ref().map(decode).transpose()
    }

    pub(crate) async fn record_command_row(
        &self,
        record: CommandRecord,
    ) -> annals::Result<CommandRecord> {
        let invalid = |what: &str| annals::Error::Backend {
            operation: "record_command",
            source: format!("{what} does not fit in a bigint").into(),
        };
        let version =
            i64::try_from(record.version.get()).map_err(|_| invalid("the stream version"))?;
        let position = i64::try_from(record.position.get()).map_err(|_| invalid("the position"))?;
        // One statement on the fast path: insert unless the id has a row or took effect (its first derived event
        // is stored).
        let sql = format!(
            "INSERT INTO {table} (command_id, stream_id, stream_version, position, outcome, reason) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE NOT EXISTS (SELECT 1 FROM {schema}.events WHERE event_id = $7) \
             ON CONFLICT (command_id) DO NOTHING RETURNING {COLUMNS}",
            table = self.command_table(),
            schema = quoted(self.schema()),
        );
        // On a connection known to be outside any transaction (`connection/clean.rs`): the record must commit.
        let mut conn = self.checkout("record_command").await?;
        let inserted = sqlx::query(AssertSqlSafe(sql))
            .bind(record.command_id.as_str())
            .bind(record.stream.as_str())
            .bind(version)
            .bind(position)
            .bind(record.outcome.kind())
            .bind(record.outcome.reason())
            .bind(record.command_id.event_id(0).as_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| store_error("record_command", e))?;
        self.keep(conn);
        if let Some(row) = inserted {
            return decode(&row);
        }
        let sql = format!(
            "SELECT stream_id FROM {}.events WHERE event_id = $1",
            quoted(self.schema())
        );
        let used_in: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(record.command_id.event_id(0).as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| store_error("record_command", e))?;
        if let Some(stream) = used_in {
            return Err(annals::Error::CommandIdUsed {
                command_id: record.command_id,
                stream: StreamId::new(stream)?,
            });
        }
        self.find_command_row(&record.command_id)
            .await?
            .ok_or_else(|| annals::Error::Unavailable {
                operation: "record_command",
                source: format!(
                    "the record of command id {:?} was deleted while it was being recorded",
                    record.command_id.as_str()
                )
                .into(),
            })
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
        let sql = format!(
            "DELETE FROM {} WHERE recorded_at < $1",
            self.command_table()
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(|e| store_error("forget_commands", e))?;
        Ok(done.rows_affected())
    }
}

fn decode(row: &PgRow) -> annals::Result<CommandRecord> {
    let corrupt = |column: &str, what: String| annals::Error::Backend {
        operation: "find_command",
        source: format!("command_outcomes.{column}: {what}").into(),
    };
    let text = |column: &str| -> annals::Result<String> {
        row.try_get::<String, _>(column)
            .map_err(|e| corrupt(column, e.to_string()))
    };
    let number = |column: &str| -> annals::Result<u64> {
        let value: i64 = row
            .try_get(column)
            .map_err(|e| corrupt(column, e.to_string()))?;
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
    Ok(CommandRecord {
        command_id,
        stream,
        version: StreamVersion(number("stream_version")?),
        position: Position(number("position")?),
        outcome,
        recorded_at: row
            .try_get("recorded_at")
            .map_err(|e| corrupt("recorded_at", e.to_string()))?,
    })
}
