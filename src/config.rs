//! Configuration: read once at start-up from the environment (and `.env`), validated,
//! then shared immutable behind an `Arc`.
//!
//! Every problem is reported as one line that names the variable and says what to do,
//! because the first person to read it is someone at a terminal who just typed
//! `greenlight serve`.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Default Slack Web API base; tests point `SLACK_API_BASE_URL` at a fake.
pub const DEFAULT_SLACK_API_BASE_URL: &str = "https://slack.com/api";
/// `GREENLIGHT_DATABASE_URL` when unset: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://greenlight.db";
/// `GREENLIGHT_DEFAULT_TIMEOUT_SECS` when unset: five minutes for a reviewer to
/// answer a request whose agent gave no `timeout_secs`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// The longest an approval may wait: a week covers "over the weekend" and bounds
/// how long a forgotten request can hold state.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Submissions an agent may make a minute (and its burst); see `limits`.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 60;
/// Pending requests an agent may have at once: more than a reviewer can read.
pub const DEFAULT_MAX_PENDING_PER_AGENT: u32 = 100;
/// How long shutdown waits for in-flight requests before exiting anyway.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// How often a failed Slack `auth.test` is retried for readiness.
pub const DEFAULT_READINESS_RECHECK_SECS: u64 = 30;
/// How long a coding agent's hook waits for a person (`GREENLIGHT_HOOK_BUDGET_SECS`):
/// below Claude Code's default hook timeout of 600 s (its hooks reference), so that
/// greenlight's explicit deny reaches the host before the host gives up and lets the
/// tool run (hooks fail open).
pub const DEFAULT_HOOK_BUDGET_SECS: u64 = 540;
/// The longest hook budget accepted: an hour is already far beyond any host's default.
pub const MAX_HOOK_BUDGET_SECS: u64 = 3600;

/// How the placeholder secrets of `.env.example` begin (the agent token
/// `change-me-to-a-long-random-token`, the reviewers' `change-me-alice-secret`):
/// anyone can read them there, so a token starting so authenticates nobody in
/// particular. See [`Config::placeholder_agents`].
pub const PLACEHOLDER_PREFIX: &str = "change-me";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (the default, for a terminal).
    #[default]
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// The validated service configuration.
#[derive(Clone)]
pub struct Config {
    /// The Slack app, when `SLACK_BOT_TOKEN` is set; `None` runs greenlight with the web
    /// review page as its only surface (no message is ever queued for Slack).
    pub slack: Option<SlackSettings>,
    /// Who may sign in to the web review page (`GREENLIGHT_REVIEWERS`); empty means
    /// one local reviewer who signs in with the one-time link printed at start-up.
    pub reviewers: Vec<crate::web::reviewers::WebReviewer>,
    /// Where reviewers reach greenlight (`GREENLIGHT_PUBLIC_URL`, no trailing slash),
    /// for printed links; an `https` URL also marks session cookies `Secure`. `None`:
    /// `http://` and the bound address.
    pub public_url: Option<String>,
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Agents allowed to call the API, each with the name Slack shows.
    pub api_tokens: Vec<ApiToken>,
    /// Where requests, decisions and events are stored.
    pub database_url: String,
    /// How long a request waits for a human when the agent does not say.
    pub default_timeout: Duration,
    /// How long decided requests (and their audit events) are kept; `None` keeps them
    /// forever. Pending requests are never pruned.
    pub retention: Option<Duration>,
    /// Who may approve (`GREENLIGHT_APPROVERS`): Slack user ids and user group ids.
    /// `None` lets anyone who can click decide; a policy rule may override it.
    pub approvers: Option<Vec<String>>,
    /// The policy file (`GREENLIGHT_POLICY`); `None` means `config/policy.toml` if it
    /// exists, else the built-in default rule.
    pub policy_path: Option<PathBuf>,
    /// Log line format (`GREENLIGHT_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Log filter directives (`RUST_LOG`), checked by [`crate::logging::filter`];
    /// `None` (unset or blank) is its default filter.
    pub log_filter: Option<String>,
    /// Submissions per agent per minute (`GREENLIGHT_RATE_LIMIT_PER_MINUTE`).
    pub rate_limit_per_minute: u32,
    /// Pending requests per agent (`GREENLIGHT_MAX_PENDING_PER_AGENT`).
    pub max_pending_per_agent: u32,
    /// Hard cap on graceful shutdown (`GREENLIGHT_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// First wait between Slack `auth.test` retries while it fails; the wait then
    /// doubles up to `readiness::RECHECK_MAX` (`GREENLIGHT_READINESS_RECHECK_SECS`).
    pub readiness_recheck: Duration,
    /// How long a hook call (`/v1/hooks/*`) waits for a person before answering an
    /// explicit deny and expiring the request (`GREENLIGHT_HOOK_BUDGET_SECS`).
    pub hook_budget: Duration,
    /// Decision callbacks: allowed hosts, per-agent signing secrets, retries
    /// (`GREENLIGHT_CALLBACK_*`; see `crate::callbacks::settings`).
    pub callbacks: crate::callbacks::CallbackSettings,
}

