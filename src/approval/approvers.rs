//! Who may decide a request: the approver list (user ids and user groups) and the
//! cache of user group members.
//!
//! Group membership comes from Slack (`usergroups.users.list`) and is cached for a
//! bounded time, so a click is answered without a Slack round trip most of the time
//! and someone removed from a group loses the right within [`GROUP_CACHE_TTL`].
//! Every doubt fails closed: only positive evidence (the user is listed, or is a
//! member of a listed group Slack just told us about) lets a click through.

use std::{collections::HashSet, sync::Arc, time::Duration};

use dashmap::DashMap;
use futures::future::BoxFuture;
use tokio::time::Instant;

/// Where user group members come from: Slack's `usergroups.users.list` in production
/// (implemented by the Slack adapter), anything in tests. `Err` carries what went
/// wrong, for the log.
pub trait GroupMembers: Send + Sync {
    fn members<'a>(
        &'a self,
        group: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
}

/// How long a group's member list is trusted.
pub const GROUP_CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// A group lookup happens before the click is acked (3 s budget, shared with the
/// database write), so it gets less than that.
pub const GROUP_LOOKUP_TIMEOUT: Duration = Duration::from_millis(1500);

/// Why someone may not decide a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not on the request's approver list.
    NotApprover,
    /// The requester tried to approve their own request.
    SelfApproval,
    /// The approver list names a user group whose members could not be read.
    Unverified,
    /// The policy changed since the request was routed and now denies requests like
    /// it: approving is refused (denying is still possible).
    PolicyForbids,
}

impl Refusal {
    /// The `why` recorded in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotApprover => "not_approver",
            Refusal::SelfApproval => "self_approval",
            Refusal::Unverified => "unverified",
            Refusal::PolicyForbids => "policy_forbids",
        }
    }

    /// What the person is told (ephemeral note, or the modal's field error).
    pub fn explain(self) -> &'static str {
        match self {
            Refusal::NotApprover => {
                "You are not an approver for this request, so your click changed nothing."
            }
            Refusal::SelfApproval => {
                "You asked for this request, so you cannot approve it yourself; someone else must. You may still deny it."
            }
            Refusal::PolicyForbids => {
                "The approval policy now denies requests like this one, so it can no longer be approved; deny it or let it expire."
            }
            Refusal::Unverified => {
                "Your click changed nothing: greenlight could not verify that you are an approver for this request (Slack did not list the approver group's members). Try again in a moment."
            }
        }
    }
}

/// Resolves approver lists, caching user group members.
pub struct Directory {
    source: Arc<dyn GroupMembers>,
    ttl: Duration,
    groups: DashMap<String, (Instant, Arc<HashSet<String>>)>,
}

impl Directory {
    pub fn new(source: Arc<dyn GroupMembers>) -> Self {
        Self {
            source,
            ttl: GROUP_CACHE_TTL,
            groups: DashMap::new(),
        }
    }

    /// Is `user` one of `approvers` (directly, or as a member of a listed group)?
    /// `Err` when the answer depends on a group that could not be read: the caller
    /// must treat that as "no".
    pub async fn allows(&self, approvers: &[String], user: &str) -> Result<bool, String> {
        if approvers.iter().any(|a| a == user) {
            return Ok(true);
        }
        let mut failure = None;
        for group in approvers.iter().filter(|a| a.starts_with('S')) {
            match self.members(group).await {
                Ok(members) if members.contains(user) => return Ok(true),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(usergroup = %group, %error, "could not read user group members");
                    failure = Some(error);
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(false),
        }
    }

    async fn members(&self, group: &str) -> Result<Arc<HashSet<String>>, String> {
        if let Some(entry) = self.groups.get(group) {
            let (fetched, members) = entry.value();
            if fetched.elapsed() < self.ttl {
                return Ok(members.clone());
            }
        }
        let deadline = Instant::now() + GROUP_LOOKUP_TIMEOUT;
        let members: Arc<HashSet<String>> = Arc::new(
            self.source
                .members(group, deadline)
                .await?
                .into_iter()
                .collect(),
        );
        self.groups
            .insert(group.to_owned(), (Instant::now(), members.clone()));
        Ok(members)
    }
}
