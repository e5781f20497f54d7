//! Reading `config/policy.toml` into a [`Policy`], refusing anything doubtful.
//!
//! A policy decides who may let an agent run code, so a typo must stop start-up rather
//! than quietly loosen a rule: unknown keys, unknown actions, bad regexes, keys that
//! make no sense for a rule's action, rules that can never match and quorums the
//! rule's own approvers can never reach ([`super::quorum`]) are all errors,
//! each reported as one line `file:line:col: problem` pointing at the offending key
//! (or at the rule's `[[rule]]` header).
//!
//! File format (see `config/policy.toml` for a commented example):
//!
//! ```toml
//! [[rule]]
//! name = "prod"                       # required, unique, in the audit trail; "default"
//!                                     # only for a rule with no conditions
//! action = "route"                    # default; or "auto_approve" / "auto_deny"
//! agent = "deploy-bot"                # conditions: all must hold, none = match all
//! language = ["bash", "sh"]           #   a string, a list of strings (any of), or
//! context.env = { regex = "^prod" }   #   { regex = "…" }; `code` is always a regex
//! code = 'kubectl\s+apply'
//! tool = "Bash"                      # coding agents' hooks: the tool's name, and a
//! command_prefix = ["ls", "git log"]  #   simple command starting with one of these
//! channel = "C0PROD"                  # route: where, who, how many, how long
//! approvers = ["U0ALICE", "S0SRE"]
//! required_approvals = 2
//! timeout_secs = 900
//! high_risk = true
//! ```

use std::{fmt, ops::Range, path::Path};

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::{quorum, Action, Conditions, ContextMatch, Notify, Policy, Route, Rule, TextMatch};
use crate::config::MAX_TIMEOUT_SECS;

/// Where the policy is looked for when `GREENLIGHT_POLICY` is not set.
pub const DEFAULT_PATH: &str = "config/policy.toml";

/// The most approvals a rule may demand; the same bound the agent API has.
const MAX_REQUIRED_APPROVALS: i64 = 10;
const MAX_NAME_CHARS: usize = 64;

/// A policy file problem: which file, where, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file as named (`GREENLIGHT_POLICY`, or [`DEFAULT_PATH`]), or the name
    /// [`parse`] was given.
    pub file: String,
    /// 1-based line and column, when the problem has a place.
    pub position: Option<(usize, usize)>,
    /// One line, never empty; it names the rule (`rule "prod": …`) once the rule has a
    /// name. `Display` prints `file:line:col: problem`.
    pub problem: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.problem),
            None => write!(f, "{}: {}", self.file, self.problem),
        }
    }
}

impl std::error::Error for PolicyError {}

/// Loads the policy: from `explicit` (`GREENLIGHT_POLICY`) if given, which must
/// exist; otherwise from [`DEFAULT_PATH`] if that file exists; otherwise the built-in
/// default (route everything to the default channel, one approval).
pub fn load(explicit: Option<&Path>) -> Result<Policy, PolicyError> {
    let path = match explicit {
        Some(path) => path,
        None => {
            let default = Path::new(DEFAULT_PATH);
            if !default.exists() {
                return Ok(Policy::builtin());
            }
            default
        }
    };
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|error| PolicyError {
        file: file.clone(),
        position: None,
        problem: format!("cannot read the policy file: {error}"),
    })?;
    parse(&source, &file)
}

/// Is `raw` a Slack user (`U…`, `W…`) or user group (`S…`) id, or a web-only
/// reviewer of the review page (`web:<name>`, see `GREENLIGHT_REVIEWERS`)?
pub fn is_approver_id(raw: &str) -> bool {
    let slack = (3..=32).contains(&raw.len())
        && raw.starts_with(['U', 'W', 'S'])
        && raw
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    slack || crate::model::is_web_reviewer_id(raw)
}

/// Parses a comma-separated approver list (`GREENLIGHT_APPROVERS`).
pub fn parse_approver_list(raw: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (index, entry) in raw.split(',').map(str::trim).enumerate() {
        if !is_approver_id(entry) {
            return Err(format!(
                "entry {} ({entry:?}) is not a Slack user id (U…/W…), user group id (S…) or web reviewer (web:<name>)",
                index + 1
            ));
        }
        out.push(entry.to_owned());
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Spanned<String>>,
    action: Option<Spanned<String>>,
    agent: Option<Spanned<toml::Value>>,
    language: Option<Spanned<toml::Value>>,
    code: Option<Spanned<String>>,
    // Not `Spanned`: toml cannot span a table built from dotted keys
    // (`context.env = …`); errors point at the rule instead.
    context: Option<toml::Table>,
    tool: Option<Spanned<toml::Value>>,
    command_prefix: Option<Spanned<toml::Value>>,
    reason: Option<Spanned<String>>,
    notify: Option<Spanned<bool>>,
    channel: Option<Spanned<String>>,
    approvers: Option<Spanned<Vec<String>>>,
    required_approvals: Option<Spanned<i64>>,
    timeout_secs: Option<Spanned<i64>>,
    high_risk: Option<Spanned<bool>>,
    grant_max_secs: Option<Spanned<i64>>,
    grant_durations_secs: Option<Spanned<Vec<i64>>>,
    grant_match: Option<Spanned<String>>,
    remind_after_secs: Option<Spanned<i64>>,
    remind_every_secs: Option<Spanned<i64>>,
    escalate_after_secs: Option<Spanned<i64>>,
    escalate_to: Option<Spanned<Vec<String>>>,
    escalate_channel: Option<Spanned<String>>,
    escalation_extends_secs: Option<Spanned<i64>>,
}

/// Turns byte offsets into `line:col` for one source text.
struct Locator<'a> {
    file: &'a str,
    source: &'a str,
}