/// One agent credential. The name is public (shown in Slack, used in the audit
/// trail); the token never prints.
#[derive(Clone)]
pub struct ApiToken {
    /// 1–64 ASCII letters, digits, `-`, `_` or `.`; `token-N` (its position, from 1)
    /// for a bare token. Unique among the tokens.
    pub name: String,
    /// The bearer secret, at least 16 characters; compared in constant time.
    pub token: SecretString,
}

/// The Slack app's settings: all three of `SLACK_BOT_TOKEN`, `SLACK_SIGNING_SECRET`
/// and `SLACK_CHANNEL_ID` are set, or none is.
#[derive(Clone)]
pub struct SlackSettings {
    /// Bot token (`xoxb-…`) used for every Web API call.
    pub bot_token: SecretString,
    /// Signing secret that authenticates requests from Slack.
    pub signing_secret: SecretString,
    /// Channel where approval requests are posted.
    pub channel_id: String,
    /// Base URL of the Slack Web API, without a trailing slash.
    pub api_base_url: String,
    /// App-level token (`xapp-…`, scope `connections:write`). When set, clicks also
    /// arrive over Socket Mode, so greenlight works without a public URL.
    pub app_token: Option<SecretString>,
}

impl fmt::Debug for SlackSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackSettings")
            .field("bot_token", &"[redacted]")
            .field("signing_secret", &"[redacted]")
            .field("channel_id", &self.channel_id)
            .field("api_base_url", &self.api_base_url)
            .field("app_token", &self.app_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl Config {
    /// The Slack channel requests are posted to, or `""` without Slack (a request
    /// with no channel has no message: see `store::outbox`).
    pub fn slack_channel(&self) -> String {
        self.slack
            .as_ref()
            .map(|s| s.channel_id.clone())
            .unwrap_or_default()
    }

    /// The base of links printed for reviewers: `GREENLIGHT_PUBLIC_URL`, else
    /// `http://` and `addr` (the address actually bound).
    pub fn base_url(&self, addr: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("token", &"[redacted]")
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("slack", &self.slack)
            .field("reviewers", &self.reviewers)
            .field("public_url", &self.public_url)
            .field("listen", &self.listen)
            .field("api_tokens", &self.api_tokens)
            .field(
                "database_url",
                &crate::store::redact_url(&self.database_url),
            )
            .field("default_timeout", &self.default_timeout)
            .field("retention", &self.retention)
            .field("approvers", &self.approvers)
            .field("policy_path", &self.policy_path)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("max_pending_per_agent", &self.max_pending_per_agent)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("hook_budget", &self.hook_budget)
            .field("readiness_recheck", &self.readiness_recheck)
            .field("callbacks", &self.callbacks)
            .finish()
    }
}

/// A configuration problem, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable that is needed (always, or because a related one is set) is unset
    /// or blank.
    #[error("{var} is not set: {hint}")]
    Missing {
        /// The environment variable, such as `GREENLIGHT_API_TOKENS`.
        var: &'static str,
        /// What to set it to, or how to do without it.
        hint: &'static str,
    },
    /// A variable is set to something unusable.
    #[error("{var} is invalid: {problem}")]
    Invalid {
        /// The environment variable, such as `GREENLIGHT_LISTEN`.
        var: &'static str,
        /// What is wrong with the value and what is accepted; secrets are not quoted.
        problem: String,
    },
}

