//! `greenlight doctor`: checks a deployment's Slack setup and database before anyone
//! depends on it, and says what to do about each problem.
//!
//! Everything an operator gets wrong while creating the Slack app shows up later as a
//! silent failure (a message that never posts, a button that errors), so each check
//! here asks Slack the question the service will later depend on, and each failure
//! line names the setting or the Slack page that fixes it.

mod callbacks;
mod channels;
mod policy;
mod postgres;

use std::{fmt, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::{
    config::{Config, SlackSettings},
    slack::api::{RetryPolicy, SlackClient, SlackError},
    store::Store,
};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Works as the service will need it; printed `ok`.
    Ok,
    /// Works for now, or could not be checked, but deserves a look; printed `warn`.
    /// Does not change the exit code.
    Warn,
    /// The service will not work as configured; printed `FAIL`, and `doctor` exits 1.
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    /// Any `Fail` makes `doctor` exit 1 ([`exit_code`]).
    pub level: Level,
    /// What was checked, as the line names it: `bot token`, `channel`, `database`,
    /// `callbacks`, `policy`, ….
    pub name: &'static str,
    /// What was found and, for a warning or failure, what to do.
    pub detail: String,
}

impl Check {
    fn new(level: Level, name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            level,
            name,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<5} {}: {}",
            self.level.label(),
            self.name,
            self.detail
        )
    }
}

/// Few retries and short attempts: the operator is waiting at a terminal, and an
/// unreachable Slack should be reported in seconds, not after the service's patient
/// retry schedule.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_failure_retries: 1,
        max_rate_limit_retries: 2,
        base_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        max_jitter: Duration::from_millis(100),
        attempt_timeout: Duration::from_secs(5),
    }
}

/// Runs every check, in the order an operator would fix them. Without Slack settings
/// the database and the policy are checked: the web review page is then the only
/// surface.
pub async fn run(config: &Config) -> Vec<Check> {
    let Some(slack) = &config.slack else {
        let mut checks = vec![
            Check::new(
                Level::Ok,
                "slack",
                "not configured: the web review page (/web) is the only surface; set SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET and SLACK_CHANNEL_ID to add Slack",
            ),
            database(&config.database_url).await,
            callbacks::check(config),
        ];
        checks.extend(placeholder_tokens(config));
        checks.extend(policy::check(None, config).await);
        return checks;
    };
    let retry = retry_policy();
    let bot = match SlackClient::new(&slack.api_base_url, slack.bot_token.clone(), retry.clone()) {
        Ok(bot) => bot,
        Err(error) => return vec![cannot_build_client(error)],
    };
    let mut checks = Vec::new();
    checks.extend(bot_token_format(&slack.bot_token));
    checks.push(bot_token(&bot, slack).await);
    checks.push(
        channel(
            &bot,
            slack,
            &slack.channel_id,
            "channel",
            "set SLACK_CHANNEL_ID to",
        )
        .await,
    );
    checks.extend(channels::check(&bot, config, slack).await);
    checks.push(signing_secret(&slack.signing_secret));
    checks.push(socket_mode(slack, retry).await);
    checks.push(database(&config.database_url).await);
    checks.push(callbacks::check(config));
    checks.extend(placeholder_tokens(config));
    checks.extend(policy::check(Some(&bot), config).await);
    checks
}

/// 0 when nothing failed (warnings included), 1 otherwise.
pub fn exit_code(checks: &[Check]) -> u8 {
    u8::from(checks.iter().any(|c| c.level == Level::Fail))
}

fn bot_token_format(token: &SecretString) -> Option<Check> {
    (!token.expose_secret().starts_with("xoxb-")).then(|| {
        Check::new(
            Level::Warn,
            "bot token",
            "SLACK_BOT_TOKEN does not start with xoxb-: use the Bot User OAuth Token from OAuth & Permissions, not a user (xoxp-) or app-level (xapp-) token",
        )
    })
}

