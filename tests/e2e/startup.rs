//! Start-up of the real binary: a setting it cannot use stops it with one line naming
//! the variable (exit 2), the same way in every command that reads it, and a setting
//! that is unsafe but allowed is warned about.

use std::{collections::HashMap, path::Path, process::Stdio, time::Duration};

use crate::helpers::{binary, AGENT_TOKEN};

/// How long a command that must refuse to start may take; one still running then has
/// started instead, which fails the test.
const PATIENCE: Duration = Duration::from_secs(20);

/// The agent token `.env.example` ships, which the README's quick start uses.
const PLACEHOLDER: &str = "change-me-to-a-long-random-token";

/// A working environment without Slack: one agent, a SQLite file in `dir`, port 0.
fn env_in(dir: &Path) -> HashMap<String, String> {
    HashMap::from([
        (
            "GREENLIGHT_API_TOKENS".to_owned(),
            format!("ci-bot:{AGENT_TOKEN}"),
        ),
        (
            "GREENLIGHT_DATABASE_URL".to_owned(),
            format!("sqlite://{}", dir.join("greenlight.db").display()),
        ),
        ("GREENLIGHT_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
    ])
}

/// Runs `greenlight args` to its exit: (exit code, stdout, stderr). A command still
/// running after [`PATIENCE`] is killed and fails the test.
async fn run_to_exit(
    env: &HashMap<String, String>,
    dir: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let mut command = tokio::process::Command::from(binary::command(env, dir));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .unwrap_or_else(|_| panic!("greenlight {args:?} kept running instead of refusing"))
        .expect("run greenlight");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `RUST_LOG` is in the README's configuration table, whose promise is that an invalid
/// value stops start-up with one line naming the variable; a trial's `RUST_LOG='[[['`
/// started silently with the default filter. `doctor` refuses the configuration too.
#[tokio::test]
async fn an_invalid_rust_log_stops_start_up_naming_the_directive() {
    let dir = tempfile::tempdir().expect("dir");
    for (value, directive) in [("[[[", "[[["), ("info,greenlight=loud", "greenlight=loud")] {
        let mut env = env_in(dir.path());
        env.insert("RUST_LOG".to_owned(), value.to_owned());
        let (code, stdout, stderr) = run_to_exit(&env, dir.path(), &["serve"]).await;
        assert_eq!(code, 2, "{stdout}{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("greenlight: RUST_LOG is invalid")
                && stderr.contains(&format!("{directive:?}")),
            "{stderr}"
        );
        let (code, stdout, _) = run_to_exit(&env, dir.path(), &["doctor"]).await;
        assert_eq!(code, 2, "{stdout}");
        assert!(
            stdout.starts_with("FAIL  configuration: RUST_LOG is invalid"),
            "{stdout}"
        );
    }
    assert!(
        !dir.path().join("greenlight.db").exists(),
        "refused before the database is made"
    );

    // Valid filters start it, and apply: "policy loaded" is an info line of
    // greenlight::app, written before the address is printed.
    for (value, shown) in [("warn", false), ("warn,greenlight::app=info", true)] {
        let mut env = env_in(dir.path());
        env.insert("RUST_LOG".to_owned(), value.to_owned());
        let bin = binary::Binary::serve(&env, dir.path(), "valid.log").await;
        let log = bin.stderr();
        assert_eq!(log.contains("policy loaded"), shown, "{value}: {log}");
    }
}

/// Every command that opens the database validates `GREENLIGHT_DATABASE_URL` the
/// same way: `audit export` took `foo` for a file path where `serve` refused it.
#[tokio::test]
async fn every_command_that_opens_the_database_refuses_an_unusable_url_alike() {
    let dir = tempfile::tempdir().expect("dir");
    let mut env = env_in(dir.path());
    env.insert("GREENLIGHT_DATABASE_URL".to_owned(), "foo".to_owned());
    let (code, _, serve) = run_to_exit(&env, dir.path(), &["serve"]).await;
    assert_eq!(code, 2, "{serve}");
    assert_eq!(serve.lines().count(), 1, "{serve}");
    assert!(
        serve.starts_with("greenlight: GREENLIGHT_DATABASE_URL is invalid"),
        "{serve}"
    );
    let (code, stdout, export) = run_to_exit(&env, dir.path(), &["audit", "export"]).await;
    assert_eq!((code, stdout.as_str()), (2, ""), "{export}");
    assert_eq!(export, serve);
    let (code, stdout, _) = run_to_exit(&env, dir.path(), &["doctor"]).await;
    assert_eq!(code, 2, "{stdout}");
    let line = serve.trim_end().trim_start_matches("greenlight: ");
    assert!(
        stdout.starts_with(&format!("FAIL  configuration: {line}")),
        "{stdout}"
    );
    assert!(!dir.path().join("foo").exists());
}

/// The agent token `.env.example` ships is public. The quick start relies on it (the
/// copied `.env` "works as it is", and its curl sends that token), so on a loopback
/// address `serve` starts and warns, naming the agent; once the service is meant to
/// be reached from elsewhere (`GREENLIGHT_PUBLIC_URL` set, or a non-loopback
/// `GREENLIGHT_LISTEN`: see the config unit test) it refuses to start.
#[tokio::test]
async fn the_example_token_is_warned_about_locally_and_refused_when_published() {
    let dir = tempfile::tempdir().expect("dir");
    let mut env = env_in(dir.path());
    env.insert(
        "GREENLIGHT_API_TOKENS".to_owned(),
        format!("ci-bot:{PLACEHOLDER},deploy-bot:{AGENT_TOKEN}"),
    );
    let bin = binary::Binary::serve(&env, dir.path(), "serve.log").await;
    let log = bin.stderr();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(".env.example")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("WARN")
            && warnings[0].contains("ci-bot")
            && !warnings[0].contains("deploy-bot"),
        "{log}"
    );
    drop(bin);

    let (code, stdout, _) = run_to_exit(&env, dir.path(), &["doctor"]).await;
    assert_eq!(code, 0, "a warning: {stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains(" agents: "))
        .unwrap_or_else(|| panic!("an agents line: {stdout}"));
    assert!(
        line.starts_with("warn") && line.contains("ci-bot") && line.contains(".env.example"),
        "{line}"
    );

    env.insert(
        "GREENLIGHT_PUBLIC_URL".to_owned(),
        "https://greenlight.example.com".to_owned(),
    );
    let (code, stdout, stderr) = run_to_exit(&env, dir.path(), &["serve"]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("greenlight: GREENLIGHT_API_TOKENS is invalid")
            && stderr.contains("ci-bot")
            && stderr.contains("GREENLIGHT_PUBLIC_URL"),
        "{stderr}"
    );
}
