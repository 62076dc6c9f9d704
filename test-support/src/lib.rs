//! Fixtures shared by Annals' integration tests (`publish = false`).
//!
//! [`FaultProxy`] injects network faults from outside the code under test, in the manner of Toxiproxy: a test
//! puts it between a client and PostgreSQL or NATS on 127.0.0.1 and, on command, lets bytes pass, delays them,
//! black-holes them, refuses new connections, severs the open ones, and restores.
//!
//! ```
//! use annals_test_support::FaultProxy;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A server to put the proxy in front of: it echoes one connection.
//! let server = TcpListener::bind("127.0.0.1:0").await?;
//! let target = server.local_addr()?;
//! tokio::spawn(async move {
//!     if let Ok((mut socket, _)) = server.accept().await {
//!         let (mut reader, mut writer) = socket.split();
//!         let _ = tokio::io::copy(&mut reader, &mut writer).await;
//!     }
//! });
//!
//! let proxy = FaultProxy::start(target).await?;
//! let mut client = TcpStream::connect(proxy.addr()).await?;
//! client.write_all(b"ping").await?;
//! let mut echoed = [0; 4];
//! client.read_exact(&mut echoed).await?;
//! assert_eq!(&echoed, b"ping");
//!
//! // The server goes away: open connections are cut, new ones closed at once.
//! proxy.outage();
//! assert_eq!(client.read(&mut echoed).await?, 0, "the client reads end-of-file");
//! proxy.restore();
//! # Ok(())
//! # }
//! ```
//!
//! Faults apply to the bytes of a connection, so a client sees what it would see on a real network: a delay
//! per chunk, a peer that stops answering (until its own timeouts fire), end-of-file on every open
//! connection, connections closed as soon as they open.

mod connection;
mod error;
mod mode;
mod proxy;

pub use error::{Error, Result};
pub use mode::Mode;
pub use proxy::FaultProxy;