impl Locator<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.source[..offset.min(self.source.len())];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rsplit('\n')
            .next()
            .map_or(0, |last| last.chars().count())
            + 1;
        (line, col)
    }

    fn error(&self, span: Option<Range<usize>>, problem: String) -> PolicyError {
        PolicyError {
            file: self.file.to_owned(),
            position: span.map(|span| self.position(span.start)),
            problem,
        }
    }
}

/// Parses and validates a policy. `file` only names the source in errors.
pub fn parse(source: &str, file: &str) -> Result<Policy, PolicyError> {
    let at = Locator { file, source };
    let raw: RawFile = toml::from_str(source)
        .map_err(|error| at.error(error.span(), one_line(error.message())))?;
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.rule.len());
    for spanned in raw.rule {
        let span = spanned.span();
        let rule = rule(&at, span.clone(), spanned.into_inner())?;
        if let Some(dup) = rules.iter().find(|r| r.name == rule.name) {
            return Err(at.error(
                Some(span),
                format!(
                    "rule name \"{}\" is used twice (first at line {})",
                    rule.name, dup.line
                ),
            ));
        }
        if rule.name == super::DEFAULT_RULE_NAME && !rule.when.is_empty() {
            // The built-in catch-all answers to this name when no rule matches: two
            // rules by one name would read the same in the audit trail, and reminders
            // are looked up by the name.
            return Err(at.error(
                Some(span),
                format!(
                    "rule \"{}\" has conditions, but that name is kept for the catch-all (a rule with none); give this rule another name",
                    rule.name
                ),
            ));
        }
        if let Some(catch_all) = rules.iter().find(|r| r.when.is_empty()) {
            return Err(at.error(
                Some(span),
                format!(
                    "rule \"{}\" can never match: rule \"{}\" (line {}) before it has no conditions and matches every request",
                    rule.name, catch_all.name, catch_all.line
                ),
            ));
        }
        rules.push(rule);
    }
    Ok(Policy::from_rules(file.to_owned(), rules))
}

