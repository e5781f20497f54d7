//! `greenlight doctor`: the real binary, configured through its environment, against
//! the fake Slack.

use std::{collections::HashMap, path::Path};

use serde_json::json;

use crate::helpers::{base_env, FakeSlack, Reply, APP_TOKEN, BOT_TOKEN, CHANNEL};

/// Slack's signing secret format, so the format check passes.
const GOOD_SECRET: &str = "8f742231b10e8888abcd99aaabbb85a5";

struct Run {
    code: Option<i32>,
    stdout: String,
}

impl Run {
    /// The report line of check `name`.
    fn line(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| {
                l.split_once(':')
                    .is_some_and(|(head, _)| head.ends_with(name))
            })
            .unwrap_or_else(|| panic!("no {name} line in:\n{}", self.stdout))
    }
}

/// Runs `greenlight doctor` with only the given environment (no inherited variables,
/// no `.env`: the working directory is an empty temp dir).
async fn doctor(env: &[(String, String)], dir: &Path) -> Run {
    let env: HashMap<String, String> = env.iter().cloned().collect();
    let (code, stdout, _) = crate::helpers::binary::run(&env, dir, &["doctor"]).await;
    for secret in [BOT_TOKEN, APP_TOKEN, GOOD_SECRET] {
        assert!(
            !stdout.contains(secret),
            "doctor printed a secret:\n{stdout}"
        );
    }
    Run {
        code: Some(code),
        stdout,
    }
}

/// A complete, valid environment against `slack`, with Socket Mode on.
fn env_for(slack: &FakeSlack, dir: &Path) -> Vec<(String, String)> {
    let db = format!("sqlite://{}", dir.join("doctor.db").display());
    let mut env: Vec<(String, String)> = base_env(slack, &db).into_iter().collect();
    set(&mut env, "SLACK_SIGNING_SECRET", GOOD_SECRET);
    set(&mut env, "SLACK_APP_TOKEN", APP_TOKEN);
    env
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value.to_owned()));
}

async fn slack() -> FakeSlack {
    let slack = FakeSlack::start().await;
    slack.set_success(
        "apps.connections.open",
        json!({"ok": true, "url": "wss://fake.invalid/link/?ticket=t"}),
    );
    slack
}

#[tokio::test]
async fn all_good_exits_zero_with_ok_lines() {
    let slack = slack().await;
    let dir = tempfile::tempdir().expect("dir");
    let run = doctor(&env_for(&slack, dir.path()), dir.path()).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    for name in [
        "configuration",
        "bot token",
        "channel",
        "signing secret",
        "socket mode",
        "database",
    ] {
        assert!(run.line(name).starts_with("ok "), "{}", run.stdout);
    }
    assert!(!run.stdout.contains("FAIL") && !run.stdout.contains("warn"));
    assert!(
        run.line("database").contains("does not exist yet"),
        "{}",
        run.stdout
    );
    assert!(
        !dir.path().join("doctor.db").exists(),
        "doctor must not create the database"
    );
    // The checks asked Slack the right questions with the right tokens.
    let info = &slack.calls_to("conversations.info")[0];
    assert_eq!(info.body["channel"], CHANNEL);
    let auth = &slack.calls_to("auth.test")[0];
    assert_eq!(
        auth.authorization.as_deref(),
        Some(&*format!("Bearer {BOT_TOKEN}"))
    );
    let open = &slack.calls_to("apps.connections.open")[0];
    assert_eq!(
        open.authorization.as_deref(),
        Some(&*format!("Bearer {APP_TOKEN}"))
    );
}

#[tokio::test]
async fn invalid_bot_token_fails_and_names_the_fix() {
    let slack = slack().await;
    slack.always("auth.test", Reply::Error("invalid_auth"));
    let dir = tempfile::tempdir().expect("dir");
    let run = doctor(&env_for(&slack, dir.path()), dir.path()).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let line = run.line("bot token");
    assert!(
        line.starts_with("FAIL")
            && line.contains("invalid_auth")
            && line.contains("SLACK_BOT_TOKEN"),
        "{line}"
    );
    // The others still ran.
    assert!(run.line("database").starts_with("ok "), "{}", run.stdout);
}

