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

    /// The database breaks a rule the store's ordering guarantee relies on (ADR 0001): the position sequence was
    /// altered, the store's functions were replaced by ones that disagree on the schema's tag, the session reads
    /// at a stricter isolation than READ COMMITTED, or the server is a hot standby. The store refuses to run
    /// rather than risk a reader skipping an event; `fix` says what to change.
    #[error("the event store schema {schema:?} cannot be used safely: {setting} is {found}; {fix}")]
    Misconfigured {
        /// The schema checked.
        schema: String,
        /// The setting or object at fault, for example `events_position_seq CACHE`.
        setting: &'static str,
        /// What was found.
        found: String,
        /// How to repair it.
        fix: String,
    },

    /// The checks made at start-up could not run (the database could not be queried). Fix the cause and start
    /// again.
    #[error("cannot check the event store schema {schema:?}: {source}")]
    Check {
        /// The schema checked.
        schema: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}
