//! The callback settings (`GREENLIGHT_CALLBACK_*`) and the check every `callback_url`
//! passes at submit.
//!
//! The allow-list is what keeps callbacks from being a server-side request forgery
//! tool: an agent names a URL, and greenlight calls it from inside the network. Only
//! hosts the operator listed are ever called: the URL is checked at submit (a refused
//! one is a 422 naming `callback_url`), the delivery client follows no redirect and
//! uses no proxy, so nothing but the checked host and port is reached.

use std::{collections::HashMap, fmt, time::Duration};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

/// Attempts per callback when `GREENLIGHT_CALLBACK_MAX_ATTEMPTS` is unset: with the
/// doubling from 1 s capped at 5 minutes, 12 attempts span about 25 minutes.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 12;
/// The first retry's delay (`GREENLIGHT_CALLBACK_RETRY_FIRST_MS`), then doubling.
pub const DEFAULT_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest delay between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// The longest `callback_url` accepted.
pub const MAX_URL_CHARS: usize = 2000;

/// A per-agent signing secret, `whsec_` + base64 as Standard Webhooks writes it. It
/// never prints.
#[derive(Clone)]
pub struct CallbackSecret(SecretString);

impl CallbackSecret {
    /// Checks the format (`whsec_` + base64 of at least 16 bytes).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let encoded = raw
            .strip_prefix("whsec_")
            .ok_or("a secret must start with whsec_ (Standard Webhooks format)")?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the part after whsec_ must be base64")?;
        if key.len() < 16 {
            return Err("a secret must decode to at least 16 bytes".into());
        }
        Ok(Self(raw.to_owned().into()))
    }

    /// The secret as configured (`whsec_…`), for the signer only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for CallbackSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One entry of `GREENLIGHT_CALLBACK_HOSTS`: a host (lower case), and a port or, when
/// none is given, the scheme's default port only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// Lower-cased as the URL parser reads a host: a name (IDNs in punycode), an IPv4
    /// address, or an IPv6 one in brackets.
    pub host: String,
    /// The one port allowed; `None`: only the URL scheme's default (80 or 443).
    pub port: Option<u16>,
}

/// Validated callback settings; the default has no allowed host, so every
/// `callback_url` is refused.
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// `GREENLIGHT_CALLBACK_HOSTS`: the only hosts a `callback_url` may name.
    pub hosts: Vec<AllowedHost>,
    /// Agent name (as in `GREENLIGHT_API_TOKENS`) → its signing secret.
    pub secrets: HashMap<String, CallbackSecret>,
    /// Attempts per delivery before it is given up as `callback_failed`, 1–100
    /// (`GREENLIGHT_CALLBACK_MAX_ATTEMPTS`, default [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// The delay before the first retry, doubling to [`RETRY_MAX`]; 1 ms to 60 s
    /// (`GREENLIGHT_CALLBACK_RETRY_FIRST_MS`, default [`DEFAULT_RETRY_FIRST`]).
    pub retry_first: Duration,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            secrets: HashMap::new(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_first: DEFAULT_RETRY_FIRST,
        }
    }
}