#[tokio::test]
async fn missing_channel_fails_and_non_member_warns() {
    let slack = slack().await;
    slack.script("conversations.info", [Reply::Error("channel_not_found")]);
    let dir = tempfile::tempdir().expect("dir");
    let env = env_for(&slack, dir.path());
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let line = run.line("channel");
    assert!(
        line.starts_with("FAIL") && line.contains(CHANNEL) && line.contains("SLACK_CHANNEL_ID"),
        "{line}"
    );

    // A public channel the bot has not joined: works only with chat:write.public.
    slack.set_success(
        "conversations.info",
        json!({"ok": true, "channel": {"id": CHANNEL, "name": "approvals",
            "is_private": false, "is_archived": false, "is_member": false}}),
    );
    let run = doctor(&env, dir.path()).await;
    assert_eq!(
        run.code,
        Some(0),
        "a warning is not a failure: {}",
        run.stdout
    );
    let line = run.line("channel");
    assert!(
        line.starts_with("warn") && line.contains("chat:write.public"),
        "{line}"
    );

    // Archived: nothing can be posted there.
    slack.set_success(
        "conversations.info",
        json!({"ok": true, "channel": {"id": CHANNEL, "name": "approvals",
            "is_private": false, "is_archived": true, "is_member": true}}),
    );
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.line("channel").contains("archived"), "{}", run.stdout);
}

#[tokio::test]
async fn unreachable_slack_fails_every_slack_check() {
    let dir = tempfile::tempdir().expect("dir");
    let slack = slack().await;
    let mut env = env_for(&slack, dir.path());
    // A port that was just free: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    set(&mut env, "SLACK_API_BASE_URL", &format!("http://{closed}"));
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    for name in ["bot token", "channel", "socket mode"] {
        let line = run.line(name);
        assert!(
            line.starts_with("FAIL") && line.contains("cannot reach Slack"),
            "{line}"
        );
    }
    assert!(run.line("database").starts_with("ok "));
}

#[tokio::test]
async fn bad_database_path_and_app_token_fail() {
    let slack = slack().await;
    slack.always("apps.connections.open", Reply::Error("invalid_auth"));
    let dir = tempfile::tempdir().expect("dir");
    let mut env = env_for(&slack, dir.path());
    let missing = dir.path().join("no/such/dir/greenlight.db");
    set(
        &mut env,
        "GREENLIGHT_DATABASE_URL",
        &format!("sqlite://{}", missing.display()),
    );
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let line = run.line("database");
    assert!(
        line.starts_with("FAIL") && line.contains("GREENLIGHT_DATABASE_URL"),
        "{line}"
    );
    let line = run.line("socket mode");
    assert!(
        line.starts_with("FAIL") && line.contains("SLACK_APP_TOKEN"),
        "{line}"
    );
}

#[tokio::test]
async fn unloadable_configuration_exits_two() {
    let slack = slack().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut env = env_for(&slack, dir.path());
    env.retain(|(k, _)| k != "SLACK_CHANNEL_ID");
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.line("configuration").contains("SLACK_CHANNEL_ID"));

    // A bot token pasted into SLACK_APP_TOKEN is a configuration error too.
    let mut env = env_for(&slack, dir.path());
    set(&mut env, "SLACK_APP_TOKEN", BOT_TOKEN);
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.line("configuration").contains("xapp-"));
    assert!(
        slack.calls().is_empty(),
        "no Slack call without a valid configuration"
    );
}

