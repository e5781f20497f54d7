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

/// Channels the policy names besides SLACK_CHANNEL_ID (a rule's escalation channel)
/// get the main channel's check: a missing one fails, naming the rule's setting.
#[tokio::test]
async fn the_policy_escalation_channel_is_checked_like_the_main_channel() {
    let policy = "[[rule]]\nname = \"deploys\"\ncode = '^deploy'\nremind_after_secs = 60\nescalate_after_secs = 120\nescalate_channel = \"C0ESCALATE\"\n";
    let slack = slack().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy).expect("write");
    let mut env = env_for(&slack, dir.path());
    set(&mut env, "GREENLIGHT_POLICY", &path.display().to_string());
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let line = run.line("escalation channel");
    assert!(
        line.starts_with("ok") && line.contains("(C0ESCALATE) exists and the bot is a member"),
        "{line}"
    );
    let asked: Vec<_> = slack
        .calls_to("conversations.info")
        .iter()
        .map(|c| c.body["channel"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(asked, [CHANNEL, "C0ESCALATE"]);

    // The main channel is fine, the escalation channel does not exist.
    slack.script(
        "conversations.info",
        [Reply::Ok, Reply::Error("channel_not_found")],
    );
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.line("channel").starts_with("ok"), "{}", run.stdout);
    let line = run.line("escalation channel");
    assert!(
        line.starts_with("FAIL")
            && line.contains("C0ESCALATE not found")
            && line.contains("escalate_channel of rule \"deploys\""),
        "{line}"
    );
}

/// The callback settings: half set up (hosts but no agent with a secret) warns, a
/// working set-up names hosts and agents, a malformed secret stops the configuration.
#[tokio::test]
async fn callback_settings_are_checked() {
    let slack = slack().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut env = env_for(&slack, dir.path());
    let run = doctor(&env, dir.path()).await;
    assert!(
        run.line("callbacks").starts_with("ok    callbacks: off"),
        "{}",
        run.stdout
    );

    set(&mut env, "GREENLIGHT_CALLBACK_HOSTS", "hooks.example.com");
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(0), "a warning: {}", run.stdout);
    let line = run.line("callbacks");
    assert!(
        line.starts_with("warn") && line.contains("no agent has a signing secret"),
        "{line}"
    );

    set(
        &mut env,
        "GREENLIGHT_CALLBACK_SECRETS",
        "ci-bot:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    );
    let run = doctor(&env, dir.path()).await;
    let line = run.line("callbacks");
    assert!(
        line.starts_with("ok")
            && line.contains("hosts hooks.example.com; signing secrets (whsec_ format) for ci-bot")
            && line.contains("refused: other-bot")
            && !line.contains("MfKQ9r8"),
        "{line}"
    );

    // A lease no longer than an attempt could let two replicas send one attempt: the
    // configuration itself is refused (as `serve` refuses it).
    set(&mut env, "GREENLIGHT_CALLBACK_LEASE_SECS", "5");
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    let line = run.line("configuration");
    assert!(
        line.starts_with("FAIL") && line.contains("GREENLIGHT_CALLBACK_LEASE_SECS"),
        "{line}"
    );

    set(&mut env, "GREENLIGHT_CALLBACK_LEASE_SECS", "");
    set(
        &mut env,
        "GREENLIGHT_CALLBACK_SECRETS",
        "ci-bot:not-a-webhook-secret",
    );
    let run = doctor(&env, dir.path()).await;
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    let line = run.line("configuration");
    assert!(
        line.starts_with("FAIL")
            && line.contains("GREENLIGHT_CALLBACK_SECRETS")
            && line.contains("whsec_"),
        "{line}"
    );
}

/// Without Slack, a rule none of the review page's reviewers may decide fails doctor,
/// as it stops serve.
#[tokio::test]
async fn without_slack_a_rule_no_reviewer_can_decide_fails() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        "[[rule]]\nname = \"sre\"\napprovers = [\"U0ALICE\"]\n",
    )
    .expect("write");
    let env = HashMap::from([
        (
            "GREENLIGHT_API_TOKENS".to_owned(),
            format!("ci-bot:{}", crate::helpers::AGENT_TOKEN),
        ),
        (
            "GREENLIGHT_DATABASE_URL".to_owned(),
            format!("sqlite://{}", dir.path().join("none.db").display()),
        ),
        ("GREENLIGHT_POLICY".to_owned(), path.display().to_string()),
        ("GREENLIGHT_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    let (code, stdout, _) = crate::helpers::binary::run(&env, dir.path(), &["doctor"]).await;
    assert_eq!(code, 1, "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains(" policy: "))
        .unwrap_or("");
    assert!(
        line.starts_with("FAIL")
            && line.contains(":1:1: rule \"sre\": needs 1 approval, but Slack is not configured")
            && line.contains("reviewers: web:local"),
        "{stdout}"
    );
    // serve refuses it at start in one line.
    let (code, _, stderr) = crate::helpers::binary::run(&env, dir.path(), &["serve"]).await;
    assert_ne!(code, 0);
    assert!(
        stderr.contains("rule \"sre\": needs 1 approval"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("none.db").exists(),
        "refused before the database is made"
    );
}

/// Runs doctor without Slack (only the database, callbacks and policy are checked)
/// with `GREENLIGHT_DATABASE_URL` set to the SQLite file `db`.
async fn doctor_on_file(db: &Path, dir: &Path) -> Run {
    let env = [
        (
            "GREENLIGHT_API_TOKENS".to_owned(),
            format!("ci-bot:{}", crate::helpers::AGENT_TOKEN),
        ),
        (
            "GREENLIGHT_DATABASE_URL".to_owned(),
            format!("sqlite://{}", db.display()),
        ),
        ("GREENLIGHT_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
    ];
    doctor(&env, dir).await
}

/// A file SQLite cannot read as a database (a trial ran doctor on a TOML file: it
/// warned about missing migrations and exited 0, then serve failed with "file is not
/// a database"), a directory, and a file doctor may not read each fail the database
/// check in one line; a real database greenlight never started on only warns.
#[tokio::test]
async fn a_database_file_sqlite_cannot_read_fails_and_an_unmigrated_one_warns() {
    let dir = tempfile::tempdir().expect("dir");

    let toml = dir.path().join("bad.toml");
    std::fs::write(&toml, "a = 1\n[b]\nc = \"d\"\n").expect("write");
    let run = doctor_on_file(&toml, dir.path()).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let line = run.line("database");
    assert!(
        line.starts_with("FAIL")
            && line.contains("is not a SQLite database")
            && line.contains("GREENLIGHT_DATABASE_URL"),
        "{line}"
    );

    let sub = dir.path().join("a-directory");
    std::fs::create_dir(&sub).expect("mkdir");
    let run = doctor_on_file(&sub, dir.path()).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let line = run.line("database");
    assert!(
        line.starts_with("FAIL") && line.contains("is a directory, not a database file"),
        "{line}"
    );

    // A real SQLite database without greenlight's tables: serve would migrate it.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .and_then(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))
        .expect("create a database");
    let run = doctor_on_file(&other, dir.path()).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let line = run.line("database");
    assert!(
        line.starts_with("warn") && line.contains("schema migration(s)"),
        "{line}"
    );

    // Unreadable: only observable when the tests do not run as root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    if std::fs::File::open(&other).is_err() {
        let run = doctor_on_file(&other, dir.path()).await;
        assert_eq!(run.code, Some(1), "{}", run.stdout);
        let line = run.line("database");
        assert!(
            line.starts_with("FAIL") && line.contains("cannot read"),
            "{line}"
        );
    }
}
