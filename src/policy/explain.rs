//! `greenlight policy check`'s lines about reminders, escalation and standing grants
//! for the matched rule (kept apart so `check` stays about routing).

use super::{grants::action_key, nudges::Nudges, Route, Rule, Subject};
use crate::callbacks::settings::{CallbackSecret, CallbackSettings};

/// "reminders: …" and "escalation: …" lines. `web_only`: Slack is not configured, so
/// nothing is posted (reminders go to the Slack thread; escalation only widens who may
/// decide).
pub(super) fn nudges(n: &Nudges, web_only: bool) -> Vec<String> {
    let reminders = match (n.remind_after_secs, n.remind_every_secs) {
        (None, _) => "reminders: none".to_owned(),
        (Some(_), _) if web_only => "reminders: none sent: they go to the Slack message's thread and Slack is not configured (audited as reminder_skipped)".to_owned(),
        (Some(after), None) => format!("reminders: one after {after} s, in the message's thread, naming the approvers who have not voted"),
        (Some(after), Some(every)) => format!("reminders: after {after} s, then every {every} s, in the message's thread, naming the approvers who have not voted"),
    };
    let escalation = match n.escalate_after_secs {
        None => "escalation: none".to_owned(),
        Some(after) => {
            let mut parts = vec![format!("escalation: after {after} s")];
            if let Some(channel) = &n.escalate_channel {
                parts.push(if web_only {
                    format!("not posted to {channel}: Slack is not configured")
                } else {
                    format!("posted to {channel} too")
                });
            }
            if let Some(to) = &n.escalate_to {
                parts.push(format!("{} may decide from then on", to.join(", ")));
            }
            if let Some(extends) = n.escalation_extends_secs {
                parts.push(format!("the deadline moves {extends} s later (once)"));
            }
            parts.join("; ")
        }
    };
    vec![reminders, escalation]
}

/// The "callback: …" line for a sample request's `callback_url`, checked as the API
/// checks it at submit (`GREENLIGHT_CALLBACK_HOSTS`, and `agent`'s secret in
/// `GREENLIGHT_CALLBACK_SECRETS` when `--agent` is given). `Err` (one line) when the API
/// would refuse the request with 422, or a callback setting is invalid.
pub(super) fn callback(
    url: &str,
    agent: Option<&str>,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    // Secrets for agents other than the one checked are not this command's concern:
    // every name in the variable counts as known, so only the format is checked.
    let named: Vec<String> = get("GREENLIGHT_CALLBACK_SECRETS")
        .map(|raw| {
            raw.split(',')
                .filter_map(|entry| {
                    entry
                        .split_once(':')
                        .map(|(name, _)| name.trim().to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let names: Vec<&str> = named.iter().map(String::as_str).collect();
    let mut settings = CallbackSettings::from_lookup(get, &names)
        .map_err(|(key, problem)| format!("{key} is invalid: {problem}"))?;
    let checked_as = match agent {
        Some(agent) => agent,
        None => {
            // Without --agent only the URL and its host can be checked: a stand-in
            // agent with a well-formed secret passes the secret check.
            settings.secrets.insert(
                String::new(),
                CallbackSecret::parse("whsec_c3RhbmQtaW4gc2VjcmV0IGtleQ==")?,
            );
            ""
        }
    };
    settings
        .check_url(checked_as, url)
        .map(|url| match agent {
            Some(agent) => format!("callback: allowed: the decision is POSTed to {url} (its host is in GREENLIGHT_CALLBACK_HOSTS), signed with {agent}'s secret from GREENLIGHT_CALLBACK_SECRETS"),
            None => format!("callback: host allowed: the decision is POSTed to {url} (its host is in GREENLIGHT_CALLBACK_HOSTS) if the agent has a secret in GREENLIGHT_CALLBACK_SECRETS (pass --agent to check)"),
        })
        .map_err(|refused| format!("the API would refuse this request (422): {refused}"))
}

/// The "grants: …" line: whether "Approve for …" is offered, and what a grant made
/// from this request would cover.
pub(super) fn grants(rule: &Rule, route: &Route, subject: &Subject<'_>, required: u32) -> String {
    let Some(grants) = &route.grants else {
        return "grants: not offered (the rule has no grant_max_secs)".into();
    };
    if route.high_risk || required > 1 {
        return "grants: not offered (high-risk, or more than one approval needed)".into();
    }
    match action_key(grants.matching, subject.code, rule.when.command_prefix.as_deref()) {
        None => "grants: not offered (nothing to match: empty code, or no command prefix)".into(),
        Some(key) => format!(
            "grants: offered for {} s; a grant covers requests from {} under rule \"{}\" with {} {key:?}",
            grants
                .durations_secs
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
            subject.agent.unwrap_or("the same agent"),
            rule.name,
            match grants.matching {
                super::grants::GrantMatch::Exact => "the code (whitespace normalised)",
                super::grants::GrantMatch::CommandPrefix => "the command prefix",
            }
        ),
    }
}
