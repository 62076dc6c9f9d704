//! Stateful projections (`StatefulProjection`, `Snapshots`) see each event with its aggregate's state after it,
//! folded by the aggregate's own `apply`, keep one snapshot per stream that `DocumentReader::snapshot` reads back,
//! give the same read model whatever the batch size and after a rebuild, leave a parked event out of the state,
//! and refuse a snapshot that no longer fits the aggregate with an error naming the stream; on both backends.

use std::time::Duration;

use annals::{Aggregate, EventStore, ExpectedVersion, NewEvent, Position, Recorded, StreamId};
use annals_projections::{
    BoxError, Documents, Error, ProjectionOptions, Projections, STATE_COLLECTION, Snapshot,
    Snapshots, StatefulProjection, async_trait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
#[cfg(feature = "postgres")]
use sqlx::PgPool;

use crate::support::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum PotEvent {
    #[serde(rename = "PotOpened")]
    Opened { owner: String },
    #[serde(rename = "PotFilled")]
    Filled { amount: u64 },
}

impl annals::Event for PotEvent {}

/// The aggregate: who owns the pot and what it holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Pot {
    owner: String,
    total: u64,
    fills: u32,
}

impl Aggregate for Pot {
    type Command = ();
    type Event = PotEvent;
    type Error = std::convert::Infallible;

    fn decide(&self, (): &()) -> Result<Vec<PotEvent>, Self::Error> {
        Ok(Vec::new())
    }

    fn apply(&mut self, event: &PotEvent) {
        match event {
            PotEvent::Opened { owner } => self.owner.clone_from(owner),
            PotEvent::Filled { amount } => {
                self.total += amount;
                self.fills += 1;
            }
        }
    }
}

/// Writes, per event, the pot's total after it: what a running-balance history needs.
struct Totals;

#[async_trait]
impl StatefulProjection for Totals {
    type Aggregate = Pot;

    fn name(&self) -> &str {
        "totals"
    }

    async fn apply(
        &self,
        event: Recorded<'_, PotEvent>,
        pot: &Pot,
        docs: &mut Documents<'_>,
    ) -> Result<(), BoxError> {
        let key = format!("{}/{:020}", event.stream_id(), event.position().get());
        docs.put("after", key, &pot.total)?;
        Ok(())
    }
}

/// Two pots written in interleaved order, with an event of another type in between; returns the head.
async fn write_pots(store: &dyn EventStore) -> Position {
    let mut head = Position::START;
    let events = [
        ("pot-a", NewEvent::new("PotOpened", json!({"owner": "Ada"}))),
        ("pot-b", NewEvent::new("PotOpened", json!({"owner": "Bo"}))),
        ("pot-a", NewEvent::new("PotFilled", json!({"amount": 5}))),
        ("pot-b", NewEvent::new("Unrelated", json!({}))),
        ("pot-b", NewEvent::new("PotFilled", json!({"amount": 2}))),
        ("pot-a", NewEvent::new("PotFilled", json!({"amount": 7}))),
    ];
    for (stream, event) in events {
        let stream = StreamId::new(stream).unwrap();
        head = store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap()
            .last_position;
    }
    head
}

