//! Whether an approver list can ever supply the approvals a request needs.
//!
//! A rule with `approvers = ["U0AAA", "U0BBB"]` and `required_approvals = 3` would
//! hold every matching request until it expires: a third person does not exist. Nor
//! can a request whose requester (`requester_slack_id`, who may never approve their own
//! request) is one of only two listed people ever get two approvals. These are caught
//! where they can be:
//!
//! - a rule's own list: when the policy file is loaded ([`super::parse`]), with the
//!   position of `required_approvals`;
//! - a rule that relies on `GREENLIGHT_APPROVERS`: at start-up, in `policy check` and
//!   in `doctor` ([`super::Policy::check_approvers`]);
//! - a submission (the agent's own `required_approvals` and requester): at submit,
//!   refused with 422.
//!
//! A list that names user groups (`S…`) depends on the groups' members, which only
//! Slack knows: it is never refused here, and `greenlight doctor` looks the groups up.

use std::{collections::BTreeSet, fmt};

/// Approvals an approver list can never supply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// What is needed.
    pub required: u32,
    /// The distinct listed people who may approve (the requester left out).
    pub people: Vec<String>,
    /// The requester, when they are on the list (and so do not count).
    pub requester: Option<String>,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let people = match self.people.len() {
            0 => "nobody".to_owned(),
            1 => format!("only 1 person ({})", self.people.join(", ")),
            n => format!("only {n} people ({})", self.people.join(", ")),
        };
        write!(
            f,
            "{} approvals can never be reached: the approvers are {people}",
            self.required
        )?;
        if let Some(requester) = &self.requester {
            write!(
                f,
                " once the requester {requester} is left out (nobody approves their own request)"
            )?;
        }
        Ok(())
    }
}

/// Is `id` a user group (`S…`), whose members only Slack knows?
pub fn is_group(id: &str) -> bool {
    id.starts_with('S')
}

/// The shortfall when `approvers` can never give `required` approvals, not counting
/// `requester`. `None` when they can, or when the list names a user group (its size is
/// unknown here; see the module docs).
pub fn shortfall(
    approvers: &[String],
    required: u32,
    requester: Option<&str>,
) -> Option<Shortfall> {
    if approvers.iter().any(|a| is_group(a)) {
        return None;
    }
    let listed: BTreeSet<&str> = approvers.iter().map(String::as_str).collect();
    let requester = requester.filter(|r| listed.contains(r));
    let people: Vec<String> = listed
        .into_iter()
        .filter(|a| Some(*a) != requester)
        .map(str::to_owned)
        .collect();
    (people.len() < required as usize).then(|| Shortfall {
        required,
        people,
        requester: requester.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn users_only_lists_are_counted() {
        let two = list(&["U0AAA", "U0BBB"]);
        assert_eq!(shortfall(&two, 2, None), None);
        let short = shortfall(&two, 3, None).expect("short");
        assert_eq!(
            short.to_string(),
            "3 approvals can never be reached: the approvers are only 2 people (U0AAA, U0BBB)"
        );
        // The same person twice is one person.
        assert!(shortfall(&list(&["U0AAA", "U0AAA"]), 2, None).is_some());
    }

    #[test]
    fn the_requester_does_not_count() {
        let two = list(&["U0AAA", "U0BBB"]);
        let short = shortfall(&two, 2, Some("U0AAA")).expect("short");
        assert_eq!(short.people, ["U0BBB"]);
        assert!(short.to_string().contains("requester U0AAA is left out"));
        assert_eq!(shortfall(&two, 2, Some("U0CCC")), None);
        assert_eq!(shortfall(&two, 1, Some("U0AAA")), None);
        let alone = shortfall(&list(&["U0AAA"]), 1, Some("U0AAA")).expect("short");
        assert!(
            alone.to_string().contains("approvers are nobody"),
            "{alone}"
        );
    }

    #[test]
    fn groups_are_left_to_doctor() {
        assert_eq!(shortfall(&list(&["S0SRE"]), 10, None), None);
        assert_eq!(
            shortfall(&list(&["U0AAA", "S0SRE"]), 5, Some("U0AAA")),
            None
        );
    }
}
