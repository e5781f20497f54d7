//! `doctor`'s check of the decision-callback settings (`GREENLIGHT_CALLBACK_*`).
//!
//! Loading the configuration already refused what cannot work at all (a host that does
//! not parse, a secret that is not `whsec_` + base64 of at least 16 bytes, a secret
//! for an agent that does not exist): `doctor` then fails with the configuration line.
//! What loads but still cannot deliver is found here: hosts without any agent allowed
//! to use them (no secret), secrets without hosts, and agents left without a secret.
//! (A claim lease too short for an attempt is refused with the configuration, by
//! [`crate::leases::check`].)

use std::time::Duration;

use super::{Check, Level};
use crate::{
    callbacks::settings::{CallbackSettings, RETRY_MAX},
    config::Config,
};

const NAME: &str = "callbacks";

/// The callbacks line: `ok` with what is allowed, `warn` when no `callback_url` can
/// ever be accepted although callbacks are half set up.
pub(super) fn check(config: &Config) -> Check {
    let agents: Vec<&str> = config.api_tokens.iter().map(|t| t.name.as_str()).collect();
    describe(&config.callbacks, &agents)
}

/// The check for `settings` and the configured agent names.
fn describe(settings: &CallbackSettings, agents: &[&str]) -> Check {
    let hosts: Vec<String> = settings
        .hosts
        .iter()
        .map(|h| match h.port {
            Some(port) => format!("{}:{port}", h.host),
            None => h.host.clone(),
        })
        .collect();
    let mut with_secret: Vec<&str> = agents
        .iter()
        .copied()
        .filter(|a| settings.secrets.contains_key(*a))
        .collect();
    with_secret.sort_unstable();
    let mut without: Vec<&str> = agents
        .iter()
        .copied()
        .filter(|a| !settings.secrets.contains_key(*a))
        .collect();
    without.sort_unstable();
    match (hosts.is_empty(), with_secret.is_empty()) {
        (true, true) => Check::new(
            Level::Ok,
            NAME,
            "off (GREENLIGHT_CALLBACK_HOSTS unset): a request with a callback_url is refused (422)",
        ),
        (true, false) => Check::new(Level::Warn, NAME, format!(
            "GREENLIGHT_CALLBACK_SECRETS has secrets for {} but GREENLIGHT_CALLBACK_HOSTS is empty, so every callback_url is refused: list the receivers' hosts",
            with_secret.join(", ")
        )),
        (false, true) => Check::new(Level::Warn, NAME, format!(
            "GREENLIGHT_CALLBACK_HOSTS allows {} but no agent has a signing secret in GREENLIGHT_CALLBACK_SECRETS (agent-name:whsec_…), so every callback_url is refused",
            hosts.join(", ")
        )),
        (false, false) => {
            let mut detail = format!(
                "hosts {}; signing secrets (whsec_ format) for {}; up to {} attempts over about {}",
                hosts.join(", "),
                with_secret.join(", "),
                settings.max_attempts,
                span(settings)
            );
            if !without.is_empty() {
                detail.push_str(&format!(
                    "; no secret, so their callback_url is refused: {}",
                    without.join(", ")
                ));
            }
            Check::new(Level::Ok, NAME, detail)
        }
    }
}

/// How long the retries of one delivery span: the delays between attempts, from the
/// first retry's doubling up to [`RETRY_MAX`] (attempts' own time left out).
fn span(settings: &CallbackSettings) -> String {
    let mut total = Duration::ZERO;
    let mut delay = settings.retry_first;
    for _ in 1..settings.max_attempts {
        total += delay.min(RETRY_MAX);
        delay = delay.saturating_mul(2);
    }
    let secs = total.as_secs();
    if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} min", secs.div_ceil(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callbacks::settings::CallbackSettings;

    fn settings(env: &[(&str, &str)]) -> CallbackSettings {
        CallbackSettings::from_lookup(
            |k| {
                env.iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| (*v).to_owned())
            },
            &["ci", "other"],
        )
        .expect("valid settings")
    }

    const SECRET: &str = "ci:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn half_set_up_callbacks_warn() {
        let off = describe(&settings(&[]), &["ci", "other"]);
        assert_eq!(off.level, Level::Ok, "{off}");
        let no_secret = describe(
            &settings(&[("GREENLIGHT_CALLBACK_HOSTS", "hooks.example.com")]),
            &["ci", "other"],
        );
        assert_eq!(no_secret.level, Level::Warn, "{no_secret}");
        assert!(no_secret
            .detail
            .contains("allows hooks.example.com but no agent"));
        let no_host = describe(
            &settings(&[("GREENLIGHT_CALLBACK_SECRETS", SECRET)]),
            &["ci", "other"],
        );
        assert_eq!(no_host.level, Level::Warn, "{no_host}");
        assert!(
            !no_host.detail.contains("whsec_MfKQ"),
            "never prints a secret"
        );
    }

    #[test]
    fn a_working_setup_names_hosts_agents_and_the_retry_span() {
        let check = describe(
            &settings(&[
                (
                    "GREENLIGHT_CALLBACK_HOSTS",
                    "hooks.example.com,app.internal:8443",
                ),
                ("GREENLIGHT_CALLBACK_SECRETS", SECRET),
            ]),
            &["ci", "other"],
        );
        assert_eq!(check.level, Level::Ok, "{check}");
        assert_eq!(
            check.detail,
            "hosts hooks.example.com, app.internal:8443; signing secrets (whsec_ format) for ci; up to 12 attempts over about 19 min; no secret, so their callback_url is refused: other"
        );
    }
}
