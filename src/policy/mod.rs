//! Policy: which rule a request falls under, and what that rule does with it.
//!
//! A policy is an ordered list of rules read from `config/policy.toml` (see
//! [`parse`]). The first rule whose conditions all hold decides what happens to a
//! request: it is approved or denied on the spot (`auto_approve` / `auto_deny`), or it
//! is routed to Slack with a channel, the people who may approve it, how many of them
//! must, how long it may wait, and whether Approve asks "are you sure?".
//!
//! Matching is pure and synchronous over data the request already carries (agent
//! name, language, code, context), so the same answer comes out at submit time, at
//! click time (who may approve is looked up again, so removing someone from the policy
//! takes effect for pending requests after a restart) and in
//! `greenlight policy check`.

pub mod check;
mod explain;
pub mod grants;
pub mod nudges;
mod parse;
pub mod quorum;
pub mod tool;
pub mod web_only;

use regex::Regex;
use serde_json::Value;

pub use parse::{is_approver_id, load, parse, parse_approver_list, PolicyError, DEFAULT_PATH};

/// The name of the rule that applies when no rule of the file matches.
pub const DEFAULT_RULE_NAME: &str = "default";

/// A loaded, validated policy.
#[derive(Debug)]
pub struct Policy {
    /// Where the rules came from, for messages (`config/policy.toml`, or
    /// `built-in default`).
    pub source: String,
    /// The file's `[[rule]]`s in file order; the first that matches decides. Empty for
    /// the built-in default and for a file with no rules.
    pub rules: Vec<Rule>,
    /// Applies when no rule matches: route to the default channel, one approval.
    fallback: Rule,
}

/// One `[[rule]]`.
#[derive(Debug)]
pub struct Rule {
    /// `name`: 1 to 64 characters, unique in the file. The audit trail (`routed`,
    /// `auto_decided`) and every grant made under the rule record it;
    /// [`DEFAULT_RULE_NAME`] for the built-in default.
    pub name: String,
    /// Line of its `[[rule]]` header (0 for the built-in default).
    pub line: usize,
    /// Line and column of its `required_approvals`, if it sets one.
    pub required_at: Option<(usize, usize)>,
    /// What the rule matches on, hashed ([`grants::fingerprint`]): a grant made
    /// under another fingerprint covers nothing.
    pub fingerprint: String,
    /// Its conditions (`agent`, `language`, `code`, `context.*`, `tool`,
    /// `command_prefix`); none set matches every request.
    pub when: Conditions,
    /// `action` (`route` when unset) with the keys that go with it.
    pub action: Action,
}

/// What a rule matches on. Every condition that is set must hold; a rule with none
/// matches every request.
#[derive(Debug, Default)]
pub struct Conditions {
    /// `agent`: the agent's token name (`name` of `GREENLIGHT_API_TOKENS`'s
    /// `name:token`).
    pub agent: Option<TextMatch>,
    /// `language`: the request's `language` as sent (trimmed), the whole field:
    /// `["python"]` does not match `"python, sh"`. Never holds for a request without one.
    pub language: Option<TextMatch>,
    /// Searched anywhere in the code (anchor with `^`/`$` and `(?m)` as needed).
    pub code: Option<Regex>,
    /// Paths into the request's `context` object and what the value there must be.
    pub context: Vec<ContextMatch>,
    /// The coding agent's tool name (`context.tool_name`, set by hook requests).
    pub tool: Option<TextMatch>,
    /// The code is one simple shell command starting with one of these (see
    /// [`tool::command_has_prefix`]).
    pub command_prefix: Option<Vec<String>>,
}

/// A condition on a string: one of a few exact values, or a regex.
#[derive(Debug)]
pub enum TextMatch {
    /// Equal (case-sensitive) to any of these.
    AnyOf(Vec<String>),
    /// Searched anywhere in the value.
    Regex(Regex),
}

/// `context.<path> = …`: the value at `path` in the context object must match.
#[derive(Debug)]
pub struct ContextMatch {
    /// Object keys from the outside in: `context.deploy.region` is
    /// `["deploy", "region"]`.
    pub path: Vec<String>,
    /// What the value there must be; numbers and booleans are matched as their JSON
    /// text (`3`, `true`).
    pub matches: TextMatch,
}

/// What a rule does with a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Approved at once, no person involved.
    AutoApprove {
        /// `reason`, trimmed; `None` (unset or blank) tells the agent
        /// `Approved automatically by policy rule "<name>"`.
        reason: Option<String>,
        /// `notify` and `channel`: whether and where an FYI is posted.
        notify: Notify,
    },
    /// Denied at once; `reason` is what the agent is told.
    AutoDeny {
        /// `reason`, required and non-empty (trimmed); the agent gets it word for word.
        reason: String,
        /// `notify` and `channel`: whether and where an FYI is posted.
        notify: Notify,
    },
    /// Sent to Slack for people to decide.
    Route(Route),
}

