//! A real server on 127.0.0.1:0 per test, and a reqwest client for it.

use bank_account::{DEFAULT_SCHEMA, Service, StoreConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

/// A running service and a client pointed at it.
pub(crate) struct TestServer {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) config: StoreConfig,
    pub(crate) service: Service,
    shutdown: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

/// A response: status, headers and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    /// The error code of an error response.
    pub(crate) fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    /// Asserts an error response with `status` and `code`, and a non-empty message.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
    }

    /// The `position` of a command's answer.
    pub(crate) fn position(&self) -> u64 {
        self.body["position"].as_u64().unwrap()
    }
}

impl TestServer {
    /// The service on the embedded memory store.
    pub(crate) async fn memory() -> Self {
        Self::start(StoreConfig::memory(), |s| s).await
    }

    /// The service on PostgreSQL, in the database of `pool` (a fresh one per test).
    pub(crate) async fn postgres(pool: &sqlx::PgPool) -> Self {
        Self::start(postgres_config(pool), |s| s).await
    }

    /// The service on `config`, adjusted by `tune`.
    pub(crate) async fn start(config: StoreConfig, tune: impl FnOnce(Service) -> Service) -> Self {
        Self::launch(config, tune, true).await
    }

    /// The service on `config`, adjusted by `tune`, answering HTTP with its read models not running: they stay
    /// behind every write.
    pub(crate) async fn without_projections(
        config: StoreConfig,
        tune: impl FnOnce(Service) -> Service,
    ) -> Self {
        Self::launch(config, tune, false).await
    }

    async fn launch(
        config: StoreConfig,
        tune: impl FnOnce(Service) -> Service,
        projections: bool,
    ) -> Self {
        let service = tune(Service::start(&config).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn({
            let service = service.clone();
            async move {
                let stopped = async {
                    let _ = stopped.await;
                };
                if projections {
                    service.serve(listener, stopped).await.unwrap();
                } else {
                    axum::serve(listener, service.router())
                        .with_graceful_shutdown(stopped)
                        .await
                        .unwrap();
                }
            }
        });
        Self {
            base,
            client: reqwest::Client::new(),
            config,
            service,
            shutdown,
            served,
        }
    }

    /// Stops the server and its projections and closes its database connections, so that `#[sqlx::test]` can
    /// drop the test's database.
    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(());
        self.served.await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), self.service.close())
            .await
            .expect("the service's connections close");
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `method path` with an optional JSON body and extra headers.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        reply(response).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    /// Sends raw bytes as the body of a POST.
    pub(crate) async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        reply(response).await
    }

    /// Opens `id` for `owner`, asserting success.
    pub(crate) async fn open(&self, id: &str, owner: &str) -> Reply {
        let reply = self
            .post("/accounts", &serde_json::json!({"id": id, "owner": owner}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        reply
    }
}

pub(crate) async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

/// The service's configuration for the database `pool` is connected to (a fresh one per `#[sqlx::test]`).
pub(crate) fn postgres_config(pool: &sqlx::PgPool) -> StoreConfig {
    StoreConfig {
        database_url: Some(database_url(pool)),
        schema: DEFAULT_SCHEMA.to_owned(),
        data_dir: None,
    }
}

/// The URL of the database `pool` is connected to (the server under test connects on its own).
fn database_url(pool: &sqlx::PgPool) -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let database = pool
        .connect_options()
        .get_database()
        .expect("sqlx::test connects to a named database")
        .to_owned();
    let (without_query, query) = match base.split_once('?') {
        Some((url, query)) => (url.to_owned(), format!("?{query}")),
        None => (base.clone(), String::new()),
    };
    let authority_end = without_query
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| without_query[start..].find('/').map(|slash| start + slash))
        .unwrap_or(without_query.len());
    format!("{}/{database}{query}", &without_query[..authority_end])
}
