//! The inbox: redeliveries and re-publishes apply once, malformed messages are parked with their reason and
//! terminated, handler errors are retried with backoff and then parked.

use std::sync::atomic::Ordering;
use std::time::Duration;

use annals_nats::async_nats::jetstream::consumer::pull::Config as PullConfig;
use annals_nats::async_nats::{self, HeaderMap};
use annals_nats::{Inbox, InboxOptions};
use sqlx::PgPool;

use crate::support::{
    Effects, TestStream, effect_counts, eventually, inbox_rows, pg_store, publish_all, shared_nats,
    spawn_inbox, write_events,
};

#[sqlx::test(migrations = false)]
async fn redeliveries_and_republishes_are_applied_once(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    let events = write_events(&store, "account", 5, 4).await as i64;
    let relay = publish_all(&pool, &store, &feed).await;
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let options = || InboxOptions::default().schema("inbox_t").max_ack_pending(8);
    let effects = Effects::new(&pool, "svc").await;
    let calls = effects.calls.clone();
    let (stop, done) = spawn_inbox(
        Inbox::new(
            pool.clone(),
            client.clone(),
            &feed.name,
            "svc",
            effects,
            options(),
        )
        .unwrap(),
    );
    eventually("every event applied", Duration::from_secs(60), || async {
        inbox_rows(&pool).await >= events
    })
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst) as i64, events);

    // Redelivery: the durable consumer is recreated from the start, so the broker delivers everything again.
    let js = async_nats::jetstream::new(client.clone());
    js.get_stream(&feed.name)
        .await
        .unwrap()
        .delete_consumer("svc")
        .await
        .unwrap();
    // Re-publish beyond the broker's duplicate window: same events, new message ids (the broker cannot tell).
    for m in feed.messages().await {
        let mut headers = m.headers.clone();
        headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
        js.publish_with_headers(m.subject.to_string(), headers, m.payload.clone())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(feed.count().await as i64, 2 * events);
    let effects = Effects::new(&pool, "svc").await;
    let calls = effects.calls.clone();
    let inbox = Inbox::new(
        pool.clone(),
        client.clone(),
        &feed.name,
        "svc",
        effects,
        options(),
    )
    .unwrap();
    let (stop, done) = spawn_inbox(inbox);
    eventually(
        "the consumer to drain the redeliveries and re-publishes",
        Duration::from_secs(60),
        || async {
            let s = js.get_stream(&feed.name).await.unwrap();
            match s.consumer_info("svc").await {
                Ok(i) => {
                    i.num_pending == 0
                        && i.num_ack_pending == 0
                        && i.delivered.stream_sequence >= 2 * events as u64
                }
                Err(_) => false,
            }
        },
    )
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler never ran again"
    );
    assert_eq!(effect_counts(&pool, "svc").await, (events, events));
    drop(relay);
}

fn message_headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, *v);
    }
    h
}

