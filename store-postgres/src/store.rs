//! [`PostgresStore`]: construction, configuration and the [`EventStore`] implementation.

use std::sync::Arc;
use std::time::Duration;

use annals::{
    AppendResult, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
    StreamVersion, async_trait,
};
use sqlx::PgPool;

use crate::connection::{Checkout, Connections};
use crate::error::Error;
use crate::read::Envelope;
use crate::schema::{self, DEFAULT_SCHEMA, Statements};
use crate::wait::Signals;

/// How long a waiter sleeps at most before it looks again when no notification arrives.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The PostgreSQL event store. Cheap to clone: clones share one connection pool and one set of background tasks
/// (the notification listener and sender), which stop when the last clone is dropped.
///
/// Build it with [`PostgresStore::connect`] or [`PostgresStore::from_pool`], pick a schema with
/// [`with_schema`](PostgresStore::with_schema), and call [`migrate`](PostgresStore::migrate) once at start-up.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    pub(crate) inner: Arc<Inner>,
}

/// What a store's settings are; rebuilt by every builder method.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) schema: String,
    pub(crate) poll_interval: Duration,
    pub(crate) notify: bool,
    pub(crate) notify_coalesce: Duration,
    pub(crate) transaction_retries: u32,
}

/// The state clones share.
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) statements: Statements,
    pub(crate) signals: Arc<Signals>,
    /// The highest position found safe to read so far, and the server it is safe on (see `safe_bound.rs`).
    pub(crate) safe_bound: crate::safe_bound::KnownBound,
    /// Where stream reads and appends get their connections, and the ones kept between them (`connection/`).
    pub(crate) connections: Connections,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.signals.shut_down();
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.config.schema)
            .field("poll_interval", &self.inner.config.poll_interval)
            .field("notify", &self.inner.config.notify)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects a new pool (sqlx's default options, at most 10 connections) to `url`, for example
    /// `postgres://app:secret@db.internal:5432/orders`. The store uses the schema `annals`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when the URL does not parse; [`Error::Connect`] naming the host, port, database and
    /// user (never the password) when the server cannot be reached or refuses the login.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Ok(Self::from_pool(crate::connect::connect_pool(url).await?))
    }

    /// The pool options [`connect`](PostgresStore::connect) uses, for building a pool of your own to hand to
    /// [`from_pool`](PostgresStore::from_pool) (set the size and timeouts you need on top): sqlx's defaults,
    /// except that a connection is not pinged before every acquire (`test_before_acquire(false)`), which would
    /// cost a round trip per operation. A pooled connection found dead on use instead is replaced by the store:
    /// a stream read or an append that fails on it is retried once on a connection that just answered a ping
    /// (appends are idempotent by event id, so that never writes twice). On such a pool the store takes an idle
    /// connection for a stream read or an append straight from the pool (sqlx's `try_acquire`, which runs no
    /// `before_acquire` hook), and waits in `acquire` only when none is idle.
    pub fn pool_options() -> sqlx::postgres::PgPoolOptions {
        sqlx::postgres::PgPoolOptions::new().test_before_acquire(false)
    }

    /// A store on an existing pool, in the schema `annals`. Size the pool for your concurrent writers and readers
    /// plus three connections: one for the notification listener (taken on the first
    /// [`wait_for_events`](EventStore::wait_for_events)), one while a waiter is held back by an open append, and
    /// one spare, since the store keeps the connection of a command for the next one only while the pool has a
    /// connection left for others (see the guide's page on PostgreSQL).
    pub fn from_pool(pool: PgPool) -> Self {
        Self::build(
            pool,
            Config {
                schema: DEFAULT_SCHEMA.to_owned(),
                poll_interval: DEFAULT_POLL_INTERVAL,
                notify: true,
                notify_coalesce: crate::wait::DEFAULT_NOTIFY_COALESCE,
                transaction_retries: annals::DEFAULT_MAX_RETRIES,
            },
        )
    }

    fn build(pool: PgPool, config: Config) -> Self {
        let statements = Statements::new(&config.schema);
        let signals = Arc::new(Signals::new(&config.schema));
        Self {
            inner: Arc::new(Inner {
                config,
                statements,
                signals,
                safe_bound: crate::safe_bound::KnownBound::default(),
                connections: Connections::new(pool.clone()),
            }),
            pool,
        }
    }

    /// A connection for a stream read or an append (`Connections::checkout`).
    pub(crate) async fn checkout(&self, operation: &'static str) -> annals::Result<Checkout> {
        self.inner.connections.checkout(operation).await
    }

    /// Keeps `checkout`, whose operation succeeded, for the next stream read or append, or hands it back.
    pub(crate) fn keep(&self, checkout: Checkout) {
        self.inner.connections.keep(checkout);
    }

    /// A connection that answered just now, after one was found dead (`Connections::fresh`).
    pub(crate) async fn fresh_connection(
        &self,
        operation: &'static str,
    ) -> annals::Result<Checkout> {
        self.inner.connections.fresh(operation).await
    }

    fn reconfigure(self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.inner.config.clone();
        change(&mut config);
        Self::build(self.pool, config)
    }

    /// Uses the PostgreSQL schema (namespace) `schema` instead of `annals`: several applications or tenants can
    /// share one database, each with its own events, positions, migrations and notification channel.
    ///
    /// # Errors
    /// [`Error::InvalidSchema`] unless `schema` is ASCII letters, digits and underscores, at most 63 bytes, not
    /// starting with a digit or `pg_`.
    pub fn with_schema(self, schema: &str) -> Result<Self, Error> {
        schema::validate(schema)?;
        Ok(self.reconfigure(|config| config.schema = schema.to_owned()))
    }

    /// Sets how long [`wait_for_events`](EventStore::wait_for_events) waits at most before it checks the head
    /// again when no notification arrives (default [`DEFAULT_POLL_INTERVAL`]). This bounds the delay a lost
    /// notification can cause; it is not a busy poll. Values below 10 ms are raised to 10 ms.
    pub fn with_poll_interval(self, interval: Duration) -> Self {
        self.reconfigure(|config| config.poll_interval = interval.max(Duration::from_millis(10)))
    }

    /// Whether appends made through this store send a NOTIFY so that waiters in other processes wake at once
    /// (default `true`). The NOTIFY is sent by a background task after the append committed, coalescing bursts,
    /// so it never slows an append down. Waiters in this process are woken directly either way; with `false`,
    /// other processes see new events within their poll interval.
    pub fn with_notify(self, notify: bool) -> Self {
        self.reconfigure(|config| config.notify = notify)
    }

    /// Sets the shortest time between two of this store's notifications (default
    /// [`DEFAULT_NOTIFY_COALESCE`](crate::DEFAULT_NOTIFY_COALESCE), 1 ms). An isolated append is announced at
    /// once; appends that commit within this time of the last notification are announced together when it has
    /// passed. Longer means fewer NOTIFY transactions under load, and a waiter in another process (a relay, a
    /// projection runner) learns of an append up to this much later.
    pub fn with_notify_coalesce(self, every: Duration) -> Self {
        self.reconfigure(|config| config.notify_coalesce = every)
    }

    /// Sets how many times [`transaction`](PostgresStore::transaction) runs a unit of work again after it lost a
    /// race (default [`annals::DEFAULT_MAX_RETRIES`]; 0: never).
    pub fn with_transaction_retries(self, retries: u32) -> Self {
        self.reconfigure(|config| config.transaction_retries = retries)
    }

    /// Creates the schema if it is missing and applies the embedded migrations inside it, recording them in the
    /// schema's own `_sqlx_migrations` table. Safe to call from many processes at once (the migrator takes an
    /// advisory lock) and on every start-up (applied migrations are skipped).
    ///
    /// Then checks the rules the ordering guarantee relies on (see [`verify`](PostgresStore::verify)).
    ///
    /// # Errors
    /// [`Error::Migrate`] naming the schema when a migration fails or the schema holds unknown migrations;
    /// [`Error::Misconfigured`] or [`Error::Check`] from the checks.
    pub async fn migrate(&self) -> Result<(), Error> {
        crate::migrate::migrate(&self.pool, &self.inner.config.schema).await
    }

    /// Checks that the database still keeps the rules the gap-safe global order relies on (ADR 0001): the
    /// position sequence has `CACHE 1`, `NO CYCLE`, a positive increment and a maximum below 2^48; the store's
    /// functions agree on the schema's tag; sessions read at READ COMMITTED; the server is not a hot standby.
    /// [`migrate`](PostgresStore::migrate) runs it; call it on its own in processes that do not migrate.
    ///
    /// # Errors
    /// [`Error::Misconfigured`] naming the setting and the fix; [`Error::Check`] when the checks cannot run.
    pub async fn verify(&self) -> Result<(), Error> {
        crate::migrate::verify(&self.pool, &self.inner.config.schema).await
    }

    /// The connection pool, for your own queries (for example beginning a transaction for
    /// [`append_in`](PostgresStore::append_in)).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema the store lives in.
    pub fn schema(&self) -> &str {
        &self.inner.config.schema
    }

    /// How long a waiter waits at most before checking again without a notification.
    pub fn poll_interval(&self) -> Duration {
        self.inner.config.poll_interval
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        self.append_pooled(None, stream, expected, events, None)
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.read_stream_page(stream, from, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.read_all_page(after, limit).await
    }

    async fn visit_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        self.visit_all_rows(after, Envelope::Whole, visit).await
    }

    /// Reads only the fold's columns (`schema::LEAN_COLUMNS`): the rows are a fifth narrower, and a global fold
    /// is bound by the server producing them.
    async fn fold_all(
        &self,
        after: Position,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<Position> {
        self.visit_all_rows(after, Envelope::Lean, visit).await
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> annals::Result<()> + Send),
    ) -> annals::Result<()> {
        self.visit_stream_rows(stream, StreamVersion::FIRST, usize::MAX, &mut |event| {
            visit(&event)
        })
        .await
    }

    fn command_session(&self) -> Box<dyn annals::CommandSession + '_> {
        Box::new(crate::session::PgCommandSession {
            store: self,
            conn: None,
            read: None,
        })
    }

    async fn head(&self) -> annals::Result<Position> {
        self.safe_head().await
    }

    async fn allocated_head(&self) -> annals::Result<Position> {
        self.allocated_head_position().await
    }

    async fn find_command(
        &self,
        command_id: &annals::CommandId,
    ) -> annals::Result<Option<annals::CommandRecord>> {
        self.find_command_row(command_id).await
    }

    async fn record_command(
        &self,
        record: annals::CommandRecord,
    ) -> annals::Result<annals::CommandRecord> {
        self.record_command_row(record).await
    }

    async fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        self.wait_until_past(after, timeout).await
    }
}
