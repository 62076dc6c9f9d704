//! Shared fixtures: a JetStream stream per test (deleted at the end), a private nats-server for tests that stop
//! the broker, relay child processes, waiting on conditions with deadlines.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::{EventStore, ExpectedVersion, NewEvent, StreamId};
use annals_nats::async_nats::jetstream;
use annals_nats::{Relay, RelayOptions, async_nats};
use annals_postgres::PostgresStore;
use sqlx::{ConnectOptions, PgPool};

/// The shared server from `scripts/services.sh`: `NATS_URL`, by default Debian's nats-server on 127.0.0.1:4222
/// (`scripts/services.sh nats-new` starts a current one on 127.0.0.1:4223).
pub(crate) fn shared_nats() -> &'static str {
    static URL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".to_owned())
    });
    &URL
}

/// The nats-server binary of the tests' private servers: `NATS_SERVER_BIN`, by default Debian's.
pub(crate) fn nats_server_bin() -> String {
    std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".to_owned())
}

/// A unique token for names (stream, prefix).
pub(crate) fn unique(tag: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{tag}_{}", &id[id.len() - 12..])
}

/// Waits until `check` holds, polling; panics with `what` after `deadline`.
pub(crate) async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A store in the test's fresh database, migrated.
pub(crate) async fn pg_store(pool: &PgPool) -> PostgresStore {
    let store = PostgresStore::from_pool(pool.clone());
    store.migrate().await.unwrap();
    store
}

/// Appends `per_stream` deposit events to each of `streams` streams named `<prefix>-<n>`, one append per event,
/// interleaving the streams; returns how many.
pub(crate) async fn write_events(
    store: &PostgresStore,
    prefix: &str,
    streams: usize,
    per_stream: usize,
) -> usize {
    for v in 0..per_stream {
        for s in 0..streams {
            let stream = StreamId::new(format!("{prefix}-{s}")).unwrap();
            let event = NewEvent::new("Deposited", serde_json::json!({"amount": v + 1, "n": v}));
            store
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await
                .unwrap();
        }
    }
    streams * per_stream
}

/// The JetStream stream of one test, deleted when dropped.
pub(crate) struct TestStream {
    pub(crate) url: String,
    pub(crate) name: String,
    pub(crate) prefix: String,
}

impl TestStream {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            name: unique("T").to_uppercase(),
            prefix: unique("feed"),
        }
    }

    pub(crate) async fn context(&self) -> jetstream::Context {
        jetstream::new(async_nats::connect(&self.url).await.unwrap())
    }

    /// Every message in the stream, in stream order.
    pub(crate) async fn messages(&self) -> Vec<jetstream::message::StreamMessage> {
        let js = self.context().await;
        let mut stream = js.get_stream(&self.name).await.unwrap();
        let info = stream.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        for seq in info.first_sequence..=info.last_sequence {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push(m);
            }
        }
        assert_eq!(out.len() as u64, info.messages);
        out
    }

    /// How many messages the stream holds (0 when it does not exist yet).
    pub(crate) async fn count(&self) -> u64 {
        let js = self.context().await;
        match js.get_stream(&self.name).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        }
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let connect = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(&url);
                if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(3), connect).await
                {
                    let _ = jetstream::new(client).delete_stream(&name).await;
                }
            });
        })
        .join();
    }
}

/// A nats-server of the test's own: a free port, its own store directory, stopped and removed on drop.
pub(crate) struct NatsServer {
    pub(crate) port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub(crate) async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique("annals-nats-test"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.restart().await;
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and store directory, and waits until it answers.
    pub(crate) async fn restart(&mut self) {
        self.stop();
        let child = Command::new(nats_server_bin())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the nats-server binary (NATS_SERVER_BIN) runs");
        self.child = Some(child);
        let url = self.url();
        eventually("the private nats-server to answer", Duration::from_secs(20), || {
            let url = url.clone();
            async move {
                // JetStream is up when it answers "no such stream" for a probe.
                match async_nats::connect(&url).await {
                    Ok(c) => matches!(
                        jetstream::new(c).get_stream("PROBE").await,
                        Err(e) if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(_))
                    ),
                    Err(_) => false,
                }
            }
        })
        .await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A relay child process (`annals-nats-relay run`), SIGKILLed on drop; its log lines are collected.
pub(crate) struct RelayProcess {
    pub(crate) child: Child,
    pub(crate) lines: Arc<Mutex<Vec<String>>>,
}

impl RelayProcess {
    pub(crate) fn spawn(
        pool: &PgPool,
        stream: &TestStream,
        instance: &str,
        extra: &[&str],
    ) -> Self {
        let url = pool.connect_options().to_url_lossy().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_annals-nats-relay"))
            .args([
                "--database-url",
                &url,
                "--nats-url",
                &stream.url,
                "--stream",
                &stream.name,
            ])
            .args(["--subject-prefix", &stream.prefix, "--instance", instance])
            .args(extra)
            .arg("run")
            .env("RUST_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the relay binary runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    pub(crate) fn logged(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events the tests write (see [`write_events`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum TestEvent {
    Deposited { amount: u64, n: u64 },
}

impl annals::Event for TestEvent {}

/// A consumer's effect: one row per handled event in `<schema>.effects`, numbered in the order applied (no
/// unique key on the event, so a double application shows); fails the first `failures` calls for events whose
/// `amount` is `fail_amount`.
pub(crate) struct Effects {
    pub(crate) schema: String,
    pub(crate) calls: Arc<std::sync::atomic::AtomicU32>,
    pub(crate) fail_amount: Option<u64>,
    pub(crate) failures: u32,
}

impl Effects {
    pub(crate) async fn new(pool: &PgPool, schema: &str) -> Self {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.effects (seq bigserial PRIMARY KEY, event_id uuid NOT NULL, stream text NOT NULL, version bigint NOT NULL)"
        )))
        .execute(pool)
        .await
        .unwrap();
        Self {
            schema: schema.to_owned(),
            calls: Arc::default(),
            fail_amount: None,
            failures: 0,
        }
    }
}

#[annals_nats::async_trait]
impl annals_nats::Handler for Effects {
    type Event = TestEvent;

