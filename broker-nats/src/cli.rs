//! [`FeedCommand`]: the clap subcommands that operate a relay (`run`, `status`, `republish`).

use std::io::Write;

use annals::Position;

use crate::error::Result;
use crate::relay::Relay;

/// The relay's operator commands; mount them into an application's CLI with `#[command(subcommand)]`.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum FeedCommand {
    /// Runs the relay until Ctrl-C / SIGTERM.
    Run,
    /// Prints the relay's checkpoint, lag (positions and seconds) and counters.
    Status,
    /// Publishes the events at positions FROM..=TO again (to the head when TO is absent), leaving the relay's
    /// checkpoint alone. Duplicates inside the broker's window are dropped by the broker, the rest by
    /// consumers' inboxes.
    Republish {
        /// The first position to publish again (1 = the first event).
        #[arg(long)]
        from: u64,
        /// The last position to publish again.
        #[arg(long)]
        to: Option<u64>,
    },
}

impl FeedCommand {
    /// Executes the command on `relay`, writing human-readable lines to stdout.
    ///
    /// # Errors
    /// The relay's errors.
    pub async fn execute(self, relay: &Relay) -> Result<()> {
        let mut out = std::io::stdout();
        match self {
            Self::Run => {
                relay
                    .run(async {
                        shutdown_signal().await;
                    })
                    .await
            }
            Self::Status => {
                let s = relay.status().await?;
                let _ = writeln!(
                    out,
                    "relay {}: {}; checkpoint {} of {} (lag {} positions, {:.1} s); published {} \
                     ({} duplicates dropped by the broker, {} resent)",
                    relay.options().name,
                    s.state,
                    s.checkpoint,
                    s.head,
                    s.lag,
                    s.seconds_behind,
                    s.published,
                    s.duplicates,
                    s.resent
                );
                Ok(())
            }
            Self::Republish { from, to } => {
                let total = relay
                    .republish(Position(from.max(1)), to.map(Position), &|at, p| {
                        let _ = writeln!(
                            std::io::stderr(),
                            "republished through position {at}: {} events, {} duplicates",
                            p.events,
                            p.duplicates
                        );
                    })
                    .await?;
                let _ = writeln!(
                    out,
                    "republished {} events from position {from}: {} were duplicates the broker dropped",
                    total.events, total.duplicates
                );
                Ok(())
            }
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
