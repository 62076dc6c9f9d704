//! `GET /accounts/{id}/history` is paged: `?limit=` entries at a time, `?after=` the last position seen, and a
//! `next` cursor while there is more; a long history is never loaded whole.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestServer;

async fn history_is_paged(server: &TestServer) {
    server.open("pages", "Pager").await;
    let mut last = 0;
    for amount in 1..=7 {
        last = server
            .post("/accounts/pages/deposit", &json!({ "amount": amount }))
            .await
            .position();
    }
    let whole = server
        .get(&format!("/accounts/pages/history?min_position={last}"))
        .await;
    assert_eq!(whole.status, StatusCode::OK, "{whole:?}");
    let all = whole.body["items"].as_array().unwrap().clone();
    assert_eq!(all.len(), 8);
    assert_eq!(whole.body["next"], Value::Null);

    let mut paged = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let path = match after {
            None => "/accounts/pages/history?limit=3".to_owned(),
            Some(after) => format!("/accounts/pages/history?limit=3&after={after}"),
        };
        let page = server.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 3, "{page:?}");
        paged.extend(items.iter().cloned());
        match page.body["next"].as_u64() {
            Some(next) => {
                assert_eq!(items.len(), 3);
                assert_eq!(Some(next), items.last().unwrap()["position"].as_u64());
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(paged, all);

    // Past the end of an existing account: an empty page, not a 404.
    let end = server
        .get(&format!("/accounts/pages/history?after={last}"))
        .await;
    assert_eq!(end.status, StatusCode::OK, "{end:?}");
    assert_eq!(end.body["items"], json!([]));
    server
        .get("/accounts/nobody/history?after=1")
        .await
        .assert_error(404, "account_not_found");
    for bad in ["limit=0", "limit=10001", "limit=x", "after=-1", "page=2"] {
        server
            .get(&format!("/accounts/pages/history?{bad}"))
            .await
            .assert_error(400, "invalid_request");
    }
}

on_both_stores!(
    history_is_paged,
    memory_history_is_paged_with_after_and_limit,
    postgres_history_is_paged_with_after_and_limit
);