/// A setting that cannot be used: the variable and what is wrong with it.
pub type SettingError = (&'static str, String);

impl CallbackSettings {
    /// Reads the `GREENLIGHT_CALLBACK_*` settings through `get` (trimmed, non-empty
    /// values). `agents` are the configured agent names: a secret for anyone else is a
    /// typo worth stopping for.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        agents: &[&str],
    ) -> Result<Self, SettingError> {
        let mut settings = Self::default();
        if let Some(raw) = get("GREENLIGHT_CALLBACK_HOSTS") {
            settings.hosts = parse_hosts(&raw).map_err(|e| ("GREENLIGHT_CALLBACK_HOSTS", e))?;
        }
        if let Some(raw) = get("GREENLIGHT_CALLBACK_SECRETS") {
            settings.secrets =
                parse_secrets(&raw, agents).map_err(|e| ("GREENLIGHT_CALLBACK_SECRETS", e))?;
        }
        if let Some(raw) = get("GREENLIGHT_CALLBACK_MAX_ATTEMPTS") {
            settings.max_attempts = raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or((
                    "GREENLIGHT_CALLBACK_MAX_ATTEMPTS",
                    format!("{raw:?} must be a whole number from 1 to 100"),
                ))?;
        }
        if let Some(raw) = get("GREENLIGHT_CALLBACK_RETRY_FIRST_MS") {
            let ms = raw
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=60_000).contains(n))
                .ok_or((
                    "GREENLIGHT_CALLBACK_RETRY_FIRST_MS",
                    format!("{raw:?} must be a whole number of milliseconds from 1 to 60000"),
                ))?;
            settings.retry_first = Duration::from_millis(ms);
        }
        Ok(settings)
    }

    /// Checks `raw` as `agent`'s callback URL. `Err` is the 422 message, starting
    /// with `callback_url:`.
    pub fn check_url(&self, agent: &str, raw: &str) -> Result<String, String> {
        let refuse = |why: String| Err(format!("callback_url: {why}"));
        if raw.chars().count() > MAX_URL_CHARS {
            return refuse(format!("must be at most {MAX_URL_CHARS} characters"));
        }
        let Ok(url) = url::Url::parse(raw.trim()) else {
            return refuse("is not a valid absolute URL".into());
        };
        if !matches!(url.scheme(), "http" | "https") {
            return refuse(format!(
                "scheme {} is not allowed: use http or https",
                url.scheme()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return refuse("must not carry a user name or password".into());
        }
        let Some(host) = url.host_str() else {
            return refuse("has no host".into());
        };
        let host = host.to_ascii_lowercase();
        let port = url.port_or_known_default();
        let allowed = self.hosts.iter().any(|h| {
            h.host == host && (h.port == port || (h.port.is_none() && url.port().is_none()))
        });
        if !allowed {
            return refuse(format!(
                "host {host}{} is not in GREENLIGHT_CALLBACK_HOSTS",
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            ));
        }
        if !self.secrets.contains_key(agent) {
            return refuse(format!(
                "the agent {agent} has no signing secret in GREENLIGHT_CALLBACK_SECRETS"
            ));
        }
        Ok(url.to_string())
    }
}

fn parse_hosts(raw: &str) -> Result<Vec<AllowedHost>, String> {
    if raw.split(',').all(|e| e.trim().is_empty()) {
        return Err("names no host: list host or host:port entries, comma-separated".into());
    }
    raw.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            if entry.contains('*') {
                return Err(format!(
                    "{entry:?}: wildcards are not supported; list each host"
                ));
            }
            // Parsed as a URL's authority, so IPv6 (`[::1]:8080`) and IDNs read the
            // way a callback_url's host will.
            let url = url::Url::parse(&format!("http://{entry}/"))
                .map_err(|_| format!("{entry:?} is not a host or host:port"))?;
            let host = url
                .host_str()
                .filter(|_| url.username().is_empty() && url.path() == "/")
                .ok_or_else(|| format!("{entry:?} is not a host or host:port"))?;
            let explicit_port = entry
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
            Ok(AllowedHost {
                host: host.to_ascii_lowercase(),
                port: if explicit_port {
                    url.port_or_known_default()
                } else {
                    None
                },
            })
        })
        .collect()
}