/// Whether an automatic decision is posted to Slack as an FYI (without buttons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// `notify` unset or `false` (the default): nothing is posted.
    Silent,
    /// Post to this channel, or to the default one when `None`.
    Channel(Option<String>),
}

/// How a routed request is handled in Slack. Unset fields fall back to the service's
/// defaults (`SLACK_CHANNEL_ID`, `GREENLIGHT_APPROVERS`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    /// `channel`: a Slack channel id such as `C0123ABCD`; `None` uses
    /// `SLACK_CHANNEL_ID`.
    pub channel: Option<String>,
    /// User (`U…`/`W…`) and user group (`S…`) ids; replaces `GREENLIGHT_APPROVERS`.
    pub approvers: Option<Vec<String>>,
    /// A floor: an agent may ask for more approvals, never fewer.
    pub required_approvals: Option<u32>,
    /// A cap on how long the request waits (see [`Policy::plan`]).
    pub timeout_secs: Option<u64>,
    /// Approve asks for confirmation before it counts.
    pub high_risk: bool,
    /// Standing grants ("Approve for 30 min"), when the rule allows them.
    pub grants: Option<grants::GrantRule>,
    /// Reminders and escalation; empty for none.
    pub nudges: nudges::Nudges,
}

/// The facts about a request that rules match on.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The agent's token name; `None` only in `policy check` without `--agent`, where
    /// rules that match on an agent never match.
    pub agent: Option<&'a str>,
    /// The request's `language` (trimmed; `None` when absent or blank).
    pub language: Option<&'a str>,
    /// The request's `code`, which `code` and `command_prefix` conditions read.
    pub code: &'a str,
    /// The request's `context` JSON, which `context.*` and `tool` conditions read;
    /// `None` when it sent none.
    pub context: Option<&'a Value>,
}

/// What the agent asked for, before the rule adjusts it.
#[derive(Debug, Clone, Copy)]
pub struct Requested {
    /// The agent's `required_approvals` (1 to 10; 1 when it gave none).
    pub required_approvals: u32,
    /// The agent's `timeout_secs`, or the service default when it gave none.
    pub timeout_secs: u64,
}

/// Service-wide settings a rule falls back to.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// `SLACK_CHANNEL_ID`; empty without Slack settings, and then nothing is posted
    /// whatever a rule's `channel` says.
    pub channel: String,
    /// `GREENLIGHT_APPROVERS`, or without it and without Slack the review page's
    /// reviewers (`web:<name>`); `None`: anyone who can click may approve.
    pub approvers: Option<Vec<String>>,
}

/// The concrete outcome of applying the matching rule to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// An `auto_approve` or `auto_deny` rule decided: the request is stored final,
    /// `decided_by` `greenlight`, audited as `auto_decided`.
    Auto {
        /// The matching rule's name.
        rule: String,
        /// `true` for `auto_approve`, `false` for `auto_deny`.
        approve: bool,
        /// What the agent is told: the rule's `reason`, or for `auto_approve` without
        /// one, `Approved automatically by policy rule "<name>"`.
        reason: String,
        /// Where to post the FYI, if anywhere.
        notify_channel: Option<String>,
    },
    /// Left to people: Approve / Deny in Slack and on the review page.
    Route {
        /// The matching rule's name, or [`DEFAULT_RULE_NAME`] when none matched.
        rule: String,
        /// Where the message goes: the rule's `channel`, else [`Defaults::channel`]
        /// (empty without Slack: nothing is posted).
        channel: String,
        /// `None`: anyone who can click may approve.
        approvers: Option<Vec<String>>,
        /// Whether `approvers` came from the rule (else from `GREENLIGHT_APPROVERS`).
        approvers_from_rule: bool,
        /// Distinct approvals needed: the larger of the agent's and the rule's (1 to
        /// 10).
        required_approvals: u32,
        /// Seconds until the request expires (denied): the agent's (or
        /// `GREENLIGHT_DEFAULT_TIMEOUT_SECS`), capped by the rule's `timeout_secs`.
        timeout_secs: u64,
        /// The rule's `high_risk`: Approve asks "are you sure?" (in Slack only).
        high_risk: bool,
    },
}

