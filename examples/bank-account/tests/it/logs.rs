//! Logs: no colour codes when stderr is not a terminal; `--log-format json` writes one JSON object per line.

use std::process::Command;

fn bank_stderr(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("BANK_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .output()
        .expect("the bank binary runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let stderr = bank_stderr(&["projections", "--memory", "list"]);
    assert!(stderr.contains("--memory"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape in piped logs: {stderr:?}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let stderr = bank_stderr(&["--log-format", "json", "projections", "--memory", "list"]);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value["level"].is_string() && value["fields"]["message"].is_string(),
            "{line}"
        );
    }
}
