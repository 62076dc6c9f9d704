//! The owner's session on PostgreSQL: a connection of its own that holds a session-level advisory lock for as
//! long as the owning process lives.
//!
//! A lease row says who owns a projection until when; the advisory lock says whether that owner is still
//! connected. When the owner's process dies (SIGKILL, crash, a network loss the server notices) PostgreSQL ends
//! its session and frees the lock at once, so a contender that finds the lock free takes the projection over
//! without waiting for the lease to expire. The lease row stays the fence: every batch checks owner and
//! checkpoint inside its own transaction, so an owner that is alive but lost its session can never commit after
//! a takeover. An owner that hangs with its session open keeps the lock, and is bounded by the lease TTL.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::Mutex;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The first key of every owner lock (`"annl"`), so the locks show up together in `pg_locks`
/// (`classid = 1634627180`). The two-key form lives apart from one-key (`bigint`) advisory locks.
const LOCK_CLASS: i32 = 0x616e_6e6c;

/// The advisory-lock keys of `owner`: [`LOCK_CLASS`] and the owner id's last (random) 32 bits.
pub(crate) fn lock_key(owner: Uuid) -> (i32, i32) {
    let b = owner.as_bytes();
    (LOCK_CLASS, i32::from_be_bytes([b[12], b[13], b[14], b[15]]))
}

/// The dedicated connection of one owner, holding its lock.
#[derive(Debug)]
pub(crate) struct OwnerSession {
    options: PgConnectOptions,
    key: (i32, i32),
    conn: Mutex<Option<Held>>,
}

#[derive(Debug)]
struct Held {
    conn: PgConnection,
    /// Whether the lock is held (another session may hold the same key: then only the TTL protects).
    locked: bool,
}

impl OwnerSession {
    pub(crate) fn new(options: PgConnectOptions, owner: Uuid) -> Self {
        Self {
            options: options.application_name("annals-projections-owner"),
            key: lock_key(owner),
            conn: Mutex::new(None),
        }
    }

    /// Makes sure the session is connected and holds the lock: pings the connection, reconnects and locks
    /// again when it is gone. Call it before taking a lease.
    ///
    /// # Errors
    /// [`Error::Database`] (transient) when PostgreSQL cannot be reached.
    pub(crate) async fn ensure(&self) -> Result<()> {
        let mut held = self.conn.lock().await;
        if let Some(h) = held.as_mut() {
            let alive = tokio::time::timeout(Duration::from_secs(5), h.conn.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            if alive && h.locked {
                return Ok(());
            }
            if !alive {
                debug!("the owner session was lost; reconnecting");
                *held = None;
            }
        }
        let mut h = match held.take() {
            Some(h) => h,
            None => Held {
                conn: self
                    .options
                    .connect()
                    .await
                    .map_err(Error::db("connect the owner session"))?,
                locked: false,
            },
        };
        h.locked = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(self.key.0)
            .bind(self.key.1)
            .fetch_one(&mut h.conn)
            .await
            .map_err(Error::db("take the owner lock"))?;
        if !h.locked {
            warn!(
                key = ?self.key,
                "another session holds this owner's advisory lock; a takeover after a crash waits for the lease TTL"
            );
        }
        *held = Some(h);
        Ok(())
    }

    /// Runs `f` on the session's connection (connecting first if needed); a failure drops the connection so the
    /// next [`ensure`](Self::ensure) reconnects.
    pub(crate) async fn with_conn<T>(
        &self,
        f: impl AsyncFnOnce(&mut PgConnection) -> std::result::Result<T, sqlx::Error>,
        operation: &'static str,
    ) -> Result<T> {
        self.ensure().await?;
        let mut held = self.conn.lock().await;
        let Some(h) = held.as_mut() else {
            return Err(Error::Database {
                operation,
                source: sqlx::Error::PoolClosed,
            });
        };
        match f(&mut h.conn).await {
            Ok(v) => Ok(v),
            Err(source) => {
                *held = None;
                Err(Error::Database { operation, source })
            }
        }
    }
}
