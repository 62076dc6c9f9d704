//! Typed projections (`EventProjection`, `EventSqlProjection`) get decoded events with their envelope, want only
//! their type's events (the filter comes from the type), get events renamed by the type's upcaster, and hand a
//! payload that does not decode to the failure policy with a message naming the event; on both backends.

use std::time::Duration;

use annals::{
    BoxError as CoreBoxError, EventStore, ExpectedVersion, Metadata, NewEvent, Payload, Position,
    Recorded, StreamId,
};
use annals_projections::{
    BoxError, Documents, Error, EventProjection, EventSqlProjection, FailurePolicy,
    ProjectionOptions, Projections, SqlTx, async_trait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, PgPool};

use crate::support::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    #[serde(rename = "AccountOpened")]
    Opened { owner: String },
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

/// What the projection saw of one event: the decoded event and its envelope.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Seen {
    event: String,
    stream: String,
    version: u64,
    position: u64,
    correlation: Option<String>,
}

/// Records every event it gets, keyed by position.
struct Ledger;

#[async_trait]
impl EventProjection for Ledger {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        "ledger"
    }

    async fn apply(
        &self,
        event: Recorded<'_, AccountEvent>,
        docs: &mut Documents<'_>,
    ) -> Result<(), BoxError> {
        let seen = Seen {
            event: format!("{:?}", event.event()),
            stream: event.stream_id().to_string(),
            version: event.stream_version().get(),
            position: event.position().get(),
            correlation: event.metadata().correlation_id.clone(),
        };
        docs.put("seen", format!("{:020}", seen.position), &seen)?;
        Ok(())
    }
}

async fn append(store: &dyn EventStore, event: NewEvent) -> Position {
    let stream = StreamId::new("account-1").unwrap();
    store
        .append(&stream, ExpectedVersion::Any, vec![event])
        .await
        .unwrap()
        .last_position
}

/// An opening, a deposit with a correlation id, an event of another type, and a deposit under its old name.
async fn write_history(store: &dyn EventStore) -> Position {
    append(
        store,
        NewEvent::new("AccountOpened", json!({"owner": "Ada"})),
    )
    .await;
    append(
        store,
        NewEvent::new("MoneyDeposited", json!({"amount": 5}))
            .with_metadata(Metadata::correlated("req-1")),
    )
    .await;
    append(store, NewEvent::new("SomethingElse", json!({"x": 1}))).await;
    append(store, NewEvent::new("MoneyAdded", json!({"amount": 7}))).await
}

