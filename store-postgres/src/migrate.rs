//! Applying the embedded migrations inside the store's schema.

use sqlx::{Connection, Executor, PgPool};

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
    tracing::info!(schema, "event store schema is up to date");
    Ok(())
}
