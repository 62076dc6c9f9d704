//! The replay check of `append_events` (are these event ids stored already?) probes the event-id index however
//! small the table was when a session first ran it. As a static statement its plan was cached per session: made
//! while the table was tiny it stayed a sequential scan as the table grew, and every checked append (each of a
//! group commit's, and each after a version conflict) read the whole table (migration 0010).

use annals::{EventStore, ExpectedVersion};
use sqlx::{Connection, PgConnection, PgPool};

use crate::support::{event, stream, tenant};

/// One call of `append_events` that conflicts (the stream is at version 1, not 5), so the replay check runs;
/// returns the outcome (1: conflict) and the sequential scans of `events` the call's transaction made.
async fn conflicting_append(conn: &mut PgConnection) -> (i16, i64) {
    let mut tx = conn.begin().await.unwrap();
    let outcome: i16 = sqlx::query_scalar(
        "SELECT o_outcome FROM replay.append_events('s-1', 5, false, ARRAY[gen_random_uuid()], \
         ARRAY['ThingHappened'], ARRAY[1], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb], NULL)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let scans: i64 =
        sqlx::query_scalar("SELECT pg_stat_get_xact_numscans('replay.events'::regclass)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.rollback().await.unwrap();
    (outcome, scans)
}

#[sqlx::test(migrations = false)]
async fn the_replay_check_does_not_scan_a_table_that_grew_after_the_session_first_ran_it(
    pool: PgPool,
) {
    let store = tenant(pool.clone(), "replay").await;
    // No autovacuum: its ANALYZE would replace a cached plan whenever it happened to run.
    sqlx::query("ALTER TABLE replay.events SET (autovacuum_enabled = off)")
        .execute(&pool)
        .await
        .unwrap();
    store
        .append(&stream("s-1"), ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let mut session = pool.acquire().await.unwrap().detach();
    // More calls than PostgreSQL's five custom plans, while the table is one page: a cached plan is made now.
    for _ in 0..8 {
        assert_eq!(conflicting_append(&mut session).await.0, 1);
    }
    for batch in 0..20 {
        let events = (0..500).map(|n| event(batch * 500 + n)).collect();
        store
            .append(
                &stream(&format!("grow-{batch}")),
                ExpectedVersion::NoStream,
                events,
            )
            .await
            .unwrap();
    }
    let (outcome, scans) = conflicting_append(&mut session).await;
    assert_eq!(outcome, 1, "the append still conflicts");
    assert_eq!(
        scans, 0,
        "the replay check scanned the 10,001-event table sequentially"
    );
    session.close().await.unwrap();
}
