//! 50 clients on one account: no update is lost and the balance never goes below zero.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestServer;

const CLIENTS: u64 = 50;
const OPERATIONS_PER_CLIENT: u64 = 6;

/// Returns how many requests ended in `409 conflict` (retries exhausted).
async fn concurrent_clients_never_lose_an_update(server: &TestServer) -> u64 {
    server.open("shared", "Everyone").await;
    let clients = (0..CLIENTS).map(|client| async move {
        let (mut net, mut accepted, mut conflicts) = (0i128, 0u64, 0u64);
        for op in 0..OPERATIONS_PER_CLIENT {
            // Deterministic mix: deposits of varying size, withdrawals that sometimes exceed the balance.
            let amount = 1 + (client * 7 + op * 13) % 50;
            let withdraw = (client + op) % 3 == 0;
            let action = if withdraw { "withdraw" } else { "deposit" };
            let reply = server
                .post(
                    &format!("/accounts/shared/{action}"),
                    &json!({"amount": amount}),
                )
                .await;
            match (reply.status, reply.code()) {
                (StatusCode::OK, _) => {
                    accepted += 1;
                    net += if withdraw {
                        -i128::from(amount)
                    } else {
                        i128::from(amount)
                    };
                    let balance = reply.body["balance"].as_i64().unwrap();
                    assert!(balance >= 0);
                }
                (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds") => {}
                (StatusCode::CONFLICT, "conflict") => conflicts += 1,
                _ => panic!("unexpected reply: {reply:?}"),
            }
        }
        (net, accepted, conflicts)
    });
    let results = futures::future::join_all(clients).await;
    let net: i128 = results.iter().map(|r| r.0).sum();
    let accepted: u64 = results.iter().map(|r| r.1).sum();
    let conflicts: u64 = results.iter().map(|r| r.2).sum();

    let events = server.get("/accounts/shared/events").await;
    let items = events.body["items"].as_array().unwrap();
    assert_eq!(
        items.len() as u64,
        accepted + 1,
        "one event per accepted operation"
    );
    let mut balance = 0i128;
    for event in &items[1..] {
        let amount = i128::from(event["payload"]["amount"].as_u64().unwrap());
        match event["type"].as_str().unwrap() {
            "MoneyDeposited" => balance += amount,
            "MoneyWithdrawn" => balance -= amount,
            other => panic!("unexpected event {other}"),
        }
        assert!(balance >= 0, "the balance never goes below zero");
    }
    assert_eq!(
        balance, net,
        "the final balance is the sum of the successful operations"
    );
    let last = server
        .post("/accounts/shared/deposit", &json!({"amount": 1}))
        .await;
    assert_eq!(i128::from(last.body["balance"].as_u64().unwrap()), net + 1);
    conflicts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_concurrent_clients_never_lose_an_update() {
    let conflicts = concurrent_clients_never_lose_an_update(&TestServer::memory().await).await;
    assert_eq!(conflicts, 0);
}
