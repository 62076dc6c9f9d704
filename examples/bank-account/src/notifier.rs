//! `bank-notifier`: a second service that learns of the bank's account events from JetStream through an
//! inbox and keeps its own table of notifications, in its own PostgreSQL schema.

use std::future::Future;

use annals_nats::{Delivery, Handler, HandlerError, Inbox, InboxOptions, async_nats, async_trait};
use annals_projections::Supervisor;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};

use crate::account::AccountEvent;

/// The notifier's PostgreSQL schema (its notifications and its inbox).
pub const SCHEMA: &str = "notifier";

/// One notification: a deposit, withdrawal or closing of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The bank's event id it came from.
    pub event_id: uuid::Uuid,
    /// The account id (without the `account-` stream prefix).
    pub account: String,
    /// `deposit`, `withdrawal` or `closed`.
    pub kind: String,
    /// Minor units (0 for `closed`).
    pub amount: u64,
    /// The event's version in the account's stream.
    pub version: u64,
    /// The notification text.
    pub text: String,
}

/// Writes one notification per deposit, withdrawal and closing, inside the inbox's transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifications;

#[async_trait]
impl Handler for Notifications {
    type Event = AccountEvent;

    async fn handle(
        &self,
        delivery: &Delivery<AccountEvent>,
        conn: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        let stream = delivery.headers.stream_id.as_str();
        let account = stream.strip_prefix("account-").unwrap_or(stream);
        let (kind, amount, text) = match &delivery.event {
            AccountEvent::Opened { .. } => return Ok(()),
            AccountEvent::Deposited { amount } => (
                "deposit",
                *amount,
                format!("{amount} deposited into account {account}"),
            ),
            AccountEvent::Withdrawn { amount } => (
                "withdrawal",
                *amount,
                format!("{amount} withdrawn from account {account}"),
            ),
            AccountEvent::Closed {} => ("closed", 0, format!("account {account} was closed")),
            AccountEvent::TransferDebited(moved) => (
                "transfer_out",
                moved.amount,
                format!(
                    "{} sent from account {account} to {} (transfer {})",
                    moved.amount, moved.counterparty, moved.transfer
                ),
            ),
            AccountEvent::TransferCredited(moved) => (
                "transfer_in",
                moved.amount,
                format!(
                    "{} received by account {account} from {} (transfer {})",
                    moved.amount, moved.counterparty, moved.transfer
                ),
            ),
            AccountEvent::TransferRefunded(moved) => (
                "transfer_refund",
                moved.amount,
                format!(
                    "{} refunded to account {account}: {} refused transfer {}",
                    moved.amount, moved.counterparty, moved.transfer
                ),
            ),
        };
        sqlx::query(
            "INSERT INTO notifier.notifications (event_id, account, kind, amount, version, text) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(delivery.headers.event_id.0)
        .bind(account)
        .bind(kind)
        .bind(i64::try_from(amount)?)
        .bind(i64::try_from(delivery.headers.stream_version.0)?)
        .bind(text)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Creates the notifier's table (idempotent).
///
/// # Errors
/// When PostgreSQL refuses.
pub async fn migrate(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS notifier;
         CREATE TABLE IF NOT EXISTS notifier.notifications (
             event_id uuid PRIMARY KEY,
             account text NOT NULL,
             kind text NOT NULL,
             amount bigint NOT NULL,
             version bigint NOT NULL,
             text text NOT NULL,
             created_at timestamptz NOT NULL DEFAULT now()
         );
         CREATE INDEX IF NOT EXISTS notifications_account ON notifier.notifications (account, version);",
    )
    .execute(pool)
    .await
    .map(|_| ())
}

/// The inbox that feeds the notifications: durable consumer `notifier` on the bank's stream, account events
/// only.
///
/// # Errors
/// A bad stream or prefix name.
pub fn inbox(
    pool: PgPool,
    client: async_nats::Client,
    stream: &str,
    prefix: &str,
) -> annals_nats::Result<Inbox<Notifications>> {
    let filter = annals_nats::Subjects::new(prefix)?.category_filter("account");
    Inbox::new(
        pool,
        client,
        stream,
        "notifier",
        Notifications,
        InboxOptions::default().schema(SCHEMA).filter(filter),
    )
}

#[derive(Debug, Deserialize)]
struct AccountQuery {
    account: Option<String>,
}

/// `GET /notifications?account=ID`: the account's notifications in stream order; `GET /health`.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/notifications", get(list))
        .route("/health", get(|| async { "ok" }))
        .with_state(pool)
}

async fn list(State(pool): State<PgPool>, Query(q): Query<AccountQuery>) -> Response {
    let Some(account) = q.account.filter(|a| !a.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "invalid_request", "message": "query parameter `account` is required"})),
        )
            .into_response();
    };
    let rows = sqlx::query(
        "SELECT event_id, account, kind, amount, version, text FROM notifier.notifications \
         WHERE account = $1 ORDER BY version",
    )
    .bind(&account)
    .fetch_all(&pool)
    .await;
    let parsed: Result<Vec<Notification>, sqlx::Error> = rows.and_then(|rows| {
        rows.iter()
            .map(|r| {
                Ok(Notification {
                    event_id: r.try_get("event_id")?,
                    account: r.try_get("account")?,
                    kind: r.try_get("kind")?,
                    amount: u64::try_from(r.try_get::<i64, _>("amount")?).unwrap_or(0),
                    version: u64::try_from(r.try_get::<i64, _>("version")?).unwrap_or(0),
                    text: r.try_get("text")?,
                })
            })
            .collect()
    });
    match parsed {
        Ok(list) => {
            Json(serde_json::json!({"account": account, "notifications": list})).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "reading notifier.notifications failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"error": "unavailable", "message": "the notifications table cannot be read"})),
            )
                .into_response()
        }
    }
}

/// Runs the notifier: its inbox and its HTTP API on `listener`, until `shutdown`.
///
/// # Errors
/// When the inbox stops on a permanent error or the server fails.
pub async fn run(
    pool: PgPool,
    inbox: Inbox<Notifications>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    migrate(&pool).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let mut for_inbox = stopped.clone();
    // Under a supervisor: the consumer is started again after a transient failure (its database or NATS down
    // longer than its retries), and stops for good only on a permanent one.
    let consuming = tokio::spawn(async move {
        Supervisor::new()
            .run(
                "inbox",
                async move {
                    let _ = for_inbox.wait_for(|s| *s).await;
                },
                |stop| inbox.run(stop.wait()),
                annals_nats::Error::is_transient,
            )
            .await
    });
    let mut for_http = stopped;
    axum::serve(listener, router(pool))
        .with_graceful_shutdown(async move {
            let _ = for_http.wait_for(|s| *s).await;
        })
        .await?;
    consuming.await??;
    Ok(())
}