fn rule(at: &Locator<'_>, span: Range<usize>, raw: RawRule) -> Result<Rule, PolicyError> {
    let line = at.position(span.start).0;
    let span_of_rule = span.clone();
    let name = match &raw.name {
        Some(name) => {
            let value = name.get_ref().trim();
            if value.is_empty() || value.chars().count() > MAX_NAME_CHARS {
                return Err(at.error(
                    Some(name.span()),
                    format!("rule name must be 1 to {MAX_NAME_CHARS} characters"),
                ));
            }
            value.to_owned()
        }
        None => {
            return Err(at.error(
                Some(span),
                "every [[rule]] needs a name (it is what the audit trail records)".into(),
            ))
        }
    };
    // Every later message names the rule, so "which one?" never needs asking.
    let fail = |span: Range<usize>, problem: String| {
        at.error(Some(span), format!("rule \"{name}\": {problem}"))
    };

    let mut when = Conditions::default();
    if let Some(agent) = &raw.agent {
        when.agent = Some(
            text_match(agent.get_ref()).map_err(|p| fail(agent.span(), format!("agent {p}")))?,
        );
    }
    if let Some(language) = &raw.language {
        when.language = Some(
            text_match(language.get_ref())
                .map_err(|p| fail(language.span(), format!("language {p}")))?,
        );
    }
    if let Some(code) = &raw.code {
        when.code =
            Some(regex(code.get_ref()).map_err(|p| fail(code.span(), format!("code {p}")))?);
    }
    if let Some(tool) = &raw.tool {
        when.tool =
            Some(text_match(tool.get_ref()).map_err(|p| fail(tool.span(), format!("tool {p}")))?);
    }
    if let Some(prefix) = &raw.command_prefix {
        when.command_prefix = Some(
            super::tool::parse_prefixes(prefix.get_ref())
                .map_err(|p| fail(prefix.span(), format!("command_prefix {p}")))?,
        );
    }
    if let Some(context) = &raw.context {
        let mut path = Vec::new();
        context_matches(context, &mut path, &mut when.context)
            .map_err(|p| fail(span.clone(), p))?;
    }

    let action_name = raw
        .action
        .as_ref()
        .map_or("route", |a| a.get_ref().as_str());
    let action_span = raw.action.as_ref().map_or(span.clone(), |a| a.span());
    let route_keys = [
        ("channel", raw.channel.as_ref().map(Spanned::span)),
        ("approvers", raw.approvers.as_ref().map(Spanned::span)),
        (
            "required_approvals",
            raw.required_approvals.as_ref().map(Spanned::span),
        ),
        ("timeout_secs", raw.timeout_secs.as_ref().map(Spanned::span)),
        ("high_risk", raw.high_risk.as_ref().map(Spanned::span)),
        (
            "grant_max_secs",
            raw.grant_max_secs.as_ref().map(Spanned::span),
        ),
        (
            "grant_durations_secs",
            raw.grant_durations_secs.as_ref().map(Spanned::span),
        ),
        ("grant_match", raw.grant_match.as_ref().map(Spanned::span)),
        (
            "remind_after_secs",
            raw.remind_after_secs.as_ref().map(Spanned::span),
        ),
        (
            "remind_every_secs",
            raw.remind_every_secs.as_ref().map(Spanned::span),
        ),
        (
            "escalate_after_secs",
            raw.escalate_after_secs.as_ref().map(Spanned::span),
        ),
        ("escalate_to", raw.escalate_to.as_ref().map(Spanned::span)),
        (
            "escalate_channel",
            raw.escalate_channel.as_ref().map(Spanned::span),
        ),
        (
            "escalation_extends_secs",
            raw.escalation_extends_secs.as_ref().map(Spanned::span),
        ),
    ];
    let notify = raw.notify.as_ref().is_some_and(|n| *n.get_ref());
    let reason = raw.reason.as_ref().map(|r| r.get_ref().trim().to_owned());

    let action = match action_name {
        "auto_approve" | "auto_deny" => {
            // `channel` on an automatic rule only says where its FYI goes.
            for (key, key_span) in route_keys.iter().skip(1) {
                if let Some(key_span) = key_span {
                    return Err(fail(
                        key_span.clone(),
                        format!(
                            "{key} applies only to routed rules, not to action = \"{action_name}\""
                        ),
                    ));
                }
            }
            let channel = match &raw.channel {
                Some(channel) if !notify => {
                    return Err(fail(
                        channel.span(),
                        "channel on an automatic rule is where its FYI goes; set notify = true or remove it".into(),
                    ))
                }
                Some(channel) => Some(channel_id(channel).map_err(|p| fail(channel.span(), p))?),
                None => None,
            };
            let notify = if notify {
                Notify::Channel(channel)
            } else {
                Notify::Silent
            };
            if action_name == "auto_deny" {
                match reason {
                    Some(reason) if !reason.is_empty() => Action::AutoDeny { reason, notify },
                    _ => return Err(fail(
                        raw.reason.as_ref().map_or(span.clone(), |r| r.span()),
                        "action = \"auto_deny\" needs a non-empty reason (the agent is told it)"
                            .into(),
                    )),
                }
            } else {
                Action::AutoApprove {
                    reason: reason.filter(|r| !r.is_empty()),
                    notify,
                }
            }
        }
        "route" => {
            for (key, value_span) in [
                ("reason", raw.reason.as_ref().map(Spanned::span)),
                ("notify", raw.notify.as_ref().map(Spanned::span)),
            ] {
                if let Some(value_span) = value_span {
                    return Err(fail(
                        value_span,
                        format!("{key} applies only to auto_approve and auto_deny rules"),
                    ));
                }
            }
            let mut route = Route {
                high_risk: raw.high_risk.as_ref().is_some_and(|h| *h.get_ref()),
                ..Route::default()
            };
            if let Some(channel) = &raw.channel {
                route.channel = Some(channel_id(channel).map_err(|p| fail(channel.span(), p))?);
            }
            if let Some(approvers) = &raw.approvers {
                if approvers.get_ref().is_empty() {
                    return Err(fail(
                        approvers.span(),
                        "approvers is empty, so nobody could approve; remove the key to use GREENLIGHT_APPROVERS".into(),
                    ));
                }
                if let Some(bad) = approvers.get_ref().iter().find(|a| !is_approver_id(a)) {
                    return Err(fail(
                        approvers.span(),
                        format!("approvers: {bad:?} is not a Slack user id (U…/W…), user group id (S…) or web reviewer (web:<name>)"),
                    ));
                }
                route.approvers = Some(approvers.get_ref().clone());
            }
            if let Some(n) = &raw.required_approvals {
                if !(1..=MAX_REQUIRED_APPROVALS).contains(n.get_ref()) {
                    return Err(fail(
                        n.span(),
                        format!("required_approvals must be from 1 to {MAX_REQUIRED_APPROVALS}"),
                    ));
                }
                route.required_approvals = u32::try_from(*n.get_ref()).ok();
                let listed = route.approvers.as_deref().unwrap_or_default();
                if let Some(short) = route
                    .required_approvals
                    .filter(|_| !listed.is_empty())
                    .and_then(|required| quorum::shortfall(listed, required, None))
                {
                    return Err(fail(
                        n.span(),
                        format!("required_approvals = {}: {short}; list more approvers (or a user group) or lower it", n.get_ref()),
                    ));
                }
            }
            if let Some(t) = &raw.timeout_secs {
                let secs = u64::try_from(*t.get_ref()).unwrap_or(0);
                if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
                    return Err(fail(
                        t.span(),
                        format!("timeout_secs must be from 1 to {MAX_TIMEOUT_SECS}"),
                    ));
                }
                route.timeout_secs = Some(secs);
            }
            route.nudges = nudges(&raw)
                .map_err(|(span, problem)| fail(span.unwrap_or(span_of_rule.clone()), problem))?;
            route.grants = grant_rule(&raw, &route, when.command_prefix.is_some())
                .map_err(|(span, problem)| fail(span.unwrap_or(span_of_rule.clone()), problem))?;
            Action::Route(route)
        }
        other => {
            return Err(fail(
                action_span,
                format!(
                "unknown action {other:?} (expected \"route\", \"auto_approve\" or \"auto_deny\")"
            ),
            ))
        }
    };
    let fingerprint = super::grants::fingerprint(
        &name,
        match &action {
            Action::Route(route) => route.grants.as_ref().map(|g| g.matching),
            _ => None,
        },
        &matched_on(&raw),
    );
    Ok(Rule {
        name,
        line,
        fingerprint,
        required_at: raw
            .required_approvals
            .as_ref()
            .map(|n| at.position(n.span().start)),
        when,
        action,
    })
}