#[sqlx::test(migrations = false)]
async fn malformed_messages_are_parked_with_their_reason_and_terminated(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    write_events(&store, "account", 1, 1).await;
    let relay = publish_all(&pool, &store, &feed).await;
    let good = feed.messages().await.remove(0);
    let subject = good.subject.to_string();
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let with = |name: &str, value: &str| {
        let mut h = good.headers.clone();
        h.insert(name, value);
        h.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
        h
    };
    let cases: Vec<(HeaderMap, &str, &str)> = vec![
        (
            message_headers(&[("Nats-Msg-Id", "x1")]),
            r#"{"amount":1,"n":0}"#,
            "Annals-Event-Id is missing",
        ),
        (
            with("Annals-Event-Id", "nope"),
            r#"{"amount":1,"n":0}"#,
            "\"nope\"",
        ),
        (
            with("Annals-Stream-Version", "0"),
            r#"{"amount":1,"n":0}"#,
            "Annals-Stream-Version",
        ),
        (
            with("Annals-Event-Type", "Withdrawn"),
            r#"{"amount":1,"n":0}"#,
            "does not decode",
        ),
        (
            with("Annals-Event-Id", &uuid::Uuid::now_v7().to_string()),
            r#"{"amount":"lots"}"#,
            "does not decode",
        ),
        (
            with("Annals-Event-Id", &uuid::Uuid::now_v7().to_string()),
            "not json",
            "not JSON",
        ),
    ];
    for (headers, payload, _) in &cases {
        js.publish_with_headers(
            subject.clone(),
            headers.clone(),
            payload.as_bytes().to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // A good event after them: the consumer moves on.
    let mut after = good.headers.clone();
    let fresh = uuid::Uuid::now_v7().to_string();
    after.insert("Annals-Event-Id", fresh.as_str());
    after.insert("Nats-Msg-Id", fresh.as_str());
    js.publish_with_headers(subject.clone(), after, good.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();

    let effects = Effects::new(&pool, "svc").await;
    let inbox = Inbox::new(
        pool.clone(),
        client.clone(),
        &feed.name,
        "svc",
        effects,
        InboxOptions::default().schema("inbox_t"),
    )
    .unwrap();
    let parked_view = Inbox::new(
        pool.clone(),
        client.clone(),
        &feed.name,
        "svc",
        Effects::new(&pool, "svc").await,
        InboxOptions::default().schema("inbox_t"),
    )
    .unwrap();
    let (stop, done) = spawn_inbox(inbox);
    eventually(
        "both good events applied",
        Duration::from_secs(60),
        || async { inbox_rows(&pool).await >= 2 },
    )
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();

    let parked = parked_view.parked().await.unwrap();
    assert_eq!(parked.len(), cases.len(), "{parked:#?}");
    for (p, (_, _, reason)) in parked.iter().zip(&cases) {
        assert!(
            p.reason.contains(reason),
            "parked with {:?}, expected it to mention {reason:?}",
            p.reason
        );
    }
    // Terminated at the broker: nothing pending, nothing waiting for an acknowledgement, nothing redelivered.
    let s = js.get_stream(&feed.name).await.unwrap();
    let info = s.consumer_info("svc").await.unwrap();
    assert_eq!(
        (info.num_pending, info.num_ack_pending, info.num_redelivered),
        (0, 0, 0),
        "{info:?}"
    );
    assert_eq!(effect_counts(&pool, "svc").await, (2, 2));
    let _ = PullConfig::default();
    drop(relay);
}

#[sqlx::test(migrations = false)]
async fn handler_errors_are_retried_then_parked(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    // amounts 1, 2, 3 in one stream: amount 2 fails twice (then succeeds), a second consumer gives up on it.
    write_events(&store, "account", 1, 3).await;
    let relay = publish_all(&pool, &store, &feed).await;
    let client = async_nats::connect(shared_nats()).await.unwrap();

    let mut flaky = Effects::new(&pool, "retry").await;
    flaky.fail_amount = Some(2);
    flaky.failures = 2; // calls 0 and 1 fail (the first event is call 0 only if it is amount 2: it is amount 1)
    flaky.failures = 3;
    let calls = flaky.calls.clone();
    let options = InboxOptions::default()
        .schema("inbox_t")
        .attempts(5)
        .backoff(Duration::from_millis(20));
    let (stop, done) = spawn_inbox(
        Inbox::new(
            pool.clone(),
            client.clone(),
            &feed.name,
            "retry",
            flaky,
            options,
        )
        .unwrap(),
    );
    eventually("all three applied", Duration::from_secs(60), || async {
        effect_counts(&pool, "retry").await.0 >= 3
    })
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    // Call 0 applied amount 1; calls 1 and 2 failed on amount 2; call 3 applied it; call 4 applied amount 3.
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(effect_counts(&pool, "retry").await, (3, 3));

    let mut hopeless = Effects::new(&pool, "giveup").await;
    hopeless.fail_amount = Some(2);
    hopeless.failures = u32::MAX;
    let options = InboxOptions::default()
        .schema("inbox_t")
        .attempts(3)
        .backoff(Duration::from_millis(20));
    let inbox = Inbox::new(
        pool.clone(),
        client.clone(),
        &feed.name,
        "giveup",
        hopeless,
        options.clone(),
    )
    .unwrap();
    let (stop, done) = spawn_inbox(inbox);
    eventually("the others applied", Duration::from_secs(60), || async {
        effect_counts(&pool, "giveup").await.0 >= 2
    })
    .await;
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    let view = Inbox::new(
        pool.clone(),
        client,
        &feed.name,
        "giveup",
        Effects::new(&pool, "giveup").await,
        options,
    )
    .unwrap();
    let parked = view.parked().await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].attempts, 3);
    assert!(
        parked[0]
            .reason
            .contains("the handler failed 3 time(s): injected failure"),
        "{}",
        parked[0].reason
    );
    drop(relay);
}