/// A warning when an agent's token is `.env.example`'s placeholder: the configuration
/// allows it only where greenlight is not published (see
/// [`Config::placeholder_agents`]), but anyone who can reach it may submit as that agent.
fn placeholder_tokens(config: &Config) -> Option<Check> {
    let agents = config.placeholder_agents();
    (!agents.is_empty()).then(|| {
        Check::new(
            Level::Warn,
            "agents",
            format!(
                "the token of {} is the placeholder from .env.example, which anyone can read: fine to try greenlight on this machine; give each a token of its own (openssl rand -hex 24) before others can reach it (serve refuses it once GREENLIGHT_PUBLIC_URL is set or GREENLIGHT_LISTEN is not loopback)",
                agents.join(", ")
            ),
        )
    })
}

/// The advice for a Slack failure common to every call.
fn slack_trouble(error: &SlackError, config: &SlackSettings, token_var: &str) -> String {
    match error.code() {
        "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive" => {
            if token_var == "SLACK_APP_TOKEN" {
                format!("Slack says {}: set SLACK_APP_TOKEN to an app-level token (xapp-…) with the connections:write scope, from Basic Information → App-Level Tokens", error.code())
            } else {
                format!("Slack says {}: set SLACK_BOT_TOKEN to the Bot User OAuth Token (xoxb-…) from OAuth & Permissions, and reinstall the app if it was revoked", error.code())
            }
        }
        "unreachable" => format!(
            "cannot reach Slack at {}: check the network, any proxy, and SLACK_API_BASE_URL",
            config.api_base_url
        ),
        "http_error" | "malformed_response" => format!(
            "{error}: is SLACK_API_BASE_URL ({}) really Slack's Web API?",
            config.api_base_url
        ),
        "ratelimited" => format!("{error}: wait a minute and run doctor again"),
        code => format!("Slack says {code} (token {token_var})"),
    }
}

async fn bot_token(bot: &SlackClient, config: &SlackSettings) -> Check {
    match bot.call("auth.test", &json!({}), None).await {
        Ok(answer) => {
            let team = answer.get("team").and_then(Value::as_str).unwrap_or("?");
            let user = answer.get("user_id").and_then(Value::as_str).unwrap_or("?");
            Check::new(
                Level::Ok,
                "bot token",
                format!("accepted by Slack (workspace {team}, bot user {user})"),
            )
        }
        Err(error) => Check::new(
            Level::Fail,
            "bot token",
            slack_trouble(&error, config, "SLACK_BOT_TOKEN"),
        ),
    }
}

/// Whether channel `id` exists, is not archived and has the bot as a member: the
/// check of `SLACK_CHANNEL_ID` (`name` "channel"), and of every channel the policy
/// names (`channels`). `fix` starts the advice to use another channel, naming the
/// setting ("set SLACK_CHANNEL_ID to", "set escalate_channel of rule \"x\" to").
async fn channel(
    bot: &SlackClient,
    config: &SlackSettings,
    id: &str,
    name: &'static str,
    fix: &str,
) -> Check {
    let answer = match bot
        .call_form("conversations.info", &[("channel", id)], None)
        .await
    {
        Ok(answer) => answer,
        Err(error) => {
            let detail = match error.code() {
                "channel_not_found" => format!("{id} not found: {fix} the channel's id (C…/G…, at the bottom of its details), and invite the bot first if the channel is private"),
                // The check needs a scope the service itself does not.
                "missing_scope" => {
                    return Check::new(Level::Warn, name, format!("cannot check {id}: the bot token lacks channels:read / groups:read (the shipped manifest has them); add them and reinstall the app"));
                }
                _ => slack_trouble(&error, config, "SLACK_BOT_TOKEN"),
            };
            return Check::new(Level::Fail, name, detail);
        }
    };
    let channel = answer.get("channel").cloned().unwrap_or(Value::Null);
    let flag = |key: &str| channel.get(key).and_then(Value::as_bool).unwrap_or(false);
    let label = match channel.get("name").and_then(Value::as_str) {
        Some(channel_name) => format!("#{channel_name} ({id})"),
        None => id.to_owned(),
    };
    if flag("is_archived") {
        return Check::new(
            Level::Fail,
            name,
            format!("{label} is archived: unarchive it or {fix} another channel"),
        );
    }
    if !flag("is_member") {
        if flag("is_private") {
            return Check::new(
                Level::Fail,
                name,
                format!("the bot is not in the private channel {label}: /invite it there"),
            );
        }
        return Check::new(
            Level::Warn,
            name,
            format!("the bot is not a member of {label}: posting needs the chat:write.public scope, or /invite the bot"),
        );
    }
    Check::new(
        Level::Ok,
        name,
        format!("{label} exists and the bot is a member"),
    )
}