async fn decoded_events_reach_the_typed_projection(
    store: impl EventStore + 'static,
    projections: Projections,
) {
    // No `.upcasting::<AccountEvent>()`: the typed registration brings the type's upcaster.
    let projections = projections.typed(Ledger);
    let head = write_history(&store).await;
    let (stop, handle) = spawn_run(&projections);
    let reader = projections.documents("ledger").unwrap();
    reader
        .wait_for_position(head, Duration::from_secs(30))
        .await
        .unwrap();
    let seen: Vec<Seen> = reader
        .list::<Seen>("seen", "")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, seen)| seen)
        .collect();
    let at = |event: &str, version: u64, correlation: Option<&str>| Seen {
        event: event.to_owned(),
        stream: "account-1".to_owned(),
        version,
        position: version,
        correlation: correlation.map(str::to_owned),
    };
    assert_eq!(
        seen,
        [
            at(r#"Opened { owner: "Ada" }"#, 1, None),
            at("Deposited { amount: 5 }", 2, Some("req-1")),
            // Version 3 is of another type: the filter from the type skipped it.
            at("Deposited { amount: 7 }", 4, None),
        ]
    );
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn memory_typed_projection_gets_decoded_events_of_its_type_renamed_ones_included() {
    let store = memory_store();
    decoded_events_reach_the_typed_projection(store.clone(), Projections::memory(store)).await;
}

#[sqlx::test]
async fn postgres_typed_projection_gets_decoded_events_of_its_type_renamed_ones_included(
    pool: PgPool,
) {
    let store = pg_store(&pool).await;
    decoded_events_reach_the_typed_projection(store.clone(), Projections::postgres(store, pool))
        .await;
}

/// A deposit whose payload does not fit the type, after a good one.
async fn write_undecodable(store: &dyn EventStore) -> (Position, annals::EventId) {
    append(
        store,
        NewEvent::new("AccountOpened", json!({"owner": "Ada"})),
    )
    .await;
    let bad = NewEvent::new("MoneyDeposited", json!({"amount": "five"}));
    let id = bad.event_id;
    (append(store, bad).await, id)
}

async fn an_undecodable_event_stops_the_projection(
    store: impl EventStore + 'static,
    projections: Projections,
) {
    let projections = projections.typed(Ledger);
    let (bad_at, bad_id) = write_undecodable(&store).await;
    let error = projections.run(std::future::pending()).await.unwrap_err();
    match &error {
        Error::ProjectionFailed {
            projection,
            position,
            stream,
            event_type,
            event_id,
            cause,
            ..
        } => {
            assert_eq!(projection, "ledger");
            assert_eq!(*position, bad_at);
            assert_eq!(stream.as_str(), "account-1");
            assert_eq!(event_type, "MoneyDeposited");
            assert_eq!(*event_id, bad_id);
            assert!(cause.contains("cannot decode"), "{cause}");
        }
        other => panic!("expected ProjectionFailed, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&bad_id.to_string()), "{message}");
    // The event before it is applied and checkpointed.
    let status = projections.status().await.unwrap();
    assert_eq!(status[0].checkpoint.get(), bad_at.get() - 1);
}

async fn an_undecodable_event_is_parked(
    store: impl EventStore + 'static,
    projections: Projections,
) {
    let projections = projections.typed_with_options(
        Ledger,
        ProjectionOptions::new().failure_policy(FailurePolicy::park()),
    );
    let (bad_at, bad_id) = write_undecodable(&store).await;
    let after = append(
        &store,
        NewEvent::new("MoneyDeposited", json!({"amount": 1})),
    )
    .await;
    let (stop, handle) = spawn_run(&projections);
    let reader = projections.documents("ledger").unwrap();
    reader
        .wait_for_position(after, Duration::from_secs(30))
        .await
        .unwrap();
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    let parked = projections.parked("ledger").await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].position, bad_at);
    assert_eq!(parked[0].event_id, bad_id);
    assert!(
        reader
            .get::<Seen>("seen", format!("{:020}", after.get()))
            .await
            .unwrap()
            .is_some(),
        "nothing after the parked event is lost"
    );
}

#[tokio::test]
async fn memory_an_undecodable_event_goes_to_the_failure_policy() {
    let store = memory_store();
    an_undecodable_event_stops_the_projection(store.clone(), Projections::memory(store)).await;
    let store = memory_store();
    an_undecodable_event_is_parked(store.clone(), Projections::memory(store)).await;
}

#[sqlx::test]
async fn postgres_an_undecodable_event_stops_the_projection(pool: PgPool) {
    let store = pg_store(&pool).await;
    an_undecodable_event_stops_the_projection(store.clone(), Projections::postgres(store, pool))
        .await;
}

#[sqlx::test]
async fn postgres_an_undecodable_event_is_parked(pool: PgPool) {
    let store = pg_store(&pool).await;
    an_undecodable_event_is_parked(store.clone(), Projections::postgres(store, pool)).await;
}

/// A type without deserializable variants names no event: the set refuses it instead of wanting every event.
#[tokio::test]
async fn a_type_without_names_is_refused_at_registration() {
    #[derive(Serialize, Deserialize)]
    struct NotAnEnum {}
    impl annals::Event for NotAnEnum {}
    struct Odd;
    #[async_trait]
    impl EventProjection for Odd {
        type Event = NotAnEnum;
        fn name(&self) -> &str {
            "odd"
        }
        async fn apply(
            &self,
            _: Recorded<'_, NotAnEnum>,
            _: &mut Documents<'_>,
        ) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let projections = Projections::memory(memory_store()).typed(Odd);
    let error = projections.status().await.unwrap_err().to_string();
    assert!(
        error.contains("odd") && error.contains("NotAnEnum"),
        "{error}"
    );
}

/// Per account: the owner and the sum of deposits, in a table of its own.
struct Owners;

#[async_trait]
impl EventSqlProjection for Owners {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        "owners"
    }

    async fn setup(&self, tx: &mut SqlTx<'_>) -> Result<(), BoxError> {
        let table = tx.table("owners");
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {table} (stream text PRIMARY KEY, owner text NOT NULL, total bigint NOT NULL, \
             last_position bigint NOT NULL)"
        )))
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    async fn apply(
        &self,
        event: Recorded<'_, AccountEvent>,
        tx: &mut SqlTx<'_>,
    ) -> Result<(), BoxError> {
        let table = tx.table("owners");
        let stream = event.stream_id().as_str();
        let position = i64::try_from(event.position().get())?;
        let statement = match event.into_event() {
            AccountEvent::Opened { owner } => sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {table} VALUES ($1, $2, 0, $3)"
            )))
            .bind(stream)
            .bind(owner)
            .bind(position),
            AccountEvent::Deposited { amount } => sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET total = total + $2, last_position = $3 WHERE stream = $1"
            )))
            .bind(stream)
            .bind(i64::try_from(amount)?)
            .bind(position),
        };
        statement.execute(tx.conn()).await?;
        Ok(())
    }
}

