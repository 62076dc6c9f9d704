//! One proxied connection: two pumps (client to target, target to client) under the proxy's control.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use crate::mode::Mode;
use crate::proxy::{Counters, State};

/// The size of one forwarded chunk.
const CHUNK: usize = 16 * 1024;

/// Counts a connection as open while it lives.
pub(crate) struct Open(Arc<Counters>);

impl Open {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        counters.open.fetch_add(1, Ordering::SeqCst);
        Self(counters)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Relays `client` to `target` until either side closes, an I/O error, the proxy severs the connections of
/// `generation` or the proxy is dropped. Both sockets are closed when it returns.
pub(crate) async fn relay(
    client: TcpStream,
    target: SocketAddr,
    mut control: watch::Receiver<State>,
    generation: u64,
    open: Open,
) {
    let _open = open;
    let (to_target, to_client) = (control.clone(), control.clone());
    let both_ways = async move {
        let upstream = TcpStream::connect(target).await?;
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (target_read, target_write) = upstream.into_split();
        tokio::try_join!(
            pump(client_read, target_write, to_target),
            pump(target_read, client_write, to_client)
        )
    };
    tokio::select! {
        _ = both_ways => {}
        // Severed, or the proxy is gone (the sender dropped): either way the sockets close now.
        _ = control.wait_for(|s| s.severed != generation) => {}
    }
}

/// Forwards what `from` sends to `to`, chunk by chunk, as the current mode says; passes end-of-file on as a
/// shutdown of the write side.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut control: watch::Receiver<State>,
) -> io::Result<()> {
    let mut buf = vec![0; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        // Held while black-holed: nothing crosses, not even the end of the stream.
        let mode = match control.wait_for(|s| s.mode != Mode::BlackHole).await {
            Ok(state) => state.mode,
            Err(_) => return Ok(()),
        };
        if let Mode::Delay(latency) = mode {
            tokio::time::sleep(latency).await;
        }
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