impl Plan {
    /// The name of the rule that made this plan ([`DEFAULT_RULE_NAME`] when none
    /// matched).
    pub fn rule(&self) -> &str {
        match self {
            Plan::Auto { rule, .. } | Plan::Route { rule, .. } => rule,
        }
    }
}

impl Policy {
    /// The policy in force when there is no policy file: every request goes to the
    /// default channel and needs one approval from anyone allowed by
    /// `GREENLIGHT_APPROVERS`.
    pub fn builtin() -> Self {
        Self::from_rules("built-in default".into(), Vec::new())
    }

    pub(crate) fn from_rules(source: String, rules: Vec<Rule>) -> Self {
        Self {
            source,
            rules,
            fallback: Rule {
                name: DEFAULT_RULE_NAME.into(),
                line: 0,
                required_at: None,
                fingerprint: String::new(),
                when: Conditions::default(),
                action: Action::Route(Route::default()),
            },
        }
    }

    /// Refuses a routed rule that takes its approvers from `GREENLIGHT_APPROVERS`
    /// (`approvers`) when those can never give the approvals the rule requires (see
    /// [`quorum`]); the error points at the rule's `required_approvals`. Rules with
    /// their own list were checked when the file was parsed.
    pub fn check_approvers(&self, approvers: Option<&[String]>) -> Result<(), PolicyError> {
        let Some(approvers) = approvers.filter(|a| !a.is_empty()) else {
            return Ok(());
        };
        for rule in &self.rules {
            let Action::Route(route) = &rule.action else {
                continue;
            };
            let Some(required) = route
                .required_approvals
                .filter(|_| route.approvers.is_none())
            else {
                continue;
            };
            if let Some(short) = quorum::shortfall(approvers, required, None) {
                return Err(PolicyError {
                    file: self.source.clone(),
                    position: rule.required_at,
                    problem: format!(
                        "rule \"{}\": required_approvals = {required}: {short} (from GREENLIGHT_APPROVERS); give the rule its own approvers, add people to GREENLIGHT_APPROVERS, or lower it",
                        rule.name
                    ),
                });
            }
        }
        Ok(())
    }

    /// The first rule that matches a request asking for one approval, or the
    /// built-in default.
    pub fn rule_for(&self, subject: &Subject<'_>) -> &Rule {
        self.matching_rule(subject, 1)
    }

    /// The first rule that matches, or the built-in default. `auto_approve` rules are
    /// skipped for a request that asks for more than one approval: an agent can raise
    /// the bar, and approving with nobody looking would lower it to zero.
    pub fn matching_rule(&self, subject: &Subject<'_>, required_approvals: u32) -> &Rule {
        self.rules
            .iter()
            .filter(|rule| {
                required_approvals <= 1 || !matches!(rule.action, Action::AutoApprove { .. })
            })
            .find(|rule| rule.when.matches(subject))
            .unwrap_or(&self.fallback)
    }

    /// Applies the matching rule to a request.
    ///
    /// `required_approvals` is the larger of the agent's and the rule's: a rule sets a
    /// floor an agent can raise, never lower. `timeout_secs` is the smaller of the
    /// agent's (or the service default) and the rule's: a rule caps how long a request
    /// may sit in Slack, and never makes an agent wait longer than it said it would
    /// (its own client may have given up by then, leaving live buttons that decide
    /// nothing anyone is waiting for).
    pub fn plan(&self, subject: &Subject<'_>, requested: Requested, defaults: &Defaults) -> Plan {
        let rule = self.matching_rule(subject, requested.required_approvals);
        let name = rule.name.clone();
        match &rule.action {
            Action::AutoApprove { reason, notify } => Plan::Auto {
                rule: name.clone(),
                approve: true,
                reason: reason
                    .clone()
                    .unwrap_or_else(|| format!("Approved automatically by policy rule \"{name}\"")),
                notify_channel: notify.channel(defaults),
            },
            Action::AutoDeny { reason, notify } => Plan::Auto {
                rule: name,
                approve: false,
                reason: reason.clone(),
                notify_channel: notify.channel(defaults),
            },
            Action::Route(route) => Plan::Route {
                rule: name,
                channel: route
                    .channel
                    .clone()
                    .unwrap_or_else(|| defaults.channel.clone()),
                approvers_from_rule: route.approvers.is_some(),
                approvers: route
                    .approvers
                    .clone()
                    .or_else(|| defaults.approvers.clone()),
                required_approvals: requested
                    .required_approvals
                    .max(route.required_approvals.unwrap_or(1)),
                timeout_secs: route.timeout_secs.map_or(requested.timeout_secs, |cap| {
                    cap.min(requested.timeout_secs)
                }),
                high_risk: route.high_risk,
            },
        }
    }
}