fn signing_secret(secret: &SecretString) -> Check {
    let secret = secret.expose_secret();
    if secret.len() == 32 && secret.chars().all(|c| c.is_ascii_hexdigit()) {
        Check::new(
            Level::Ok,
            "signing secret",
            "has Slack's format (32 hex characters)",
        )
    } else {
        // Warn only: Slack could change the format, and the HTTP endpoint will
        // reject forged clicks either way. But a wrong value rejects real ones too.
        Check::new(
            Level::Warn,
            "signing secret",
            "SLACK_SIGNING_SECRET is not 32 hex characters: copy the Signing Secret from Basic Information → App Credentials (not the Client Secret or Verification Token)",
        )
    }
}

/// The check that fails when no HTTP client for Slack can be built (its TLS backend
/// failing to start): nothing else about Slack can be checked then.
fn cannot_build_client(error: reqwest::Error) -> Check {
    Check::new(
        Level::Fail,
        "slack",
        format!("cannot build an HTTP client for the Slack Web API: {error}"),
    )
}

async fn socket_mode(config: &SlackSettings, retry: RetryPolicy) -> Check {
    let name = "socket mode";
    let Some(app_token) = config.app_token.clone() else {
        return Check::new(
            Level::Ok,
            name,
            "off (SLACK_APP_TOKEN unset): clicks must reach https://YOUR-HOST/slack/interactions",
        );
    };
    // The config already refused a token without the xapp- prefix.
    let client = match SlackClient::new(&config.api_base_url, app_token, retry) {
        Ok(client) => client,
        Err(error) => return cannot_build_client(error),
    };
    match client.call("apps.connections.open", &json!({}), None).await {
        Ok(answer) if answer.get("url").and_then(Value::as_str).is_some() => Check::new(
            Level::Ok,
            name,
            "SLACK_APP_TOKEN works: Slack issued a Socket Mode connection URL",
        ),
        Ok(_) => Check::new(
            Level::Fail,
            name,
            "apps.connections.open answered without a URL: is SLACK_API_BASE_URL really Slack's Web API?",
        ),
        Err(error) => {
            let detail = match error.code() {
                "not_allowed_token_type" => "Slack says not_allowed_token_type: SLACK_APP_TOKEN must be an app-level token (xapp-…) with connections:write".to_owned(),
                "missing_scope" => "the app-level token lacks connections:write: add that scope under Basic Information → App-Level Tokens".to_owned(),
                _ => slack_trouble(&error, config, "SLACK_APP_TOKEN"),
            };
            Check::new(Level::Fail, name, detail)
        }
    }
}

/// Looks at the database without changing it: no file is created and no migration
/// runs (that is `serve`'s job), so a typo in the URL cannot pass as a new, empty
/// database and a newer binary never migrates a database a running `serve` uses.
async fn database(url: &str) -> Check {
    if crate::store::is_postgres_url(url) {
        return postgres::check(url).await;
    }
    let Some(file) = Store::file_of(url) else {
        return Check::new(
            Level::Fail,
            DATABASE,
            format!("{url} is not a SQLite URL: {SQLITE_FIX}"),
        );
    };
    if !file.exists() {
        return missing_file(url, &file);
    }
    if let Some(problem) = unreadable_file(url, &file) {
        return Check::new(Level::Fail, DATABASE, problem);
    }
    sqlite_file(url).await
}

/// The name of the database check's line.
const DATABASE: &str = "database";
/// The advice for a SQLite database that cannot be used.
const SQLITE_FIX: &str =
    "check GREENLIGHT_DATABASE_URL, and that its directory exists and is writable";

