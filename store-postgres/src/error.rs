//! The errors of setting up a [`PostgresStore`](crate::PostgresStore). Store operations themselves return
//! [`annals::Error`], like every store.

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while connecting to, configuring or migrating the store. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection URL could not be parsed. Fix the configuration; the message never contains the password.
    #[error("invalid PostgreSQL connection URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with its password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The server could not be reached, or refused the login (wrong credentials, unknown database). Check the
    /// host, port, database and credentials; retrying helps only when the server is still starting up.
    #[error(
        "cannot connect to PostgreSQL database {database:?} at {host}:{port} as {user:?}: {source}"
    )]
    Connect {
        /// The host (or Unix socket directory) tried.
        host: String,
        /// The port tried.
        port: u16,
        /// The database asked for.
        database: String,
        /// The user name logged in as (never the password).
        user: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// The schema name is not a plain identifier. Use ASCII letters, digits and underscores, at most 63 bytes,
    /// not starting with a digit or `pg_`.
    #[error("invalid schema name {schema:?}: {reason}")]
    InvalidSchema {
        /// The rejected name.
        schema: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// Applying the embedded migrations failed: the database was unreachable, the role may not create the
    /// schema or its objects, or the schema holds migrations this version does not know (a newer release ran
    /// against it). Fix the cause and call `migrate` again; each migration runs in its own transaction.
    #[error("cannot migrate the event store schema {schema:?}: {source}")]
    Migrate {
        /// The schema being migrated.
        schema: String,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}
