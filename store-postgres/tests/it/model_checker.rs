//! The randomized model checker (`annals::testkit::checker`) on PostgreSQL: the default schema, a tenant schema
//! and group commit, with the store's own paths (appends in a caller's transaction, units of work) and killed
//! connections.

use std::sync::Arc;

use annals::testkit::checker::{
    Checker, Config, ConnectionKiller, ExtraPath, Finish, PathReport, PathRequest,
};
use annals::{EventStore, async_trait};
use annals_postgres::{GroupCommit, GroupCommitStore, PostgresStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;

use crate::support::{big_pool, store, tenant};

/// Appends with `append_in` inside a transaction of the test's own, committed or rolled back after them.
struct CallersTransaction(PostgresStore);

#[async_trait]
impl ExtraPath for CallersTransaction {
    fn name(&self) -> &str {
        "append_in"
    }

    fn max_appends(&self) -> usize {
        2
    }

    async fn run(&self, request: PathRequest) -> PathReport {
        let mut tx = match self.0.pool().begin().await {
            Ok(tx) => tx,
            Err(error) => return refused(format!("BEGIN failed: {error}")),
        };
        let mut appends = Vec::new();
        for append in request.appends {
            let result = self
                .0
                .append_in(&mut tx, &append.stream, append.expected, append.events)
                .await;
            let clean = matches!(result, Ok(_) | Err(annals::Error::Conflict { .. }));
            appends.push(result);
            if !clean {
                // Any other error aborted the transaction: roll it back.
                drop(tx);
                return PathReport {
                    appends,
                    finish: Finish::Refused("an append failed; rolled back".to_owned()),
                };
            }
        }
        if !request.commit {
            let finish = match tx.rollback().await {
                Ok(()) => Finish::RolledBack,
                Err(error) => Finish::Refused(format!("ROLLBACK failed: {error}")),
            };
            return PathReport { appends, finish };
        }
        let finish = match tx.commit().await {
            Ok(()) => Finish::Committed,
            Err(sqlx::Error::Database(error)) => Finish::Refused(error.to_string()),
            Err(error) => Finish::Unknown(error.to_string()),
        };
        PathReport { appends, finish }
    }
}

/// Appends through a `UnitOfWork`, committed (sometimes dropping the first commit future at an await and
/// committing again) or dropped.
struct Unit(PostgresStore);

#[async_trait]
impl ExtraPath for Unit {
    fn name(&self) -> &str {
        "unit_of_work"
    }

    fn max_appends(&self) -> usize {
        2
    }

    async fn run(&self, request: PathRequest) -> PathReport {
        let unit = self.0.unit_of_work();
        let mut appends = Vec::new();
        for append in request.appends {
            appends.push(
                unit.append(&append.stream, append.expected, append.events)
                    .await,
            );
        }
        if !request.commit {
            drop(unit);
            return PathReport {
                appends,
                finish: Finish::RolledBack,
            };
        }
        let first = if request.interrupt_commit {
            let yields = request.interrupt_yields;
            tokio::select! {
                biased;
                committed = unit.commit() => Some(committed),
                () = async { for _ in 0..yields { tokio::task::yield_now().await } } => None,
            }
        } else {
            Some(unit.commit().await)
        };
        let finish = match first {
            Some(Ok(())) => Finish::Committed,
            Some(Err(error @ annals::Error::UnitAborted { .. })) => {
                Finish::Refused(error.to_string())
            }
            Some(Err(error)) => Finish::Unknown(error.to_string()),
            // The first commit was dropped at an await: commit again, as a caller retrying would. Unless that
            // succeeds, what the dropped one did is unknown (it may have been dropped while `COMMIT` was in
            // flight, which the unit then reports as a `UnitAborted` of unknown outcome).
            None => match unit.commit().await {
                Ok(()) => Finish::Committed,
                Err(error) => Finish::Unknown(error.to_string()),
            },
        };
        PathReport { appends, finish }
    }
}

fn refused(reason: String) -> PathReport {
    PathReport {
        appends: Vec::new(),
        finish: Finish::Refused(reason),
    }
}

/// Terminates a random backend connected to the test's database, never its own connection.
struct Killer(Mutex<PgConnection>);

#[async_trait]
impl ConnectionKiller for Killer {
    async fn kill(&self, pick: u64) -> Result<usize, String> {
        let mut conn = self.0.lock().await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend' ORDER BY md5(pid::text || $1) LIMIT 1) AS k",
        )
        .bind(pick.to_string())
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
        Ok(usize::try_from(killed).unwrap_or_default())
    }
}

/// Runs the checker on `under_test`, with `store`'s own paths and a killer on its own connection.
async fn check(
    label: &str,
    under_test: Arc<dyn EventStore>,
    store: &PostgresStore,
    connect: PgConnectOptions,
) {
    let config = Config::from_env(label).unwrap();
    let killer = Killer(Mutex::new(
        PgConnection::connect_with(&connect).await.unwrap(),
    ));
    let outcome = Checker::new(under_test, config)
        .with_path(Arc::new(CallersTransaction(store.clone())))
        .with_path(Arc::new(Unit(store.clone())))
        .with_killer(Arc::new(killer))
        .run()
        .await;
    store.pool().close().await;
    match outcome {
        Ok(summary) => eprintln!("{summary}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// Connections for 8 clients, their transactions, 2 followers and the store's own.
const CONNECTIONS: u32 = 16;

#[sqlx::test(migrations = false)]
async fn model_checker_postgres_default_schema(_: PgPoolOptions, connect: PgConnectOptions) {
    let store = store(big_pool(connect.clone(), CONNECTIONS).await).await;
    check(
        "model_checker_postgres_default_schema",
        Arc::new(store.clone()),
        &store,
        connect,
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn model_checker_postgres_tenant_schema(_: PgPoolOptions, connect: PgConnectOptions) {
    let store = tenant(big_pool(connect.clone(), CONNECTIONS).await, "Tenant_7").await;
    check(
        "model_checker_postgres_tenant_schema",
        Arc::new(store.clone()),
        &store,
        connect,
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn model_checker_postgres_group_commit(_: PgPoolOptions, connect: PgConnectOptions) {
    let store = store(big_pool(connect.clone(), CONNECTIONS).await).await;
    let grouped = GroupCommitStore::new(store.clone(), GroupCommit::default());
    check(
        "model_checker_postgres_group_commit",
        Arc::new(grouped),
        &store,
        connect,
    )
    .await;
}
