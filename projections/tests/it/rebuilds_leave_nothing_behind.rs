//! Rebuilds and replays leave nothing behind: a replay gives its lease back, a swap never silently drops what
//! users built on the read model, lists are paged, corrupt bookkeeping is an error (never a checkpoint of 0),
//! and "wait forever" does not panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals::{EventStore, Position, RecordedEvent};
#[cfg(feature = "postgres")]
use annals::{ExpectedVersion, NewEvent, StreamId};
use annals_projections::{BoxError, Documents, Projection, Projections, async_trait};
#[cfg(feature = "postgres")]
use annals_projections::{Error, FailurePolicy, ProjectionOptions};
use serde_json::json;
#[cfg(feature = "postgres")]
use sqlx::PgPool;
#[cfg(feature = "postgres")]
use uuid::Uuid;

use crate::support::*;

/// Fails on events with `"poison": true` while `broken` is set.
#[derive(Clone, Default)]
struct Fragile {
    broken: Arc<AtomicBool>,
}

#[async_trait]
impl Projection for Fragile {
    fn name(&self) -> &str {
        "fragile"
    }

    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        let payload = event.payload.to_value()?;
        if payload["poison"] == json!(true) && self.broken.load(Ordering::SeqCst) {
            return Err("still broken".into());
        }
        docs.put("seen", format!("{:020}", event.position.get()), &true)?;
        Ok(())
    }
}