impl Config {
    /// Reads the process environment. `.env` is loaded by the caller first so that
    /// real environment variables win over the file.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Builds the configuration from any key lookup, so tests need not touch the
    /// process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |key: &str| {
            get(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |var: &'static str, hint: &'static str| {
            non_empty(var).ok_or(ConfigError::Missing { var, hint })
        };

        let tokens_raw = required(
            "GREENLIGHT_API_TOKENS",
            "set it to comma-separated bearer tokens agents present (name:token or token)",
        )?;
        let api_tokens = parse_api_tokens(&tokens_raw)?;

        let listen_raw = non_empty("GREENLIGHT_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_raw.parse().map_err(|_| ConfigError::Invalid {
            var: "GREENLIGHT_LISTEN",
            problem: format!("{listen_raw:?} is not an address like 127.0.0.1:8080"),
        })?;

        let database_url = database_url(&get)?;

        // Every numeric setting is a whole number from 1 to a bound that only catches
        // typos (a stray zero, a negative); within it any value is the operator's call.
        let number = |var: &'static str,
                      unit: &str,
                      max: u64|
         -> Result<Option<u64>, ConfigError> {
            let Some(raw) = non_empty(var) else {
                return Ok(None);
            };
            match raw.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ConfigError::Invalid {
                    var,
                    problem: format!("{raw:?} must be a whole number of {unit} from 1 to {max}"),
                }),
            }
        };
        let default_timeout = Duration::from_secs(
            number(
                "GREENLIGHT_DEFAULT_TIMEOUT_SECS",
                "seconds",
                MAX_TIMEOUT_SECS,
            )?
            .unwrap_or(DEFAULT_TIMEOUT_SECS),
        );
        // Unset keeps everything: deleting evidence is the operator's explicit choice.
        let retention = number("GREENLIGHT_RETENTION_DAYS", "days", 36_500)?
            .map(|days| Duration::from_secs(days * 24 * 3600));

        let slack = slack_settings(&non_empty)?;
        let reviewers = non_empty("GREENLIGHT_REVIEWERS")
            .map(|raw| crate::web::reviewers::parse(&raw))
            .transpose()
            .map_err(|problem| ConfigError::Invalid {
                var: "GREENLIGHT_REVIEWERS",
                problem,
            })?
            .unwrap_or_default();
        refuse_placeholder_reviewers(&reviewers)?;
        let public_url = non_empty("GREENLIGHT_PUBLIC_URL")
            .map(|raw| {
                let url = raw.trim_end_matches('/').to_owned();
                if url.starts_with("http://") || url.starts_with("https://") {
                    Ok(url)
                } else {
                    Err(ConfigError::Invalid {
                        var: "GREENLIGHT_PUBLIC_URL",
                        problem: format!("{raw:?} is not an http(s) URL"),
                    })
                }
            })
            .transpose()?;
        let approvers = non_empty("GREENLIGHT_APPROVERS")
            .map(|raw| crate::policy::parse_approver_list(&raw))
            .transpose()
            .map_err(|problem| ConfigError::Invalid {
                var: "GREENLIGHT_APPROVERS",
                problem,
            })?;
        let policy_path = non_empty("GREENLIGHT_POLICY").map(PathBuf::from);
        let log_format = match non_empty("GREENLIGHT_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "GREENLIGHT_LOG_FORMAT",
                    problem: format!("{other:?} is not a log format; use text or json"),
                })
            }
        };
        let log_filter = non_empty("RUST_LOG");
        crate::logging::filter(log_filter.as_deref())?;
        // u32::MAX is above both bounds, so the casts to u32 hold.
        let rate_limit_per_minute =
            number("GREENLIGHT_RATE_LIMIT_PER_MINUTE", "submissions", 1_000_000)?
                .map_or(DEFAULT_RATE_LIMIT_PER_MINUTE, |n| n as u32);
        let max_pending_per_agent =
            number("GREENLIGHT_MAX_PENDING_PER_AGENT", "requests", 1_000_000)?
                .map_or(DEFAULT_MAX_PENDING_PER_AGENT, |n| n as u32);
        let shutdown_grace = Duration::from_secs(
            number("GREENLIGHT_SHUTDOWN_GRACE_SECS", "seconds", 300)?
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
        );
        let readiness_recheck = Duration::from_secs(
            number("GREENLIGHT_READINESS_RECHECK_SECS", "seconds", 3600)?
                .unwrap_or(DEFAULT_READINESS_RECHECK_SECS),
        );
        let hook_budget = Duration::from_secs(
            number(
                "GREENLIGHT_HOOK_BUDGET_SECS",
                "seconds",
                MAX_HOOK_BUDGET_SECS,
            )?
            .unwrap_or(DEFAULT_HOOK_BUDGET_SECS),
        );

        refuse_published_placeholders(&api_tokens, listen, public_url.as_deref())?;

        let agents: Vec<&str> = api_tokens.iter().map(|t| t.name.as_str()).collect();
        let callbacks = crate::callbacks::CallbackSettings::from_lookup(non_empty, &agents)
            .map_err(|(var, problem)| ConfigError::Invalid { var, problem })?;
        // Read where they are used (`leases::from_env`); checked here so that a lease
        // some work could outlive stops start-up.
        crate::leases::check(non_empty)
            .map_err(|(var, problem)| ConfigError::Invalid { var, problem })?;

        Ok(Self {
            callbacks,
            slack,
            reviewers,
            public_url,
            listen,
            api_tokens,
            database_url,
            default_timeout,
            retention,
            approvers,
            policy_path,
            log_format,
            log_filter,
            rate_limit_per_minute,
            max_pending_per_agent,
            shutdown_grace,
            readiness_recheck,
            hook_budget,
        })
    }

    /// The agents whose token is a placeholder from `.env.example` (it starts with
    /// [`PLACEHOLDER_PREFIX`]), in configuration order. The README's quick start runs
    /// with one on a loopback address, where only this machine can use it, so there
    /// `serve` starts and warns (and `doctor` warns); configured to be reached from
    /// elsewhere, it is refused at load (see [`Config::from_lookup`]).
    pub fn placeholder_agents(&self) -> Vec<&str> {
        placeholder_agents(&self.api_tokens)
    }

    /// Finds the agent a bearer token belongs to. Every configured token is compared
    /// in constant time, and all of them are compared, so the answer's timing says
    /// nothing about which prefix matched.
    pub fn agent_for_token(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for entry in &self.api_tokens {
            let expected = entry.token.expose_secret().as_bytes();
            if bool::from(expected.ct_eq(presented.as_bytes())) {
                found = Some(entry.name.as_str());
            }
        }
        found
    }
}

