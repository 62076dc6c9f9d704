//! `POST /transfers` with an `execute_at` no timer store keeps is a `400` naming `execute_at` and the accepted
//! range, and no request stops the transfer process: the ordinary transfers after it all end.

use serde_json::json;

use crate::support::TestServer;
use crate::transfers::ended;

/// Due times the stores cannot keep: before the accepted range (PostgreSQL's `timestamptz` cannot even hold the
/// first) and after it.
const HOSTILE: [&str; 3] = [
    "-5000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "+10000-01-01T00:00:00Z",
];

async fn hostile_execute_at_is_refused_and_stops_nothing(server: &TestServer) {
    server.open("alice", "Alice").await;
    server.open("bob", "Bob").await;
    let deposited = server
        .post("/accounts/alice/deposit", &json!({"amount": 1_000}))
        .await;
    assert!(deposited.status.is_success(), "{deposited:?}");

    for execute_at in HOSTILE {
        let reply = server
            .post(
                "/transfers",
                &json!({"from": "alice", "to": "bob", "amount": 1, "execute_at": execute_at}),
            )
            .await;
        reply.assert_error(400, "invalid_request");
        let message = reply.body["error"]["message"].as_str().unwrap();
        for named in ["execute_at", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
            assert!(message.contains(named), "{execute_at}: {reply:?}");
        }
    }
    // The ends of the range are accepted.
    for (id, execute_at) in [
        ("edge-early", "1970-01-01T00:00:00Z"),
        ("edge-late", "9999-12-31T23:59:59Z"),
    ] {
        let reply = server
            .post(
                "/transfers",
                &json!({"id": id, "from": "alice", "to": "bob", "amount": 1, "execute_at": execute_at}),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 202, "{execute_at}: {reply:?}");
    }
    for n in 0..20 {
        let reply = server
            .post(
                "/transfers",
                &json!({"id": format!("t-{n}"), "from": "alice", "to": "bob", "amount": 1}),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 202, "{reply:?}");
    }
    for n in 0..20 {
        assert_eq!(
            ended(server, &format!("t-{n}")).await["status"],
            "completed"
        );
    }
    assert_eq!(ended(server, "edge-early").await["status"], "completed");
}

on_both_stores!(
    hostile_execute_at_is_refused_and_stops_nothing,
    hostile_execute_at_is_refused_and_stops_nothing_memory,
    hostile_execute_at_is_refused_and_stops_nothing_postgres
);
