//! `greenlight policy check`'s lines about reminders, escalation and standing grants
//! for the matched rule (kept apart so `check` stays about routing).

use super::{grants::action_key, nudges::Nudges, Route, Rule, Subject};

/// "reminders: …" and "escalation: …" lines.
pub(super) fn nudges(n: &Nudges) -> Vec<String> {
    let reminders = match (n.remind_after_secs, n.remind_every_secs) {
        (None, _) => "reminders: none".to_owned(),
        (Some(after), None) => format!("reminders: one after {after} s, in the message's thread, naming the approvers who have not voted"),
        (Some(after), Some(every)) => format!("reminders: after {after} s, then every {every} s, in the message's thread, naming the approvers who have not voted"),
    };
    let escalation = match n.escalate_after_secs {
        None => "escalation: none".to_owned(),
        Some(after) => {
            let mut parts = vec![format!("escalation: after {after} s")];
            if let Some(channel) = &n.escalate_channel {
                parts.push(format!("posted to {channel} too"));
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
