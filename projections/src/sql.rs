//! [`SqlTx`]: what a [`SqlProjection`](crate::SqlProjection) writes through.

use sqlx::PgConnection;

/// The runner's open transaction plus the schema of the read-model generation being written.
///
/// Everything done through [`conn`](SqlTx::conn) commits together with the projection's checkpoint, or not at
/// all.
pub struct SqlTx<'a> {
    pub(crate) conn: &'a mut PgConnection,
    pub(crate) schema: &'a str,
}

impl std::fmt::Debug for SqlTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlTx")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl SqlTx<'_> {
    /// The connection, inside the batch's transaction. Use it as a sqlx executor: `&mut *tx.conn()`.
    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn
    }

    /// The (unquoted) schema of the generation being written, for example `rm_balances` or `rm_balances__g2`.
    pub fn schema(&self) -> &str {
        self.schema
    }

    /// The quoted, schema-qualified name of `table` in this generation: `"rm_balances"."accounts"`.
    pub fn table(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(self.schema), quote_ident(table))
    }
}

/// Quotes an SQL identifier (doubling embedded quotes).
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}
