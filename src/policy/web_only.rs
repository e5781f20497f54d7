//! Whether every routed rule can still be decided when Slack is not configured.
//!
//! Without the Slack settings the review page is the only surface, and only its
//! reviewers (`GREENLIGHT_REVIEWERS`, or the one local reviewer `web:local`) can decide.
//! A reviewer's identity is their Slack user id when `GREENLIGHT_REVIEWERS` gives one,
//! and `web:<name>` otherwise; user groups (`S…`) cannot be read without Slack and admit
//! nobody (see `crate::web::NoSlackGroups`). A rule whose approvers (plus its
//! `escalate_to`, who may decide once the request is escalated) include fewer reviewers
//! than it requires approvals would hold every matching request until its deadline
//! denies it: `serve` and `policy check` refuse such a policy instead, naming the rule
//! and the numbers.

use std::collections::BTreeSet;

use super::{Action, Policy, PolicyError, Route};

/// The identities of the review page's reviewers as `serve` would have them:
/// `configured` (`GREENLIGHT_REVIEWERS`), or the one local reviewer when it is empty.
pub fn reviewer_ids(configured: &[crate::web::reviewers::WebReviewer]) -> Vec<String> {
    if configured.is_empty() {
        vec![crate::model::web_reviewer_id(crate::web::LOCAL_REVIEWER)]
    } else {
        configured
            .iter()
            .map(crate::web::reviewers::WebReviewer::id)
            .collect()
    }
}

impl Policy {
    /// Refuses the first routed rule that the review page's `reviewers` (their
    /// identities, as above) can never decide, given `approvers` (`GREENLIGHT_APPROVERS`,
    /// `None` when unset: then the reviewers are the approver list). The error points at
    /// the rule's `required_approvals` (or its first line) and is one line.
    pub fn check_web_only(
        &self,
        approvers: Option<&[String]>,
        reviewers: &[String],
    ) -> Result<(), PolicyError> {
        let reviewers: BTreeSet<&str> = reviewers.iter().map(String::as_str).collect();
        for rule in &self.rules {
            let Action::Route(route) = &rule.action else {
                continue;
            };
            let required = route.required_approvals.unwrap_or(1);
            let eligible = eligible(route, approvers, &reviewers);
            if (eligible.len() as u64) < u64::from(required) {
                let who = if eligible.is_empty() {
                    "none of its approvers is one".to_owned()
                } else {
                    format!(
                        "only {} of its approvers {} ({})",
                        eligible.len(),
                        if eligible.len() == 1 { "is one" } else { "are" },
                        eligible.into_iter().collect::<Vec<_>>().join(", ")
                    )
                };
                return Err(PolicyError {
                    file: self.source.clone(),
                    position: rule.required_at.or(Some((rule.line, 1))),
                    problem: format!(
                        "rule \"{}\": needs {required} approval{}, but Slack is not configured, so only review-page reviewers can decide, and {who} (reviewers: {}); every matching request would expire",
                        rule.name,
                        if required == 1 { "" } else { "s" },
                        reviewers.iter().copied().collect::<Vec<_>>().join(", "),
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The reviewers who may approve requests of `route`: its approver list (or
/// `approvers`, or every reviewer), plus `escalate_to` when the rule escalates before
/// its own timeout cap, kept to those who can sign in to the review page.
fn eligible<'a>(
    route: &'a Route,
    approvers: Option<&'a [String]>,
    reviewers: &BTreeSet<&'a str>,
) -> BTreeSet<&'a str> {
    let Some(listed) = route.approvers.as_deref().or(approvers) else {
        return reviewers.clone();
    };
    let mut ids: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let escalates_in_time = route
        .nudges
        .escalate_after_secs
        .is_some_and(|after| route.timeout_secs.is_none_or(|cap| after < cap));
    if escalates_in_time {
        ids.extend(
            route
                .nudges
                .escalate_to
                .iter()
                .flatten()
                .map(String::as_str),
        );
    }
    ids.retain(|id| reviewers.contains(id));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> Policy {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("p.toml");
        std::fs::write(&path, toml).expect("write");
        super::super::load(Some(&path)).expect("valid policy")
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_rule_only_slack_people_may_decide_is_refused_without_slack() {
        let p = policy("[[rule]]\nname = \"prod\"\napprovers = [\"U0ALICE\", \"S0SRE\"]\n");
        let err = p
            .check_web_only(None, &ids(&["web:local"]))
            .expect_err("nobody can decide")
            .to_string();
        assert!(
            err.contains(":1:1: rule \"prod\": needs 1 approval, but Slack is not configured")
                && err.contains("none of its approvers is one")
                && err.contains("reviewers: web:local"),
            "{err}"
        );
        // A reviewer carrying that Slack id can decide.
        assert!(p.check_web_only(None, &ids(&["U0ALICE"])).is_ok());
    }

    #[test]
    fn quorum_counts_reviewers_and_escalate_to() {
        let two = policy(
            "[[rule]]\nname = \"pair\"\napprovers = [\"web:a\", \"web:b\"]\nrequired_approvals = 2\n",
        );
        let err = two
            .check_web_only(None, &ids(&["web:a", "web:c"]))
            .expect_err("one reviewer of two")
            .to_string();
        assert!(
            err.contains(":4:22: rule \"pair\": needs 2 approvals")
                && err.contains("only 1 of its approvers is one (web:a)"),
            "{err}"
        );
        assert!(two.check_web_only(None, &ids(&["web:a", "web:b"])).is_ok());

        // A floor with no own list: the reviewers (or GREENLIGHT_APPROVERS) are the list.
        let floor = policy("[[rule]]\nname = \"floor\"\nrequired_approvals = 2\n");
        assert!(floor.check_web_only(None, &ids(&["web:local"])).is_err());
        assert!(floor
            .check_web_only(None, &ids(&["web:a", "web:b"]))
            .is_ok());
        assert!(floor
            .check_web_only(Some(&ids(&["web:a", "U0X"])), &ids(&["web:a", "web:b"]))
            .is_err());

        // escalate_to may decide once escalated: it counts when escalation comes in time.
        let escalates = policy(
            "[[rule]]\nname = \"esc\"\napprovers = [\"U0ALICE\"]\nescalate_after_secs = 60\nescalate_to = [\"web:local\"]\n",
        );
        assert!(escalates.check_web_only(None, &ids(&["web:local"])).is_ok());
        let too_late = policy(
            "[[rule]]\nname = \"late\"\napprovers = [\"U0ALICE\"]\ntimeout_secs = 60\nescalate_after_secs = 60\nescalate_to = [\"web:local\"]\n",
        );
        assert!(too_late.check_web_only(None, &ids(&["web:local"])).is_err());
    }
}