fn parse_secrets(raw: &str, agents: &[&str]) -> Result<HashMap<String, CallbackSecret>, String> {
    let mut secrets = HashMap::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((agent, secret)) = entry.split_once(':') else {
            return Err("each entry must be agent-name:whsec_<base64>".into());
        };
        let agent = agent.trim();
        if !agents.contains(&agent) {
            return Err(format!(
                "{agent:?} is not an agent name of GREENLIGHT_API_TOKENS"
            ));
        }
        let secret = CallbackSecret::parse(secret.trim()).map_err(|e| format!("{agent}: {e}"))?;
        if secrets.insert(agent.to_owned(), secret).is_some() {
            return Err(format!("{agent:?} has more than one secret"));
        }
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn settings(hosts: &str) -> CallbackSettings {
        let vars = HashMap::from([
            ("GREENLIGHT_CALLBACK_HOSTS", hosts.to_owned()),
            ("GREENLIGHT_CALLBACK_SECRETS", format!("ci:{SECRET}")),
        ]);
        CallbackSettings::from_lookup(|k| vars.get(k).cloned(), &["ci"]).expect("valid")
    }

    #[test]
    fn wildcards_empty_lists_and_second_secrets_are_refused() {
        for hosts in ["*", "*.example.com", " , "] {
            let vars = HashMap::from([("GREENLIGHT_CALLBACK_HOSTS", hosts.to_owned())]);
            let refused = CallbackSettings::from_lookup(|k| vars.get(k).cloned(), &["ci"]);
            assert!(refused.is_err(), "{hosts:?}");
        }
        let vars = HashMap::from([(
            "GREENLIGHT_CALLBACK_SECRETS",
            format!("ci:{SECRET},ci:{SECRET}"),
        )]);
        let refused = CallbackSettings::from_lookup(|k| vars.get(k).cloned(), &["ci"])
            .expect_err("two secrets for one agent");
        assert!(refused.1.contains("more than one secret"), "{refused:?}");
    }

    #[test]
    fn listed_hosts_pass_and_others_are_refused_naming_callback_url() {
        let s = settings("hooks.example.com, 127.0.0.1:9000,[::1]:8443");
        for ok in [
            "https://hooks.example.com/greenlight",
            "http://HOOKS.example.com/x?y=1",
            "http://127.0.0.1:9000/cb",
            "https://[::1]:8443/cb",
        ] {
            assert!(s.check_url("ci", ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            (
                "https://evil.example.com/",
                "not in GREENLIGHT_CALLBACK_HOSTS",
            ),
            (
                "http://127.0.0.1:9001/cb",
                "not in GREENLIGHT_CALLBACK_HOSTS",
            ),
            (
                "https://hooks.example.com:8443/",
                "not in GREENLIGHT_CALLBACK_HOSTS",
            ),
            (
                "http://169.254.169.254/latest",
                "not in GREENLIGHT_CALLBACK_HOSTS",
            ),
            (
                "https://user:pw@hooks.example.com/",
                "user name or password",
            ),
            ("https://user@hooks.example.com/", "user name or password"),
            ("ftp://hooks.example.com/", "scheme ftp"),
            ("file:///etc/passwd", "scheme file"),
            ("hooks.example.com/x", "not a valid absolute URL"),
        ] {
            let refused = s.check_url("ci", bad).expect_err(bad);
            assert!(refused.starts_with("callback_url: "), "{refused}");
            assert!(refused.contains(why), "{bad}: {refused}");
        }
    }

    #[test]
    fn an_agent_without_a_secret_is_refused() {
        let refused = settings("hooks.example.com")
            .check_url("other", "https://hooks.example.com/")
            .expect_err("no secret");
        assert!(refused.contains("no signing secret"), "{refused}");
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        assert!(CallbackSettings::default()
            .check_url("ci", "https://hooks.example.com/")
            .is_err());
    }

    #[test]
    fn bad_settings_name_the_variable_and_secrets_never_print() {
        let bad = |key: &'static str, value: &str| {
            let vars = HashMap::from([(key, value.to_owned())]);
            CallbackSettings::from_lookup(|k| vars.get(k).cloned(), &["ci"])
                .expect_err(value)
                .0
        };
        assert_eq!(
            bad("GREENLIGHT_CALLBACK_HOSTS", "a/b"),
            "GREENLIGHT_CALLBACK_HOSTS"
        );
        assert_eq!(
            bad("GREENLIGHT_CALLBACK_SECRETS", "ci:nope"),
            "GREENLIGHT_CALLBACK_SECRETS"
        );
        assert_eq!(
            bad("GREENLIGHT_CALLBACK_SECRETS", &format!("ghost:{SECRET}")),
            "GREENLIGHT_CALLBACK_SECRETS"
        );
        assert_eq!(
            bad("GREENLIGHT_CALLBACK_MAX_ATTEMPTS", "0"),
            "GREENLIGHT_CALLBACK_MAX_ATTEMPTS"
        );
        let printed = format!("{:?}", settings("h"));
        assert!(!printed.contains("MfKQ9r8"), "{printed}");
    }
}
