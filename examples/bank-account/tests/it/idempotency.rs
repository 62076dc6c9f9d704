//! `Idempotency-Key`: one effect per key, the original answer on every retry, even when the retries race.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Reply, TestServer};

async fn post_with_key(
    server: &TestServer,
    path: &str,
    body: &serde_json::Value,
    key: &str,
) -> Reply {
    server
        .send(Method::POST, path, Some(body), &[("idempotency-key", key)])
        .await
}

async fn event_count(server: &TestServer, id: &str) -> usize {
    let events = server.get(&format!("/accounts/{id}/events")).await;
    assert_eq!(events.status, StatusCode::OK, "{events:?}");
    events.body["items"].as_array().unwrap().len()
}

async fn a_retry_returns_the_original_answer_without_a_second_effect(server: &TestServer) {
    let first = post_with_key(server, "/accounts", &json!({"owner": "Alice"}), "open-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let retry = post_with_key(server, "/accounts", &json!({"owner": "Alice"}), "open-1").await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(
        retry.body, first.body,
        "the generated id is the same: one account"
    );
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    let id = first.body["id"].as_str().unwrap().to_owned();

    let path = format!("/accounts/{id}/deposit");
    let deposit = post_with_key(server, &path, &json!({"amount": 100}), "dep-1").await;
    // Same JSON written differently is the same request.
    let retry = server
        .client
        .post(server.url(&path))
        .header("idempotency-key", "dep-1")
        .header("content-type", "application/json")
        .body("{ \"amount\" :100 }")
        .send()
        .await
        .unwrap();
    let retry = crate::support::reply(retry).await;
    assert_eq!((retry.status, &retry.body), (deposit.status, &deposit.body));
    assert_eq!(event_count(server, &id).await, 2);
    let events = server.get(&format!("/accounts/{id}/events")).await;
    assert_eq!(
        events.body["items"][1]["metadata"]["extra"]["idempotency_key"],
        "dep-1"
    );

    // A refusal is an answer too: the retry gets it back even after the balance changed.
    let refused = post_with_key(
        server,
        &format!("/accounts/{id}/withdraw"),
        &json!({"amount": 500}),
        "wd-1",
    )
    .await;
    refused.assert_error(422, "insufficient_funds");
    server.post(&path, &json!({"amount": 1000})).await;
    let retry = post_with_key(
        server,
        &format!("/accounts/{id}/withdraw"),
        &json!({"amount": 500}),
        "wd-1",
    )
    .await;
    retry.assert_error(422, "insufficient_funds");
    assert_eq!(retry.body, refused.body);
}

async fn a_key_reused_for_another_request_is_a_422(server: &TestServer) {
    server.open("reuse", "Alice").await;
    let first = post_with_key(
        server,
        "/accounts/reuse/deposit",
        &json!({"amount": 1}),
        "k",
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    post_with_key(
        server,
        "/accounts/reuse/deposit",
        &json!({"amount": 2}),
        "k",
    )
    .await
    .assert_error(422, "idempotency_key_reused");
    post_with_key(
        server,
        "/accounts/reuse/withdraw",
        &json!({"amount": 1}),
        "k",
    )
    .await
    .assert_error(422, "idempotency_key_reused");
    assert_eq!(event_count(server, "reuse").await, 2);
    let long_key = "k".repeat(256);
    post_with_key(
        server,
        "/accounts/reuse/deposit",
        &json!({"amount": 1}),
        &long_key,
    )
    .await
    .assert_error(400, "invalid_request");
}

async fn racing_retries_have_one_effect(server: &TestServer) {
    server.open("race", "Alice").await;
    let body = json!({"amount": 7});
    let retries =
        (0..20).map(|_| post_with_key(server, "/accounts/race/deposit", &body, "race-key"));
    let replies = futures::future::join_all(retries).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.body, replies[0].body);
    }
    assert_eq!(replies[0].body["balance"], 7);
    assert_eq!(
        event_count(server, "race").await,
        2,
        "one deposit, however many retries"
    );

    let body = json!({"owner": "Racer"});
    let opens = (0..20).map(|_| post_with_key(server, "/accounts", &body, "race-open"));
    let replies = futures::future::join_all(opens).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        assert_eq!(
            reply.body, replies[0].body,
            "every retry sees the one account"
        );
    }
}

