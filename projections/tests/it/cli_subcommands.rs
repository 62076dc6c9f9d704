//! The `projections` subcommands end to end against PostgreSQL: output, exit codes, unknown names.

use std::io::Write;
use std::sync::{Arc, Mutex};

use annals_projections::{Projections, ProjectionsCommand, exit};
use clap::Parser;
#[cfg(feature = "postgres")]
use sqlx::PgPool;

use crate::support::*;

#[derive(Parser)]
struct App {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    #[command(subcommand)]
    Projections(ProjectionsCommand),
}

async fn cli(projections: &Projections, args: &[&str]) -> (u8, String) {
    let app = App::try_parse_from(std::iter::once("app").chain(args.iter().copied())).unwrap();
    let Command::Projections(cmd) = app.command;
    let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
    let out: Arc<Mutex<dyn Write + Send>> = buffer.clone();
    let code = cmd.execute_to(projections, out, false).await;
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    (code, text)
}

#[cfg(feature = "postgres")]
#[sqlx::test]
async fn subcommands_work_end_to_end_on_postgres(pool: PgPool) {
    let store = pg_store(&pool).await;
    write_events(&store, "acc", 10, 30).await;
    let projections = Projections::postgres(store.clone(), pool).with(Tallies::new());

    let (code, text) = cli(&projections, &["projections", "list"]).await;
    assert_eq!(code, exit::OK);
    assert_eq!(text, "tallies\tv1\n");

    let (code, text) = cli(&projections, &["projections", "status"]).await;
    assert_eq!(code, exit::OK, "{text}");
    assert!(
        text.contains("tallies") && text.contains("not started"),
        "{text}"
    );

    let (code, text) = cli(&projections, &["projections", "rebuild", "tallies"]).await;
    assert_eq!(code, exit::OK, "{text}");
    // Plain progress lines when not on a terminal, then the summary.
    assert!(text.contains("rebuild tallies: "), "{text}");
    assert!(text.contains("events/s"), "{text}");
    assert!(text.contains("rebuilt tallies v1: 310 events"), "{text}");
    assert_eq!(
        untagged(snapshot(&projections).await),
        untagged(from_scratch(store.clone()).await)
    );

    let (code, text) = cli(&projections, &["projections", "status"]).await;
    assert_eq!(code, exit::OK);
    assert!(text.contains(" 310 ") && text.contains("stopped"), "{text}");

    let (code, text) = cli(&projections, &["projections", "rebuild", "talies"]).await;
    assert_eq!(code, exit::UNKNOWN_PROJECTION);
    assert!(
        text.contains("unknown projection \"talies\"; known projections: tallies"),
        "{text}"
    );

    let (code, text) = cli(&projections, &["projections", "reset", "tallies"]).await;
    assert_eq!(code, exit::OK, "{text}");
    assert!(snapshot(&projections).await.is_empty());
    let (_, text) = cli(&projections, &["projections", "status"]).await;
    assert!(text.contains("not started"), "{text}");

    let (code, text) = cli(&projections, &["projections", "parked", "tallies"]).await;
    assert_eq!(code, exit::OK);
    assert!(text.contains("0 parked"), "{text}");
}

#[test]
fn unknown_subcommands_and_missing_names_are_usage_errors() {
    assert!(App::try_parse_from(["app", "projections", "rebuild"]).is_err());
    assert!(App::try_parse_from(["app", "projections", "frobnicate"]).is_err());
}

#[tokio::test]
async fn rebuild_on_a_terminal_draws_one_bar_with_whole_number_rates() {
    let store = memory_store();
    write_events(&store, "acc", 50, 40).await;
    let projections = Projections::memory(store).with(Tallies::new());
    let app = App::try_parse_from(["app", "projections", "rebuild", "tallies"]).unwrap();
    let Command::Projections(cmd) = app.command;
    let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
    let out: Arc<Mutex<dyn Write + Send>> = buffer.clone();
    let code = cmd.execute_to(&projections, out, true).await;
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    assert_eq!(code, exit::OK, "{text}");
    // No stale empty bar before the first report, and whole-number rates everywhere.
    assert!(!text.contains("0/0 events"), "{text}");
    for (i, _) in text.match_indices(" events/s") {
        let rate = text[..i].rsplit([' ', '(']).next().unwrap();
        assert!(
            !rate.is_empty() && rate.chars().all(|c| c.is_ascii_digit() || c == ','),
            "rate {rate:?} in {text}"
        );
    }
    assert!(text.contains("rebuilt tallies v1: 2050 events"), "{text}");
}
