//! The `projections` subcommand set any application can mount into its clap CLI.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::Error;
use crate::projections::{Projections, RebuildOptions};
use crate::status::{Progress, RebuildOutcome};

/// Exit codes of the `projections` subcommands.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// A store, database or configuration error (the message says which).
    pub const ERROR: u8 = 1;
    /// Command-line usage error (clap's own code).
    pub const USAGE: u8 = 2;
    /// No projection of that name; the message lists the known ones.
    pub const UNKNOWN_PROJECTION: u8 = 3;
    /// A projection stopped at a failing event (policy stop); the message names the event.
    pub const PROJECTION_FAILED: u8 = 4;
    /// Another process owns the projection (or is rebuilding it); try again later.
    pub const BUSY: u8 = 5;
    /// Interrupted (Ctrl-C) before finishing; a rebuild resumes where it stopped.
    pub const INTERRUPTED: u8 = 130;
}

/// The exit code that says what `error` means (see [`exit`]).
pub fn exit_code(error: &Error) -> u8 {
    match error {
        Error::UnknownProjection { .. } => exit::UNKNOWN_PROJECTION,
        Error::ProjectionFailed { .. } => exit::PROJECTION_FAILED,
        Error::Busy { .. } => exit::BUSY,
        _ => exit::ERROR,
    }
}

/// `projections list|status|rebuild <name>|reset <name>|run|parked <name>|replay <name>`.
///
/// Mount it as a variant of the application's own subcommand enum and call
/// [`execute`](ProjectionsCommand::execute) with the application's [`Projections`]:
///
/// ```
/// use annals_projections::{Projections, ProjectionsCommand};
/// use clap::{Parser, Subcommand};
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(subcommand)]
///     command: Command,
/// }
///
/// #[derive(Subcommand)]
/// enum Command {
///     /// Run the service.
///     Serve,
///     /// Operate the read models.
///     #[command(subcommand)]
///     Projections(ProjectionsCommand),
/// }
///
/// let cli = Cli::parse_from(["bank", "projections", "rebuild", "balances"]);
/// assert!(matches!(cli.command, Command::Projections(ProjectionsCommand::Rebuild { .. })));
/// // In main: `Command::Projections(cmd) => cmd.execute(&projections).await` returns the process's ExitCode.
/// ```
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
#[non_exhaustive]
pub enum ProjectionsCommand {
    /// List the registered projections and their versions.
    List,
    /// Show every projection's checkpoint, the head, the lag, its state and throughput.
    Status,
    /// Rebuild a projection without downtime (blue/green) with a progress bar; Ctrl-C cancels, and the next
    /// rebuild resumes.
    Rebuild {
        /// The projection's name.
        name: String,
    },
    /// Drop a projection's read model and checkpoint; runners rebuild it from the first event (with downtime).
    Reset {
        /// The projection's name.
        name: String,
    },
    /// Run every projection (catch up, then follow new events) until Ctrl-C.
    Run,
    /// List the events a projection parked (failure policy park).
    Parked {
        /// The projection's name.
        name: String,
    },
    /// Apply a projection's parked events again, removing those that now succeed.
    Replay {
        /// The projection's name.
        name: String,
    },
}

type Out = Arc<Mutex<dyn Write + Send>>;