/// Runs `projections` until the read models `names` reach `head`, then stops it.
async fn run_to(projections: &Projections, head: Position, names: &[&str]) {
    let (stop, handle) = spawn_run(projections);
    for name in names {
        projections
            .documents(name)
            .unwrap()
            .wait_for_position(head, Duration::from_secs(30))
            .await
            .unwrap();
    }
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

/// Every document of a read model's collection, as JSON.
async fn docs_of(projections: &Projections, name: &str, collection: &str) -> Vec<(String, Value)> {
    projections
        .documents(name)
        .unwrap()
        .list::<Value>(collection, "")
        .await
        .unwrap()
}

async fn the_state_after_each_event_reaches_the_projection(
    store: impl EventStore + Clone + 'static,
    projections: Projections,
    batch_size: usize,
) {
    let options = || ProjectionOptions::new().batch_size(batch_size);
    let projections = projections
        .stateful_with_options(Totals, options())
        .stateful_with_options(Snapshots::<Pot>::new("pots"), options());
    let head = write_pots(&store).await;
    run_to(&projections, head, &["totals", "pots"]).await;

    let totals: Vec<(String, u64)> = projections
        .documents("totals")
        .unwrap()
        .list("after", "")
        .await
        .unwrap();
    let key = |stream: &str, position: u64| format!("{stream}/{position:020}");
    assert_eq!(
        totals,
        [
            (key("pot-a", 1), 0),
            (key("pot-a", 3), 5),
            (key("pot-a", 6), 12),
            (key("pot-b", 2), 0),
            // Position 4 is of another type: skipped, and the state did not see it.
            (key("pot-b", 5), 2),
        ]
    );

    let pots = projections.documents("pots").unwrap();
    let a = pots
        .snapshot::<Pot>(&StreamId::new("pot-a").unwrap())
        .await
        .unwrap();
    let expected = Snapshot {
        version: annals::StreamVersion(3),
        position: Position(6),
        state: Pot {
            owner: "Ada".into(),
            total: 12,
            fills: 2,
        },
    };
    assert_eq!(a, Some(expected));
    let b = pots
        .snapshot::<Pot>(&StreamId::new("pot-b").unwrap())
        .await
        .unwrap()
        .unwrap();
    // pot-b's version 2 is the unrelated event: the snapshot is as of version 3.
    assert_eq!((b.version.get(), b.state.total, b.state.fills), (3, 2, 1));
    let none = pots
        .snapshot::<Pot>(&StreamId::new("pot-c").unwrap())
        .await
        .unwrap();
    assert_eq!(none, None);

    // A rebuild from scratch gives the same documents, snapshots included.
    let before = (
        docs_of(&projections, "totals", "after").await,
        docs_of(&projections, "pots", STATE_COLLECTION).await,
    );
    projections.rebuild("totals").await.unwrap();
    projections.rebuild("pots").await.unwrap();
    let after = (
        docs_of(&projections, "totals", "after").await,
        docs_of(&projections, "pots", STATE_COLLECTION).await,
    );
    assert_eq!(before, after);
}

#[tokio::test]
async fn memory_a_stateful_projection_sees_the_state_after_each_event() {
    for batch_size in [1, 500] {
        let store = memory_store();
        let projections = Projections::memory(store.clone());
        the_state_after_each_event_reaches_the_projection(store, projections, batch_size).await;
    }
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_a_stateful_projection_sees_the_state_after_each_event_in_one_batch(pool: PgPool) {
    let store = pg_store(&pool).await;
    let projections = Projections::postgres(store.clone(), pool);
    the_state_after_each_event_reaches_the_projection(store, projections, 500).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_a_stateful_projection_sees_the_state_after_each_event_batch_by_batch(
    pool: PgPool,
) {
    let store = pg_store(&pool).await;
    let projections = Projections::postgres(store.clone(), pool);
    the_state_after_each_event_reaches_the_projection(store, projections, 1).await;
}

/// The same snapshots read as another state type: the stored JSON does not fit it.
#[derive(Debug, Deserialize)]
struct Renamed {
    #[serde(rename = "holder")]
    _holder: String,
}

async fn a_snapshot_that_does_not_fit_names_its_stream(
    store: impl EventStore + Clone + 'static,
    projections: Projections,
) {
    let projections = projections.stateful(Snapshots::<Pot>::new("pots"));
    let head = write_pots(&store).await;
    run_to(&projections, head, &["pots"]).await;
    let pots = projections.documents("pots").unwrap();
    let error = pots
        .snapshot::<Renamed>(&StreamId::new("pot-a").unwrap())
        .await
        .unwrap_err();
    match &error {
        Error::Document {
            collection, key, ..
        } => {
            assert_eq!(collection, STATE_COLLECTION);
            assert_eq!(key, "pot-a");
        }
        other => panic!("expected Error::Document, got {other:?}"),
    }
    assert!(error.to_string().contains("pot-a"), "{error}");
}

#[tokio::test]
async fn memory_a_snapshot_that_does_not_fit_the_type_names_its_stream() {
    let store = memory_store();
    a_snapshot_that_does_not_fit_names_its_stream(store.clone(), Projections::memory(store)).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_a_snapshot_that_does_not_fit_the_type_names_its_stream(pool: PgPool) {
    let store = pg_store(&pool).await;
    a_snapshot_that_does_not_fit_names_its_stream(
        store.clone(),
        Projections::postgres(store, pool),
    )
    .await;
}

/// Refuses the fill of 5 (as a projection whose document for it cannot be stored would).
struct RefusesFive;

#[async_trait]
impl StatefulProjection for RefusesFive {
    type Aggregate = Pot;

    fn name(&self) -> &str {
        "pots"
    }

    async fn apply(
        &self,
        event: Recorded<'_, PotEvent>,
        _pot: &Pot,
        _docs: &mut Documents<'_>,
    ) -> Result<(), BoxError> {
        match event.event() {
            PotEvent::Filled { amount: 5 } => Err("five is refused".into()),
            _ => Ok(()),
        }
    }
}

async fn a_parked_event_is_not_folded_into_the_snapshot(
    store: impl EventStore + Clone + 'static,
    projections: Projections,
) {
    let options =
        ProjectionOptions::new().failure_policy(annals_projections::FailurePolicy::park());
    let projections = projections.stateful_with_options(RefusesFive, options);
    let head = write_pots(&store).await;
    run_to(&projections, head, &["pots"]).await;
    let pots = projections.documents("pots").unwrap();
    let parked = projections.parked("pots").await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    // pot-a: opened, filled 5 (parked), filled 7: the state lacks the parked fill, as the read model does.
    let a = pots
        .snapshot::<Pot>(&StreamId::new("pot-a").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.version.get(), a.state.total, a.state.fills), (3, 7, 1));
}

#[tokio::test]
async fn memory_a_parked_event_is_not_folded_into_the_snapshot() {
    let store = memory_store();
    a_parked_event_is_not_folded_into_the_snapshot(store.clone(), Projections::memory(store)).await;
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn postgres_a_parked_event_is_not_folded_into_the_snapshot(pool: PgPool) {
    let store = pg_store(&pool).await;
    a_parked_event_is_not_folded_into_the_snapshot(
        store.clone(),
        Projections::postgres(store, pool),
    )
    .await;
}
