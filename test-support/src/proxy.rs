//! [`FaultProxy`]: a TCP proxy on 127.0.0.1 whose behaviour a test changes on command.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::connection::{Open, relay};
use crate::error::{Error, Result};
use crate::mode::Mode;

/// What the accept loop and every connection read: the mode, and how many times the proxy severed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct State {
    pub(crate) mode: Mode,
    /// Bumped by each [`FaultProxy::sever`]: a connection accepted before the bump closes.
    pub(crate) severed: u64,
}

/// What the proxy has seen.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) open: AtomicUsize,
}

/// A TCP proxy for fault injection: it listens on a free port of 127.0.0.1 and forwards each connection to a
/// target, doing what its [`Mode`] says ([`pass`](Mode::Pass), [`delay`](FaultProxy::delay),
/// [`black-hole`](FaultProxy::black_hole), [`refuse`](FaultProxy::refuse)); [`sever`](FaultProxy::sever)
/// closes every open connection, both sides, at once. Dropping it stops listening and closes every connection.
///
/// Needs a Tokio runtime with I/O and time enabled; the proxy's tasks run on it.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    control: watch::Sender<State>,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `target`, in [`Mode::Pass`].
    ///
    /// # Errors
    /// [`Error::Listen`] when no port can be bound. The target is not contacted until a client connects (a
    /// target that is down makes each client connection close at once).
    pub async fn start(target: impl Into<SocketAddr>) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| Error::Listen { source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Listen { source })?;
        let target = target.into();
        let (control, watching) = watch::channel(State::default());
        let counters = Arc::new(Counters::default());
        let accept = tokio::spawn(accept_loop(
            listener,
            target,
            watching,
            Arc::clone(&counters),
        ));
        Ok(Self {
            addr,
            target,
            control,
            counters,
            accept,
        })
    }

    /// The address clients connect to (127.0.0.1 and the proxy's port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.control.borrow().mode
    }

    /// Switches to `mode`, for open connections and new ones alike.
    pub fn set(&self, mode: Mode) {
        self.control.send_modify(|s| s.mode = mode);
    }

    /// Adds `latency` before every chunk forwarded either way ([`Mode::Delay`]).
    pub fn delay(&self, latency: Duration) {
        self.set(Mode::Delay(latency));
    }

    /// Keeps connections but forwards nothing ([`Mode::BlackHole`]).
    pub fn black_hole(&self) {
        self.set(Mode::BlackHole);
    }

    /// Closes new connections at once ([`Mode::Refuse`]).
    pub fn refuse(&self) {
        self.set(Mode::Refuse);
    }

    /// Back to forwarding everything at once ([`Mode::Pass`]); bytes held by a black hole go through.
    pub fn restore(&self) {
        self.set(Mode::Pass);
    }

    /// Closes every connection open now, both sides (each peer reads end-of-file); the mode is unchanged, so
    /// new connections are accepted unless the proxy refuses them.
    pub fn sever(&self) {
        self.control.send_modify(|s| s.severed += 1);
    }

    /// A server that is down: [`refuse`](Self::refuse) new connections and [`sever`](Self::sever) the open
    /// ones. [`restore`](Self::restore) ends it.
    pub fn outage(&self) {
        self.refuse();
        self.sever();
    }

    /// How many connections the proxy has accepted (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// How many connections it closed at once because it was refusing.
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::SeqCst)
    }

    /// How many connections are open through it now.
    pub fn open(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The connections see the sender go and close; the listener closes with its task.
        self.accept.abort();
    }
}

/// Accepts connections until the proxy is dropped: refused ones are closed at once, the others relayed.
async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    control: watch::Receiver<State>,
    counters: Arc<Counters>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // A connection that failed before it was accepted (reset, out of descriptors): pause, go on.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        let state = *control.borrow();
        if state.mode == Mode::Refuse {
            counters.refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        let open = Open::new(Arc::clone(&counters));
        tokio::spawn(relay(client, target, control.clone(), state.severed, open));
    }
}