impl Notify {
    fn channel(&self, defaults: &Defaults) -> Option<String> {
        match self {
            Notify::Silent => None,
            Notify::Channel(channel) => {
                Some(channel.clone().unwrap_or_else(|| defaults.channel.clone()))
            }
        }
    }
}

impl Conditions {
    /// True when no condition is set, so the rule matches every request; the parser
    /// refuses any rule after such a catch-all (it could never match).
    pub fn is_empty(&self) -> bool {
        self.agent.is_none()
            && self.language.is_none()
            && self.code.is_none()
            && self.context.is_empty()
            && self.tool.is_none()
            && self.command_prefix.is_none()
    }

    /// Whether every condition that is set holds for `subject`. A condition on
    /// something the request lacks (no agent, no language, no `context.tool_name`)
    /// does not hold.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        let text = |condition: &Option<TextMatch>, value: Option<&str>| match condition {
            None => true,
            // A condition on a field the request does not have never holds.
            Some(condition) => value.is_some_and(|v| condition.matches(v)),
        };
        text(&self.agent, subject.agent)
            && text(&self.language, subject.language)
            && self
                .code
                .as_ref()
                .is_none_or(|re| re.is_match(subject.code))
            && self.context.iter().all(|c| c.matches(subject.context))
            && text(&self.tool, tool::tool_name(subject.context))
            && self
                .command_prefix
                .as_ref()
                .is_none_or(|prefixes| tool::command_has_prefix(subject.code, prefixes))
    }
}

impl TextMatch {
    /// Exact, case-sensitive equality with any listed value, or the regex found
    /// anywhere in `value` (unanchored unless the pattern says `^`/`$`).
    pub fn matches(&self, value: &str) -> bool {
        match self {
            TextMatch::AnyOf(values) => values.iter().any(|v| v == value),
            TextMatch::Regex(re) => re.is_match(value),
        }
    }
}