fn placeholder_agents(tokens: &[ApiToken]) -> Vec<&str> {
    tokens
        .iter()
        .filter(|t| t.token.expose_secret().starts_with(PLACEHOLDER_PREFIX))
        .map(|t| t.name.as_str())
        .collect()
}

/// Fails closed on a placeholder agent token once the service is configured to be
/// reached from other machines (a non-loopback `listen`, or a `public_url`): there
/// anyone who has read `.env.example` could submit as that agent. Names the first
/// such agent and the setting that publishes the service.
fn refuse_published_placeholders(
    tokens: &[ApiToken],
    listen: SocketAddr,
    public_url: Option<&str>,
) -> Result<(), ConfigError> {
    let Some(agent) = placeholder_agents(tokens).first().copied() else {
        return Ok(());
    };
    let published = if !listen.ip().is_loopback() {
        format!("GREENLIGHT_LISTEN ({listen}) is not a loopback address")
    } else if public_url.is_some() {
        "GREENLIGHT_PUBLIC_URL is set".to_owned()
    } else {
        return Ok(());
    };
    Err(ConfigError::Invalid {
        var: "GREENLIGHT_API_TOKENS",
        problem: format!(
            "the token of {agent} is the placeholder from .env.example, which anyone can read, and {published}, so others can reach this service: give {agent} a token of its own (openssl rand -hex 24)"
        ),
    })
}

