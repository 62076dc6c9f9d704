//! Blue/green rebuilds: the old read model serves reads until the switch, writes continue throughout, the
//! result equals a from-scratch rebuild; rebuilds are cancellable and resumable; a version bump rebuilds.

#[cfg(feature = "postgres")]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
use annals_projections::{ProjectionOptions, Projections, RebuildOutcome};
#[cfg(feature = "postgres")]
use annals_projections::{RebuildOptions, State};
use serde_json::json;
#[cfg(feature = "postgres")]
use sqlx::PgPool;

use crate::support::*;

/// Appends a deposit every few milliseconds until stopped.
fn background_writer(
    store: impl EventStore + 'static,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<u64>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            if stopped.try_recv().is_ok() {
                return n;
            }
            let id = StreamId::new(format!("live-{}", n % 7)).unwrap();
            store
                .append(
                    &id,
                    ExpectedVersion::Any,
                    vec![NewEvent::new("Deposited", json!({"amount": 2}))],
                )
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    (stop, handle)
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_rebuild_while_writes_continue_serves_old_until_the_switch(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 20, 20).await;
    let service =
        Projections::postgres(store.clone(), pool.clone()).with(Tallies::tagged("service"));
    let (stop_service, service_task) = spawn_run(&service);
    eventually("the service to catch up", Duration::from_secs(30), || {
        caught_up(&service, &store)
    })
    .await;
    let (stop_writer, writer) = background_writer(store.clone());

    // The rebuild runs in "another process" (another Projections on its own pool owner id).
    let mut slow = Tallies::tagged("rebuild");
    slow.delay = Duration::from_millis(1);
    let tool = Projections::postgres(store.clone(), pool.clone())
        .with_options(slow, ProjectionOptions::new().batch_size(20));
    let rebuild = tokio::spawn({
        let tool = tool.clone();
        async move { tool.rebuild("tallies").await }
    });

    // While it runs, reads come from the old generation (every marker written by the service's runner), and the
    // status says it is rebuilding.
    eventually(
        "the rebuild to be under way",
        Duration::from_secs(30),
        || {
            let tool = tool.clone();
            async move {
                matches!(
                    tool.status().await.unwrap()[0].state,
                    State::Rebuilding { .. }
                )
            }
        },
    )
    .await;
    let during = snapshot(&service).await;
    assert!(during.len() > 400);
    assert!(
        during
            .iter()
            .filter(|((c, _), _)| c == "seen")
            .all(|(_, v)| v["by"] == "service")
    );

    let report = rebuild.await.unwrap().unwrap();
    assert_eq!(report.outcome, RebuildOutcome::Completed);
    assert!(report.events >= 420);

    // After the switch the new generation serves (its markers), and the service's runner continues on it.
    let after = snapshot(&service).await;
    assert!(
        after
            .iter()
            .any(|((c, _), v)| c == "seen" && v["by"] == "rebuild")
    );
    let written_after_switch = store.head().await.unwrap();
    eventually(
        "the service to follow the new generation",
        Duration::from_secs(30),
        || {
            let service = service.clone();
            async move {
                service
                    .documents("tallies")
                    .unwrap()
                    .position()
                    .await
                    .unwrap()
                    >= written_after_switch
            }
        },
    )
    .await;
    stop_writer.send(()).unwrap();
    assert!(writer.await.unwrap() > 0);
    eventually("the service to catch up", Duration::from_secs(30), || {
        caught_up(&service, &store)
    })
    .await;
    stop_service.send(()).unwrap();
    service_task.await.unwrap().unwrap();
    assert_eq!(
        untagged(snapshot(&service).await),
        untagged(from_scratch(store).await)
    );

    // The old generation is gone: one slot, no leftover schema.
    let slots: i64 =
        sqlx::query_scalar("SELECT count(*) FROM annals_projections.slots WHERE name = 'tallies'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(slots, 1);
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'rm_tallies%' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(schemas, ["rm_tallies"]);
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_cancelled_rebuild_resumes_from_its_checkpoint(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 10, 50).await;
    let projections = Projections::postgres(store.clone(), pool.clone())
        .with_options(Tallies::new(), ProjectionOptions::new().batch_size(25));
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let cancel = Arc::new(Mutex::new(Some(cancel)));
    let report = projections
        .rebuild_with(
            "tallies",
            RebuildOptions::new()
                .on_progress(move |p| {
                    if p.done >= 200
                        && let Some(c) = cancel.lock().unwrap().take()
                    {
                        let _ = c.send(());
                    }
                })
                .cancel_on(async {
                    let _ = cancelled.await;
                }),
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, RebuildOutcome::Cancelled);
    assert!(
        report.checkpoint.get() >= 200 && report.checkpoint.get() < 510,
        "{report:?}"
    );
    // Nothing is live yet.
    assert_eq!(
        projections.status().await.unwrap()[0].state,
        State::NotStarted
    );

    let resumed = projections.rebuild("tallies").await.unwrap();
    assert_eq!(resumed.outcome, RebuildOutcome::Completed);
    assert_eq!(resumed.resumed_from, report.checkpoint);
    assert!(resumed.events < 510);
    assert_eq!(
        untagged(snapshot(&projections).await),
        untagged(from_scratch(store).await)
    );
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_version_bump_rebuilds_when_run(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 5, 10).await;
    let v1 = Projections::postgres(store.clone(), pool.clone()).with(Tallies::new());
    let (stop, task) = spawn_run(&v1);
    eventually("v1 to catch up", Duration::from_secs(30), || {
        caught_up(&v1, &store)
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let mut tallies = Tallies::new();
    tallies.version = 2;
    let v2 = Projections::postgres(store.clone(), pool.clone()).with(tallies);
    assert_eq!(v2.status().await.unwrap()[0].stored_version, Some(1));
    let (stop, task) = spawn_run(&v2);
    eventually("v2 to be live", Duration::from_secs(30), || {
        let v2 = v2.clone();
        async move { v2.status().await.unwrap()[0].stored_version == Some(2) }
    })
    .await;
    eventually("v2 to catch up", Duration::from_secs(30), || {
        caught_up(&v2, &store)
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let docs = snapshot(&v2).await;
    assert!(
        docs.iter()
            .filter(|((c, _), _)| c == "seen")
            .all(|(_, v)| v["v"] == 2)
    );

    // Old code refuses to touch the newer read model.
    let err = v1.run(std::future::pending()).await.unwrap_err();
    assert!(
        matches!(
            err,
            annals_projections::Error::VersionAhead {
                stored: 2,
                code: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_rebuild_while_the_runner_follows_equals_from_scratch() {
    let store = memory_store();
    let projections = Projections::memory(store.clone())
        .with_options(Tallies::new(), ProjectionOptions::new().batch_size(10));
    rebuild_while_the_runner_follows(store, projections).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rebuild_while_the_runner_follows_equals_from_scratch() {
    let scratch = ScratchFile::new();
    let store = scratch.store().await;
    let projections = Projections::sqlite(store.clone())
        .with_options(Tallies::new(), ProjectionOptions::new().batch_size(10));
    rebuild_while_the_runner_follows(store, projections).await;
}

async fn rebuild_while_the_runner_follows(
    store: impl EventStore + Clone + 'static,
    projections: Projections,
) {
    write_events(&store, "acc", 20, 20).await;
    let (stop, task) = spawn_run(&projections);
    eventually("the runner to catch up", Duration::from_secs(30), || {
        caught_up(&projections, &store)
    })
    .await;
    let (stop_writer, writer) = background_writer(store.clone());
    let report = projections.rebuild("tallies").await.unwrap();
    assert_eq!(report.outcome, RebuildOutcome::Completed);
    stop_writer.send(()).unwrap();
    writer.await.unwrap();
    eventually(
        "the runner to follow the new generation",
        Duration::from_secs(30),
        || caught_up(&projections, &store),
    )
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(
        untagged(snapshot(&projections).await),
        untagged(from_scratch(store).await)
    );
}
