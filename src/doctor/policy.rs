//! `doctor`'s policy check: the policy file loads as `serve` would load it, and every
//! routed rule's approvers can reach the approvals the rule requires.
//!
//! Lists of user ids are checked when the policy loads ([`crate::policy::quorum`]);
//! a list with user groups (`S…`) depends on who is in them, which only Slack knows,
//! so this is where it is checked: each group's members are read with
//! `usergroups.users.list` (scope `usergroups:read`, in the shipped manifests), and a
//! rule whose listed users and group members together are fewer people than its
//! `required_approvals` gets a warning (every request it matches would expire).

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::{Duration, Instant};

use super::{Check, Level};
use crate::{
    config::Config,
    policy::{quorum, Action, Policy, DEFAULT_RULE_NAME},
    slack::api::SlackClient,
};

const NAME: &str = "policy";
/// How long one group lookup may take: the operator is waiting at a terminal.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// One routed rule's approvers and the approvals it requires.
struct Quorum<'a> {
    rule: &'a str,
    approvers: &'a [String],
    required: u32,
}

/// The policy's lines of the report: one `ok`, or a `FAIL` / `warn` per problem.
/// Without Slack (`bot` is `None`) a user group cannot be read, and admits nobody.
pub(super) async fn check(bot: Option<&SlackClient>, config: &Config) -> Vec<Check> {
    let policy = match crate::policy::load(config.policy_path.as_deref()) {
        Ok(policy) => policy,
        Err(error) => return vec![Check::new(Level::Fail, NAME, error.to_string())],
    };
    if let Err(error) = policy.check_approvers(config.approvers.as_deref()) {
        return vec![Check::new(Level::Fail, NAME, error.to_string())];
    }
    // Without Slack `serve` refuses a rule no review-page reviewer could decide.
    if bot.is_none() {
        let reviewers = crate::policy::web_only::reviewer_ids(&config.reviewers);
        if let Err(error) = policy.check_web_only(config.approvers.as_deref(), &reviewers) {
            return vec![Check::new(Level::Fail, NAME, error.to_string())];
        }
    }
    let mut groups: BTreeMap<String, Result<Vec<String>, String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for quorum in quorums(&policy, config) {
        let mut people: BTreeSet<String> = BTreeSet::new();
        let mut parts = Vec::new();
        let mut unread = false;
        for id in quorum.approvers {
            if !quorum::is_group(id) {
                people.insert(id.clone());
                parts.push(id.clone());
                continue;
            }
            let Some(bot) = bot else {
                unread = true;
                problems.push(Check::new(Level::Warn, NAME, format!(
                    "rule \"{}\": user group {id} cannot be read without Slack, so it admits nobody: name reviewers (web:<name>) instead",
                    quorum.rule
                )));
                continue;
            };
            if !groups.contains_key(id) {
                let members = bot
                    .usergroup_members(id, Instant::now() + LOOKUP_TIMEOUT)
                    .await
                    .map_err(|e| e.code().to_owned());
                groups.insert(id.clone(), members);
            }
            match &groups[id] {
                Ok(members) => {
                    people.extend(members.iter().cloned());
                    parts.push(format!("{id}: {}", count(members.len(), "member")));
                }
                Err(code) => {
                    unread = true;
                    problems.push(Check::new(Level::Warn, NAME, format!(
                        "rule \"{}\": cannot read the members of user group {id} (Slack says {code}), so its quorum of {} is unchecked: the bot token needs usergroups:read",
                        quorum.rule, quorum.required
                    )));
                }
            }
        }
        if !unread && people.len() < quorum.required as usize {
            problems.push(Check::new(Level::Warn, NAME, format!(
                "rule \"{}\" requires {} approvals but its approvers ({}) are {}: every request it matches would expire; add people or lower required_approvals",
                quorum.rule,
                quorum.required,
                parts.join(", "),
                count(people.len(), "person")
            )));
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    let read: Vec<String> = groups
        .iter()
        .filter_map(|(id, members)| {
            Some(format!(
                "{id}: {}",
                count(members.as_ref().ok()?.len(), "member")
            ))
        })
        .collect();
    let mut detail = format!(
        "{} ({}): every quorum can be reached",
        policy.source,
        count(policy.rules.len(), "rule")
    );
    if !read.is_empty() {
        detail.push_str(&format!(" ({})", read.join(", ")));
    }
    vec![Check::new(Level::Ok, NAME, detail)]
}

/// "1 member", "3 members", "2 people".
fn count(n: usize, noun: &str) -> String {
    match (n, noun) {
        (1, _) => format!("1 {noun}"),
        (_, "person") => format!("{n} people"),
        _ => format!("{n} {noun}s"),
    }
}

/// Every routed rule whose approvers name a user group (the rest were checked when
/// the policy loaded), with the built-in default rule last.
fn quorums<'a>(policy: &'a Policy, config: &'a Config) -> Vec<Quorum<'a>> {
    let mut out: Vec<Quorum<'a>> = policy
        .rules
        .iter()
        .filter_map(|rule| match &rule.action {
            Action::Route(route) => Some(Quorum {
                rule: &rule.name,
                approvers: route.approvers.as_deref().or(config.approvers.as_deref())?,
                required: route.required_approvals.unwrap_or(1),
            }),
            _ => None,
        })
        .collect();
    if let Some(approvers) = config.approvers.as_deref() {
        out.push(Quorum {
            rule: DEFAULT_RULE_NAME,
            approvers,
            required: 1,
        });
    }
    out.retain(|q| q.approvers.iter().any(|a| quorum::is_group(a)));
    out
}
