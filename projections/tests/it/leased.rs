//! Leased projections (`Projections::leased`, `Lease`): the holder commits its checkpoint in a short fenced
//! transaction; on PostgreSQL a contender takes the lease over only once it expired, never merely because the
//! holder's session ended, and never before the holder's own `valid_until`; the stale holder's commit is refused.

use std::time::{Duration, Instant};

use annals::{EventStore, Position};
use annals_projections::{Error, Projections};
use sqlx::PgPool;

use crate::support::*;

#[tokio::test]
async fn a_leased_projection_commits_its_checkpoint_and_documents_on_the_memory_backend() {
    let store = memory_store();
    write_events(&store, "account", 2, 3).await;
    let projections = Projections::memory(store.clone()).leased("relay");
    let mut lease = projections.try_lease("relay").await.unwrap().unwrap();
    assert_eq!(lease.checkpoint(), Position::START);
    assert!(lease.remaining() > Duration::ZERO);
    let head = store.head().await.unwrap();
    let doc = ("c".to_owned(), "k".to_owned(), serde_json::json!({"n": 6}));
    lease.commit(head, vec![doc], true).await.unwrap();
    assert_eq!(lease.checkpoint(), head);
    let status = projections.status().await.unwrap();
    assert_eq!((status[0].checkpoint, status[0].lag), (head, 0));
    let n: Option<serde_json::Value> = projections
        .documents("relay")
        .unwrap()
        .get("c", "k")
        .await
        .unwrap();
    assert_eq!(n, Some(serde_json::json!({"n": 6})));
    assert!(matches!(
        projections.rebuild("relay").await,
        Err(Error::Config { .. })
    ));
    lease.release().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_leased_projection_is_taken_over_only_after_its_lease_expired(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "account", 1, 3).await;
    let ttl = Duration::from_secs(2);
    let first = Projections::postgres(store.clone(), pool.clone())
        .lease_ttl(ttl)
        .leased("relay");
    let second = Projections::postgres(store.clone(), pool.clone())
        .lease_ttl(ttl)
        .leased("relay");
    let mut held = first.try_lease("relay").await.unwrap().unwrap();
    held.commit(Position(1), Vec::new(), false).await.unwrap();
    assert!(second.try_lease("relay").await.unwrap().is_none());

    // The holder's session ends (as when its network to PostgreSQL fails): a runner would take over now, a
    // leased projection's contender waits for the lease to expire.
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'annals-projections-owner'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(ended >= 1);
    assert!(second.try_lease("relay").await.unwrap().is_none());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut taken = loop {
        if let Some(lease) = second.try_lease("relay").await.unwrap() {
            break lease;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        Instant::now() >= held.valid_until(),
        "taken over before the holder's own deadline"
    );
    assert_eq!(taken.checkpoint(), Position(1));
    assert!(matches!(
        held.commit(Position(2), Vec::new(), false).await,
        Err(Error::LostOwnership { .. })
    ));
    taken.commit(Position(3), Vec::new(), true).await.unwrap();
    taken.release().await.unwrap();
}