/// A SQLite file that does not exist yet: fine if `serve` can create it.
fn missing_file(url: &str, file: &std::path::Path) -> Check {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let writable = std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && !m.permissions().readonly());
    if writable {
        Check::new(
            Level::Ok,
            DATABASE,
            format!("{url} does not exist yet; greenlight serve creates it on first start"),
        )
    } else {
        Check::new(
            Level::Fail,
            DATABASE,
            format!("{url} does not exist and its directory cannot hold it: {SQLITE_FIX}"),
        )
    }
}

/// Why the existing path `file` (of `url`) cannot be a database greenlight reads, checked before
/// SQLite opens it: SQLite reports a directory as a "disk I/O error" and a file it may
/// not read as "unable to open database file", neither of which says what to fix.
fn unreadable_file(url: &str, file: &std::path::Path) -> Option<String> {
    if file.is_dir() {
        return Some(format!(
            "{url} is a directory, not a database file: set GREENLIGHT_DATABASE_URL to a file in it, such as sqlite://{}/greenlight.db",
            file.display()
        ));
    }
    std::fs::File::open(file).err().map(|error| {
        format!("cannot read {url} ({error}): let the user running greenlight read and write it, or check GREENLIGHT_DATABASE_URL")
    })
}

/// An existing SQLite file, opened read-only: a database (up to date, or lacking
/// migrations `serve` will apply), or a file SQLite cannot read as one.
async fn sqlite_file(url: &str) -> Check {
    let store = match Store::open_read_only(url).await {
        Ok(store) => store,
        Err(error) => return sqlite_trouble(url, &error),
    };
    let pending = match store.ping().await {
        Ok(()) => store.pending_migrations().await,
        Err(error) => Err(error),
    };
    store.close().await;
    match pending {
        Ok(pending) if pending.is_empty() => Check::new(
            Level::Ok,
            DATABASE,
            format!("{url} opened (read-only) and up to date"),
        ),
        Ok(pending) => Check::new(
            Level::Warn,
            DATABASE,
            format!(
                "{url} lacks {} schema migration(s); greenlight serve applies them at start",
                pending.len()
            ),
        ),
        Err(error) => sqlite_trouble(url, &error),
    }
}

/// The failure line for `error`, from opening or reading the SQLite database at `url`.
fn sqlite_trouble(url: &str, error: &crate::store::StoreError) -> Check {
    let detail = if error.is_not_a_database() {
        format!("{url} is not a SQLite database (SQLite says: file is not a database): set GREENLIGHT_DATABASE_URL to greenlight's database file, or to a path that does not exist yet for a new one")
    } else {
        format!("cannot read {url} ({error}): {SQLITE_FIX}")
    };
    Check::new(Level::Fail, DATABASE, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        s.to_owned().into()
    }

    #[test]
    fn signing_secret_format() {
        assert_eq!(
            signing_secret(&secret("8f742231b10e8888abcd99aaabbb85a5")).level,
            Level::Ok
        );
        for bad in [
            "8f742231b10e8888abcd99yyyzzz85a5",
            "short",
            "8f742231b10e8888abcd99aaabbb85a5ff",
        ] {
            let check = signing_secret(&secret(bad));
            assert_eq!(check.level, Level::Warn, "{bad}");
            assert!(!check.detail.contains(bad));
        }
    }

    #[test]
    fn bot_token_prefix_is_checked_without_printing_it() {
        assert!(bot_token_format(&secret("xoxb-1-2-3")).is_none());
        let check = bot_token_format(&secret("xoxp-user-token")).expect("warns");
        assert_eq!(check.level, Level::Warn);
        assert!(!check.detail.contains("user-token"));
    }

    #[test]
    fn exit_code_counts_only_failures() {
        let ok = Check::new(Level::Ok, "a", "");
        let warn = Check::new(Level::Warn, "b", "");
        let fail = Check::new(Level::Fail, "c", "");
        assert_eq!(exit_code(&[ok.clone(), warn.clone()]), 0);
        assert_eq!(exit_code(&[ok, warn, fail]), 1);
    }

    #[test]
    fn lines_start_with_the_level() {
        let line = Check::new(Level::Fail, "database", "cannot open").to_string();
        assert_eq!(line, "FAIL  database: cannot open");
        assert!(Check::new(Level::Ok, "x", "y")
            .to_string()
            .starts_with("ok    x: "));
    }
}