/// Refuses a reviewer secret that is a placeholder from `.env.example` (it starts
/// with [`PLACEHOLDER_PREFIX`]) wherever greenlight listens: anyone who has read that
/// file could sign in as the reviewer and decide. Unlike the agent token, nothing in
/// the quick start needs one (its reviewer signs in with the printed link).
fn refuse_placeholder_reviewers(
    reviewers: &[crate::web::reviewers::WebReviewer],
) -> Result<(), ConfigError> {
    match reviewers
        .iter()
        .find(|r| r.secret.expose_secret().starts_with(PLACEHOLDER_PREFIX))
    {
        None => Ok(()),
        Some(reviewer) => Err(ConfigError::Invalid {
            var: "GREENLIGHT_REVIEWERS",
            problem: format!(
                "the secret of {0} is the placeholder from .env.example, which anyone can read, and would let anyone sign in as {0}: give {0} a secret of its own (openssl rand -hex 24)",
                reviewer.name
            ),
        }),
    }
}

/// `GREENLIGHT_DATABASE_URL` from `get`, trimmed and checked; unset or blank is
/// [`DEFAULT_DATABASE_URL`]. Every command that opens the database reads it through
/// here (`serve` and `doctor` in [`Config::from_lookup`], `audit export` directly), so
/// they accept and refuse the same values with the same line. Err: neither a
/// `sqlite:` nor a `postgres://` URL (a bare path would otherwise be taken for a file
/// by some commands and refused by others).
pub fn database_url(get: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let url = get("GREENLIGHT_DATABASE_URL")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    if url.starts_with("sqlite:") || crate::store::is_postgres_url(&url) {
        return Ok(url);
    }
    Err(ConfigError::Invalid {
        var: "GREENLIGHT_DATABASE_URL",
        problem: format!(
            "{:?} is not supported; use sqlite://path/to/file.db or postgres://user:password@host/database",
            crate::store::redact_url(&url)
        ),
    })
}

/// The Slack settings, or `None` when none of the three required ones is set (the
/// web review page is then the only surface). Some but not all of them is a mistake
/// worth stopping for: it names the first one missing.
fn slack_settings(
    non_empty: &impl Fn(&str) -> Option<String>,
) -> Result<Option<SlackSettings>, ConfigError> {
    let bot_token = non_empty("SLACK_BOT_TOKEN");
    let signing_secret = non_empty("SLACK_SIGNING_SECRET");
    let channel_id = non_empty("SLACK_CHANNEL_ID");
    let app_token = non_empty("SLACK_APP_TOKEN");
    if bot_token.is_none() && signing_secret.is_none() && channel_id.is_none() {
        if app_token.is_some() {
            return Err(ConfigError::Missing {
                var: "SLACK_BOT_TOKEN",
                hint: "SLACK_APP_TOKEN is set, so the Slack app needs its Bot User OAuth Token (xoxb-…) too; or unset SLACK_APP_TOKEN to run without Slack",
            });
        }
        return Ok(None);
    }
    let missing = |var: &'static str, hint: &'static str| ConfigError::Missing { var, hint };
    let bot_token = bot_token.ok_or(missing(
        "SLACK_BOT_TOKEN",
        "set it to your Slack app's Bot User OAuth Token (xoxb-…), or unset the other SLACK_ settings to run without Slack",
    ))?;
    let signing_secret = signing_secret.ok_or(missing(
        "SLACK_SIGNING_SECRET",
        "set it to the Signing Secret from your Slack app's Basic Information page, or unset the other SLACK_ settings to run without Slack",
    ))?;
    let channel_id = channel_id.ok_or(missing(
        "SLACK_CHANNEL_ID",
        "set it to the id (C…/G…) of the channel where requests are posted, or unset the other SLACK_ settings to run without Slack",
    ))?;
    let api_base_url = non_empty("SLACK_API_BASE_URL")
        .unwrap_or_else(|| DEFAULT_SLACK_API_BASE_URL.to_owned())
        .trim_end_matches('/')
        .to_owned();
    if !(api_base_url.starts_with("http://") || api_base_url.starts_with("https://")) {
        return Err(ConfigError::Invalid {
            var: "SLACK_API_BASE_URL",
            problem: format!("{api_base_url:?} is not an http(s) URL"),
        });
    }
    // Checked here because a bot token or signing secret pasted into the wrong
    // variable would otherwise only show up as a reconnect loop in the logs.
    let app_token = match app_token {
        None => None,
        Some(token) if token.starts_with("xapp-") => Some(token.into()),
        Some(_) => {
            return Err(ConfigError::Invalid {
                var: "SLACK_APP_TOKEN",
                problem: "must be an app-level token starting with xapp- (Basic Information → App-Level Tokens, scope connections:write); leave it unset to receive clicks over HTTP only".into(),
            })
        }
    };
    Ok(Some(SlackSettings {
        bot_token: bot_token.into(),
        signing_secret: signing_secret.into(),
        channel_id,
        api_base_url,
        app_token,
    }))
}

