//! `bank projections rebuild` produces exactly the read model the service built, while the service keeps
//! serving reads and writes.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support::TestServer;

const ACCOUNTS: usize = 12;

/// Opens accounts with a few movements each; returns their ids and the last position written.
async fn seed(server: &TestServer) -> (Vec<String>, u64) {
    let mut last = 0;
    let mut ids = Vec::new();
    for n in 0..ACCOUNTS {
        let id = format!("seed-{n}");
        server.open(&id, &format!("Owner {n}")).await;
        for step in 0..6u64 {
            let (action, amount) = if step % 3 == 2 {
                ("withdraw", 5)
            } else {
                ("deposit", 10 + step + n as u64)
            };
            let reply = server
                .post(
                    &format!("/accounts/{id}/{action}"),
                    &json!({"amount": amount}),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            last = reply.position();
        }
        if n % 4 == 0 {
            let balance = server
                .get(&format!("/accounts/{id}?min_position={last}"))
                .await
                .body["balance"]
                .as_u64()
                .unwrap();
            let reply = server
                .post(
                    &format!("/accounts/{id}/withdraw"),
                    &json!({"amount": balance}),
                )
                .await;
            let _ = reply.position();
            last = server
                .post(&format!("/accounts/{id}/close"), &json!({}))
                .await
                .position();
        }
        ids.push(id);
    }
    (ids, last)
}

/// What the read models say about `ids`, once they have processed `position`.
async fn read_models(server: &TestServer, ids: &[String], position: u64) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for id in ids {
        let balance = server
            .get(&format!("/accounts/{id}?min_position={position}"))
            .await;
        let history = server
            .get(&format!("/accounts/{id}/history?min_position={position}"))
            .await;
        assert_eq!(
            (balance.status, history.status),
            (StatusCode::OK, StatusCode::OK)
        );
        out.push((balance.body, history.body));
    }
    out
}

/// Deposits 1 into `live` until told to stop, checking every read on the way; returns how many succeeded.
async fn keep_writing(server: &TestServer, mut stop: watch::Receiver<bool>) -> u64 {
    let mut deposits = 0;
    while !*stop.borrow_and_update() {
        let reply = server
            .post("/accounts/live/deposit", &json!({"amount": 1}))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "writes keep working during the rebuild: {reply:?}"
        );
        deposits += 1;
        let read = server.get("/accounts/live").await;
        assert!(
            matches!(read.status, StatusCode::OK | StatusCode::NOT_FOUND),
            "reads keep working during the rebuild: {read:?}"
        );
        for id in ["seed-1", "seed-2"] {
            let read = server.get(&format!("/accounts/{id}")).await;
            assert_eq!(
                read.status,
                StatusCode::OK,
                "the live read model keeps serving: {read:?}"
            );
        }
    }
    deposits
}

fn bank(args: &[&str], server: &TestServer) -> std::process::Output {
    let config = &server.config;
    let mut command = Command::new(env!("CARGO_BIN_EXE_bank"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    if let Some(url) = &config.database_url {
        command.args(["--database-url", url, "--schema", &config.schema]);
    }
    command.output().expect("the bank binary runs")
}

#[sqlx::test(migrations = false)]
async fn postgres_rebuild_produces_the_same_read_models_while_serving(pool: sqlx::PgPool) {
    let server = std::sync::Arc::new(TestServer::postgres(&pool).await);
    let (ids, seeded) = seed(&server).await;
    let before = read_models(&server, &ids, seeded).await;
    server.open("live", "Writer").await;

    let (stop, stopped) = watch::channel(false);
    let writer = tokio::spawn({
        let server = server.clone();
        async move { keep_writing(&server, stopped).await }
    });
    for name in ["balances", "history"] {
        let output = tokio::task::spawn_blocking({
            let server = server.clone();
            move || bank(&["projections", "rebuild", name], &server)
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "rebuild {name} failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(&format!("rebuilt {name}")), "{stdout}");
    }
    stop.send(true).unwrap();
    let deposits = writer.await.unwrap();

    let last = server
        .post("/accounts/live/deposit", &json!({"amount": 1}))
        .await
        .position();
    assert_eq!(
        read_models(&server, &ids, last).await,
        before,
        "the rebuilt read models are identical"
    );
    let live = server
        .get(&format!("/accounts/live?min_position={last}"))
        .await;
    assert_eq!(
        live.body["balance"],
        deposits + 1,
        "no write was lost or applied twice"
    );
    let history = server
        .get(&format!("/accounts/live/history?min_position={last}"))
        .await;
    assert_eq!(
        history.body["items"].as_array().unwrap().len() as u64,
        deposits + 2
    );

    let status = tokio::task::spawn_blocking({
        let server = server.clone();
        move || bank(&["projections", "status"], &server)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("balances") && l.contains("live")),
        "{stdout}"
    );

    let server = std::sync::Arc::into_inner(server).expect("the writer is done");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_rebuild_produces_the_same_read_models_while_serving() {
    let server = std::sync::Arc::new(TestServer::memory().await);
    let (ids, seeded) = seed(&server).await;
    let before = read_models(&server, &ids, seeded).await;
    server.open("live", "Writer").await;
    let (stop, stopped) = watch::channel(false);
    let writer = tokio::spawn({
        let server = server.clone();
        async move { keep_writing(&server, stopped).await }
    });
    for name in ["balances", "history"] {
        let report = server.service.projections().rebuild(name).await.unwrap();
        assert!(report.events > 0, "{report:?}");
    }
    stop.send(true).unwrap();
    let deposits = writer.await.unwrap();
    let last = server
        .post("/accounts/live/deposit", &json!({"amount": 1}))
        .await
        .position();
    assert_eq!(read_models(&server, &ids, last).await, before);
    let live = server
        .get(&format!("/accounts/live?min_position={last}"))
        .await;
    assert_eq!(live.body["balance"], deposits + 1);
}
