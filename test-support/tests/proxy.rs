//! The fault proxy against a local echo server, one test per mode.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals_test_support::{FaultProxy, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a test waits for something that must happen (a deadline, not a pace).
const DEADLINE: Duration = Duration::from_secs(10);

/// How long a client waits for an answer that must not come: its own timeout, as a real client's would fire.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(300);

/// An echo server: counts the bytes it received and reports each connection that ended.
struct Echo {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    ended: mpsc::UnboundedReceiver<()>,
}

impl Echo {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let (end, ended) = mpsc::unbounded_channel();
        let counted = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (counted, end) = (Arc::clone(&counted), end.clone());
                tokio::spawn(async move {
                    let mut buf = [0; 1024];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        counted.fetch_add(n, Ordering::SeqCst);
                    }
                    let _ = end.send(());
                });
            }
        });
        Self {
            addr,
            received,
            ended,
        }
    }

    async fn connection_ended(&mut self) {
        tokio::time::timeout(DEADLINE, self.ended.recv())
            .await
            .expect("the server's side of the connection closed")
            .unwrap();
    }
}

async fn round_trip(client: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    client.write_all(message).await.unwrap();
    let mut echoed = vec![0; message.len()];
    tokio::time::timeout(DEADLINE, client.read_exact(&mut echoed))
        .await
        .expect("the echo came back")
        .unwrap();
    echoed
}

/// What a client reads from a connection the proxy closed: end-of-file, or a reset.
async fn closed(client: &mut TcpStream) -> bool {
    let mut buf = [0; 16];
    match tokio::time::timeout(DEADLINE, client.read(&mut buf)).await {
        Ok(Ok(0)) => true,
        Ok(Err(e)) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Whether the client's read is still waiting when its own timeout fires.
async fn hangs(client: &mut TcpStream) -> bool {
    let mut buf = [0; 16];
    tokio::time::timeout(CLIENT_TIMEOUT, client.read(&mut buf))
        .await
        .is_err()
}

#[tokio::test]
async fn pass_forwards_both_ways() {
    let echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await.unwrap();
    assert_eq!(proxy.mode(), Mode::Pass);
    assert_eq!(proxy.target(), echo.addr);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut client, b"hello").await, b"hello");
    let big = vec![7u8; 64 * 1024];
    assert_eq!(round_trip(&mut client, &big).await, big);
    assert_eq!((proxy.accepted(), proxy.open(), proxy.refused()), (1, 1, 0));
}

#[tokio::test]
async fn delay_adds_latency_to_every_chunk() {
    let echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let latency = Duration::from_millis(150);
    proxy.delay(latency);
    assert_eq!(proxy.mode(), Mode::Delay(latency));
    let start = Instant::now();
    assert_eq!(round_trip(&mut client, b"slow").await, b"slow");
    // A lower bound, which no scheduler can break: one chunk each way, each held for the latency.
    assert!(start.elapsed() >= 2 * latency, "took {:?}", start.elapsed());
    proxy.restore();
    assert_eq!(round_trip(&mut client, b"fast").await, b"fast");
}

#[tokio::test]
async fn sever_closes_both_sides_of_every_open_connection() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await.unwrap();
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut first, b"1").await;
    round_trip(&mut second, b"2").await;
    proxy.sever();
    assert!(closed(&mut first).await, "the first client was cut");
    assert!(closed(&mut second).await, "the second client was cut");
    echo.connection_ended().await;
    echo.connection_ended().await;
    // The mode is unchanged: a new connection passes.
    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut third, b"3").await, b"3");
}

#[tokio::test]
async fn black_hole_holds_every_byte_until_restored() {
    let echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await.unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, b"before").await;
    let received_before = echo.received.load(Ordering::SeqCst);
    proxy.black_hole();
    open.write_all(b"held").await.unwrap();
    // A new connection is accepted and kept, and hangs as well.
    let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
    new.write_all(b"also").await.unwrap();
    assert!(hangs(&mut open).await, "the open connection hangs");
    assert!(hangs(&mut new).await, "the new connection hangs");
    assert_eq!(
        echo.received.load(Ordering::SeqCst),
        received_before,
        "nothing reached the server"
    );
    assert_eq!(proxy.open(), 2);
    // The partition heals: what was held goes through.
    proxy.restore();
    let mut echoed = [0; 4];
    open.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"held");
    new.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"also");
}

#[tokio::test]
async fn refuse_closes_new_connections_and_keeps_open_ones() {
    let echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await.unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, b"before").await;
    proxy.refuse();
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(
        closed(&mut refused).await,
        "a new connection is closed at once"
    );
    assert_eq!(proxy.refused(), 1);
    assert_eq!(round_trip(&mut open, b"still").await, b"still");
    proxy.restore();
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut again, b"back").await, b"back");
}

#[tokio::test]
async fn an_outage_severs_and_refuses_until_restored() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await.unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, b"up").await;
    proxy.outage();
    assert!(closed(&mut open).await);
    echo.connection_ended().await;
    let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(closed(&mut during).await);
    proxy.restore();
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut after, b"up again").await, b"up again");
}

#[tokio::test]
async fn a_target_that_is_down_closes_each_connection() {
    // A port nothing listens on: bind one, note it, close it.
    let target = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = FaultProxy::start(target).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(closed(&mut client).await);
}

#[tokio::test]
async fn dropping_the_proxy_closes_every_connection() {
    let mut echo = Echo::start().await;
    let proxy = FaultProxy::start(echo.addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"x").await;
    let addr = proxy.addr();
    drop(proxy);
    assert!(closed(&mut client).await);
    echo.connection_ended().await;
    // Nothing listens any more (or, should the port be reused at once, it is not this proxy).
    if let Ok(mut late) = TcpStream::connect(addr).await {
        assert!(closed(&mut late).await || hangs(&mut late).await);
    }
}