/// The longest grant a rule may offer: one week, like the longest timeout.
const MAX_GRANT_SECS: u64 = 7 * 24 * 3600;

/// `grant_max_secs`, `grant_durations_secs` and `grant_match` of a routed rule, checked
/// against the rest of it: never on a high-risk rule or one that needs more than one
/// approval (a grant would let one click stand in for many decisions that each needed
/// a confirmation or a second person). Errors carry the offending key's span.
fn grant_rule(
    raw: &RawRule,
    route: &Route,
    has_prefixes: bool,
) -> Result<Option<super::grants::GrantRule>, (Option<Range<usize>>, String)> {
    use super::grants::{GrantMatch, GrantRule, MAX_DURATIONS};
    let Some(max) = &raw.grant_max_secs else {
        for (key, span) in [
            (
                "grant_durations_secs",
                raw.grant_durations_secs.as_ref().map(Spanned::span),
            ),
            ("grant_match", raw.grant_match.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                return Err((
                    Some(span),
                    format!("{key} needs grant_max_secs (grants are off without it)"),
                ));
            }
        }
        return Ok(None);
    };
    let max_secs = u64::try_from(*max.get_ref()).unwrap_or(0);
    if !(1..=MAX_GRANT_SECS).contains(&max_secs) {
        return Err((
            Some(max.span()),
            format!("grant_max_secs must be from 1 to {MAX_GRANT_SECS}"),
        ));
    }
    if route.high_risk {
        return Err((
            Some(max.span()),
            "grants are never allowed on a high_risk rule: each of its approvals must be confirmed"
                .into(),
        ));
    }
    if route.required_approvals.is_some_and(|n| n > 1) {
        return Err((Some(max.span()), "grants are never allowed on a rule with required_approvals > 1: one person's grant would stand in for several approvals".into()));
    }
    let durations_secs = match &raw.grant_durations_secs {
        None => vec![max_secs],
        Some(list) => {
            let bad = |problem: String| Err((Some(list.span()), problem));
            if list.get_ref().is_empty() || list.get_ref().len() > MAX_DURATIONS {
                return bad(format!(
                    "grant_durations_secs must list 1 to {MAX_DURATIONS} durations"
                ));
            }
            let mut secs = Vec::new();
            for d in list.get_ref() {
                match u64::try_from(*d) {
                    Ok(d) if (1..=max_secs).contains(&d) && !secs.contains(&d) => secs.push(d),
                    _ => return bad(format!("grant_durations_secs: {d} is not a distinct duration from 1 to grant_max_secs ({max_secs})")),
                }
            }
            secs.sort_unstable();
            secs
        }
    };
    let matching = match &raw.grant_match {
        None => GrantMatch::Exact,
        Some(m) => GrantMatch::parse(m.get_ref()).ok_or_else(|| {
            (
                Some(m.span()),
                format!(
                    "grant_match {:?} is not \"exact\" or \"command_prefix\"",
                    m.get_ref()
                ),
            )
        })?,
    };
    if matching == GrantMatch::CommandPrefix && !has_prefixes {
        return Err((
            raw.grant_match.as_ref().map(Spanned::span),
            "grant_match = \"command_prefix\" needs the rule's own command_prefix list".into(),
        ));
    }
    Ok(Some(GrantRule {
        max_secs,
        durations_secs,
        matching,
    }))
}

