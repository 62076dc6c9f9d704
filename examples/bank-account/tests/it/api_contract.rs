//! Every endpoint and every error code of the HTTP contract.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::TestServer;

async fn commands_follow_the_contract(server: &TestServer) {
    let health = server.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);

    let opened = server.open("acc-1", "Alice").await;
    assert_eq!(
        opened.body,
        json!({"id": "acc-1", "owner": "Alice", "balance": 0, "status": "open", "version": 1,
               "position": opened.body["position"]})
    );
    assert!(opened.body["position"].as_u64().unwrap() >= 1);

    let generated = server.post("/accounts", &json!({"owner": "Bob"})).await;
    assert_eq!(generated.status, StatusCode::CREATED, "{generated:?}");
    assert!(generated.body["id"].as_str().unwrap().starts_with("acc-"));

    let deposited = server
        .post("/accounts/acc-1/deposit", &json!({"amount": 1000}))
        .await;
    assert_eq!(deposited.status, StatusCode::OK, "{deposited:?}");
    assert_eq!(deposited.body["id"], "acc-1");
    assert_eq!(deposited.body["balance"], 1000);
    assert_eq!(deposited.body["version"], 2);
    assert!(
        deposited.body["position"].as_u64().unwrap() > opened.body["position"].as_u64().unwrap()
    );

    let withdrawn = server
        .post("/accounts/acc-1/withdraw", &json!({"amount": 400}))
        .await;
    assert_eq!(withdrawn.status, StatusCode::OK, "{withdrawn:?}");
    assert_eq!(withdrawn.body["balance"], 600);
    assert_eq!(withdrawn.body["version"], 3);

    server
        .post("/accounts/acc-1/withdraw", &json!({"amount": 601}))
        .await
        .assert_error(422, "insufficient_funds");
    server
        .post("/accounts/acc-1/close", &json!({}))
        .await
        .assert_error(422, "balance_not_zero");
    server
        .post("/accounts/acc-1/withdraw", &json!({"amount": 600}))
        .await;
    let closed = server
        .send(Method::POST, "/accounts/acc-1/close", None, &[])
        .await;
    assert_eq!(closed.status, StatusCode::OK, "{closed:?}");
    assert_eq!(closed.body["balance"], 0);
    assert_eq!(closed.body["version"], 5);
    for action in ["deposit", "withdraw"] {
        server
            .post(&format!("/accounts/acc-1/{action}"), &json!({"amount": 1}))
            .await
            .assert_error(422, "account_closed");
    }
    server
        .post("/accounts/acc-1/close", &json!({}))
        .await
        .assert_error(422, "account_closed");
    server
        .post("/accounts", &json!({"id": "acc-1", "owner": "Mallory"}))
        .await
        .assert_error(409, "account_exists");
}

async fn money_limits_are_enforced(server: &TestServer) {
    server.open("rich", "Scrooge").await;
    let max = i64::MAX as u64;
    let filled = server
        .post("/accounts/rich/deposit", &json!({"amount": max}))
        .await;
    assert_eq!(filled.status, StatusCode::OK, "{filled:?}");
    assert_eq!(filled.body["balance"], max);
    server
        .post("/accounts/rich/deposit", &json!({"amount": 1}))
        .await
        .assert_error(422, "amount_overflow");
    for amount in [
        json!(0),
        json!(-5),
        json!(max + 1),
        json!(1.5),
        json!("10"),
        json!(null),
    ] {
        let reply = server
            .post("/accounts/rich/withdraw", &json!({"amount": amount}))
            .await;
        reply.assert_error(400, "invalid_request");
    }
    let reply = server
        .post("/accounts/rich/deposit", &json!({"amount": "ten"}))
        .await;
    reply.assert_error(400, "invalid_request");
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("amount"),
        "the message names the field: {reply:?}"
    );
}

