//! The repository on PostgreSQL: an append whose connection is killed is retried with the same event ids (with
//! backoff, a bounded number of times), so it is written once; when every try is killed, the error says the
//! outcome is unknown and a retry under the same command id is safe.

use std::time::Duration;

use annals::testkit::command_ids::{Tally, TallyCommand};
use annals::{CommandError, CommandId, EventStore, Repository, StreamVersion};
use sqlx::{AssertSqlSafe, Executor, PgPool};

use crate::support::{
    APPENDING, eventually, kill_blocked_appends_until_finished, store, stream,
    until_blocked_on_lock,
};

/// Waits for an append blocked behind the test's table lock (one not killed before: a killed backend may linger in
/// `pg_stat_activity` for a moment), and kills its connection.
async fn kill_the_blocked_append(pool: &PgPool, killed: &mut Vec<i32>) {
    let find_pid = || async {
        sqlx::query_scalar::<_, i32>(AssertSqlSafe(format!(
            "SELECT pid FROM pg_stat_activity WHERE {APPENDING} AND state = 'active' \
             AND datname = current_database() AND pid <> ALL ($1) LIMIT 1"
        )))
        .bind(killed.clone())
        .fetch_optional(pool)
        .await
        .unwrap()
    };
    eventually("the append is running", Duration::from_secs(30), || async {
        find_pid().await.is_some()
    })
    .await;
    let pid = find_pid().await.unwrap();
    until_blocked_on_lock(pool, pid).await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(pool)
        .await
        .unwrap();
    killed.push(pid);
}

#[sqlx::test(migrations = false)]
async fn a_command_whose_connection_is_killed_mid_append_is_written_once(pool: PgPool) {
    let store = store(pool.clone()).await;
    let tallies = Repository::<Tally>::new(store.clone())
        .with_unavailable_retries(5, Duration::from_millis(20));
    let id = stream("tally-1");
    tallies.execute(&id, &TallyCommand::Add(1)).await.unwrap();

    let mut blocker = pool.begin().await.unwrap();
    blocker
        .execute("LOCK TABLE annals.events IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let command = {
        let (tallies, id) = (tallies.clone(), id.clone());
        tokio::spawn(async move {
            let command_id = CommandId::new("killed-once").unwrap();
            tallies
                .execute_once(&id, &command_id, &TallyCommand::Add(2))
                .await
        })
    };
    kill_the_blocked_append(&pool, &mut Vec::new()).await;
    blocker.rollback().await.unwrap();

    let done = command.await.unwrap().unwrap();
    assert_eq!((done.version, done.state.total), (StreamVersion(2), 3));
    assert_eq!(
        store.load_stream(&id).await.unwrap().len(),
        2,
        "written once"
    );
}

#[sqlx::test(migrations = false)]
async fn an_append_killed_on_every_try_reports_an_unknown_outcome(pool: PgPool) {
    let store = store(pool.clone()).await;
    let tallies = Repository::<Tally>::new(store.clone())
        .with_unavailable_retries(2, Duration::from_millis(20));
    let id = stream("tally-1");
    let command_id = CommandId::new("killed-always").unwrap();

    let mut blocker = pool.begin().await.unwrap();
    blocker
        .execute("LOCK TABLE annals.events IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let command = {
        let (tallies, id, command_id) = (tallies.clone(), id.clone(), command_id.clone());
        tokio::spawn(async move {
            tallies
                .execute_once(&id, &command_id, &TallyCommand::Add(2))
                .await
        })
    };
    // Three tries of the repository (one, then two retries), each sent twice by the store (once more on a fresh
    // connection when its connection died): every one of them is killed.
    let kills = kill_blocked_appends_until_finished(&pool, &command).await;
    assert_eq!(
        kills, 6,
        "three repository attempts, each retried once by the store"
    );
    let err = command.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, CommandError::OutcomeUnknown { attempts: 3, command_id: Some(c), .. } if *c == command_id),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("outcome of the command on stream \"tally-1\" is unknown"),
        "{message}"
    );
    assert!(
        message.contains("retrying under the same command id"),
        "{message}"
    );
    blocker.rollback().await.unwrap();

    // Retrying under the same command id is safe: it takes effect once, then replays.
    let done = tallies
        .execute_once(&id, &command_id, &TallyCommand::Add(2))
        .await
        .unwrap();
    let again = tallies
        .execute_once(&id, &command_id, &TallyCommand::Add(2))
        .await
        .unwrap();
    assert!(!done.replayed && again.replayed);
    assert_eq!(store.load_stream(&id).await.unwrap().len(), 1);
}
