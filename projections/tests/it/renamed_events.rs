//! An event renamed by its upcaster (`MoneyAdded` became `MoneyDeposited`) reaches the projections that list its
//! new name, on every path: catch-up, live, rebuild and the replay of a parked event; on both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals::{
    BoxError as CoreBoxError, EventStore, ExpectedVersion, NewEvent, Payload, RecordedEvent,
    StreamId,
};
use annals_projections::{
    BoxError, Documents, FailurePolicy, Projection, ProjectionOptions, Projections, async_trait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
#[cfg(feature = "postgres")]
use sqlx::PgPool;

use crate::support::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    #[serde(rename = "MoneyDeposited")]
    Deposited { amount: u64 },
}

impl annals::Event for AccountEvent {
    fn upcast(
        event_type: &str,
        _schema_version: u32,
        payload: &Payload,
    ) -> Result<Option<(String, Value)>, CoreBoxError> {
        match event_type {
            // v1 called it "MoneyAdded".
            "MoneyAdded" => Ok(Some(("MoneyDeposited".into(), payload.to_value()?))),
            _ => Ok(None),
        }
    }
}

/// Sums deposits; lists only the current name. Fails on a deposit of 13 while `broken` is set.
#[derive(Clone, Default)]
struct Deposits {
    broken: Arc<AtomicBool>,
}

#[async_trait]
impl Projection for Deposits {
    fn name(&self) -> &str {
        "deposits"
    }

    fn event_types(&self) -> &[&str] {
        &["MoneyDeposited"]
    }

    async fn apply(&self, event: &RecordedEvent, docs: &mut Documents<'_>) -> Result<(), BoxError> {
        assert_eq!(
            event.event_type, "MoneyDeposited",
            "projections see the current name"
        );
        let AccountEvent::Deposited { amount } = event.decode::<AccountEvent>()?;
        if amount == 13 && self.broken.load(Ordering::SeqCst) {
            return Err("unlucky".into());
        }
        let sum = docs.get::<u64>("sum", "all").await?.unwrap_or(0);
        docs.put("sum", "all", &(sum + amount))?;
        Ok(())
    }
}

async fn deposit(store: &dyn EventStore, name: &str, amount: u64) {
    let id = StreamId::new("acc-1").unwrap();
    store
        .append(
            &id,
            ExpectedVersion::Any,
            vec![NewEvent::new(name, json!({ "amount": amount }))],
        )
        .await
        .unwrap();
}

async fn sum(projections: &Projections) -> u64 {
    let head = projections.status().await.unwrap()[0].head;
    let reader = projections.documents("deposits").unwrap();
    reader
        .wait_for_position(head, Duration::from_secs(30))
        .await
        .unwrap();
    reader.get("sum", "all").await.unwrap().unwrap_or(0)
}

async fn renamed_events_reach_the_projection(
    store: impl EventStore + Clone + 'static,
    projections: Projections,
) {
    let projection = Deposits::default();
    let projections = projections.upcasting::<AccountEvent>().with_options(
        projection.clone(),
        ProjectionOptions::new().failure_policy(FailurePolicy::park()),
    );
    // Catch-up: stored old-name and new-name events before the runner starts.
    deposit(&store, "MoneyAdded", 1).await;
    deposit(&store, "MoneyDeposited", 2).await;
    let (stop, handle) = spawn_run(&projections);
    assert_eq!(sum(&projections).await, 3);
    // Live.
    deposit(&store, "MoneyAdded", 10).await;
    assert_eq!(sum(&projections).await, 13);
    // Parked, then replayed after the fix.
    projection.broken.store(true, Ordering::SeqCst);
    deposit(&store, "MoneyAdded", 13).await;
    assert_eq!(sum(&projections).await, 13);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert_eq!(projections.parked("deposits").await.unwrap().len(), 1);
    projection.broken.store(false, Ordering::SeqCst);
    let replay = projections.replay_parked("deposits").await.unwrap();
    assert_eq!((replay.replayed, replay.still_failing), (1, 0));
    assert_eq!(sum(&projections).await, 26);
    // Rebuild.
    projections.rebuild("deposits").await.unwrap();
    assert_eq!(sum(&projections).await, 26);
}

#[tokio::test]
async fn memory_renamed_events_reach_projections_on_every_path() {
    let store = memory_store();
    renamed_events_reach_the_projection(store.clone(), Projections::memory(store)).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_renamed_events_reach_projections_on_every_path(pool: PgPool) {
    let store = pg_store(&pool).await;
    renamed_events_reach_the_projection(store.clone(), Projections::postgres(store, pool)).await;
}
