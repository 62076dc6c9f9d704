//! The `projections` subcommand set any application can mount into its clap CLI.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

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
    /// The projection has side effects (a process manager): it cannot be rebuilt or reset.
    pub const REFUSED: u8 = 6;
    /// Interrupted (Ctrl-C) before finishing; a rebuild resumes where it stopped.
    pub const INTERRUPTED: u8 = 130;
}

/// The exit code that says what `error` means (see [`exit`]).
pub fn exit_code(error: &Error) -> u8 {
    match error {
        Error::UnknownProjection { .. } => exit::UNKNOWN_PROJECTION,
        Error::ProjectionFailed { .. } => exit::PROJECTION_FAILED,
        Error::Busy { .. } => exit::BUSY,
        Error::HasSideEffects { .. } => exit::REFUSED,
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

/// Where the rebuild's progress bar is drawn.
enum Screen {
    /// Not a terminal: plain progress lines.
    Plain,
    /// The process's stdout, a terminal.
    Stdout,
    /// A terminal emulated on `out` (what `execute_to(.., terminal: true)` draws on).
    Out(Out),
}

/// The progress bar on screen, if any: [`LogWriter`] prints log lines above it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A writer for the application's log lines that keeps them from tearing through the rebuild tool's progress
/// bar: it writes to stderr, and while a bar is drawn it clears the bar, prints the line above it and draws the
/// bar again. Hand [`log_writer`] to your subscriber (`tracing_subscriber::fmt().with_writer(log_writer)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// A [`LogWriter`] (a function, so it serves as tracing-subscriber's `MakeWriter`).
pub fn log_writer() -> LogWriter {
    LogWriter
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A terminal on an [`Out`]: ANSI cursor moves and line clears, 100 columns.
struct OutTerm(Out);

impl std::fmt::Debug for OutTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutTerm")
    }
}

impl OutTerm {
    fn put(&self, s: &str) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(s.as_bytes())
    }
}

impl TermLike for OutTerm {
    fn width(&self) -> u16 {
        100
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.put(&format!("\x1b[{n}A"))
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.put(&format!("\x1b[{n}B"))
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.put(&format!("\x1b[{n}C"))
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.put(&format!("\x1b[{n}D"))
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(&format!("{s}\n"))
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

/// A whole number with thousands separators: `20920.25` is `20,920`.
fn whole(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

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
        let screen = if std::io::stdout().is_terminal() {
            Screen::Stdout
        } else {
            Screen::Plain
        };
        let code = self.execute_on(projections, out, screen).await;
        ExitCode::from(code)
    }

    /// Runs the command, writing its output (and errors) to `out`; `terminal` chooses a progress bar (drawn on
    /// `out` as on a terminal) over plain lines. Returns the exit code (see [`exit`]).
    pub async fn execute_to(&self, projections: &Projections, out: Out, terminal: bool) -> u8 {
        let screen = if terminal {
            Screen::Out(Arc::clone(&out))
        } else {
            Screen::Plain
        };
        self.execute_on(projections, out, screen).await
    }

    async fn execute_on(&self, projections: &Projections, out: Out, screen: Screen) -> u8 {
        let terminal = !matches!(screen, Screen::Plain);
        match self.run(projections, &out, screen).await {
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

    async fn run(&self, projections: &Projections, out: &Out, screen: Screen) -> Result<u8, Error> {
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
                    let parked = match &s.runner {
                        Some(r) if r.restarts > 0 || r.state != crate::Supervised::Running => {
                            format!("{parked}; runner {} ({} restart(s))", r.state, r.restarts)
                        }
                        _ => parked,
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
            Self::Rebuild { name } => rebuild(projections, name, out, screen).await,
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
    screen: Screen,
) -> Result<u8, Error> {
    // Fail fast on an unknown name, before drawing anything.
    projections.documents(name)?;
    let target = match screen {
        Screen::Plain => None,
        Screen::Stdout => Some(ProgressDrawTarget::stdout()),
        Screen::Out(out) => Some(ProgressDrawTarget::term_like(Box::new(OutTerm(out)))),
    };
    // One bar, drawn from the first progress report on (so never a stale `0/0`), hidden until then.
    let bar = target.is_some().then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:40.cyan/blue}] {pos}/{len} events, {prefix} events/s, ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(format!("rebuilding {name}"));
        bar
    });
    let target = Mutex::new(target);
    let progress_bar = bar.clone();
    let log = Arc::clone(out);
    let label = name.to_owned();
    let last_line = Mutex::new(None::<(Instant, u64)>);
    let options = RebuildOptions::new()
        .on_progress(move |p: Progress| {
            let rate = p.events as f64 / p.elapsed.as_secs_f64().max(1e-3);
            if let Some(bar) = &progress_bar {
                bar.set_length(p.total);
                bar.set_position(p.done);
                bar.set_prefix(whole(rate));
                if let Some(target) = target.lock().unwrap_or_else(PoisonError::into_inner).take() {
                    bar.set_draw_target(target);
                    *BAR.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
                }
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
                    "rebuild {label}: {}/{} events ({percent:.0}%), {} events/s, ETA {eta:.0}s",
                    p.done,
                    p.total,
                    whole(rate)
                ),
            );
        })
        .cancel_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    let result = projections.rebuild_with(name, options).await;
    if let Some(bar) = &bar {
        *BAR.lock().unwrap_or_else(PoisonError::into_inner) = None;
        bar.finish_and_clear();
    }
    let report = result?;
    match report.outcome {
        RebuildOutcome::Completed => {
            say(
                out,
                &format!(
                    "rebuilt {name} v{}: {} events in {:.1}s ({} events/s), checkpoint {}, now live{}",
                    report.version,
                    report.events,
                    report.elapsed.as_secs_f64(),
                    whole(report.events_per_second()),
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

#[cfg(test)]
mod tests {
    use super::whole;

    #[test]
    fn rates_are_whole_numbers_with_thousands_separators() {
        assert_eq!(whole(20_920.253_1), "20,920");
        assert_eq!(whole(999.6), "1,000");
        assert_eq!(whole(12.0), "12");
        assert_eq!(whole(1_234_567.0), "1,234,567");
        assert_eq!(whole(0.0), "0");
    }
}