#[cfg(feature = "postgres")]
async fn owner_of(pool: &PgPool, name: &str) -> Option<Uuid> {
    sqlx::query_scalar::<_, Option<Uuid>>(
        "SELECT owner FROM annals_projections.slots WHERE name = $1 AND live",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn replay_of_parked_events_releases_its_lease_whether_it_succeeds_or_not(pool: PgPool) {
    let store = pg_store(&pool).await;
    let id = StreamId::new("f-1").unwrap();
    for poison in [false, true, false] {
        store
            .append(
                &id,
                ExpectedVersion::Any,
                vec![NewEvent::new("E", json!({ "poison": poison }))],
            )
            .await
            .unwrap();
    }
    let fragile = Fragile::default();
    fragile.broken.store(true, Ordering::SeqCst);
    let projections = Projections::postgres(store.clone(), pool.clone())
        .lease_ttl(Duration::from_secs(60))
        .with_options(
            fragile.clone(),
            ProjectionOptions::new().failure_policy(FailurePolicy::park()),
        );
    let (stop, handle) = spawn_run(&projections);
    projections
        .wait_for_position(
            "fragile",
            store.head().await.unwrap(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert_eq!(owner_of(&pool, "fragile").await, None);

    // Still failing: the replay ends, and gives the lease back.
    let replay = projections.replay_parked("fragile").await.unwrap();
    assert_eq!(replay.still_failing, 1);
    assert_eq!(
        owner_of(&pool, "fragile").await,
        None,
        "lease kept after a failed replay"
    );

    // Fixed: replayed, and the lease is given back too.
    fragile.broken.store(false, Ordering::SeqCst);
    let replay = projections.replay_parked("fragile").await.unwrap();
    assert_eq!(replay.replayed, 1);
    assert_eq!(
        owner_of(&pool, "fragile").await,
        None,
        "lease kept after a replay"
    );

    // So another process's runner (60 s TTL) takes over at once.
    let other = Projections::postgres(store.clone(), pool.clone())
        .lease_ttl(Duration::from_secs(60))
        .with(fragile);
    let (stop, handle) = spawn_run(&other);
    store
        .append(
            &id,
            ExpectedVersion::Any,
            vec![NewEvent::new("E", json!({}))],
        )
        .await
        .unwrap();
    other
        .wait_for_position(
            "fragile",
            store.head().await.unwrap(),
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn swap_refuses_to_drop_a_view_over_the_read_model_and_keeps_grants(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 3, 5).await;
    let v1 = Projections::postgres(store.clone(), pool.clone()).with(Tallies::new());
    let (stop, handle) = spawn_run(&v1);
    eventually("v1 to catch up", Duration::from_secs(30), || {
        caught_up(&v1, &store)
    })
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    sqlx::raw_sql(
        "CREATE VIEW public.tally_view AS SELECT key, doc FROM rm_tallies.documents WHERE collection = 'tally'; \
         GRANT USAGE ON SCHEMA rm_tallies TO PUBLIC; GRANT SELECT ON rm_tallies.documents TO PUBLIC;",
    )
    .execute(&pool)
    .await
    .unwrap();

    let mut tallies = Tallies::new();
    tallies.version = 2;
    let v2 = Projections::postgres(store.clone(), pool.clone()).with(tallies);
    match v2.rebuild("tallies").await {
        Err(Error::SwapRefused { dependents, .. }) => {
            assert!(
                dependents.iter().any(|d| d.contains("tally_view")),
                "{dependents:?}"
            );
        }
        other => panic!("expected SwapRefused, got {other:?}"),
    }
    // Nothing was dropped: the view still reads the live (v1) read model.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM public.tally_view")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 3);
    assert_eq!(v2.status().await.unwrap()[0].stored_version, Some(1));

    // Without the view, the rebuild resumes and swaps; the grants carry over to the new generation.
    sqlx::raw_sql("DROP VIEW public.tally_view")
        .execute(&pool)
        .await
        .unwrap();
    v2.rebuild("tallies").await.unwrap();
    assert_eq!(v2.status().await.unwrap()[0].stored_version, Some(2));
    let (schema_usage, table_select): (bool, bool) = sqlx::query_as(
        "SELECT has_schema_privilege('public', 'rm_tallies', 'USAGE'), \
                has_table_privilege('public', 'rm_tallies.documents', 'SELECT')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        schema_usage && table_select,
        "grants lost: {schema_usage} {table_select}"
    );
}

async fn pages_cover_the_list(store: impl EventStore + 'static, projections: Projections) {
    write_events(&store, "acc", 1, 7).await;
    write_events(&store, "other", 1, 3).await;
    let (stop, handle) = spawn_run(&projections);
    eventually("caught up", Duration::from_secs(30), || {
        caught_up(&projections, &store)
    })
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    let reader = projections.documents("tallies").unwrap();
    let all = reader.list::<serde_json::Value>("seen", "").await.unwrap();
    assert_eq!(all.len(), 10);
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = reader
            .page::<serde_json::Value>("seen", "", after.as_deref(), 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        paged.extend(page);
    }
    assert_eq!(paged, all);
    // A prefix bounds the pages too.
    let acc = reader
        .page::<serde_json::Value>("tally", "acc", None, 10)
        .await
        .unwrap();
    assert_eq!(acc.len(), 1);
    let none = reader
        .page::<serde_json::Value>("tally", "acc", Some("acc-0"), 10)
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn memory_documents_are_listed_page_by_page() {
    let store = memory_store();
    pages_cover_the_list(
        store.clone(),
        Projections::memory(store).with(Tallies::new()),
    )
    .await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_documents_are_listed_page_by_page() {
    let scratch = ScratchFile::new();
    let store = scratch.store().await;
    pages_cover_the_list(
        store.clone(),
        Projections::sqlite(store).with(Tallies::new()),
    )
    .await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_documents_are_listed_page_by_page(pool: PgPool) {
    let store = pg_store(&pool).await;
    pages_cover_the_list(
        store.clone(),
        Projections::postgres(store, pool).with(Tallies::new()),
    )
    .await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn negative_stored_checkpoint_is_an_error_naming_table_and_column_not_a_replay_from_zero(
    pool: PgPool,
) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 2, 3).await;
    let projections = Projections::postgres(store.clone(), pool.clone()).with(Tallies::new());
    let (stop, handle) = spawn_run(&projections);
    eventually("caught up", Duration::from_secs(30), || {
        caught_up(&projections, &store)
    })
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    sqlx::query("UPDATE annals_projections.slots SET checkpoint = -5 WHERE name = 'tallies'")
        .execute(&pool)
        .await
        .unwrap();
    let reader = projections.documents("tallies").unwrap();
    let error = reader.position().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::StoredValue {
                column: "checkpoint",
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("annals_projections.slots") && text.contains("-5"),
        "{text}"
    );
    // The runner refuses too, instead of replaying everything into the live read model.
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        projections.run(std::future::pending()),
    )
    .await
    .expect("a corrupt checkpoint is not retried forever");
    assert!(matches!(ended, Err(Error::StoredValue { .. })), "{ended:?}");
}

#[tokio::test]
async fn waiting_forever_and_a_huge_lease_do_not_panic() {
    let store = memory_store();
    let projections = Projections::memory(store.clone())
        .lease_ttl(Duration::MAX)
        .with(Tallies::new());
    let (stop, handle) = spawn_run(&projections);
    write_events(&store, "acc", 1, 2).await;
    let head = store.head().await.unwrap();
    let reached = projections
        .documents("tallies")
        .unwrap()
        .wait_for_position(head, Duration::MAX)
        .await
        .unwrap();
    assert!(reached >= head && head > Position::START);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}