async fn bad_input_is_a_400_naming_what_was_wrong(server: &TestServer) {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("/accounts", b"{\"owner\": ".to_vec(), "not valid JSON"),
        ("/accounts", b"not json".to_vec(), "not valid JSON"),
        ("/accounts", b"".to_vec(), "empty"),
        ("/accounts", b"{}".to_vec(), "owner"),
        ("/accounts", b"{\"owner\": 7}".to_vec(), "owner"),
        (
            "/accounts",
            b"{\"owner\": \"A\", \"colour\": 1}".to_vec(),
            "colour",
        ),
        (
            "/accounts",
            b"{\"owner\": \"A\"} trailing".to_vec(),
            "trailing characters",
        ),
        ("/accounts", b"[1, 2]".to_vec(), "invalid request body"),
        ("/accounts", b"{\"owner\": \"  \"}".to_vec(), "owner"),
        // A NUL no store keeps, and other control characters: refused up front, on every store alike.
        (
            "/accounts",
            b"{\"owner\": \"a\\u0000b\"}".to_vec(),
            "owner must not contain control characters",
        ),
        (
            "/accounts",
            b"{\"owner\": \"Ann\\nLee\"}".to_vec(),
            "owner must not contain control characters",
        ),
        (
            "/accounts",
            b"{\"id\": \"a/b\", \"owner\": \"A\"}".to_vec(),
            "account id",
        ),
        (
            "/accounts",
            b"{\"id\": \"\", \"owner\": \"A\"}".to_vec(),
            "account id",
        ),
    ];
    for (path, body, needle) in cases {
        let reply = server.post_raw(path, body.clone()).await;
        reply.assert_error(400, "invalid_request");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{:?}: {message:?} should mention {needle:?}",
            String::from_utf8_lossy(&body)
        );
    }
    let long_owner = "x".repeat(201);
    server
        .post("/accounts", &json!({"owner": long_owner}))
        .await
        .assert_error(400, "invalid_request");
    server
        .post("/accounts/bad%20id/deposit", &json!({"amount": 1}))
        .await
        .assert_error(400, "invalid_request");
    server
        .get("/accounts/bad%20id/events")
        .await
        .assert_error(400, "invalid_request");
    // Not UTF-8 once decoded, too long, and deeply nested JSON: still a 400, never a 500.
    server
        .post("/accounts/%FF/deposit", &json!({"amount": 1}))
        .await
        .assert_error(400, "invalid_request");
    server
        .get(&format!("/accounts/{}", "x".repeat(65)))
        .await
        .assert_error(400, "invalid_request");
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    server
        .post_raw("/accounts", nested)
        .await
        .assert_error(400, "invalid_request");
    server.open("body-limit", "Alice").await;
    let huge = format!("{{\"owner\": \"{}\"}}", "x".repeat(70 * 1024));
    server
        .post_raw("/accounts", huge.clone())
        .await
        .assert_error(413, "payload_too_large");
    let with_key = server
        .client
        .post(server.url("/accounts"))
        .header("idempotency-key", "huge-1")
        .body(huge)
        .send()
        .await
        .unwrap();
    crate::support::reply(with_key)
        .await
        .assert_error(413, "payload_too_large");
    server
        .post_raw("/accounts/body-limit/close", "{\"now\": true}")
        .await
        .assert_error(400, "invalid_request");
}

async fn unknown_accounts_and_routes_are_404(server: &TestServer) {
    for action in ["deposit", "withdraw"] {
        server
            .post(&format!("/accounts/nobody/{action}"), &json!({"amount": 5}))
            .await
            .assert_error(404, "account_not_found");
    }
    server
        .post("/accounts/nobody/close", &json!({}))
        .await
        .assert_error(404, "account_not_found");
    server
        .get("/accounts/nobody/events")
        .await
        .assert_error(404, "account_not_found");
    server.get("/nowhere").await.assert_error(404, "not_found");
    server
        .send(Method::DELETE, "/accounts", None, &[])
        .await
        .assert_error(405, "method_not_allowed");
}

async fn correlation_ids_are_recorded_and_echoed(server: &TestServer) {
    let opened = server
        .send(
            Method::POST,
            "/accounts",
            Some(&json!({"id": "corr", "owner": "Carol"})),
            &[("x-correlation-id", "trace-42")],
        )
        .await;
    assert_eq!(opened.status, StatusCode::CREATED);
    assert_eq!(opened.headers["x-correlation-id"], "trace-42");
    let deposited = server
        .post("/accounts/corr/deposit", &json!({"amount": 5}))
        .await;
    let generated = deposited.headers["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!generated.is_empty());

    let events = server.get("/accounts/corr/events").await;
    assert_eq!(events.status, StatusCode::OK, "{events:?}");
    let items = events.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["type"], "AccountOpened");
    assert_eq!(items[0]["version"], 1);
    assert_eq!(items[0]["payload"], json!({"owner": "Carol"}));
    assert_eq!(items[0]["metadata"]["correlation_id"], "trace-42");
    assert_eq!(items[1]["type"], "MoneyDeposited");
    assert_eq!(items[1]["payload"], json!({"amount": 5}));
    assert_eq!(items[1]["metadata"]["correlation_id"], generated.as_str());
    assert!(items[1]["position"].as_u64() > items[0]["position"].as_u64());
    assert!(items[0]["recorded_at"].is_string());

    let errors_echo_too = server
        .send(
            Method::POST,
            "/accounts/corr/withdraw",
            Some(&json!({"amount": 0})),
            &[("x-correlation-id", "trace-43")],
        )
        .await;
    assert_eq!(errors_echo_too.headers["x-correlation-id"], "trace-43");
    let too_long = "c".repeat(201);
    server
        .send(
            Method::POST,
            "/accounts/corr/deposit",
            Some(&json!({"amount": 1})),
            &[("x-correlation-id", too_long.as_str())],
        )
        .await
        .assert_error(400, "invalid_request");
}

on_both_stores!(
    commands_follow_the_contract,
    memory_commands_follow_the_contract,
    postgres_commands_follow_the_contract
);
on_both_stores!(
    money_limits_are_enforced,
    memory_money_limits_are_enforced,
    postgres_money_limits_are_enforced
);
on_both_stores!(
    bad_input_is_a_400_naming_what_was_wrong,
    memory_bad_input_is_a_400_naming_what_was_wrong,
    postgres_bad_input_is_a_400_naming_what_was_wrong
);
on_both_stores!(
    unknown_accounts_and_routes_are_404,
    memory_unknown_accounts_and_routes_are_404,
    postgres_unknown_accounts_and_routes_are_404
);
on_both_stores!(
    correlation_ids_are_recorded_and_echoed,
    memory_correlation_ids_are_recorded_and_echoed,
    postgres_correlation_ids_are_recorded_and_echoed
);