on_both_stores!(
    a_retry_returns_the_original_answer_without_a_second_effect,
    memory_a_retry_returns_the_original_answer_without_a_second_effect,
    postgres_a_retry_returns_the_original_answer_without_a_second_effect
);
on_both_stores!(
    a_key_reused_for_another_request_is_a_422,
    memory_a_key_reused_for_another_request_is_a_422,
    postgres_a_key_reused_for_another_request_is_a_422
);
on_both_stores!(
    racing_retries_have_one_effect,
    memory_racing_retries_have_one_effect,
    postgres_racing_retries_have_one_effect
);

/// On PostgreSQL the keys are stored with the events, not in process memory: a retry after a restart (or on
/// another instance) still gets the original answer and has no second effect.
#[sqlx::test(migrations = false)]
async fn postgres_keys_survive_a_restart(pool: sqlx::PgPool) {
    let first = TestServer::postgres(&pool).await;
    first.open("durable", "Alice").await;
    let body = json!({"amount": 5});
    let original = post_with_key(&first, "/accounts/durable/deposit", &body, "durable-1").await;
    assert_eq!(original.status, StatusCode::OK);
    first.stop().await;

    let second = TestServer::postgres(&pool).await;
    let retry = post_with_key(&second, "/accounts/durable/deposit", &body, "durable-1").await;
    assert_eq!(
        (retry.status, &retry.body),
        (original.status, &original.body)
    );
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(event_count(&second, "durable").await, 2);
    second.stop().await;
}

async fn bad_bodies_with_a_key_are_400_never_500(server: &TestServer) {
    server.open("bad-body", "Alice").await;
    let bodies: [&[u8]; 4] = [
        b"{\"owner\": \"a\0b\"}",
        b"{\"amount\": 1, \"x\": \"\xff\xfe\"}",
        b"\xc3\x28",
        b"\0",
    ];
    for (i, body) in bodies.iter().enumerate() {
        for path in ["/accounts", "/accounts/bad-body/deposit", "/no/such/route"] {
            let reply = server
                .client
                .post(server.url(path))
                .header("idempotency-key", format!("bad-{i}"))
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let reply = crate::support::reply(reply).await;
            let expected = if path == "/no/such/route" { 404 } else { 400 };
            assert_eq!(
                reply.status.as_u16(),
                expected,
                "{path} {body:?}: {reply:?}"
            );
        }
    }
    assert_eq!(event_count(server, "bad-body").await, 1);
}

async fn keys_are_scoped_per_client(server: &TestServer) {
    server.open("scoped", "Alice").await;
    let deposit = |client: &'static str, amount: u64| async move {
        let body = json!({ "amount": amount });
        server
            .send(
                Method::POST,
                "/accounts/scoped/deposit",
                Some(&body),
                &[("idempotency-key", "same-key"), ("x-client-id", client)],
            )
            .await
    };
    let a = deposit("client-a", 5).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    // Another client's request under the same key is its own: no replay of client-a's answer, no 422.
    let b = deposit("client-b", 7).await;
    assert_eq!((b.status, &b.body["balance"]), (StatusCode::OK, &json!(12)));
    assert_eq!(
        deposit("client-a", 5).await.body,
        a.body,
        "client-a's retry replays"
    );
    assert_eq!(event_count(server, "scoped").await, 3);
}

on_both_stores!(
    bad_bodies_with_a_key_are_400_never_500,
    memory_bad_bodies_with_a_key_are_400_never_500,
    postgres_bad_bodies_with_a_key_are_400_never_500
);
on_both_stores!(
    keys_are_scoped_per_client,
    memory_keys_are_scoped_per_client,
    postgres_keys_are_scoped_per_client
);