    async fn handle(
        &self,
        delivery: &annals_nats::Delivery<TestEvent>,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(), annals_nats::HandlerError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let TestEvent::Deposited { amount, .. } = delivery.event;
        if self.fail_amount == Some(amount) && call < self.failures {
            return Err(format!("injected failure {call}").into());
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {}.effects (event_id, stream, version) VALUES ($1, $2, $3)",
            self.schema
        )))
        .bind(delivery.headers.event_id.0)
        .bind(delivery.headers.stream_id.as_str())
        .bind(delivery.headers.stream_version.0 as i64)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// (rows, distinct event ids) of `<schema>.effects`.
pub(crate) async fn effect_counts(pool: &PgPool, schema: &str) -> (i64, i64) {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT event_id) FROM {schema}.effects"
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Runs `inbox` until the returned sender fires.
pub(crate) fn spawn_inbox<H: annals_nats::Handler>(
    inbox: annals_nats::Inbox<H>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<annals_nats::Result<()>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        inbox
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, handle)
}

/// Publishes every stored event through a relay (again: the broker drops what its duplicate window holds)
/// and waits until the stream holds them.
pub(crate) async fn publish_all(
    pool: &PgPool,
    store: &annals_postgres::PostgresStore,
    feed: &TestStream,
) -> Relay {
    let client = async_nats::connect(shared_nats()).await.unwrap();
    let relay = Relay::new(
        store.clone(),
        pool.clone(),
        client,
        RelayOptions::new(&feed.prefix, &feed.name).unwrap(),
    )
    .unwrap();
    let head = store.head().await.unwrap();
    relay
        .republish(annals::Position(1), None, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(feed.count().await, head.get());
    relay
}

/// The rows of the tests' inbox (schema `inbox_t`; 0 before it exists).
pub(crate) async fn inbox_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM inbox_t.inbox")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// The reasons of consumer `consumer`'s parked messages, oldest first (none before the inbox exists).
pub(crate) async fn parked_reasons(pool: &PgPool, consumer: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT reason FROM inbox_t.inbox_parked WHERE consumer = $1 ORDER BY sequence",
    )
    .bind(consumer)
    .fetch_all(pool)
    .await
    .unwrap_or_default()
}

/// A pool on the test's database whose connections name themselves `application` (in `pg_stat_activity`) and
/// go through `port` on 127.0.0.1 when given (a `FaultProxy` in front of PostgreSQL).
pub(crate) async fn pool_via(pool: &PgPool, port: Option<u16>, application: &str) -> PgPool {
    let mut options = (*pool.connect_options())
        .clone()
        .application_name(application);
    if let Some(port) = port {
        options = options.host("127.0.0.1").port(port);
    }
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options)
        .await
        .unwrap()
}

/// Runs `relay` in a task until the returned sender fires.
pub(crate) fn spawn_relay(
    relay: &Relay,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<annals_nats::Result<()>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = relay.clone();
    let handle = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, handle)
}

/// Every message published to a feed's subjects, as the broker received it (a core NATS subscriber sees each
/// publish, duplicates included, with the reply subject of the publisher's acknowledgement).
pub(crate) struct Wire {
    seen: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Wire {
    pub(crate) async fn watch(feed: &TestStream) -> Self {
        use futures::StreamExt;
        let client = async_nats::connect(&feed.url).await.unwrap();
        let mut sub = client
            .subscribe(format!("{}.>", feed.prefix))
            .await
            .unwrap();
        client.flush().await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let _client = client;
            while let Some(m) = sub.next().await {
                let sender = m
                    .reply
                    .as_ref()
                    .and_then(|r| r.as_str().split('.').next().map(str::to_owned))
                    .unwrap_or_default();
                sink.lock().unwrap().push(sender);
            }
        });
        Self { seen, _task: task }
    }

    /// The inbox prefix of each publish's sender, in the order the broker received them.
    pub(crate) fn senders(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// How many publishes came from the client with inbox prefix `sender`.
    pub(crate) fn sent_by(&self, sender: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| *s == sender)
            .count()
    }
}

/// Asserts the feed's JetStream stream holds exactly `total` events, each once, each stream in version order.
pub(crate) async fn assert_feed_complete(feed: &TestStream, total: usize) {
    let messages = feed.messages().await;
    let mut ids = std::collections::HashSet::new();
    let mut last: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for m in &messages {
        let h = annals_nats::FeedHeaders::parse(Some(&m.headers)).unwrap();
        assert!(ids.insert(h.event_id), "event {} stored twice", h.event_id);
        let v = last.entry(h.stream_id.to_string()).or_insert(0);
        assert_eq!(
            h.stream_version.0,
            *v + 1,
            "stream {} out of order at sequence {}",
            h.stream_id,
            m.sequence
        );
        *v = h.stream_version.0;
    }
    assert_eq!(ids.len(), total, "every event arrived once");
}
