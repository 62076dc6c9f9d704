//! The document read model behaves the same on memory and PostgreSQL: get, list in key order, wait for a
//! position, and a live run equals a from-scratch rebuild.

use std::time::Duration;

use annals::{EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use annals_projections::{
    BoxError, Documents, Error, Projection, ProjectionOptions, Projections, async_trait,
};
#[cfg(feature = "postgres")]
use annals_projections::{SqlProjection, SqlTx};
use serde_json::json;
#[cfg(feature = "postgres")]
use sqlx::PgPool;

use crate::support::*;

async fn live_run_matches_from_scratch(
    projections: Projections,
    store: impl EventStore + Clone + 'static,
) {
    write_events(&store, "acc", 5, 20).await;
    let (stop, handle) = spawn_run(&projections);
    let reader = projections.documents("tallies").unwrap();
    let head = store.head().await.unwrap();
    reader
        .wait_for_position(head, Duration::from_secs(20))
        .await
        .unwrap();

    let tally: Tally = reader.get("tally", "acc-3").await.unwrap().unwrap();
    assert_eq!(tally.count, 20);
    assert_eq!(tally.sum, 210);
    assert_eq!(reader.get::<Tally>("tally", "nope").await.unwrap(), None);

    // Appends while live are followed; read-your-writes via the append's position.
    let id = StreamId::new("acc-3").unwrap();
    let done = store
        .append(
            &id,
            ExpectedVersion::Any,
            vec![NewEvent::new("Deposited", json!({"amount": 1000}))],
        )
        .await
        .unwrap();
    reader
        .wait_for_position(done.last_position, Duration::from_secs(20))
        .await
        .unwrap();
    let tally: Tally = reader.get("tally", "acc-3").await.unwrap().unwrap();
    assert_eq!((tally.count, tally.sum), (21, 1210));

    // list: prefix, key order.
    let seen = reader.list::<serde_json::Value>("seen", "").await.unwrap();
    assert_eq!(seen.len(), 101);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    let tallies = reader.list::<Tally>("tally", "acc-").await.unwrap();
    let keys: Vec<&str> = tallies.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["acc-0", "acc-1", "acc-2", "acc-3", "acc-4"]);
    assert_eq!(
        reader
            .list_limit::<Tally>("tally", "acc-", 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        reader
            .list::<Tally>("tally", "zzz")
            .await
            .unwrap()
            .is_empty()
    );

    // Waiting for a position nobody has written yet times out with a clear error.
    let far = Position(done.last_position.get() + 100);
    match reader
        .wait_for_position(far, Duration::from_millis(50))
        .await
    {
        Err(Error::Lagging {
            projection,
            position,
            reached,
            ..
        }) => {
            assert_eq!(projection, "tallies");
            assert_eq!(position, far);
            assert_eq!(reached, done.last_position);
        }
        other => panic!("expected Lagging, got {other:?}"),
    }

    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert_eq!(
        untagged(snapshot(&projections).await),
        untagged(from_scratch(store).await)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_document_read_model_serves_and_matches_from_scratch() {
    let store = memory_store();
    let projections = Projections::memory(store.clone()).with(Tallies::new());
    live_run_matches_from_scratch(projections, store).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_document_read_model_serves_and_matches_from_scratch(pool: PgPool) {
    let store = pg_store(&pool).await;
    let projections = Projections::postgres(store.clone(), pool.clone()).with(Tallies::new());
    live_run_matches_from_scratch(projections, store).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_document_read_model_serves_and_matches_from_scratch() {
    let scratch = ScratchFile::new();
    let store = scratch.store().await;
    let projections = Projections::sqlite(store.clone()).with(Tallies::new());
    live_run_matches_from_scratch(projections, store).await;
}

struct Named(&'static str);

#[async_trait]
impl Projection for Named {
    fn name(&self) -> &str {
        self.0
    }
    async fn apply(&self, _: &RecordedEvent, _: &mut Documents<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

#[cfg(feature = "postgres")]
struct SqlNamed;

#[cfg(feature = "postgres")]
#[async_trait]
impl SqlProjection for SqlNamed {
    fn name(&self) -> &str {
        "sql_named"
    }
    async fn setup(&self, _: &mut SqlTx<'_>) -> Result<(), BoxError> {
        Ok(())
    }
    async fn apply(&self, _: &RecordedEvent, _: &mut SqlTx<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn bad_registrations_and_unknown_names_are_clear_errors() {
    let p = Projections::memory(memory_store())
        .with(Named("balances"))
        .with(Named("history"));
    match p.rebuild("balance").await {
        Err(e @ Error::UnknownProjection { .. }) => {
            assert_eq!(
                e.to_string(),
                "unknown projection \"balance\"; known projections: balances, history"
            );
        }
        other => panic!("expected UnknownProjection, got {other:?}"),
    }
    assert!(matches!(
        p.documents("x"),
        Err(Error::UnknownProjection { .. })
    ));

    let bad = Projections::memory(memory_store()).with(Named("Bad-Name"));
    let err = bad.status().await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidName { ref name, .. } if name == "Bad-Name"),
        "{err}"
    );

    let twice = Projections::memory(memory_store())
        .with(Named("a"))
        .with(Named("a"));
    assert!(matches!(twice.status().await, Err(Error::DuplicateName { ref name }) if name == "a"));

    #[cfg(feature = "postgres")]
    {
        let sql = Projections::memory(memory_store()).with_sql(SqlNamed);
        let err = sql.run(async {}).await.unwrap_err();
        assert!(
            matches!(err, Error::SqlNeedsPostgres { ref name } if name == "sql_named"),
            "{err}"
        );
    }
}

/// Reading ahead only changes how events are fetched: off, in pages smaller than a batch, and in pages much larger
/// than a batch (cut back into batches, across page boundaries), the rebuilt read model is the same.
async fn every_read_ahead_setting_builds_the_same_read_model(
    store: impl EventStore + Clone + 'static,
    backend: impl Fn(Tallies, ProjectionOptions) -> Projections,
) {
    write_events(&store, "ra", 7, 30).await;
    let expected = from_scratch(store.clone()).await;
    for read_ahead in [0, 3, 64] {
        let projections = backend(
            Tallies::new(),
            ProjectionOptions::new()
                .batch_size(10)
                .read_ahead(read_ahead),
        );
        projections.migrate().await.unwrap();
        let report = projections.rebuild("tallies").await.unwrap();
        assert_eq!(
            report.events,
            7 * 31,
            "read_ahead({read_ahead}) read every event once"
        );
        assert_eq!(
            untagged(snapshot(&projections).await),
            untagged(expected.clone()),
            "read_ahead({read_ahead})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_read_ahead_settings_build_the_same_read_model() {
    let store = memory_store();
    let runner_store = store.clone();
    every_read_ahead_setting_builds_the_same_read_model(store, move |p, options| {
        Projections::memory(runner_store.clone()).with_options(p, options)
    })
    .await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_read_ahead_settings_build_the_same_read_model(pool: PgPool) {
    let store = pg_store(&pool).await;
    let runner_store = store.clone();
    every_read_ahead_setting_builds_the_same_read_model(store, move |p, options| {
        Projections::postgres(runner_store.clone(), pool.clone()).with_options(p, options)
    })
    .await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_ahead_settings_build_the_same_read_model() {
    let scratch = ScratchFile::new();
    let store = scratch.store().await;
    let runner_store = store.clone();
    every_read_ahead_setting_builds_the_same_read_model(store, move |p, options| {
        Projections::sqlite(runner_store.clone()).with_options(p, options)
    })
    .await;
}