/// `remind_*`, `escalate_*` and `escalation_extends_secs` of a routed rule: each
/// duration from 1 s to a week, repeats only with a first reminder, escalation only
/// with somewhere to escalate to, and its options only with escalation.
fn nudges(raw: &RawRule) -> Result<super::nudges::Nudges, (Option<Range<usize>>, String)> {
    let secs = |key: &str,
                value: &Option<Spanned<i64>>|
     -> Result<Option<u64>, (Option<Range<usize>>, String)> {
        let Some(value) = value else { return Ok(None) };
        match u64::try_from(*value.get_ref()) {
            Ok(s) if (1..=MAX_TIMEOUT_SECS).contains(&s) => Ok(Some(s)),
            _ => Err((
                Some(value.span()),
                format!("{key} must be from 1 to {MAX_TIMEOUT_SECS}"),
            )),
        }
    };
    let needs = |key: &str, span: Option<Range<usize>>, other: &str| {
        Err((span, format!("{key} needs {other}")))
    };
    let mut out = super::nudges::Nudges {
        remind_after_secs: secs("remind_after_secs", &raw.remind_after_secs)?,
        remind_every_secs: secs("remind_every_secs", &raw.remind_every_secs)?,
        escalate_after_secs: secs("escalate_after_secs", &raw.escalate_after_secs)?,
        escalation_extends_secs: secs("escalation_extends_secs", &raw.escalation_extends_secs)?,
        ..Default::default()
    };
    if out.remind_every_secs.is_some() && out.remind_after_secs.is_none() {
        return needs(
            "remind_every_secs",
            raw.remind_every_secs.as_ref().map(Spanned::span),
            "remind_after_secs",
        );
    }
    if let Some(to) = &raw.escalate_to {
        if to.get_ref().is_empty() {
            return Err((
                Some(to.span()),
                "escalate_to is empty; list who may decide once escalated, or remove it".into(),
            ));
        }
        if let Some(bad) = to.get_ref().iter().find(|a| !is_approver_id(a)) {
            return Err((Some(to.span()), format!("escalate_to: {bad:?} is not a Slack user id (U…/W…), user group id (S…) or web reviewer (web:<name>)")));
        }
        out.escalate_to = Some(to.get_ref().clone());
    }
    if let Some(channel) = &raw.escalate_channel {
        out.escalate_channel = Some(
            channel_id(channel)
                .map_err(|p| (Some(channel.span()), format!("escalate_channel: {p}")))?,
        );
    }
    if out.escalate_after_secs.is_none() {
        for (key, span) in [
            ("escalate_to", raw.escalate_to.as_ref().map(Spanned::span)),
            (
                "escalate_channel",
                raw.escalate_channel.as_ref().map(Spanned::span),
            ),
            (
                "escalation_extends_secs",
                raw.escalation_extends_secs.as_ref().map(Spanned::span),
            ),
        ] {
            if span.is_some() {
                return needs(key, span, "escalate_after_secs");
            }
        }
    } else if out.escalate_to.is_none() && out.escalate_channel.is_none() {
        return needs(
            "escalate_after_secs",
            raw.escalate_after_secs.as_ref().map(Spanned::span),
            "escalate_to (approvers) and/or escalate_channel",
        );
    }
    Ok(out)
}

/// What a rule matches on, as written, in a fixed order: the input of its grant
/// fingerprint. (`context` is a table keyed in sorted order, so its JSON is stable.)
fn matched_on(raw: &RawRule) -> Vec<(&'static str, String)> {
    let json = |value: &toml::Value| serde_json::to_string(value).unwrap_or_default();
    let mut parts = Vec::new();
    for (key, value) in [
        ("agent", raw.agent.as_ref().map(|v| json(v.get_ref()))),
        ("language", raw.language.as_ref().map(|v| json(v.get_ref()))),
        (
            "code",
            raw.code
                .as_ref()
                .map(|v| json(&toml::Value::String(v.get_ref().clone()))),
        ),
        (
            "context",
            raw.context
                .as_ref()
                .map(|t| json(&toml::Value::Table(t.clone()))),
        ),
        ("tool", raw.tool.as_ref().map(|v| json(v.get_ref()))),
        (
            "command_prefix",
            raw.command_prefix.as_ref().map(|v| json(v.get_ref())),
        ),
    ] {
        if let Some(value) = value {
            parts.push((key, value));
        }
    }
    parts
}

fn channel_id(channel: &Spanned<String>) -> Result<String, String> {
    let value = channel.get_ref().trim();
    if value.is_empty() || value.len() > 80 || value.contains(char::is_whitespace) {
        return Err(format!(
            "channel {value:?} is not a Slack channel id such as C0123ABCD"
        ));
    }
    Ok(value.to_owned())
}

fn regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern)
        .map_err(|error| format!("is not a valid regex: {}", one_line(&error.to_string())))
}

/// A string, a non-empty list of strings, or `{ regex = "…" }`.
fn text_match(value: &toml::Value) -> Result<TextMatch, String> {
    const SHAPE: &str = "must be a string, a list of strings, or { regex = \"…\" }";
    match value {
        toml::Value::String(s) => Ok(TextMatch::AnyOf(vec![s.clone()])),
        toml::Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or(SHAPE.to_owned()))
            .collect::<Result<_, _>>()
            .map(TextMatch::AnyOf),
        toml::Value::Table(table) if table.len() == 1 => match table.get("regex") {
            Some(toml::Value::String(pattern)) => regex(pattern).map(TextMatch::Regex),
            _ => Err(SHAPE.to_owned()),
        },
        _ => Err(SHAPE.to_owned()),
    }
}

/// Flattens `context.a.b = …` (nested TOML tables) into paths; a table holding
/// `regex` is a matcher, not a deeper level.
fn context_matches(
    table: &toml::Table,
    path: &mut Vec<String>,
    out: &mut Vec<ContextMatch>,
) -> Result<(), String> {
    if table.is_empty() {
        return Err(format!("context.{} has no conditions", path.join(".")));
    }
    for (key, value) in table {
        path.push(key.clone());
        match value {
            toml::Value::Table(inner) if !inner.contains_key("regex") => {
                context_matches(inner, path, out)?;
            }
            other => {
                let matches = text_match(other)
                    .map_err(|problem| format!("context.{} {problem}", path.join(".")))?;
                out.push(ContextMatch {
                    path: path.clone(),
                    matches,
                });
            }
        }
        path.pop();
    }
    Ok(())
}