/// Parses `name:token,token2,…`. A bare token is named by its position so the audit
/// trail can still tell agents apart without printing the token.
fn parse_api_tokens(raw: &str) -> Result<Vec<ApiToken>, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid {
        var: "GREENLIGHT_API_TOKENS",
        problem,
    };
    let mut tokens: Vec<ApiToken> = Vec::new();
    for (index, entry) in raw.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            return Err(invalid(format!("entry {} is empty", index + 1)));
        }
        let (name, token) = match entry.split_once(':') {
            Some((name, token)) => (name.trim().to_owned(), token.trim()),
            None => (format!("token-{}", index + 1), entry),
        };
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(format!(
                "entry {}: the name must be 1-64 letters, digits, '-', '_' or '.'",
                index + 1
            )));
        }
        if token.len() < 16 {
            return Err(invalid(format!(
                "entry {} ({name}): the token must be at least 16 characters",
                index + 1
            )));
        }
        if tokens.iter().any(|t| t.name == name) {
            return Err(invalid(format!("the name {name:?} is used twice")));
        }
        if tokens.iter().any(|t| t.token.expose_secret() == token) {
            return Err(invalid(format!(
                "entry {} ({name}) repeats another entry's token",
                index + 1
            )));
        }
        tokens.push(ApiToken {
            name,
            token: token.to_owned().into(),
        });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("SLACK_BOT_TOKEN", "xoxb-test".to_owned()),
            ("SLACK_SIGNING_SECRET", "secret".to_owned()),
            ("SLACK_CHANNEL_ID", "C123".to_owned()),
            (
                "GREENLIGHT_API_TOKENS",
                "ci:abcdefghijklmnop,qrstuvwxyz0123456".to_owned(),
            ),
        ])
    }

    fn load(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_apply() {
        let config = load(&base()).expect("valid");
        let slack = config.slack.as_ref().expect("slack configured");
        assert_eq!(slack.api_base_url, DEFAULT_SLACK_API_BASE_URL);
        assert!(config.reviewers.is_empty());
        assert_eq!(config.public_url, None);
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.default_timeout, Duration::from_secs(300));
        assert_eq!(config.retention, None);
        assert_eq!(config.api_tokens[0].name, "ci");
        assert_eq!(config.api_tokens[1].name, "token-2");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.rate_limit_per_minute, 60);
        assert_eq!(config.max_pending_per_agent, 100);
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.readiness_recheck, Duration::from_secs(30));
    }

    #[test]
    fn production_settings_are_read() {
        let mut vars = base();
        vars.insert("GREENLIGHT_LOG_FORMAT", "json".into());
        vars.insert("GREENLIGHT_RATE_LIMIT_PER_MINUTE", "5".into());
        vars.insert("GREENLIGHT_MAX_PENDING_PER_AGENT", "2".into());
        vars.insert("GREENLIGHT_SHUTDOWN_GRACE_SECS", "3".into());
        vars.insert("GREENLIGHT_READINESS_RECHECK_SECS", "1".into());
        let config = load(&vars).expect("valid");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.rate_limit_per_minute, 5);
        assert_eq!(config.max_pending_per_agent, 2);
        assert_eq!(config.shutdown_grace, Duration::from_secs(3));
        assert_eq!(config.readiness_recheck, Duration::from_secs(1));
    }

    #[test]
    fn slack_is_optional_as_a_whole() {
        let mut vars = base();
        for var in [
            "SLACK_BOT_TOKEN",
            "SLACK_SIGNING_SECRET",
            "SLACK_CHANNEL_ID",
        ] {
            vars.remove(var);
        }
        // A leftover base URL alone does not turn Slack on.
        vars.insert("SLACK_API_BASE_URL", "http://127.0.0.1:9".into());
        let config = load(&vars).expect("valid without Slack");
        assert!(config.slack.is_none());
        assert_eq!(config.slack_channel(), "");
        vars.insert("SLACK_APP_TOKEN", "xapp-1-A1-x".into());
        let err = load(&vars).expect_err("app token alone").to_string();
        assert!(err.starts_with("SLACK_BOT_TOKEN is not set"), "{err}");
    }

    #[test]
    fn reviewers_and_public_url_are_read() {
        let mut vars = base();
        vars.insert(
            "GREENLIGHT_REVIEWERS",
            "alice:U0ALICE:alice-secret-0123456789,bob:bob-secret-0123456789".into(),
        );
        vars.insert("GREENLIGHT_PUBLIC_URL", "https://gl.example.com/".into());
        let config = load(&vars).expect("valid");
        assert_eq!(config.reviewers.len(), 2);
        assert_eq!(config.public_url.as_deref(), Some("https://gl.example.com"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("alice-secret"), "{debug}");
        vars.insert("GREENLIGHT_PUBLIC_URL", "gl.example.com".into());
        let err = load(&vars).expect_err("not a URL").to_string();
        assert!(err.starts_with("GREENLIGHT_PUBLIC_URL is invalid"), "{err}");
    }

    #[test]
    fn missing_variable_is_named() {
        let mut vars = base();
        vars.remove("SLACK_CHANNEL_ID");
        let err = load(&vars).expect_err("must fail").to_string();
        assert!(err.starts_with("SLACK_CHANNEL_ID is not set"), "{err}");
    }

    #[test]
    fn invalid_values_are_named() {
        for (var, value) in [
            ("GREENLIGHT_DEFAULT_TIMEOUT_SECS", "0"),
            ("GREENLIGHT_DEFAULT_TIMEOUT_SECS", "soon"),
            ("GREENLIGHT_LISTEN", "localhost"),
            ("GREENLIGHT_API_TOKENS", "short"),
            (
                "GREENLIGHT_API_TOKENS",
                "a:abcdefghijklmnop,a:bcdefghijklmnopq",
            ),
            ("GREENLIGHT_DATABASE_URL", "mysql://x"),
            ("GREENLIGHT_RETENTION_DAYS", "0"),
            ("GREENLIGHT_RETENTION_DAYS", "a week"),
            ("SLACK_API_BASE_URL", "ftp://x"),
            ("SLACK_APP_TOKEN", "xoxb-not-an-app-token"),
            ("GREENLIGHT_APPROVERS", "U0ALICE,#ops"),
            ("GREENLIGHT_LOG_FORMAT", "yaml"),
            ("GREENLIGHT_RATE_LIMIT_PER_MINUTE", "0"),
            ("GREENLIGHT_RATE_LIMIT_PER_MINUTE", "-1"),
            ("GREENLIGHT_MAX_PENDING_PER_AGENT", "lots"),
            ("GREENLIGHT_SHUTDOWN_GRACE_SECS", "301"),
            ("GREENLIGHT_READINESS_RECHECK_SECS", "0"),
            ("GREENLIGHT_REVIEWERS", "alice:short"),
        ] {
            let mut vars = base();
            vars.insert(var, value.to_owned());
            let err = load(&vars).expect_err("must fail").to_string();
            assert!(
                err.starts_with(&format!("{var} is invalid")),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn app_token_is_optional_and_redacted() {
        let app_token = |c: &Config| c.slack.as_ref().and_then(|s| s.app_token.clone());
        assert!(app_token(&load(&base()).expect("valid")).is_none());
        let mut vars = base();
        vars.insert("SLACK_APP_TOKEN", "xapp-1-A1-secret-part".to_owned());
        let config = load(&vars).expect("valid");
        assert!(app_token(&config).is_some());
        let debug = format!("{config:?}");
        assert!(!debug.contains("secret-part"), "{debug}");
        vars.insert("SLACK_APP_TOKEN", "xoxb-wrong-variable".to_owned());
        let err = load(&vars).expect_err("must fail").to_string();
        assert!(
            !err.contains("wrong-variable") && err.contains("xapp-"),
            "{err}"
        );
    }

    #[test]
    fn approvers_are_optional_user_and_group_ids() {
        assert_eq!(load(&base()).expect("valid").approvers, None);
        let mut vars = base();
        vars.insert("GREENLIGHT_APPROVERS", "U0ALICE, S0SRE,W0BOB".to_owned());
        assert_eq!(
            load(&vars).expect("valid").approvers,
            Some(vec!["U0ALICE".into(), "S0SRE".into(), "W0BOB".into()])
        );
    }

    #[test]
    fn a_placeholder_token_is_allowed_on_loopback_and_refused_when_published() {
        let mut vars = base();
        vars.insert(
            "GREENLIGHT_API_TOKENS",
            "ci:abcdefghijklmnop,demo:change-me-to-a-long-random-token".to_owned(),
        );
        let config = load(&vars).expect("loopback by default");
        assert_eq!(config.placeholder_agents(), ["demo"]);
        for (var, value, named) in [
            (
                "GREENLIGHT_LISTEN",
                "0.0.0.0:8080",
                "GREENLIGHT_LISTEN (0.0.0.0:8080)",
            ),
            (
                "GREENLIGHT_LISTEN",
                "[::]:8080",
                "GREENLIGHT_LISTEN ([::]:8080)",
            ),
            (
                "GREENLIGHT_PUBLIC_URL",
                "https://gl.example.com",
                "GREENLIGHT_PUBLIC_URL",
            ),
        ] {
            let mut published = vars.clone();
            published.insert(var, value.to_owned());
            let err = load(&published).expect_err(value).to_string();
            assert!(
                err.starts_with(
                    "GREENLIGHT_API_TOKENS is invalid: the token of demo is the placeholder"
                ) && err.contains(named),
                "{err}"
            );
        }
        let mut ipv6 = vars.clone();
        ipv6.insert("GREENLIGHT_LISTEN", "[::1]:8080".to_owned());
        assert!(load(&ipv6).is_ok(), "::1 is loopback");
        assert!(load(&base())
            .expect("valid")
            .placeholder_agents()
            .is_empty());
    }

    /// The quick start never needs a reviewer secret (its one reviewer signs in with
    /// the printed link), so the commented-out example line of `.env.example` is
    /// refused whatever the address: its secrets would let anyone sign in and decide.
    #[test]
    fn placeholder_reviewer_secrets_are_refused() {
        let mut vars = base();
        vars.insert(
            "GREENLIGHT_REVIEWERS",
            "alice:U0123ALICE:change-me-alice-secret,bob:change-me-bob-secret".to_owned(),
        );
        let err = load(&vars).expect_err("placeholder secrets").to_string();
        assert!(
            err.starts_with("GREENLIGHT_REVIEWERS is invalid: the secret of alice is the placeholder from .env.example")
                && !err.contains("alice-secret"),
            "{err}"
        );
    }

    #[test]
    fn token_lookup_and_redaction() {
        let config = load(&base()).expect("valid");
        assert_eq!(config.agent_for_token("abcdefghijklmnop"), Some("ci"));
        assert_eq!(config.agent_for_token("abcdefghijklmno"), None);
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("abcdefghijklmnop") && !debug.contains("xoxb-test"),
            "{debug}"
        );
    }
}