fn say(out: &Out, line: &str) {
    let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
    // A closed stdout is no reason to fail the command.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

impl ProjectionsCommand {
    /// Runs the command against `projections`, writing to stdout (a progress bar when stdout is a terminal,
    /// plain log lines otherwise) and errors to stderr. Returns the exit code (see [`exit`]).
    pub async fn execute(&self, projections: &Projections) -> ExitCode {
        let out: Out = Arc::new(Mutex::new(std::io::stdout()));
        let code = self
            .execute_to(projections, out, std::io::stdout().is_terminal())
            .await;
        ExitCode::from(code)
    }

    /// Runs the command, writing its output (and errors) to `out`; `terminal` chooses a progress bar over plain
    /// lines. Returns the exit code (see [`exit`]).
    pub async fn execute_to(&self, projections: &Projections, out: Out, terminal: bool) -> u8 {
        match self.run(projections, &out, terminal).await {
            Ok(code) => code,
            Err(e) => {
                let code = exit_code(&e);
                if terminal {
                    let _ = writeln!(std::io::stderr(), "error: {e}");
                } else {
                    say(&out, &format!("error: {e}"));
                }
                code
            }
        }
    }

    async fn run(&self, projections: &Projections, out: &Out, terminal: bool) -> Result<u8, Error> {
        match self {
            Self::List => {
                for s in projections.status().await? {
                    say(out, &format!("{}\tv{}", s.name, s.version));
                }
                Ok(exit::OK)
            }
            Self::Status => {
                say(
                    out,
                    &format!(
                        "{:<24} {:>8} {:>12} {:>12} {:>10} {:>10}  STATE",
                        "NAME", "VERSION", "CHECKPOINT", "HEAD", "LAG", "EVENTS/S"
                    ),
                );
                for s in projections.status().await? {
                    let parked = if s.parked > 0 {
                        format!(" ({} parked)", s.parked)
                    } else {
                        String::new()
                    };
                    let version = match s.stored_version {
                        Some(v) if v != s.version => format!("v{v}->v{}", s.version),
                        _ => format!("v{}", s.version),
                    };
                    say(
                        out,
                        &format!(
                            "{:<24} {:>8} {:>12} {:>12} {:>10} {:>10.0}  {}{parked}",
                            s.name,
                            version,
                            s.checkpoint.get(),
                            s.head.get(),
                            s.lag,
                            s.events_per_second,
                            s.state
                        ),
                    );
                }
                Ok(exit::OK)
            }
            Self::Rebuild { name } => rebuild(projections, name, out, terminal).await,
            Self::Reset { name } => {
                projections.reset(name).await?;
                say(
                    out,
                    &format!(
                        "reset {name}: read model dropped; runners rebuild it from the first event"
                    ),
                );
                Ok(exit::OK)
            }
            Self::Run => {
                say(
                    out,
                    &format!(
                        "running projections: {} (Ctrl-C stops)",
                        projections.names().join(", ")
                    ),
                );
                projections
                    .run(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await?;
                say(out, "stopped");
                Ok(exit::OK)
            }
            Self::Parked { name } => {
                let parked = projections.parked(name).await?;
                say(out, &format!("{name}: {} parked event(s)", parked.len()));
                for p in parked {
                    say(
                        out,
                        &format!(
                            "position {} stream {} type {} id {} attempts {}: {}",
                            p.position, p.stream, p.event_type, p.event_id, p.attempts, p.error
                        ),
                    );
                }
                Ok(exit::OK)
            }
            Self::Replay { name } => {
                let report = projections.replay_parked(name).await?;
                say(
                    out,
                    &format!(
                        "{name}: replayed {}, still failing {}",
                        report.replayed, report.still_failing
                    ),
                );
                Ok(if report.still_failing > 0 {
                    exit::PROJECTION_FAILED
                } else {
                    exit::OK
                })
            }
        }
    }
}

async fn rebuild(
    projections: &Projections,
    name: &str,
    out: &Out,
    terminal: bool,
) -> Result<u8, Error> {
    // Fail fast on an unknown name, before drawing anything.
    projections.documents(name)?;
    let bar = if terminal {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:40.cyan/blue}] {pos}/{len} events, {per_sec}, ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(format!("rebuilding {name}"));
        Some(bar)
    } else {
        None
    };
    let progress_bar = bar.clone();
    let log = Arc::clone(out);
    let label = name.to_owned();
    let last_line = Mutex::new(None::<(Instant, u64)>);
    let options = RebuildOptions::new()
        .on_progress(move |p: Progress| {
            if let Some(bar) = &progress_bar {
                bar.set_length(p.total);
                bar.set_position(p.done);
                return;
            }
            let mut last = last_line.lock().unwrap_or_else(PoisonError::into_inner);
            let due = last.is_none_or(|(at, done): (Instant, u64)| {
                at.elapsed() >= Duration::from_secs(1) || (p.done >= p.total && done < p.done)
            });
            if !due {
                return;
            }
            *last = Some((Instant::now(), p.done));
            let rate = p.events as f64 / p.elapsed.as_secs_f64().max(1e-3);
            let left = p.total.saturating_sub(p.done);
            let eta = if rate > 0.0 { left as f64 / rate } else { 0.0 };
            let percent = if p.total > 0 {
                p.done as f64 * 100.0 / p.total as f64
            } else {
                100.0
            };
            say(
                &log,
                &format!(
                    "rebuild {label}: {}/{} events ({percent:.0}%), {rate:.0} events/s, ETA {eta:.0}s",
                    p.done, p.total
                ),
            );
        })
        .cancel_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    let result = projections.rebuild_with(name, options).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = result?;
    match report.outcome {
        RebuildOutcome::Completed => {
            say(
                out,
                &format!(
                    "rebuilt {name} v{}: {} events in {:.1}s ({:.0} events/s), checkpoint {}, now live{}",
                    report.version,
                    report.events,
                    report.elapsed.as_secs_f64(),
                    report.events_per_second(),
                    report.checkpoint,
                    if report.parked > 0 {
                        format!(", {} event(s) parked", report.parked)
                    } else {
                        String::new()
                    }
                ),
            );
            Ok(exit::OK)
        }
        _ => {
            say(
                out,
                &format!(
                    "rebuild of {name} interrupted at position {}; run it again to resume",
                    report.checkpoint
                ),
            );
            Ok(exit::INTERRUPTED)
        }
    }
}
