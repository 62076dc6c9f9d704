//! Applying the embedded migrations inside the store's schema.

use sqlx::{Connection, Executor, PgPool, Row};

use crate::error::Error;
use crate::schema::quoted;

/// Creates `schema` if needed and applies the embedded migrations in it, on a dedicated connection whose
/// `search_path` is the schema, so the migrations' unqualified names and `_sqlx_migrations` land there.
pub(crate) async fn migrate(pool: &PgPool, schema: &str) -> Result<(), Error> {
    let fail = |source: sqlx::migrate::MigrateError| Error::Migrate {
        schema: schema.to_owned(),
        source,
    };
    // Detached: the connection's search_path is changed, so it must never go back to the pool.
    let mut conn = pool.acquire().await.map_err(|e| fail(e.into()))?.detach();
    let quoted = quoted(schema);
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.create_schema(quoted.clone());
    migrator.dangerous_set_table_name(format!("{quoted}._sqlx_migrations"));
    let result = async {
        conn.execute(sqlx::AssertSqlSafe(format!("SET search_path TO {quoted}")))
            .await?;
        migrator.run(&mut conn).await
    }
    .await;
    // Closing politely is best effort; the connection is dropped either way.
    let _ = conn.close().await;
    result.map_err(fail)?;
    verify(pool, schema).await?;
    tracing::info!(schema, "event store schema is up to date");
    Ok(())
}

/// The lock protocol this binary speaks (see `migrations/0011_lock_protocol.sql`): the stream lock's keys, the gap
/// marker's layout and the order appends take them in, shared by the migrations' functions and the statements in
/// `schema.rs`. A database whose `lock_protocol()` says otherwise is refused.
pub const LOCK_PROTOCOL: i32 = 2;

/// The position sequence as ADR 0001 needs it, checked at start-up.
const MAX_POSITION: i64 = (1 << 48) - 1;

/// Checks the invariants the gap-safe global order relies on (ADR 0001), naming the setting and the fix of the
/// first one broken.
pub(crate) async fn verify(pool: &PgPool, schema: &str) -> Result<(), Error> {
    let check = |source| Error::Check {
        schema: schema.to_owned(),
        source,
    };
    let row = sqlx::query(
        "SELECT s.cache_size, s.max_value, s.increment_by, s.cycle, \
                current_setting('default_transaction_isolation'), pg_is_in_recovery(), \
                (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                  WHERE n.nspname = $1 AND p.proname IN ('append_events', 'safe_position', 'await_oldest_append') \
                    AND p.prosrc LIKE '%schema_tag()%') \
           FROM pg_sequences s WHERE s.schemaname = $1 AND s.sequencename = 'events_position_seq'",
    )
    .bind(schema)
    .fetch_optional(pool)
    .await
    .map_err(check)?;
    let misconfigured = |setting, found: String, fix: &str| {
        Err(Error::Misconfigured {
            schema: schema.to_owned(),
            setting,
            found,
            fix: fix.to_owned(),
        })
    };
    let Some(row) = row else {
        return misconfigured(
            "the sequence events_position_seq",
            "missing (or not readable by this role)".to_owned(),
            "run migrate() with a role that owns the schema, or grant SELECT on the sequence",
        );
    };
    let cache: i64 = row.try_get(0).map_err(check)?;
    let max: i64 = row.try_get(1).map_err(check)?;
    let increment: i64 = row.try_get(2).map_err(check)?;
    let cycle: bool = row.try_get(3).map_err(check)?;
    let isolation: String = row.try_get(4).map_err(check)?;
    let standby: bool = row.try_get(5).map_err(check)?;
    let tagged: i64 = row.try_get(6).map_err(check)?;
    let seq = |clause: &str| {
        format!(
            "run ALTER SEQUENCE \"{schema}\".events_position_seq {clause}: a gap marker promises that every \
             position drawn after it is higher than the last one drawn before it"
        )
    };
    if cache != 1 {
        return misconfigured(
            "events_position_seq CACHE",
            cache.to_string(),
            &seq("CACHE 1"),
        );
    }
    if increment < 1 {
        return misconfigured(
            "events_position_seq INCREMENT",
            increment.to_string(),
            &seq("INCREMENT BY 1"),
        );
    }
    if cycle {
        return misconfigured(
            "events_position_seq CYCLE",
            "on".to_owned(),
            &seq("NO CYCLE"),
        );
    }
    if max > MAX_POSITION {
        return misconfigured(
            "events_position_seq MAXVALUE",
            max.to_string(),
            &seq(&format!(
                "MAXVALUE {MAX_POSITION} (positions share a 64-bit lock key with the schema tag)"
            )),
        );
    }
    if isolation != "read committed" {
        return misconfigured(
            "default_transaction_isolation",
            isolation,
            "the global order must be read at READ COMMITTED: set default_transaction_isolation to 'read committed' \
             for the store's role or database",
        );
    }
    if standby {
        return misconfigured(
            "pg_is_in_recovery()",
            "true (a hot standby)".to_owned(),
            "connect the store to the primary: a standby does not see the primary's appends in flight",
        );
    }
    lock_protocol(pool, schema).await?;
    if tagged != 3 {
        return misconfigured(
            "the functions append_events, safe_position and await_oldest_append",
            format!("{tagged} of 3 using the schema's allocated tag (schema_tag())"),
            "the functions were replaced by hand or by a migration that does not use schema_tag(); run this \
             version's migrate(), and never replace the store's functions by hand",
        );
    }
    Ok(())
}

/// Checks that the schema speaks this binary's [`LOCK_PROTOCOL`], naming both versions when it does not.
async fn lock_protocol(pool: &PgPool, schema: &str) -> Result<(), Error> {
    let statement = format!("SELECT {}.lock_protocol()", quoted(schema));
    let found = match sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(statement))
        .fetch_one(pool)
        .await
    {
        Ok(found) => found,
        // undefined_function: the schema predates migration 0011, which numbered the protocol.
        Err(error) if crate::failure::sqlstate(&error).as_deref() == Some("42883") => 1,
        Err(source) => {
            return Err(Error::Check {
                schema: schema.to_owned(),
                source,
            });
        }
    };
    if found == LOCK_PROTOCOL {
        return Ok(());
    }
    let fix = if found < LOCK_PROTOCOL {
        "run this version's migrate() before any process of it appends"
    } else {
        "the schema was migrated by a newer version of annals-postgres: run that version (or newer) everywhere"
    };
    Err(Error::Misconfigured {
        schema: schema.to_owned(),
        setting: "the lock protocol (lock_protocol())",
        found: format!(
            "version {found} in the database, but this binary speaks version {LOCK_PROTOCOL}"
        ),
        fix: fix.to_owned(),
    })
}