async fn owners(pool: &PgPool) -> Vec<(String, String, i64, i64)> {
    sqlx::query_as("SELECT stream, owner, total, last_position FROM rm_owners.owners")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn typed_sql_projection_gets_decoded_events_of_its_type_renamed_ones_included(pool: PgPool) {
    let store = pg_store(&pool).await;
    let projections = Projections::postgres(store.clone(), pool.clone()).typed_sql(Owners);
    let head = write_history(&store).await;
    let (stop, handle) = spawn_run(&projections);
    projections
        .wait_for_position("owners", head, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        owners(&pool).await,
        [("account-1".to_owned(), "Ada".to_owned(), 12, 4)]
    );
    // A rebuild replays the same decoded events into a new generation.
    projections.rebuild("owners").await.unwrap();
    assert_eq!(
        owners(&pool).await,
        [("account-1".to_owned(), "Ada".to_owned(), 12, 4)]
    );
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[sqlx::test]
async fn typed_sql_projection_parks_an_undecodable_event(pool: PgPool) {
    let store = pg_store(&pool).await;
    let projections = Projections::postgres(store.clone(), pool.clone()).typed_sql_with_options(
        Owners,
        ProjectionOptions::new().failure_policy(FailurePolicy::park()),
    );
    let (bad_at, bad_id) = write_undecodable(&store).await;
    let after = append(
        &store,
        NewEvent::new("MoneyDeposited", json!({"amount": 1})),
    )
    .await;
    let (stop, handle) = spawn_run(&projections);
    projections
        .wait_for_position("owners", after, Duration::from_secs(30))
        .await
        .unwrap();
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    let parked = projections.parked("owners").await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!((parked[0].position, parked[0].event_id), (bad_at, bad_id));
    assert!(parked[0].error.contains("cannot decode"), "{:?}", parked[0]);
    assert_eq!(
        owners(&pool).await,
        [("account-1".to_owned(), "Ada".to_owned(), 1, 3)]
    );
}

#[tokio::test]
async fn a_typed_sql_projection_needs_postgres() {
    let projections = Projections::memory(memory_store()).typed_sql(Owners);
    assert!(matches!(
        projections.status().await.unwrap_err(),
        Error::SqlNeedsPostgres { .. }
    ));
}
