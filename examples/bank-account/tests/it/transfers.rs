//! Transfers between accounts over real HTTP, on the memory store and on PostgreSQL: the contract of
//! `POST /transfers`, `GET /transfers/{id}`, `DELETE /transfers/{id}`; compensation; correlation ids; and money
//! conserved under thousands of random concurrent transfers.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Reply, TestServer};

/// Waits until transfer `id` has ended (completed, failed or cancelled) and returns its view.
pub(crate) async fn ended(server: &TestServer, id: &str) -> Value {
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = server.get(&format!("/transfers/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        if matches!(
            reply.body["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return reply.body;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "transfer {id} did not end: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn deposit(server: &TestServer, id: &str, amount: u64) {
    let reply = server
        .post(
            &format!("/accounts/{id}/deposit"),
            &json!({"amount": amount}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
}

/// The balance of `id` from its own events (the source of truth).
async fn balance(server: &TestServer, id: &str) -> Option<i128> {
    let reply = server.get(&format!("/accounts/{id}/events")).await;
    if reply.status == StatusCode::NOT_FOUND {
        return None;
    }
    let mut balance = 0i128;
    for event in reply.body["items"].as_array().unwrap() {
        let amount = |e: &Value| i128::from(e["payload"]["amount"].as_u64().unwrap());
        match event["type"].as_str().unwrap() {
            "MoneyDeposited" | "TransferCredited" | "TransferRefunded" => balance += amount(event),
            "MoneyWithdrawn" | "TransferDebited" => balance -= amount(event),
            _ => {}
        }
    }
    Some(balance)
}

async fn transfer(server: &TestServer, body: Value) -> Reply {
    server.post("/transfers", &body).await
}

async fn the_contract(server: &TestServer) {
    server.open("alice", "Alice").await;
    server.open("bob", "Bob").await;
    deposit(server, "alice", 1_000).await;

    // Bad requests name what was wrong.
    for (body, field) in [
        (json!({"from": "alice", "to": "alice", "amount": 1}), "to"),
        (json!({"from": "alice", "to": "bob", "amount": 0}), "amount"),
        (
            json!({"from": "alice", "to": "bob", "amount": -5}),
            "amount",
        ),
        (json!({"from": "alice", "to": "b b", "amount": 5}), "to"),
        (
            json!({"id": "no/slash", "from": "alice", "to": "bob", "amount": 5}),
            "id",
        ),
        (
            json!({"from": "alice", "to": "bob", "amount": 5, "execute_at": "tomorrow"}),
            "execute_at",
        ),
        (
            json!({"from": "alice", "to": "bob", "amount": 5, "extra": 1}),
            "extra",
        ),
    ] {
        let reply = transfer(server, body.clone()).await;
        reply.assert_error(400, "invalid_request");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{body}: {reply:?}"
        );
    }
    transfer(server, json!({"from": "nobody", "to": "bob", "amount": 5}))
        .await
        .assert_error(404, "account_not_found");
    server
        .get("/transfers/unknown")
        .await
        .assert_error(404, "transfer_not_found");

    // A transfer that completes; its movements name the transfer and the other account; one correlation id
    // runs from the request through every event of the transfer.
    let reply = server
        .send(
            Method::POST,
            "/transfers",
            Some(&json!({"id": "t-1", "from": "alice", "to": "bob", "amount": 300})),
            &[("x-correlation-id", "corr-t-1")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    assert_eq!(reply.body, json!({"id": "t-1", "status": "pending"}));
    let done = ended(server, "t-1").await;
    assert_eq!(
        done,
        json!({"id": "t-1", "from": "alice", "to": "bob", "amount": 300, "status": "completed"})
    );
    assert_eq!(balance(server, "alice").await, Some(700));
    assert_eq!(balance(server, "bob").await, Some(300));
    let events = server.get("/accounts/alice/events").await.body;
    let debit = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "TransferDebited")
        .unwrap()
        .clone();
    assert_eq!(
        debit["payload"],
        json!({"transfer": "t-1", "counterparty": "bob", "amount": 300})
    );
    assert_eq!(debit["metadata"]["correlation_id"], "corr-t-1");
    let credit = &server.get("/accounts/bob/events").await.body["items"][1];
    assert_eq!(credit["type"], "TransferCredited");
    assert_eq!(credit["payload"]["counterparty"], "alice");
    assert_eq!(credit["metadata"]["correlation_id"], "corr-t-1");
    // The history read model shows it too.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let history = server.get("/accounts/bob/history").await.body;
        let items = history["items"].as_array().cloned().unwrap_or_default();
        if let Some(item) = items.iter().find(|i| i["kind"] == "transfer_in") {
            assert_eq!(item["transfer"], "t-1");
            assert_eq!(item["counterparty"], "alice");
            assert_eq!(item["balance_after"], 300);
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{history}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The same request again is accepted and changes nothing; the same id with other details is a conflict.
    let again = transfer(
        server,
        json!({"id": "t-1", "from": "alice", "to": "bob", "amount": 300}),
    )
    .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{again:?}");
    assert_eq!(again.body["status"], "completed");
    transfer(
        server,
        json!({"id": "t-1", "from": "alice", "to": "bob", "amount": 301}),
    )
    .await
    .assert_error(409, "transfer_exists");

    // Refused debit: failed, nothing moved.
    transfer(
        server,
        json!({"id": "t-2", "from": "alice", "to": "bob", "amount": 5_000}),
    )
    .await;
    let failed = ended(server, "t-2").await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "insufficient_funds");

    // Refused credit (target never opened, target closed): refunded, failed with the reason.
    transfer(
        server,
        json!({"id": "t-3", "from": "alice", "to": "ghost", "amount": 100}),
    )
    .await;
    assert_eq!(ended(server, "t-3").await["reason"], "account_not_found");
    server.open("carol", "Carol").await;
    let closed = server.post("/accounts/carol/close", &json!({})).await;
    assert_eq!(closed.status, StatusCode::OK, "{closed:?}");
    transfer(
        server,
        json!({"id": "t-4", "from": "alice", "to": "carol", "amount": 100}),
    )
    .await;
    let refunded = ended(server, "t-4").await;
    assert_eq!(refunded["status"], "failed");
    assert_eq!(refunded["reason"], "account_closed");
    assert_eq!(
        balance(server, "alice").await,
        Some(700),
        "both refunds came back"
    );
    let kinds: Vec<String> = server.get("/accounts/alice/events").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "TransferRefunded").count(),
        2,
        "{kinds:?}"
    );
    // Only a transfer whose refund was refused (`refund_failed`, see `transfer_legs.rs`) has a refund to retry.
    server
        .post("/transfers/t-4/retry-refund", &json!({}))
        .await
        .assert_error(409, "transfer_refund_not_failed");
    server
        .post("/transfers/nope/retry-refund", &json!({}))
        .await
        .assert_error(404, "transfer_not_found");
    // Debit from a closed account.
    transfer(
        server,
        json!({"id": "t-5", "from": "carol", "to": "bob", "amount": 1}),
    )
    .await;
    assert_eq!(ended(server, "t-5").await["reason"], "account_closed");

    // Scheduled, then cancelled: never runs. A transfer that has started cannot be cancelled.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let scheduled = transfer(
        server,
        json!({"id": "t-6", "from": "alice", "to": "bob", "amount": 10, "execute_at": later}),
    )
    .await;
    assert_eq!(scheduled.status, StatusCode::ACCEPTED, "{scheduled:?}");
    assert_eq!(scheduled.body["status"], "scheduled");
    let shown = server.get("/transfers/t-6").await.body;
    assert_eq!(shown["status"], "scheduled");
    assert!(shown["execute_at"].is_string(), "{shown}");
    let cancelled = server
        .send(Method::DELETE, "/transfers/t-6", None, &[])
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "cancelled");
    server
        .send(Method::DELETE, "/transfers/t-6", None, &[])
        .await
        .assert_error(409, "transfer_not_cancellable");
    server
        .send(Method::DELETE, "/transfers/t-1", None, &[])
        .await
        .assert_error(409, "transfer_not_cancellable");
    server
        .send(Method::DELETE, "/transfers/nope", None, &[])
        .await
        .assert_error(404, "transfer_not_found");

    // Scheduled a moment ahead: it runs at its time.
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    transfer(
        server,
        json!({"id": "t-7", "from": "alice", "to": "bob", "amount": 10, "execute_at": soon}),
    )
    .await;
    assert_eq!(ended(server, "t-7").await["status"], "completed");
    assert_eq!(balance(server, "bob").await, Some(310));
}

on_both_stores!(
    the_contract,
    transfer_contract_memory,
    transfer_contract_postgres
);

/// Accounts, starting balances and transfers of a random run.
pub(crate) struct Run {
    pub(crate) accounts: Vec<String>,
    pub(crate) total: i128,
    pub(crate) transfers: Vec<Value>,
}

/// Opens `accounts` accounts with random balances (a few closed), and draws `count` random transfers among
/// them, some to accounts that do not exist, some larger than the source holds.
pub(crate) async fn prepare(base: &str, seed: u64, accounts: usize, count: usize) -> Run {
    let client = reqwest::Client::new();
    let post = async |path: String, body: Value| {
        let response = client
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "{path}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let names: Vec<String> = (0..accounts).map(|n| format!("acc-{n:03}")).collect();
    let mut total = 0i128;
    let opened = futures::future::join_all(names.iter().enumerate().map(|(n, name)| {
        let amount = if n % 25 == 0 {
            0
        } else {
            100 + (n as u64 * 37) % 900
        };
        async move {
            post(
                "/accounts".to_owned(),
                json!({"id": name, "owner": "Owner"}),
            )
            .await;
            if amount == 0 {
                post(format!("/accounts/{name}/close"), json!({})).await;
            } else {
                post(
                    format!("/accounts/{name}/deposit"),
                    json!({"amount": amount}),
                )
                .await;
            }
            amount
        }
    }))
    .await;
    total += opened.iter().map(|a| i128::from(*a)).sum::<i128>();
    let transfers = (0..count)
        .map(|n| {
            let from = rng.random_range(0..accounts);
            let mut to = rng.random_range(0..accounts);
            if to == from {
                to = (to + 1) % accounts;
            }
            let to = if rng.random_range(0..20u32) == 0 {
                format!("missing-{n}")
            } else {
                names[to].clone()
            };
            json!({"id": format!("tr-{seed}-{n}"), "from": names[from], "to": to, "amount": rng.random_range(1..400u64)})
        })
        .collect();
    Run {
        accounts: names,
        total,
        transfers,
    }
}

/// Sends the run's transfers with `clients` concurrent clients; returns the ids accepted.
pub(crate) async fn send_all(
    base: &str,
    transfers: &[Value],
    clients: usize,
    progress: &std::sync::atomic::AtomicUsize,
) -> Vec<String> {
    let client = reqwest::Client::new();
    let chunks: Vec<Vec<Value>> = transfers
        .chunks(transfers.len().div_ceil(clients))
        .map(<[Value]>::to_vec)
        .collect();
    let sent = futures::future::join_all(chunks.into_iter().map(|chunk| {
        let client = client.clone();
        let url = format!("{base}/transfers");
        async move {
            let mut ids = Vec::new();
            for body in chunk {
                // A connection refused (the service is being killed and restarted) is retried: the transfer id
                // makes the request idempotent.
                let until = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    match client.post(&url).json(&body).send().await {
                        Ok(response) if response.status() == StatusCode::ACCEPTED => break,
                        Ok(response) => {
                            let status = response.status();
                            let text = response.text().await.unwrap_or_default();
                            assert!(status.is_server_error(), "{body}: {status} {text}");
                        }
                        Err(_) => {}
                    }
                    assert!(tokio::time::Instant::now() < until, "{body} never accepted");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ids.push(body["id"].as_str().unwrap().to_owned());
                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            ids
        }
    }))
    .await;
    sent.into_iter().flatten().collect()
}

/// Checks the end state of a run: every transfer ended (or holds its money after a refused refund,
/// `refund_failed`); money conserved (the balances plus the money held); no negative balance; each account's
/// history (its events) adds up to its balance; no transfer leg applied twice; completed transfers moved their
/// amount once, failed ones moved nothing in the end, stuck ones hold exactly what was debited.
pub(crate) async fn check(base: &str, run: &Run, ids: &[String]) {
    let client = reqwest::Client::new();
    let get = async |path: &str| -> Value {
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(format!("{base}{path}")).send().await
                && (response.status().is_success() || response.status() == StatusCode::NOT_FOUND)
            {
                return response.json().await.unwrap_or(Value::Null);
            }
            assert!(
                tokio::time::Instant::now() < until,
                "GET {path} kept failing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut statuses = BTreeMap::new();
    let mut held_total = 0i128;
    let mut pending: Vec<&String> = ids.iter().collect();
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let view = get(&format!("/transfers/{id}")).await;
            match view["status"].as_str() {
                Some(s @ ("completed" | "failed" | "refund_failed")) => {
                    let held = view["held"].as_u64().unwrap_or(0);
                    held_total += i128::from(held);
                    statuses.insert(id.clone(), (s.to_owned(), view["amount"].as_u64().unwrap()));
                }
                _ => still.push(id),
            }
        }
        pending = still;
        assert!(
            tokio::time::Instant::now() < until,
            "{} transfers never ended, e.g. {:?}",
            pending.len(),
            pending.first()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut sum = 0i128;
    let mut legs: HashSet<(String, String)> = HashSet::new();
    let mut moved: BTreeMap<String, i128> = BTreeMap::new();
    for account in &run.accounts {
        let events = get(&format!("/accounts/{account}/events")).await;
        let mut balance = 0i128;
        for event in events["items"].as_array().unwrap() {
            let kind = event["type"].as_str().unwrap();
            let amount = i128::from(event["payload"]["amount"].as_u64().unwrap_or(0));
            let transfer = event["payload"]["transfer"].as_str().map(str::to_owned);
            match kind {
                "MoneyDeposited" => balance += amount,
                "MoneyWithdrawn" => balance -= amount,
                "TransferDebited" => balance -= amount,
                "TransferCredited" | "TransferRefunded" => balance += amount,
                _ => {}
            }
            assert!(balance >= 0, "{account} went negative at {event}");
            if let Some(transfer) = transfer {
                assert!(
                    legs.insert((transfer.clone(), kind.to_owned())),
                    "{kind} of {transfer} applied twice"
                );
                let signed = if kind == "TransferCredited" {
                    amount
                } else {
                    0
                };
                *moved.entry(transfer).or_default() += signed;
            }
        }
        let shown = get(&format!("/accounts/{account}/events")).await;
        assert_eq!(shown["items"], events["items"]);
        sum += balance;
    }
    assert_eq!(
        sum + held_total,
        run.total,
        "money is conserved (balances {sum}, held by refund_failed transfers {held_total})"
    );
    for (id, (status, amount)) in &statuses {
        let out = legs.contains(&(id.clone(), "TransferDebited".to_owned()));
        let credited = legs.contains(&(id.clone(), "TransferCredited".to_owned()));
        let refunded = legs.contains(&(id.clone(), "TransferRefunded".to_owned()));
        match status.as_str() {
            "completed" => {
                assert!(out && credited && !refunded, "{id}");
                assert_eq!(moved.get(id).copied(), Some(i128::from(*amount)), "{id}");
            }
            "refund_failed" => assert!(out && !credited && !refunded, "{id}"),
            _ => assert!(
                !credited && out == refunded,
                "{id}: out {out} refunded {refunded}"
            ),
        }
    }
    let completed = statuses.values().filter(|(s, _)| s == "completed").count();
    assert!(
        completed > 0 && completed < statuses.len(),
        "a mix of outcomes: {completed}"
    );
}

/// Memory: 2,000 transfers among 200 accounts; PostgreSQL: 1,000 (the process handles one input at a time, and
/// each step is a few round trips).
async fn money_is_conserved(server: &TestServer) {
    let count = if server.config.database_url.is_some() {
        1_000
    } else {
        2_000
    };
    let run = prepare(&server.base, 7, 200, count).await;
    let ids = send_all(&server.base, &run.transfers, 16, &Default::default()).await;
    assert_eq!(ids.len(), count);
    check(&server.base, &run, &ids).await;
    // The balances read model agrees with the events once it has caught up.
    let statuses = server.service.projections().status().await.unwrap();
    let head = statuses.iter().map(|s| s.head).max().unwrap();
    server
        .service
        .projections()
        .wait_for_position("balances", head, Duration::from_secs(60))
        .await
        .unwrap();
    for account in &run.accounts {
        let shown = server.get(&format!("/accounts/{account}")).await.body;
        let truth = balance(server, account).await.unwrap();
        assert_eq!(
            i128::from(shown["balance"].as_u64().unwrap()),
            truth,
            "{account}"
        );
    }
}

on_both_stores!(
    money_is_conserved,
    money_is_conserved_under_concurrent_transfers_memory,
    money_is_conserved_under_concurrent_transfers_postgres
);