/// Library messages may span lines (regex carets, toml snippets); ours are one line,
/// and never empty (toml says nothing about a stray carriage return, found by
/// tests/fuzz).
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // regex: a caret diagram, then "error: <what>".
    if let Some(what) = lines.iter().find_map(|l| l.strip_prefix("error: ")) {
        return what.to_owned();
    }
    if lines.is_empty() {
        return "not valid TOML here".to_owned();
    }
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(source: &str) -> String {
        parse(source, "policy.toml")
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn empty_file_is_the_builtin_default() {
        let policy = parse("# nothing yet\n", "policy.toml").expect("valid");
        assert!(policy.rules.is_empty());
    }

    #[test]
    fn shipped_example_is_valid_and_behaves_like_the_default() {
        let source = include_str!("../../config/policy.toml");
        let policy = parse(source, "config/policy.toml").expect("the shipped example is valid");
        let subject = super::super::Subject {
            agent: Some("ci-bot"),
            language: Some("python"),
            code: "rm -rf /",
            context: Some(&serde_json::json!({"env": "prod"})),
        };
        let defaults = super::super::Defaults {
            channel: "C1".into(),
            approvers: None,
        };
        let requested = super::super::Requested {
            required_approvals: 1,
            timeout_secs: 300,
        };
        let builtin = Policy::builtin().plan(&subject, requested, &defaults);
        let shipped = policy.plan(&subject, requested, &defaults);
        let strip = |plan: super::super::Plan| match plan {
            super::super::Plan::Route {
                rule: _,
                channel,
                approvers,
                approvers_from_rule,
                required_approvals,
                timeout_secs,
                high_risk,
            } => (
                channel,
                approvers,
                approvers_from_rule,
                required_approvals,
                timeout_secs,
                high_risk,
            ),
            other => panic!("expected a route, got {other:?}"),
        };
        assert_eq!(strip(shipped), strip(builtin));
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = error("[[rule]]\nname = \"a\"\ncode = \"unterminated\n");
        assert!(err.starts_with("policy.toml:3:"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn unknown_keys_are_refused_where_they_are() {
        let err = error("[[rule]]\nname = \"a\"\napprover = [\"U1\"]\n");
        assert!(
            err.starts_with("policy.toml:3:1: unknown field `approver`"),
            "{err}"
        );
        let err = error("[[rules]]\nname = \"a\"\n");
        assert!(err.starts_with("policy.toml:1:"), "{err}");
        assert!(err.contains("unknown field `rules`"), "{err}");
    }

    #[test]
    fn unknown_action_is_refused() {
        let err = error("\n[[rule]]\nname = \"a\"\naction = \"approve\"\n");
        assert_eq!(
            err,
            "policy.toml:4:10: rule \"a\": unknown action \"approve\" (expected \"route\", \"auto_approve\" or \"auto_deny\")"
        );
    }

    #[test]
    fn auto_deny_needs_a_reason() {
        let err = error("[[rule]]\nname = \"no\"\naction = \"auto_deny\"\ncode = \"x\"\n");
        assert!(
            err.starts_with(
                "policy.toml:1:1: rule \"no\": action = \"auto_deny\" needs a non-empty reason"
            ),
            "{err}"
        );
        let err = error("[[rule]]\nname = \"no\"\naction = \"auto_deny\"\nreason = \"  \"\n");
        assert!(err.starts_with("policy.toml:4:"), "{err}");
    }

    #[test]
    fn bad_regex_names_the_rule_and_line() {
        let err = error("[[rule]]\nname = \"ok\"\ncode = \"a\"\n\n[[rule]]\nname = \"broken\"\ncode = \"(unclosed\"\n");
        assert!(
            err.starts_with("policy.toml:7:8: rule \"broken\": code is not a valid regex"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        let err = error("[[rule]]\nname = \"ctx\"\ncontext.env = { regex = \"[\" }\n");
        assert!(
            err.contains("rule \"ctx\": context.env is not a valid regex"),
            "{err}"
        );
        assert!(err.starts_with("policy.toml:"), "{err}");
    }

    #[test]
    fn keys_that_do_not_fit_the_action_are_refused() {
        for (body, expect) in [
            (
                "action = \"auto_approve\"\napprovers = [\"U1AB\"]",
                "approvers applies only to routed rules",
            ),
            (
                "action = \"auto_deny\"\nreason = \"r\"\nrequired_approvals = 2",
                "required_approvals applies only",
            ),
            (
                "action = \"auto_deny\"\nreason = \"r\"\nchannel = \"C1\"",
                "set notify = true",
            ),
            ("reason = \"r\"", "reason applies only to auto_approve"),
            ("notify = true", "notify applies only"),
            ("approvers = []", "nobody could approve"),
            ("approvers = [\"alice\"]", "not a Slack user id"),
            ("required_approvals = 0", "from 1 to 10"),
            ("timeout_secs = -5", "timeout_secs must be from 1"),
            ("channel = \"my channel\"", "not a Slack channel id"),
            ("language = 3", "language must be a string"),
            ("agent = { regexp = \"x\" }", "agent must be a string"),
            ("notify = \"yes\"", "invalid type"),
        ] {
            let err = error(&format!("[[rule]]\nname = \"r\"\ncode = \"x\"\n{body}\n"));
            assert!(err.contains(expect), "{body}: {err}");
            assert!(err.starts_with("policy.toml:"), "{body}: {err}");
        }
    }

    #[test]
    fn a_quorum_the_listed_people_cannot_reach_is_refused_where_it_is_set() {
        let err = error(
            "[[rule]]\nname = \"two people\"\ncode = \"x\"\napprovers = [\"U0AAA\", \"U0BBB\"]\nrequired_approvals = 3\n",
        );
        assert_eq!(
            err,
            "policy.toml:5:22: rule \"two people\": required_approvals = 3: 3 approvals can never be reached: the approvers are only 2 people (U0AAA, U0BBB); list more approvers (or a user group) or lower it"
        );
        // The same person twice is one person.
        let err = error(
            "[[rule]]\nname = \"twice\"\napprovers = [\"U0AAA\", \"U0AAA\"]\nrequired_approvals = 2\n",
        );
        assert!(
            err.starts_with("policy.toml:4:22: rule \"twice\": required_approvals = 2:"),
            "{err}"
        );
        // Enough people, a user group (its size is doctor's to check), or no list of
        // the rule's own (GREENLIGHT_APPROVERS, checked at start-up) all load.
        for ok in [
            "approvers = [\"U0AAA\", \"U0BBB\"]\nrequired_approvals = 2",
            "approvers = [\"S0SRE\"]\nrequired_approvals = 10",
            "approvers = [\"U0AAA\", \"S0SRE\"]\nrequired_approvals = 3",
            "required_approvals = 3",
        ] {
            let source = format!("[[rule]]\nname = \"r\"\n{ok}\n");
            parse(&source, "policy.toml").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn a_quorum_greenlight_approvers_cannot_reach_is_refused_with_its_position() {
        let policy = parse(
            "[[rule]]\nname = \"prod\"\ncode = \"deploy\"\nrequired_approvals = 3\n",
            "policy.toml",
        )
        .expect("valid on its own");
        let two = vec!["U0AAA".to_owned(), "U0BBB".to_owned()];
        let err = policy
            .check_approvers(Some(&two))
            .expect_err("two people cannot give three approvals")
            .to_string();
        assert!(
            err.starts_with("policy.toml:4:22: rule \"prod\": required_approvals = 3: 3 approvals can never be reached: the approvers are only 2 people (U0AAA, U0BBB) (from GREENLIGHT_APPROVERS)"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let with_group = vec!["U0AAA".to_owned(), "S0SRE".to_owned()];
        assert!(policy.check_approvers(Some(&with_group)).is_ok());
        assert!(policy.check_approvers(None).is_ok(), "anyone may approve");
        let three = vec!["U0AAA".to_owned(), "U0BBB".to_owned(), "U0CCC".to_owned()];
        assert!(policy.check_approvers(Some(&three)).is_ok());
    }

    #[test]
    fn only_a_catch_all_may_be_named_default() {
        let err = error("[[rule]]\nname = \"default\"\nagent = \"ci\"\n");
        assert!(err.contains("kept for the catch-all"), "{err}");
        let policy = parse("[[rule]]\nname = \"default\"\n", "p.toml").expect("a catch-all");
        assert_eq!(policy.rules[0].name, "default");
    }

    #[test]
    fn names_are_required_and_unique() {
        assert!(error("[[rule]]\ncode = \"x\"\n").contains("needs a name"));
        let err =
            error("[[rule]]\nname = \"a\"\ncode = \"x\"\n[[rule]]\nname = \"a\"\ncode = \"y\"\n");
        assert!(
            err.starts_with("policy.toml:4:1:") && err.contains("used twice (first at line 1)"),
            "{err}"
        );
    }

    #[test]
    fn rules_after_a_catch_all_are_refused() {
        let err = error("[[rule]]\nname = \"all\"\n[[rule]]\nname = \"never\"\ncode = \"x\"\n");
        assert!(
            err.starts_with("policy.toml:3:1: rule \"never\" can never match"),
            "{err}"
        );
    }

    #[test]
    fn approver_ids() {
        assert!(is_approver_id("U024BE7LH") && !is_approver_id("W1"));
        assert!(is_approver_id("S0SRE") && is_approver_id("W012A3CDE"));
        assert!(!is_approver_id("C123") && !is_approver_id("u123") && !is_approver_id("U1 2"));
        assert!(is_approver_id("web:alice") && is_approver_id("web:on-call.2"));
        assert!(
            !is_approver_id("web:") && !is_approver_id("web:a b") && !is_approver_id("WEB:alice")
        );
        assert_eq!(
            parse_approver_list(" U0ALICE, S0SRE ").expect("valid"),
            vec!["U0ALICE".to_owned(), "S0SRE".to_owned()]
        );
        assert!(parse_approver_list("U0ALICE,,S0SRE").is_err());
        assert!(parse_approver_list("@alice").is_err());
    }

    #[test]
    fn missing_explicit_file_is_an_error_naming_it() {
        let err = load(Some(Path::new("/nonexistent/policy.toml")))
            .expect_err("missing")
            .to_string();
        assert!(
            err.starts_with("/nonexistent/policy.toml: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn grant_keys_parse_with_defaults() {
        let policy = parse(
            "[[rule]]\nname = \"tests\"\ncommand_prefix = [\"cargo test\"]\ngrant_max_secs = 3600\ngrant_durations_secs = [3600, 1800]\ngrant_match = \"command_prefix\"\n\n[[rule]]\nname = \"plain\"\ncode = \"^make\"\ngrant_max_secs = 600\n",
            "p.toml",
        )
        .expect("valid");
        let grants = |i: usize| match &policy.rules[i].action {
            Action::Route(route) => route.grants.clone().expect("grants"),
            other => panic!("{other:?}"),
        };
        assert_eq!(grants(0).durations_secs, vec![1800, 3600]);
        assert_eq!(
            grants(0).matching,
            super::super::grants::GrantMatch::CommandPrefix
        );
        assert_eq!(grants(1).durations_secs, vec![600]);
        assert_eq!(grants(1).matching, super::super::grants::GrantMatch::Exact);
        assert_ne!(policy.rules[0].fingerprint, policy.rules[1].fingerprint);
    }

    #[test]
    fn grants_are_refused_where_they_would_weaken_a_rule() {
        let rule = |extra: &str| format!("[[rule]]\nname = \"r\"\ncode = \"x\"\n{extra}");
        for (extra, at, needle) in [
            (
                "high_risk = true\ngrant_max_secs = 60\n",
                "5:18",
                "high_risk",
            ),
            (
                "approvers = [\"U0A\", \"U0B\"]\nrequired_approvals = 2\ngrant_max_secs = 60\n",
                "6:18",
                "required_approvals > 1",
            ),
            ("grant_max_secs = 0\n", "4:18", "grant_max_secs must be"),
            (
                "grant_max_secs = 60\ngrant_durations_secs = [61]\n",
                "5:24",
                "61",
            ),
            (
                "grant_max_secs = 60\ngrant_durations_secs = [30, 30]\n",
                "5:24",
                "30",
            ),
            (
                "grant_max_secs = 60\ngrant_durations_secs = []\n",
                "5:24",
                "1 to 3",
            ),
            (
                "grant_durations_secs = [60]\n",
                "4:24",
                "needs grant_max_secs",
            ),
            (
                "grant_max_secs = 60\ngrant_match = \"fuzzy\"\n",
                "5:15",
                "fuzzy",
            ),
            (
                "grant_max_secs = 60\ngrant_match = \"command_prefix\"\n",
                "5:15",
                "command_prefix list",
            ),
        ] {
            let message = error(&rule(extra));
            assert!(
                message.starts_with(&format!("policy.toml:{at}: rule \"r\": ")),
                "{extra}: {message}"
            );
            assert!(message.contains(needle), "{extra}: {message}");
        }
        // Automatic rules have no grants.
        let message = error("[[rule]]\nname = \"r\"\ncode = \"x\"\naction = \"auto_approve\"\ngrant_max_secs = 60\n");
        assert!(
            message.contains("grant_max_secs applies only to routed rules"),
            "{message}"
        );
    }

    #[test]
    fn the_fingerprint_follows_what_the_rule_matches_only() {
        let fp = |source: &str| {
            parse(source, "p.toml").expect("valid").rules[0]
                .fingerprint
                .clone()
        };
        let base = fp("[[rule]]\nname = \"r\"\ncode = \"^make\"\ngrant_max_secs = 60\n");
        // Where the rule is, its channel, its durations: the same rule matching the same.
        assert_eq!(base, fp("\n\n[[rule]]\nname = \"r\"\ncode = \"^make\"\nchannel = \"C1\"\ngrant_max_secs = 600\n"));
        assert_ne!(
            base,
            fp("[[rule]]\nname = \"r\"\ncode = \"^make \"\ngrant_max_secs = 60\n")
        );
        assert_ne!(
            base,
            fp("[[rule]]\nname = \"r\"\ncode = \"^make\"\nagent = \"a\"\ngrant_max_secs = 60\n")
        );
        assert_ne!(base, fp("[[rule]]\nname = \"r\"\ncode = \"^make\"\ncontext.env = \"prod\"\ngrant_max_secs = 60\n"));
    }

    #[test]
    fn reminder_and_escalation_keys() {
        let policy = parse(
            "[[rule]]\nname = \"r\"\ncode = \"x\"\nremind_after_secs = 60\nremind_every_secs = 120\nescalate_after_secs = 300\nescalate_to = [\"U0CAROL\"]\nescalate_channel = \"C0ESC\"\nescalation_extends_secs = 600\n",
            "p.toml",
        )
        .expect("valid");
        let Action::Route(route) = &policy.rules[0].action else {
            panic!("route")
        };
        assert_eq!(route.nudges.remind_every_secs, Some(120));
        assert_eq!(route.nudges.escalate_channel.as_deref(), Some("C0ESC"));
        let rule = |extra: &str| format!("[[rule]]\nname = \"r\"\ncode = \"x\"\n{extra}");
        for (extra, at, needle) in [
            ("remind_every_secs = 5\n", "4:21", "needs remind_after_secs"),
            ("remind_after_secs = 0\n", "4:21", "from 1 to"),
            ("escalate_after_secs = 5\n", "4:23", "needs escalate_to"),
            (
                "escalate_channel = \"C1\"\n",
                "4:20",
                "needs escalate_after_secs",
            ),
            (
                "escalate_after_secs = 5\nescalate_to = [\"bob\"]\n",
                "5:15",
                "not a Slack user id",
            ),
            (
                "escalate_after_secs = 5\nescalate_to = []\n",
                "5:15",
                "empty",
            ),
        ] {
            let message = error(&rule(extra));
            assert!(
                message.starts_with(&format!("policy.toml:{at}: rule \"r\": ")),
                "{extra}: {message}"
            );
            assert!(message.contains(needle), "{extra}: {message}");
        }
        let message = error("[[rule]]\nname = \"r\"\ncode = \"x\"\naction = \"auto_deny\"\nreason = \"no\"\nremind_after_secs = 5\n");
        assert!(
            message.contains("remind_after_secs applies only to routed rules"),
            "{message}"
        );
    }
}
