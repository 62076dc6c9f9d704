//! The SQLite backend operated from a second connection to the file (what `bank projections ...` does from a
//! second process): status shows the running service's checkpoint, a blue/green rebuild swaps in while the
//! service keeps following, and a reset drops everything so the next run rebuilds from the first event.

use std::time::Duration;

use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
use annals_projections::{ProjectionOptions, Projections, RebuildOutcome, State};
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rebuild_and_reset_from_another_connection_while_the_service_runs() {
    let scratch = ScratchFile::new();
    let service_store = scratch.store().await;
    let tool_store = scratch.store().await;
    write_events(&service_store, "acc", 10, 20).await;
    let service = Projections::sqlite(service_store.clone()).with_options(
        Tallies::tagged("service"),
        ProjectionOptions::new().batch_size(25),
    );
    let (stop, running) = spawn_run(&service);
    eventually("the service to catch up", Duration::from_secs(30), || {
        caught_up(&service, &service_store)
    })
    .await;

    let tool = Projections::sqlite(tool_store.clone()).with_options(
        Tallies::tagged("tool"),
        ProjectionOptions::new().batch_size(25),
    );
    let status = tool.status().await.unwrap();
    let head = service_store.head().await.unwrap();
    assert_eq!(status[0].checkpoint, head, "{status:?}");
    assert_eq!(status[0].state, State::Live, "{status:?}");

    // Writes go on while the tool rebuilds; the service keeps following, then follows the new generation.
    let stream = StreamId::new("during-1").unwrap();
    for _ in 0..20 {
        service_store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("Deposited", json!({"amount": 3}))],
            )
            .await
            .unwrap();
    }
    let report = tool.rebuild("tallies").await.unwrap();
    assert_eq!(report.outcome, RebuildOutcome::Completed);
    write_events(&service_store, "after", 3, 5).await;
    eventually(
        "the service to follow the rebuilt generation",
        Duration::from_secs(30),
        || caught_up(&service, &service_store),
    )
    .await;
    let docs = snapshot(&tool).await;
    assert!(
        docs.iter()
            .any(|((c, _), v)| c == "seen" && v["by"] == "tool"),
        "the rebuilt generation is live"
    );
    assert_eq!(
        untagged(docs),
        untagged(from_scratch(service_store.clone()).await)
    );
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    tool.reset("tallies").await.unwrap();
    let status = tool.status().await.unwrap();
    assert_eq!(status[0].state, State::NotStarted, "{status:?}");
    assert!(snapshot(&tool).await.is_empty());
    let (stop, running) = spawn_run(&service);
    eventually(
        "the service to rebuild from the start",
        Duration::from_secs(30),
        || caught_up(&service, &service_store),
    )
    .await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(
        untagged(snapshot(&service).await),
        untagged(from_scratch(service_store.clone()).await)
    );
    service_store.close().await;
    tool_store.close().await;
}