impl ContextMatch {
    /// Walks `path` through nested objects. Strings match as they are; numbers and
    /// booleans as their JSON text (`3`, `true`), so `context.attempt = "3"` works.
    /// Anything else (missing, null, arrays, objects, a context that is not an
    /// object) does not match.
    fn matches(&self, context: Option<&Value>) -> bool {
        let mut at = context;
        for key in &self.path {
            at = at
                .and_then(|value| value.as_object())
                .and_then(|o| o.get(key));
        }
        match at {
            Some(Value::String(s)) => self.matches.matches(s),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => self.matches.matches(&v.to_string()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = r#"
[[rule]]
name = "read-only"
action = "auto_approve"
language = ["bash", "sh"]
code = '^(ls|cat|pwd)\b'

[[rule]]
name = "no-curl-pipe"
action = "auto_deny"
reason = "Piping downloads into a shell is not allowed"
code = 'curl[^|]*\|\s*(ba)?sh'
notify = true

[[rule]]
name = "prod"
context.env = "prod"
context.deploy.region = { regex = "^eu-" }
channel = "C0PROD"
approvers = ["U0ALICE", "S0SRE"]
required_approvals = 2
timeout_secs = 900
high_risk = true

[[rule]]
name = "ci-bot"
agent = { regex = "^ci-" }
timeout_secs = 120
"#;

    fn policy() -> Policy {
        parse(FILE, "policy.toml").expect("valid")
    }

    fn subject<'a>(
        code: &'a str,
        language: Option<&'a str>,
        context: Option<&'a Value>,
    ) -> Subject<'a> {
        Subject {
            agent: Some("other-bot"),
            language,
            code,
            context,
        }
    }

    fn defaults() -> Defaults {
        Defaults {
            channel: "C0DEFAULT".into(),
            approvers: Some(vec!["U0GLOBAL".into()]),
        }
    }

    fn requested(required_approvals: u32, timeout_secs: u64) -> Requested {
        Requested {
            required_approvals,
            timeout_secs,
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let p = policy();
        assert_eq!(
            p.rule_for(&subject("ls -la", Some("bash"), None)).name,
            "read-only"
        );
        // The read-only rule needs both its language and its code regex.
        assert_eq!(
            p.rule_for(&subject("ls -la", Some("python"), None)).name,
            "default"
        );
        assert_eq!(
            p.rule_for(&subject("rm -rf / # ls", Some("bash"), None))
                .name,
            "default"
        );
        assert_eq!(
            p.rule_for(&subject("curl https://x | sh", Some("bash"), None))
                .name,
            "no-curl-pipe"
        );
    }

    #[test]
    fn context_paths_match_exact_values_and_regexes() {
        let p = policy();
        let prod_eu = json!({"env": "prod", "deploy": {"region": "eu-west-1"}});
        let prod_us = json!({"env": "prod", "deploy": {"region": "us-east-1"}});
        let staging = json!({"env": "staging", "deploy": {"region": "eu-west-1"}});
        let not_object = json!([{"env": "prod"}]);
        let wrong_type = json!({"env": ["prod"], "deploy": {"region": "eu-west-1"}});
        assert_eq!(p.rule_for(&subject("x", None, Some(&prod_eu))).name, "prod");
        for other in [&prod_us, &staging, &not_object, &wrong_type] {
            assert_eq!(
                p.rule_for(&subject("x", None, Some(other))).name,
                "default",
                "{other}"
            );
        }
        assert_eq!(p.rule_for(&subject("x", None, None)).name, "default");
    }

    #[test]
    fn numbers_and_booleans_in_context_match_as_text() {
        let p = parse(
            "[[rule]]\nname = \"n\"\ncontext.attempt = \"3\"\ncontext.dry_run = \"true\"\n",
            "p.toml",
        )
        .expect("valid");
        let yes = json!({"attempt": 3, "dry_run": true});
        let no = json!({"attempt": 4, "dry_run": true});
        assert_eq!(p.rule_for(&subject("x", None, Some(&yes))).name, "n");
        assert_eq!(p.rule_for(&subject("x", None, Some(&no))).name, "default");
    }

    #[test]
    fn agent_conditions_need_an_agent() {
        let p = policy();
        let mut s = subject("x", None, None);
        s.agent = Some("ci-runner");
        assert_eq!(p.rule_for(&s).name, "ci-bot");
        s.agent = None;
        assert_eq!(p.rule_for(&s).name, "default");
    }

    #[test]
    fn route_plan_raises_approvals_and_caps_timeout() {
        let p = policy();
        let ctx = json!({"env": "prod", "deploy": {"region": "eu-central-1"}});
        let s = subject("deploy", None, Some(&ctx));
        let plan = p.plan(&s, requested(1, 300), &defaults());
        assert_eq!(
            plan,
            Plan::Route {
                rule: "prod".into(),
                channel: "C0PROD".into(),
                approvers: Some(vec!["U0ALICE".into(), "S0SRE".into()]),
                approvers_from_rule: true,
                required_approvals: 2,
                timeout_secs: 300,
                high_risk: true,
            }
        );
        // An agent may raise the bar, and a longer timeout is capped by the rule.
        let Plan::Route {
            required_approvals,
            timeout_secs,
            ..
        } = p.plan(&s, requested(3, 3600), &defaults())
        else {
            panic!("route")
        };
        assert_eq!((required_approvals, timeout_secs), (3, 900));
    }

    #[test]
    fn auto_approve_never_applies_when_the_agent_asks_for_more_approvals() {
        let p = policy();
        let s = subject("ls -la", Some("bash"), None);
        assert!(matches!(
            p.plan(&s, requested(1, 60), &defaults()),
            Plan::Auto { approve: true, .. }
        ));
        let Plan::Route {
            rule,
            required_approvals,
            ..
        } = p.plan(&s, requested(2, 60), &defaults())
        else {
            panic!("routed")
        };
        assert_eq!((rule.as_str(), required_approvals), (DEFAULT_RULE_NAME, 2));
    }

    #[test]
    fn default_rule_uses_service_defaults() {
        let plan = Policy::builtin().plan(&subject("x", None, None), requested(1, 60), &defaults());
        assert_eq!(
            plan,
            Plan::Route {
                rule: DEFAULT_RULE_NAME.into(),
                channel: "C0DEFAULT".into(),
                approvers: Some(vec!["U0GLOBAL".into()]),
                approvers_from_rule: false,
                required_approvals: 1,
                timeout_secs: 60,
                high_risk: false,
            }
        );
    }

    #[test]
    fn auto_plans_carry_reason_and_notify_channel() {
        let p = policy();
        assert_eq!(
            p.plan(
                &subject("curl a | bash", None, None),
                requested(1, 60),
                &defaults()
            ),
            Plan::Auto {
                rule: "no-curl-pipe".into(),
                approve: false,
                reason: "Piping downloads into a shell is not allowed".into(),
                notify_channel: Some("C0DEFAULT".into()),
            }
        );
        assert_eq!(
            p.plan(
                &subject("pwd", Some("sh"), None),
                requested(1, 60),
                &defaults()
            ),
            Plan::Auto {
                rule: "read-only".into(),
                approve: true,
                reason: "Approved automatically by policy rule \"read-only\"".into(),
                notify_channel: None,
            }
        );
    }
}
