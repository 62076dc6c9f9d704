//! The store conformance suite: every [`EventStore`] implementation must pass it.
//!
//! Each case is an `async fn` taking a fresh, empty store. Run them all with one macro call in the store's tests;
//! it generates one test function per case, with the test attribute and setup you give it:
//!
//! ```text
//! // A store built without arguments:
//! annals::store_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] fn() -> MyStore::new());
//! // A store built from a per-test fixture, for example a fresh database:
//! annals::store_conformance!(#[sqlx::test(migrations = false)] fn(pool: PgPool) -> PgStore::setup(pool).await.unwrap());
//! ```
//!
//! The cases use a multi-threaded runtime's real tasks to race writers, so give the test attribute a
//! multi-threaded flavor.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    AppendResult, CommandSession, Error, EventId, EventStore, ExpectedVersion, Metadata, NewEvent,
    Position, RecordedEvent, StreamId, StreamVersion,
};

/// Generates one test per conformance case. See the [module docs](crate::testkit).
#[macro_export]
macro_rules! store_conformance {
    ($(#[$attr:meta])* fn($($arg:ident : $ty:ty),* $(,)?) -> $store:expr) => {
        $crate::__store_conformance_list! {
            $crate::__store_conformance_cases { [$(#[$attr])*] [$($arg: $ty),*] [$store] }
        }
    };
}

/// The one list of conformance cases: calls `$callback!` with `$prefix` followed by every case's name.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_list {
    ($callback:path { $($prefix:tt)* }) => {
        $callback! {
            $($prefix)*
            head_of_empty_store_is_start,
            append_records_the_envelope,
            expected_version_any,
            expected_version_no_stream,
            expected_version_stream_exists,
            expected_version_exact,
            concurrent_appends_have_exactly_one_winner,
            idempotent_reappend_writes_nothing,
            reappend_at_another_version_conflicts,
            event_id_reuse_is_rejected,
            malformed_appends_are_rejected,
            unstorable_appends_are_rejected_alike,
            read_stream_pages,
            read_all_pages,
            global_order_is_consistent_with_stream_order,
            wait_for_events_wakes_up,
            stream_ids_are_validated_and_kept_verbatim,
            visit_stream_hands_over_the_stream_in_order,
            visit_all_hands_over_the_global_order,
            fold_all_hands_over_what_visit_all_does,
            command_session_fold_stream_reads_what_a_fold_reads,
            command_session_reads_and_appends_as_the_store,
            concurrent_command_sessions_have_exactly_one_winner,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($attrs:tt $args:tt $store:tt $(,)?) => {};
    ($attrs:tt $args:tt $store:tt $case:ident $(, $rest:ident)* $(,)?) => {
        $crate::__store_conformance_case! { $attrs $args $store $case }
        $crate::__store_conformance_cases! { $attrs $args $store $($rest),* }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_case {
    ([$($attr:tt)*] [$($args:tt)*] [$store:expr] $case:ident) => {
        $($attr)*
        async fn $case($($args)*) {
            let store: ::std::sync::Arc<dyn $crate::EventStore> = ::std::sync::Arc::new($store);
            $crate::testkit::$case(store).await;
        }
    };
}

/// Runs every case, each against a fresh store from `make_store`, and panics naming the first failing case.
pub async fn run_all<F, Fut>(mut make_store: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn EventStore>>,
{
    macro_rules! run {
        ($($case:ident),* $(,)?) => {$(
            tracing::info!(case = stringify!($case), "conformance case");
            $case(make_store().await).await;
        )*};
    }
    crate::__store_conformance_list!(run {});
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).unwrap()
}

fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "ThingHappened",
        json!({"n": n, "text": "a payload of about a hundred bytes", "nested": {"ok": true, "list": [1, 2, 3]}}),
    )
}

fn events(range: std::ops::Range<u64>) -> Vec<NewEvent> {
    range.map(event).collect()
}

async fn stream_len(store: &Arc<dyn EventStore>, id: &StreamId) -> usize {
    store.load_stream(id).await.unwrap().len()
}

async fn all_events(store: &Arc<dyn EventStore>) -> Vec<crate::RecordedEvent> {
    store.read_all(Position::START, usize::MAX).await.unwrap()
}

#[track_caller]
fn assert_conflict(
    result: Result<AppendResult, Error>,
    id: &StreamId,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(Error::Conflict {
            stream,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(&stream, id, "conflict names the stream");
            assert_eq!(e, expected, "conflict carries the expected version");
            assert_eq!(
                a,
                StreamVersion(actual),
                "conflict carries the actual version"
            );
        }
        other => {
            panic!("expected a conflict (expected {expected}, actual {actual}), got {other:?}")
        }
    }
}

pub async fn head_of_empty_store_is_start(store: Arc<dyn EventStore>) {
    assert_eq!(store.head().await.unwrap(), Position::START);
    assert!(all_events(&store).await.is_empty());
    assert!(
        store
            .load_stream(&stream("nothing-here"))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn append_records_the_envelope(store: Arc<dyn EventStore>) {
    let id = stream("envelope-1");
    let metadata = Metadata::correlated("corr-1")
        .with_causation_id("cause-1")
        .with("user", "zoë")
        .with("quote", "it's \"quoted\"");
    let batch: Vec<NewEvent> = events(0..3)
        .into_iter()
        .map(|e| e.with_metadata(metadata.clone()).with_schema_version(2))
        .collect();
    let before = chrono::Utc::now() - chrono::Duration::seconds(60);
    let result = store
        .append(&id, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(result.stream_version, StreamVersion(3));
    assert!(result.first_position > Position::START);
    assert!(result.last_position > result.first_position);

    let stored = store.load_stream(&id).await.unwrap();
    assert_eq!(stored.len(), 3);
    for (i, (new, rec)) in batch.iter().zip(&stored).enumerate() {
        assert_eq!(rec.event_id, new.event_id);
        assert_eq!(rec.stream_id, id);
        assert_eq!(
            rec.stream_version,
            StreamVersion(i as u64 + 1),
            "versions are 1-based and gapless"
        );
        assert_eq!(rec.event_type, new.event_type);
        assert_eq!(rec.schema_version, 2);
        assert_eq!(rec.payload, new.payload);
        assert_eq!(rec.metadata, metadata);
        assert!(
            rec.recorded_at > before,
            "recorded_at is the time of the append"
        );
    }
    assert_eq!(stored[0].position, result.first_position);
    assert_eq!(stored[2].position, result.last_position);
    assert!(stored.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(store.head().await.unwrap(), result.last_position);
    assert_eq!(
        all_events(&store).await,
        stored,
        "the global read returns the same envelopes"
    );
}

pub async fn expected_version_any(store: Arc<dyn EventStore>) {
    let id = stream("any-1");
    store
        .append(&id, ExpectedVersion::Any, vec![event(1)])
        .await
        .unwrap();
    let r = store
        .append(&id, ExpectedVersion::Any, vec![event(2), event(3)])
        .await
        .unwrap();
    assert_eq!(r.stream_version, StreamVersion(3));
    assert_eq!(stream_len(&store, &id).await, 3);
}

pub async fn expected_version_no_stream(store: Arc<dyn EventStore>) {
    let id = stream("no-stream-1");
    let r = store
        .append(&id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    assert_eq!(r.stream_version, StreamVersion(1));
    let again = store
        .append(&id, ExpectedVersion::NoStream, vec![event(2)])
        .await;
    assert_conflict(again, &id, ExpectedVersion::NoStream, 1);
    assert_eq!(
        stream_len(&store, &id).await,
        1,
        "a conflict writes nothing"
    );
}

pub async fn expected_version_stream_exists(store: Arc<dyn EventStore>) {
    let id = stream("exists-1");
    let missing = store
        .append(&id, ExpectedVersion::StreamExists, vec![event(1)])
        .await;
    assert_conflict(missing, &id, ExpectedVersion::StreamExists, 0);
    assert_eq!(stream_len(&store, &id).await, 0);
    store
        .append(&id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let r = store
        .append(&id, ExpectedVersion::StreamExists, vec![event(2)])
        .await
        .unwrap();
    assert_eq!(r.stream_version, StreamVersion(2));
}

pub async fn expected_version_exact(store: Arc<dyn EventStore>) {
    let id = stream("exact-1");
    let r = store
        .append(
            &id,
            ExpectedVersion::Exact(StreamVersion::NONE),
            vec![event(1)],
        )
        .await
        .unwrap();
    assert_eq!(r.stream_version, StreamVersion(1));
    let r = store
        .append(&id, ExpectedVersion::Exact(StreamVersion(1)), events(2..4))
        .await
        .unwrap();
    assert_eq!(r.stream_version, StreamVersion(3));
    for wrong in [0, 1, 2, 4, 99] {
        let e = ExpectedVersion::Exact(StreamVersion(wrong));
        assert_conflict(store.append(&id, e, vec![event(9)]).await, &id, e, 3);
    }
    let other = stream("exact-2");
    let e = ExpectedVersion::Exact(StreamVersion(1));
    assert_conflict(store.append(&other, e, vec![event(1)]).await, &other, e, 0);
    assert_eq!(stream_len(&store, &id).await, 3);
    assert_eq!(stream_len(&store, &other).await, 0);
}

pub async fn concurrent_appends_have_exactly_one_winner(store: Arc<dyn EventStore>) {
    const ROUNDS: u64 = 25;
    const WRITERS: usize = 8;
    let id = stream("contended-1");
    for round in 0..ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
        let expected = ExpectedVersion::Exact(StreamVersion(round));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, barrier, id) = (store.clone(), barrier.clone(), id.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append(&id, expected, vec![event(round * 100 + w as u64)])
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(r) => {
                    winners += 1;
                    assert_eq!(r.stream_version, StreamVersion(round + 1));
                }
                Err(e) => assert_conflict(Err(e), &id, expected, round + 1),
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one writer wins");
    }
    let stored = store.load_stream(&id).await.unwrap();
    assert_eq!(stored.len() as u64, ROUNDS);
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == StreamVersion(i as u64 + 1))
    );
}

pub async fn idempotent_reappend_writes_nothing(store: Arc<dyn EventStore>) {
    let id = stream("idem-1");
    store
        .append(&id, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let batch = events(1..4);
    let first = store
        .append(&id, ExpectedVersion::Exact(StreamVersion(1)), batch.clone())
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    for _ in 0..2 {
        let again = store
            .append(&id, ExpectedVersion::Exact(StreamVersion(1)), batch.clone())
            .await
            .unwrap();
        assert_eq!(again, first, "a retried append returns the original result");
    }
    let any = store
        .append(&id, ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert_eq!(any, first, "a retried append with Any is idempotent too");
    let exists = store
        .append(&id, ExpectedVersion::StreamExists, batch.clone())
        .await
        .unwrap();
    assert_eq!(exists, first);
    assert_eq!(stream_len(&store, &id).await, 4, "nothing new was written");
    assert_eq!(store.head().await.unwrap(), head);
    // The first append of a stream, retried with NoStream.
    let fresh = stream("idem-2");
    let one = vec![event(7)];
    let a = store
        .append(&fresh, ExpectedVersion::NoStream, one.clone())
        .await
        .unwrap();
    let b = store
        .append(&fresh, ExpectedVersion::NoStream, one)
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(stream_len(&store, &fresh).await, 1);
}

pub async fn reappend_at_another_version_conflicts(store: Arc<dyn EventStore>) {
    let id = stream("idem-3");
    let batch = events(0..2);
    store
        .append(&id, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    let e = ExpectedVersion::Exact(StreamVersion(5));
    assert_conflict(store.append(&id, e, batch).await, &id, e, 2);
    assert_eq!(stream_len(&store, &id).await, 2);
}

pub async fn event_id_reuse_is_rejected(store: Arc<dyn EventStore>) {
    let id = stream("reuse-1");
    let original = events(0..2);
    store
        .append(&id, ExpectedVersion::NoStream, original.clone())
        .await
        .unwrap();
    let head = store.head().await.unwrap();

    #[track_caller]
    fn assert_reused(
        result: Result<AppendResult, Error>,
        reused: EventId,
        index: usize,
        existing: &StreamId,
    ) {
        match result {
            Err(Error::EventIdReused {
                event_id,
                index: i,
                existing_stream,
                ..
            }) => {
                assert_eq!(event_id, reused);
                assert_eq!(i, index);
                assert_eq!(&existing_stream, existing);
            }
            other => panic!("expected EventIdReused for {reused}, got {other:?}"),
        }
    }

    // Same id in another stream.
    let elsewhere = stream("reuse-2");
    let copy = original[0].clone();
    assert_reused(
        store
            .append(&elsewhere, ExpectedVersion::Any, vec![copy])
            .await,
        original[0].event_id,
        0,
        &id,
    );
    // Same id, same stream, different payload.
    let mut changed = original.clone();
    changed[1].payload = json!({"n": "changed"});
    assert_reused(
        store.append(&id, ExpectedVersion::NoStream, changed).await,
        original[1].event_id,
        1,
        &id,
    );
    // Same id, different event type.
    let mut retyped = original.clone();
    retyped[0].event_type = "SomethingElse".into();
    assert_reused(
        store.append(&id, ExpectedVersion::NoStream, retyped).await,
        original[0].event_id,
        0,
        &id,
    );
    // A partial replay: one stored id and one fresh.
    let partial = vec![original[0].clone(), event(9)];
    assert_reused(
        store.append(&id, ExpectedVersion::Any, partial).await,
        original[0].event_id,
        0,
        &id,
    );
    // Stored ids in another order.
    let swapped = vec![original[1].clone(), original[0].clone()];
    assert!(matches!(
        store.append(&id, ExpectedVersion::Any, swapped).await,
        Err(Error::EventIdReused { .. })
    ));

    assert_eq!(store.head().await.unwrap(), head, "nothing was written");
    assert_eq!(stream_len(&store, &id).await, 2);
    assert_eq!(stream_len(&store, &elsewhere).await, 0);
}

pub async fn malformed_appends_are_rejected(store: Arc<dyn EventStore>) {
    let id = stream("malformed-1");
    let invalid = |r: Result<AppendResult, Error>, needle: &str| match r {
        Err(Error::InvalidAppend { stream, reason }) => {
            assert_eq!(stream, id);
            assert!(
                reason.contains(needle),
                "{reason:?} should mention {needle:?}"
            );
        }
        other => panic!("expected InvalidAppend mentioning {needle:?}, got {other:?}"),
    };
    invalid(
        store.append(&id, ExpectedVersion::Any, vec![]).await,
        "no events",
    );
    let mut untyped = events(0..2);
    untyped[1].event_type.clear();
    invalid(
        store.append(&id, ExpectedVersion::Any, untyped).await,
        "event #1",
    );
    let twice = event(1);
    invalid(
        store
            .append(&id, ExpectedVersion::Any, vec![twice.clone(), twice])
            .await,
        "event #1 repeats",
    );
    let mut nil = events(0..3);
    nil[2].event_id = EventId::NIL;
    invalid(
        store.append(&id, ExpectedVersion::Any, nil).await,
        "event #2 has the nil event id",
    );
    assert_eq!(store.head().await.unwrap(), Position::START);
}

/// What some store cannot keep is refused by every store, with the same error: a NUL character (`\u0000`)
/// anywhere in an event type, payload (keys included) or metadata, and a schema version above
/// [`MAX_SCHEMA_VERSION`](crate::MAX_SCHEMA_VERSION). Nothing of such a batch is written.
pub async fn unstorable_appends_are_rejected_alike(store: Arc<dyn EventStore>) {
    let id = stream("unstorable-1");
    type Breaks = Box<dyn Fn(&mut NewEvent)>;
    let cases: Vec<(&str, Breaks)> = vec![
        (
            "its event type",
            Box::new(|e| e.event_type = "Thing\0Happened".into()),
        ),
        (
            "payload at /owner",
            Box::new(|e| e.payload = json!({"owner": "a\u{0}b"})),
        ),
        (
            "payload at /list/1",
            Box::new(|e| e.payload = json!({"list": [1, "\u{0}"]})),
        ),
        (
            "a key of its payload",
            Box::new(|e| e.payload = json!({"ke\u{0}y": 1})),
        ),
        (
            "metadata (correlation id)",
            Box::new(|e| e.metadata.correlation_id = Some("c\u{0}".into())),
        ),
        (
            "metadata (causation id)",
            Box::new(|e| e.metadata.causation_id = Some("\u{0}".into())),
        ),
        (
            "metadata at /user",
            Box::new(|e| {
                e.metadata.extra.insert("user".into(), json!("\u{0}"));
            }),
        ),
        (
            "schema version 2147483648",
            Box::new(|e| e.schema_version = 1 << 31),
        ),
    ];
    for (needle, break_it) in cases {
        let mut batch = events(0..3);
        break_it(&mut batch[1]);
        match store.append(&id, ExpectedVersion::Any, batch).await {
            Err(Error::InvalidAppend { stream, reason }) => {
                assert_eq!(stream, id);
                assert!(
                    reason.contains("event #1") && reason.contains(needle),
                    "{reason:?} should name event #1 and mention {needle:?}"
                );
            }
            other => panic!("expected InvalidAppend mentioning {needle:?}, got {other:?}"),
        }
    }
    assert_eq!(
        store.head().await.unwrap(),
        Position::START,
        "nothing was written"
    );
    assert_eq!(stream_len(&store, &id).await, 0);

    // The largest schema version is kept, and a NUL written as text (not a character) is just text.
    let mut edge = event(1);
    edge.schema_version = crate::MAX_SCHEMA_VERSION;
    edge.payload = json!({"text": "\\u0000"});
    store
        .append(&id, ExpectedVersion::NoStream, vec![edge])
        .await
        .unwrap();
    let stored = store.load_stream(&id).await.unwrap();
    assert_eq!(stored[0].schema_version, crate::MAX_SCHEMA_VERSION);
    assert_eq!(stored[0].payload, json!({"text": "\\u0000"}));
}

pub async fn read_stream_pages(store: Arc<dyn EventStore>) {
    let id = stream("paged-1");
    let other = stream("paged-2");
    for chunk in 0..5 {
        store
            .append(&id, ExpectedVersion::Any, events(chunk * 5..chunk * 5 + 5))
            .await
            .unwrap();
        store
            .append(&other, ExpectedVersion::Any, vec![event(1000 + chunk)])
            .await
            .unwrap();
    }
    let mut from = StreamVersion::FIRST;
    let mut seen = Vec::new();
    loop {
        let page = store.read_stream(&id, from, 10).await.unwrap();
        assert!(page.len() <= 10);
        if page.is_empty() {
            break;
        }
        from = page.last().unwrap().stream_version.next();
        seen.extend(page);
    }
    assert_eq!(seen.len(), 25);
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(e.stream_id, id);
        assert_eq!(e.stream_version, StreamVersion(i as u64 + 1));
        assert_eq!(e.payload.to_value().unwrap()["n"], json!(i));
    }
    assert_eq!(
        store
            .read_stream(&id, StreamVersion(21), 100)
            .await
            .unwrap()
            .len(),
        5
    );
    assert!(
        store
            .read_stream(&id, StreamVersion(26), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&id, StreamVersion(3), 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .read_stream(&id, StreamVersion::NONE, 3)
            .await
            .unwrap()[0]
            .stream_version,
        StreamVersion(1)
    );
    assert!(
        store
            .read_stream(&stream("paged-3"), StreamVersion::FIRST, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn visit_stream_hands_over_the_stream_in_order(store: Arc<dyn EventStore>) {
    let id = stream("visited-1");
    for chunk in 0..3 {
        store
            .append(&id, ExpectedVersion::Any, events(chunk * 4..chunk * 4 + 4))
            .await
            .unwrap();
        store
            .append(
                &stream("visited-2"),
                ExpectedVersion::Any,
                vec![event(chunk)],
            )
            .await
            .unwrap();
    }
    let loaded = store.load_stream(&id).await.unwrap();
    let mut visited = Vec::new();
    store
        .visit_stream(&id, &mut |e| {
            visited.push(e.clone());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(visited, loaded, "visit_stream sees what load_stream reads");
    assert_eq!(visited.len(), 12);

    // The first error stops the visit and is returned as it is.
    assert_stream_visit_stops_at(&id, 5, async |visit| store.visit_stream(&id, visit).await).await;

    let mut none = 0;
    store
        .visit_stream(&stream("visited-never"), &mut |_| {
            none += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(none, 0);
}

/// `visit` (a visit of stream `id`, in version order, with the visitor it is given) stops at the first error the
/// visitor returns, at version `at`, and returns that error as it is.
async fn assert_stream_visit_stops_at(
    id: &StreamId,
    at: u64,
    visit: impl AsyncFnOnce(
        &mut (dyn FnMut(&RecordedEvent) -> crate::Result<()> + Send),
    ) -> crate::Result<()>,
) {
    let mut calls = 0;
    let stopped = visit(&mut |e| {
        calls += 1;
        if e.stream_version == StreamVersion(at) {
            return Err(e.decode_error("stop here"));
        }
        Ok(())
    })
    .await;
    match stopped {
        Err(Error::Decode {
            stream, version, ..
        }) => {
            assert_eq!(&stream, id);
            assert_eq!(version, StreamVersion(at));
        }
        other => panic!("expected the visitor's error, got {other:?}"),
    }
    assert_eq!(calls, at, "no event is visited after the error");
}

/// On an empty store `visit` (a visit of the global order from the given position) hands over nothing and returns
/// `after`, from the start and from beyond the head.
async fn assert_empty_visit(
    visit: impl AsyncFn(
        Position,
        &mut (dyn FnMut(&RecordedEvent) -> crate::Result<()> + Send),
    ) -> Position,
) {
    let mut none = 0;
    for after in [Position::START, Position(42)] {
        let returned = visit(after, &mut |_| {
            none += 1;
            Ok(())
        })
        .await;
        assert_eq!(returned, after, "an empty visit returns `after`");
    }
    assert_eq!(none, 0);
}

/// Appends more events than one page of the default `visit_all` (`VISIT_ALL_PAGE`) over three interleaved streams
/// named `<prefix>-<i>`, made by `make`, and returns how many.
async fn append_interleaved(
    store: &Arc<dyn EventStore>,
    prefix: &str,
    make: fn(std::ops::Range<u64>) -> Vec<NewEvent>,
) -> u64 {
    let streams: Vec<StreamId> = (0..3).map(|i| stream(&format!("{prefix}-{i}"))).collect();
    let mut appended = 0u64;
    for round in 0..9 {
        for s in &streams {
            let n = 1 + (round % 4) * 40;
            store
                .append(s, ExpectedVersion::Any, make(appended..appended + n))
                .await
                .unwrap();
            appended += n;
        }
    }
    assert!(appended > crate::VISIT_ALL_PAGE as u64);
    appended
}

pub async fn visit_all_hands_over_the_global_order(store: Arc<dyn EventStore>) {
    assert_empty_visit(async |after, visit| store.visit_all(after, visit).await.unwrap()).await;

    let appended = append_interleaved(&store, "visit-all", events).await;
    let all = all_events(&store).await;
    assert_eq!(all.len() as u64, appended);

    let mut visited = Vec::new();
    let last = store
        .visit_all(Position::START, &mut |e| {
            visited.push(e.clone());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(visited, all, "visit_all sees what read_all reads, in order");
    assert_eq!(
        last,
        all.last().unwrap().position,
        "returns the last position"
    );
    assert_eq!(last, store.head().await.unwrap());

    // `after` is respected, and the returned position continues the visit without a repeat.
    let mid = all[500].position;
    let mut rest = Vec::new();
    let returned = store
        .visit_all(mid, &mut |e| {
            rest.push(e.clone());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(rest, all[501..].to_vec());
    assert_eq!(returned, last);
    let mut again = 0;
    let at_head = store
        .visit_all(returned, &mut |_| {
            again += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((again, at_head), (0, last), "nothing after the head");

    // The first error stops the visit and is returned as it is.
    let stop_at = all[7].position;
    let mut calls = 0;
    let stopped = store
        .visit_all(Position::START, &mut |e| {
            calls += 1;
            if e.position == stop_at {
                return Err(e.decode_error("stop here"));
            }
            Ok(())
        })
        .await;
    match stopped {
        Err(Error::Decode { position, .. }) => assert_eq!(position, stop_at),
        other => panic!("expected the visitor's error, got {other:?}"),
    }
    assert_eq!(calls, 8, "no event is visited after the error");
}

/// Checks that `lean` (what `fold_all` or `fold_stream` handed over) carries what `whole` does, but for what a
/// lean read may leave out: the event id ([`EventId::NIL`]), `recorded_at` (`DateTime::MIN_UTC`) and metadata
/// (empty).
#[track_caller]
fn assert_lean_copy(lean: &[RecordedEvent], whole: &[RecordedEvent], read: &str) {
    assert_eq!(lean.len(), whole.len(), "{read}: as many events");
    for (seen, stored) in lean.iter().zip(whole) {
        let at = stored.position;
        assert_eq!(seen.position, stored.position, "{read}");
        assert_eq!(seen.stream_id, stored.stream_id, "{read} at {at}");
        assert_eq!(seen.stream_version, stored.stream_version, "{read} at {at}");
        assert_eq!(seen.event_type, stored.event_type, "{read} at {at}");
        assert_eq!(seen.schema_version, stored.schema_version, "{read} at {at}");
        assert_eq!(seen.payload, stored.payload, "{read} at {at}");
        assert!(
            [stored.event_id, EventId::NIL].contains(&seen.event_id),
            "{read} at {at}: the stored event id or none, not {}",
            seen.event_id
        );
        assert!(
            [stored.recorded_at, chrono::DateTime::<chrono::Utc>::MIN_UTC]
                .contains(&seen.recorded_at),
            "{read} at {at}: the stored recorded_at or none, not {}",
            seen.recorded_at
        );
        assert!(
            seen.metadata == stored.metadata || seen.metadata == Metadata::default(),
            "{read} at {at}: the stored metadata or none, not {:?}",
            seen.metadata
        );
    }
}

/// Events of `n` with metadata, every third at schema version 2: what a lean read may leave out is there to leave.
fn annotated(range: std::ops::Range<u64>) -> Vec<NewEvent> {
    range
        .map(|n| {
            event(n)
                .with_metadata(Metadata::correlated(format!("corr-{n}")).with("n", n))
                .with_schema_version(if n % 3 == 0 { 2 } else { 1 })
        })
        .collect()
}

/// `fold_all` hands over what `visit_all` does, in the same order and up to the same head, from any `after`, and
/// stops at the visitor's first error; of each event it may leave out only the id, `recorded_at` and metadata.
pub async fn fold_all_hands_over_what_visit_all_does(store: Arc<dyn EventStore>) {
    assert_empty_visit(async |after, visit| store.fold_all(after, visit).await.unwrap()).await;

    let appended = append_interleaved(&store, "fold-all", annotated).await;
    let visit = async |after: Position, lean: bool| {
        let mut seen = Vec::new();
        let mut keep = |e: &RecordedEvent| {
            seen.push(e.clone());
            Ok(())
        };
        let last = if lean {
            store.fold_all(after, &mut keep).await.unwrap()
        } else {
            store.visit_all(after, &mut keep).await.unwrap()
        };
        (seen, last)
    };
    let (whole, head) = visit(Position::START, false).await;
    assert_eq!(whole.len() as u64, appended);
    for e in &whole {
        let n = e.payload.to_value().unwrap()["n"].as_u64().unwrap();
        let expected = if n % 3 == 0 { 2 } else { 1 };
        assert_eq!(
            e.schema_version, expected,
            "the stored schema version of event {n}"
        );
    }
    let (lean, last) = visit(Position::START, true).await;
    assert_lean_copy(&lean, &whole, "fold_all");
    assert_eq!(last, head, "returns the last position");
    assert_eq!(last, store.head().await.unwrap());

    // `after` is respected, and the returned position continues the fold without a repeat.
    let mid = whole[500].position;
    let (rest, returned) = visit(mid, true).await;
    assert_lean_copy(&rest, &whole[501..], "fold_all from the middle");
    assert_eq!(returned, last);
    let (again, at_head) = visit(returned, true).await;
    assert_eq!((again.len(), at_head), (0, last), "nothing after the head");

    // The first error stops the fold and is returned as it is.
    let stop_at = whole[7].position;
    let mut calls = 0;
    let stopped = store
        .fold_all(Position::START, &mut |e| {
            calls += 1;
            if e.position == stop_at {
                return Err(e.decode_error("stop here"));
            }
            Ok(())
        })
        .await;
    match stopped {
        Err(Error::Decode {
            position, stream, ..
        }) => {
            assert_eq!(position, stop_at);
            assert_eq!(stream, whole[7].stream_id);
        }
        other => panic!("expected the visitor's error, got {other:?}"),
    }
    assert_eq!(calls, 8, "no event is visited after the error");
}

/// A command session's `fold_stream` reads what `load_stream` reads, but for what a lean read may leave out (ids,
/// `recorded_at`, metadata), and proves the version it found as `visit_stream` does: an append on the session
/// after it lands at the next version, and one made stale by another writer meanwhile is a conflict.
pub async fn command_session_fold_stream_reads_what_a_fold_reads(store: Arc<dyn EventStore>) {
    let id = stream("session-fold-1");
    store
        .append(&id, ExpectedVersion::NoStream, annotated(0..4))
        .await
        .unwrap();
    let loaded = store.load_stream(&id).await.unwrap();
    let fold = async |session: &mut Box<dyn CommandSession + '_>| {
        let mut seen = Vec::new();
        session
            .fold_stream(&id, &mut |e| {
                seen.push(e.clone());
                Ok(())
            })
            .await
            .unwrap();
        seen
    };
    let mut session = store.command_session();
    assert_lean_copy(&fold(&mut session).await, &loaded, "fold_stream");
    let appended = session
        .append(&id, ExpectedVersion::Exact(StreamVersion(4)), events(4..5))
        .await
        .unwrap();
    assert_eq!(appended.stream_version, StreamVersion(5));
    drop(session);

    // A read made stale by another writer: `Exact` is a conflict naming the real version, `Any` lands after it.
    let mut stale = store.command_session();
    assert_eq!(fold(&mut stale).await.len(), 5);
    store
        .append(&id, ExpectedVersion::Exact(StreamVersion(5)), events(5..6))
        .await
        .unwrap();
    assert_conflict(
        stale
            .append(&id, ExpectedVersion::Exact(StreamVersion(5)), events(6..7))
            .await,
        &id,
        ExpectedVersion::Exact(StreamVersion(5)),
        6,
    );
    drop(stale);
    let mut stale = store.command_session();
    assert_eq!(fold(&mut stale).await.len(), 6);
    store
        .append(&id, ExpectedVersion::Any, events(7..8))
        .await
        .unwrap();
    let any = stale
        .append(&id, ExpectedVersion::Any, events(8..9))
        .await
        .unwrap();
    assert_eq!(
        any.stream_version,
        StreamVersion(8),
        "after the other writer's event"
    );
    drop(stale);

    // A stream with no events folds to nothing; the visitor's first error stops the fold.
    let mut session = store.command_session();
    let mut none = 0;
    session
        .fold_stream(&stream("session-fold-never"), &mut |_| {
            none += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(none, 0);
    assert_stream_visit_stops_at(&id, 3, async |visit| session.fold_stream(&id, visit).await).await;
}

pub async fn read_all_pages(store: Arc<dyn EventStore>) {
    let streams: Vec<StreamId> = (0..4).map(|i| stream(&format!("all-{i}"))).collect();
    let mut appended = 0u64;
    for round in 0..6 {
        for s in &streams {
            let n = 1 + (round % 3);
            store
                .append(s, ExpectedVersion::Any, events(appended..appended + n))
                .await
                .unwrap();
            appended += n;
        }
    }
    let mut after = Position::START;
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(after, 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = last.position;
        seen.extend(page);
    }
    assert_eq!(seen.len() as u64, appended, "every event read exactly once");
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "strictly increasing positions"
    );
    let ns: Vec<u64> = seen
        .iter()
        .map(|e| e.payload.to_value().unwrap()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ns,
        (0..appended).collect::<Vec<_>>(),
        "global order is append order"
    );
    assert_eq!(store.head().await.unwrap(), seen.last().unwrap().position);
    assert!(store.read_all(after, 10).await.unwrap().is_empty());
    assert!(store.read_all(Position::START, 0).await.unwrap().is_empty());
    let mid = seen[10].position;
    assert_eq!(store.read_all(mid, 3).await.unwrap(), seen[11..14].to_vec());
}

pub async fn global_order_is_consistent_with_stream_order(store: Arc<dyn EventStore>) {
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 20;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..APPENDS {
                    // Writers share streams so that appends to one stream race.
                    let id = stream(&format!("order-{}", (w + i) % 3));
                    let batch = events(i * 10..i * 10 + 1 + (i % 3));
                    store
                        .append(&id, ExpectedVersion::Any, batch)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let all = all_events(&store).await;
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let mut last_version: HashMap<StreamId, u64> = HashMap::new();
    for e in &all {
        let v = last_version.entry(e.stream_id.clone()).or_default();
        assert_eq!(
            e.stream_version.get(),
            *v + 1,
            "stream {} is gapless and ordered globally",
            e.stream_id
        );
        *v += 1;
    }
    for (id, v) in last_version {
        assert_eq!(stream_len(&store, &id).await as u64, v);
    }
}

pub async fn wait_for_events_wakes_up(store: Arc<dyn EventStore>) {
    let id = stream("wait-1");
    // Nothing to wait for: returns after the timeout with the unchanged head.
    let head = store
        .wait_for_events(Position::START, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(head, Position::START);

    // A waiter parked before the append is woken by it, long before its timeout.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let head = store
                .wait_for_events(Position::START, Duration::from_secs(30))
                .await
                .unwrap();
            (head, started.elapsed())
        })
    };
    tokio::task::yield_now().await;
    let appended = store
        .append(&id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let (head, waited) = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter was not woken by the append")
        .unwrap();
    assert!(head >= appended.last_position, "woken with the new head");
    assert!(waited < Duration::from_secs(20));

    // Already past: returns at once.
    let head = tokio::time::timeout(
        Duration::from_secs(5),
        store.wait_for_events(Position::START, Duration::from_secs(60)),
    )
    .await
    .expect("wait_for_events must return at once when events are readable")
    .unwrap();
    assert_eq!(head, appended.last_position);
}

pub async fn stream_ids_are_validated_and_kept_verbatim(store: Arc<dyn EventStore>) {
    for bad in [
        "",
        "line\nbreak",
        "nul\u{0}",
        "tab\there",
        &"x".repeat(crate::MAX_STREAM_ID_LEN + 1),
    ] {
        let err = StreamId::new(bad).unwrap_err();
        assert_eq!(err.id, bad);
        assert!(err.to_string().contains("invalid stream id"), "{err}");
    }
    let tricky = [
        "it's",
        "\"double\"",
        "Ωμέγα-λ-😀",
        "'; DROP TABLE events; --",
        "select * from",
        "back\\slash",
        "%_wild%",
        &"y".repeat(crate::MAX_STREAM_ID_LEN),
    ];
    let mut metadata_extra = BTreeMap::new();
    metadata_extra.insert("sql".to_owned(), json!("'; DELETE FROM events; --"));
    for (i, raw) in tricky.iter().enumerate() {
        let id = stream(raw);
        let metadata = Metadata {
            correlation_id: Some(format!("corr-'{raw}'")),
            causation_id: Some("ünïcödé \"cause\"".to_owned()),
            command_id: None,
            extra: metadata_extra.clone(),
        };
        let new = event(i as u64).with_metadata(metadata.clone());
        store
            .append(&id, ExpectedVersion::NoStream, vec![new])
            .await
            .unwrap();
        let back = store.load_stream(&id).await.unwrap();
        assert_eq!(back.len(), 1, "stream {raw:?}");
        assert_eq!(back[0].stream_id.as_str(), *raw);
        assert_eq!(back[0].metadata, metadata);
    }
    assert_eq!(all_events(&store).await.len(), tricky.len());
}

// Command ids: the store's command record and at-most-once execution (`command_id_conformance!`).
pub mod checker;
pub mod command_ids;

pub use checker::{Checker, ConnectionKiller, ExtraPath};

/// A command session reads what `load_stream` reads (all but `recorded_at` and metadata, which it may leave out)
/// and appends with the store's rules: the expected version is checked, a re-append of the same ids writes
/// nothing, and a second session sees the first one's events.
pub async fn command_session_reads_and_appends_as_the_store(store: Arc<dyn EventStore>) {
    let id = stream("session-1");
    store
        .append(&id, ExpectedVersion::NoStream, events(0..3))
        .await
        .unwrap();
    let loaded = store.load_stream(&id).await.unwrap();
    let mut session = store.command_session();
    let mut visited = Vec::new();
    session
        .visit_stream(&id, &mut |e| {
            visited.push(e.clone());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(visited.len(), loaded.len());
    for (seen, stored) in visited.iter().zip(&loaded) {
        assert_eq!(seen.event_id, stored.event_id);
        assert_eq!(seen.stream_id, stored.stream_id);
        assert_eq!(seen.stream_version, stored.stream_version);
        assert_eq!(seen.position, stored.position);
        assert_eq!(seen.event_type, stored.event_type);
        assert_eq!(seen.schema_version, stored.schema_version);
        assert_eq!(seen.payload, stored.payload);
    }
    let batch = events(3..5);
    let appended = session
        .append(&id, ExpectedVersion::Exact(StreamVersion(3)), batch.clone())
        .await
        .unwrap();
    assert_eq!(appended.stream_version, StreamVersion(5));
    drop(session);

    let mut again = store.command_session();
    let replayed = again
        .append(&id, ExpectedVersion::Exact(StreamVersion(3)), batch)
        .await
        .unwrap();
    assert_eq!(
        replayed, appended,
        "a re-append of the same ids returns the original result"
    );
    assert_conflict(
        again
            .append(
                &id,
                ExpectedVersion::Exact(StreamVersion(3)),
                vec![event(9)],
            )
            .await,
        &id,
        ExpectedVersion::Exact(StreamVersion(3)),
        5,
    );
    let mut versions = Vec::new();
    again
        .visit_stream(&id, &mut |e| {
            versions.push(e.stream_version.get());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(stream_len(&store, &id).await, 5);
}

/// A command session that has read `id`, and the version its read found.
async fn session_after_read<'s>(
    store: &'s Arc<dyn EventStore>,
    id: &StreamId,
) -> (Box<dyn CommandSession + 's>, StreamVersion) {
    let mut session = store.command_session();
    let mut found = StreamVersion::NONE;
    session
        .visit_stream(id, &mut |e| {
            found = e.stream_version;
            Ok(())
        })
        .await
        .unwrap();
    (session, found)
}

/// Four command sessions read a stream at the same version, then append to it at once: expecting that version,
/// exactly one lands (at the next version) and the others are conflicts naming it; expecting any version, all four
/// land, one version each. At most four sessions are open at a time (a store that gives each one a connection
/// needs four).
pub async fn concurrent_command_sessions_have_exactly_one_winner(store: Arc<dyn EventStore>) {
    const ROUNDS: u64 = 10;
    let id = stream("contended-sessions");
    for round in 0..ROUNDS {
        let (mut a, read_a) = session_after_read(&store, &id).await;
        let (mut b, read_b) = session_after_read(&store, &id).await;
        let (mut c, read_c) = session_after_read(&store, &id).await;
        let (mut d, read_d) = session_after_read(&store, &id).await;
        assert_eq!([read_a, read_b, read_c, read_d], [StreamVersion(round); 4]);
        let expected = ExpectedVersion::Exact(StreamVersion(round));
        let results = tokio::join!(
            a.append(&id, expected, vec![event(round * 10)]),
            b.append(&id, expected, vec![event(round * 10 + 1)]),
            c.append(&id, expected, vec![event(round * 10 + 2)]),
            d.append(&id, expected, vec![event(round * 10 + 3)]),
        );
        let mut winners = 0;
        for result in [results.0, results.1, results.2, results.3] {
            match result {
                Ok(done) => {
                    winners += 1;
                    assert_eq!(done.stream_version, StreamVersion(round + 1));
                }
                Err(e) => assert_conflict(Err(e), &id, expected, round + 1),
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one session wins");
    }
    let (mut a, _) = session_after_read(&store, &id).await;
    let (mut b, _) = session_after_read(&store, &id).await;
    let (mut c, _) = session_after_read(&store, &id).await;
    let (mut d, _) = session_after_read(&store, &id).await;
    let any = ExpectedVersion::Any;
    let results = tokio::join!(
        a.append(&id, any, vec![event(1000)]),
        b.append(&id, any, vec![event(1001)]),
        c.append(&id, any, vec![event(1002)]),
        d.append(&id, any, vec![event(1003)]),
    );
    let mut landed: Vec<u64> = [results.0, results.1, results.2, results.3]
        .into_iter()
        .map(|result| result.unwrap().stream_version.get())
        .collect();
    landed.sort_unstable();
    assert_eq!(landed, [ROUNDS + 1, ROUNDS + 2, ROUNDS + 3, ROUNDS + 4]);
    let stored = store.load_stream(&id).await.unwrap();
    let versions: Vec<u64> = stored.iter().map(|e| e.stream_version.get()).collect();
    assert_eq!(
        versions,
        (1..=ROUNDS + 4).collect::<Vec<_>>(),
        "no version twice, none missing"
    );
}