#[tokio::test]
async fn weak_signing_secret_only_warns() {
    let slack = slack().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut env = env_for(&slack, dir.path());
    set(&mut env, "SLACK_SIGNING_SECRET", "not-the-signing-secret");
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let line = run.line("signing secret");
    assert!(
        line.starts_with("warn") && !line.contains("not-the-signing-secret"),
        "{line}"
    );
}

#[tokio::test]
async fn an_existing_database_is_read_without_being_changed() {
    let slack = slack().await;
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("doctor.db").display());
    let store = greenlight::store::Store::connect(&db)
        .await
        .expect("create as serve would");
    store.close().await;
    let file = dir.path().join("doctor.db");
    let before = std::fs::metadata(&file)
        .expect("db")
        .modified()
        .expect("mtime");
    let run = doctor(&env_for(&slack, dir.path()), dir.path()).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let line = run.line("database");
    assert!(
        line.starts_with("ok ") && line.contains("up to date"),
        "{line}"
    );
    let after = std::fs::metadata(&file)
        .expect("db")
        .modified()
        .expect("mtime");
    assert_eq!(before, after, "doctor must not write to the database");
}

/// Runs doctor with `policy` as the policy file, the user group S0SRE answered with
/// `members` (or refused with `error`).
async fn doctor_with_policy(policy: &str, group: Reply, members: &[&str]) -> (Run, FakeSlack) {
    let slack = slack().await;
    slack.set_success(
        "usergroups.users.list",
        json!({"ok": true, "users": members}),
    );
    slack.always("usergroups.users.list", group);
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy).expect("write");
    let mut env = env_for(&slack, dir.path());
    set(&mut env, "GREENLIGHT_POLICY", &path.display().to_string());
    (doctor(&env, dir.path()).await, slack)
}

const GROUP_RULE: &str =
    "[[rule]]\nname = \"prod\"\ncontext.env = \"prod\"\napprovers = [\"S0SRE\", \"U0ALICE\"]\nrequired_approvals = 3\n";

#[tokio::test]
async fn a_user_group_too_small_for_its_quorum_is_warned_about() {
    let (run, slack) = doctor_with_policy(GROUP_RULE, Reply::Ok, &["U0ALICE"]).await;
    assert_eq!(run.code, Some(0), "warnings do not fail: {}", run.stdout);
    let line = run.line("policy");
    assert!(
        line.starts_with("warn")
            && line.contains("rule \"prod\" requires 3 approvals")
            && line.contains("(S0SRE: 1 member, U0ALICE) are 1 person"),
        "{line}"
    );
    let lookup = &slack.calls_to("usergroups.users.list")[0];
    assert_eq!(lookup.body["usergroup"], "S0SRE");
}

#[tokio::test]
async fn a_user_group_large_enough_is_ok_and_an_unreadable_one_is_warned_about() {
    let (run, _) = doctor_with_policy(GROUP_RULE, Reply::Ok, &["U0BOB", "U0CAROL", "U0DAVE"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let line = run.line("policy");
    assert!(
        line.starts_with("ok") && line.contains("every quorum can be reached (S0SRE: 3 members)"),
        "{line}"
    );

    let (run, _) = doctor_with_policy(GROUP_RULE, Reply::Error("missing_scope"), &[]).await;
    let line = run.line("policy");
    assert!(
        line.starts_with("warn")
            && line
                .contains("cannot read the members of user group S0SRE (Slack says missing_scope)"),
        "{line}"
    );
}

#[tokio::test]
async fn an_unreachable_quorum_in_the_policy_fails_doctor() {
    let policy =
        "[[rule]]\nname = \"pair\"\napprovers = [\"U0AAA\", \"U0BBB\"]\nrequired_approvals = 3\n";
    let (run, _) = doctor_with_policy(policy, Reply::Ok, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let line = run.line("policy");
    assert!(
        line.starts_with("FAIL") && line.contains(":4:22: rule \"pair\": required_approvals = 3"),
        "{line}"
    );
}
