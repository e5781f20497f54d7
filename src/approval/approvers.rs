//! Who may decide a request: the approver list (user ids and user groups) and the
//! cache of user group members.
//!
//! Group membership comes from Slack (`usergroups.users.list`) and is cached for a
//! bounded time, so a click is answered without a Slack round trip most of the time
//! and someone removed from a group loses the right within [`GROUP_CACHE_TTL`].
//! Every doubt fails closed: only positive evidence (the user is listed, or is a
//! member of a listed group Slack just told us about) lets a click through.
//!
//! A group Slack could not list is not asked about again on every click: its
//! lookups back off (from [`GROUP_RETRY_FIRST`], doubling to [`GROUP_RETRY_MAX`],
//! jittered), clicks in between are refused at once as unverified, and the failure
//! is logged once per backoff step. A reviewer clicking again and again during a
//! Slack outage does not turn into a stream of calls that cannot succeed.

use std::{collections::HashSet, sync::Arc, time::Duration};

use dashmap::DashMap;
use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::backoff::{Backoff, Retrying};

/// Where user group members come from: Slack's `usergroups.users.list` in production
/// (implemented by the Slack adapter), anything in tests. `Err` carries what went
/// wrong, for the log.
pub trait GroupMembers: Send + Sync {
    /// The user ids (`U…`/`W…`) in user group `group` (`S…`), answered by `deadline`
    /// ([`GROUP_LOOKUP_TIMEOUT`] after the lookup began: it runs before the click is
    /// acked). `Err` is one line saying what failed; the click is then refused.
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
/// After a failed lookup, Slack is not asked about that group again for this long;
/// the wait doubles with each further failure, up to [`GROUP_RETRY_MAX`].
pub const GROUP_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between lookups of a group that keeps failing.
pub const GROUP_RETRY_MAX: Duration = Duration::from_secs(60);

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
    /// "Approve for …" on a request the policy (now) offers no such grant for.
    GrantNotOffered,
}

impl Refusal {
    /// The `why` recorded in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotApprover => "not_approver",
            Refusal::SelfApproval => "self_approval",
            Refusal::Unverified => "unverified",
            Refusal::PolicyForbids => "policy_forbids",
            Refusal::GrantNotOffered => "grant_not_offered",
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
            Refusal::GrantNotOffered => {
                "The approval policy does not (or no longer) offer a standing grant for this request, so your click changed nothing; use Approve."
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
    /// Groups whose last lookup failed: when Slack may be asked again.
    failing: DashMap<String, Failing>,
}

/// A group whose lookups fail.
struct Failing {
    retrying: Retrying,
    retry_at: Instant,
    error: String,
}

impl Directory {
    /// A directory reading group members from `source` (the Slack client, or
    /// `NoSlackGroups`, which refuses every group, without Slack), trusting each list
    /// for [`GROUP_CACHE_TTL`].
    pub fn new(source: Arc<dyn GroupMembers>) -> Self {
        Self {
            source,
            ttl: GROUP_CACHE_TTL,
            groups: DashMap::new(),
            failing: DashMap::new(),
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
                // Logged by `members`, once per backoff step.
                Err(error) => failure = Some(error),
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
        if let Some(failing) = self.failing.get(group) {
            if Instant::now() < failing.retry_at {
                return Err(format!(
                    "{} (Slack is asked again in {} ms)",
                    failing.error,
                    (failing.retry_at - Instant::now()).as_millis()
                ));
            }
        }
        let deadline = Instant::now() + GROUP_LOOKUP_TIMEOUT;
        match self.source.members(group, deadline).await {
            Ok(members) => {
                let members: Arc<HashSet<String>> = Arc::new(members.into_iter().collect());
                self.failing.remove(group);
                self.groups
                    .insert(group.to_owned(), (Instant::now(), members.clone()));
                Ok(members)
            }
            Err(error) => {
                self.lookup_failed(group, &error);
                Err(error)
            }
        }
    }

    /// Counts a failed lookup of `group`: sets when Slack may be asked again, and
    /// logs once per backoff step.
    fn lookup_failed(&self, group: &str, error: &str) {
        let mut failing = self
            .failing
            .entry(group.to_owned())
            .or_insert_with(|| Failing {
                retrying: Retrying::new(Backoff::new(GROUP_RETRY_FIRST, GROUP_RETRY_MAX)),
                retry_at: Instant::now(),
                error: String::new(),
            });
        let step = failing.retrying.failed();
        failing.retry_at = Instant::now() + step.delay;
        failing.error = error.to_owned();
        if step.log {
            tracing::warn!(
                usergroup = %group,
                %error,
                failed_lookups = step.failures,
                retry_in_ms = step.delay.as_millis() as u64,
                "could not read user group members; clicks needing them are refused until Slack answers"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    };

    /// A group source that fails while `down` and counts the calls it gets.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        calls: AtomicUsize,
        members: Mutex<Vec<String>>,
    }

    impl GroupMembers for Flaky {
        fn members<'a>(
            &'a self,
            _group: &'a str,
            _deadline: Instant,
        ) -> BoxFuture<'a, Result<Vec<String>, String>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) {
                    return Err("Slack refused usergroups.users.list: fatal_error".into());
                }
                Ok(self.members.lock().expect("lock").clone())
            })
        }
    }

    fn directory(source: &Arc<Flaky>) -> Directory {
        Directory::new(source.clone())
    }

    /// A reviewer clicking ten times a second for ten minutes of a Slack outage:
    /// Slack hears about the group a few dozen times, not six thousand, and every
    /// click is refused (fail closed). Once Slack answers again, so does the group.
    #[tokio::test(start_paused = true)]
    async fn lookups_of_a_failing_group_back_off_and_still_fail_closed() {
        let source = Arc::new(Flaky::default());
        *source.members.lock().expect("lock") = vec!["U0ALICE".into()];
        source.down.store(true, Ordering::SeqCst);
        let dir = directory(&source);
        let approvers = vec!["S0TEAM".to_owned()];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(600) {
            assert!(dir.allows(&approvers, "U0ALICE").await.is_err());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let calls = source.calls.load(Ordering::SeqCst);
        assert!((10..=40).contains(&calls), "{calls} lookups in ten minutes");

        source.down.store(false, Ordering::SeqCst);
        tokio::time::advance(GROUP_RETRY_MAX).await;
        assert_eq!(dir.allows(&approvers, "U0ALICE").await, Ok(true));
        assert_eq!(dir.allows(&approvers, "U0BOB").await, Ok(false));
    }

    #[tokio::test(start_paused = true)]
    async fn one_failure_only_briefly_holds_lookups_back() {
        let source = Arc::new(Flaky::default());
        *source.members.lock().expect("lock") = vec!["U0ALICE".into()];
        let dir = directory(&source);
        let approvers = vec!["S0TEAM".to_owned()];
        source.down.store(true, Ordering::SeqCst);
        let refused = dir.allows(&approvers, "U0ALICE").await;
        assert!(refused.is_err());
        source.down.store(false, Ordering::SeqCst);
        // Within the first backoff: refused without asking Slack.
        let held = dir.allows(&approvers, "U0ALICE").await;
        assert!(held.expect_err("held back").contains("asked again"));
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(GROUP_RETRY_FIRST).await;
        assert_eq!(dir.allows(&approvers, "U0ALICE").await, Ok(true));
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);
    }
}
