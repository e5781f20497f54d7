//! Standing grants: made by an approving click, looked up when a request is inserted,
//! revoked by a reviewer, expired by time.
//!
//! The lookup that auto-approves a request runs inside that request's insert
//! transaction on both backends, and a revoke is ordered against it: on SQLite by the
//! one writer, on PostgreSQL by the grant's row lock (the insert locks the grant it
//! uses, `FOR SHARE`; the revoke updates it). So a request inserted after the revoke
//! committed never uses the grant, and a revoke answered to its caller is in force for
//! every request answered later. Queries: `sqlite/grants.rs`, `postgres/grants.rs`
//! (tables `grants` and `grant_uses`, migrations 0006 / postgres 0002).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{dispatch, Fate, NewEvent, Store, StoreResult};
use crate::model::{rfc3339, Approval, ApprovalId, Decision, Status};

/// A stored grant, as `GET /v1/grants` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Grant {
    /// A random UUID.
    pub id: String,
    /// The agent whose requests it approves.
    pub agent: String,
    /// The policy rule it was made under.
    pub rule: String,
    /// `exact` (the same code, whitespace normalised) or `command_prefix`.
    pub match_kind: String,
    /// The request's language; a grant covers requests of the same language only.
    pub language: Option<String>,
    /// The normalised code, or the command prefix.
    pub action_key: String,
    /// The reviewer whose click made it.
    pub granted_by: String,
    /// The request whose approval made it.
    pub approval_id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// When it stops approving requests: RFC 3339, UTC. It stops sooner if the policy
    /// now gives its rule a shorter `grant_max_secs` or changes what the rule matches.
    pub expires_at: String,
    /// When it was revoked (RFC 3339, UTC); `null` while it is not.
    pub revoked_at: Option<String>,
    /// Who revoked it: a reviewer id, or `greenlight (…)` when its maker may no longer
    /// approve under its rule; `null` while it is not revoked.
    pub revoked_by: Option<String>,
    /// The rule's fingerprint when the grant was made (`policy::grants::fingerprint`):
    /// once the rule matches on something else, the grant covers nothing. Not shown.
    #[serde(skip)]
    pub fingerprint: String,
}

impl Grant {
    /// Not revoked and not expired at `now` (the policy checks are the caller's).
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > rfc3339(now)
    }
}

/// A grant to store with the approval that makes it.
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// The approved request's agent: the grant covers that agent's requests only.
    pub agent: String,
    /// The name of the rule that routed the approved request.
    pub rule: String,
    /// That rule's fingerprint now (`policy::grants::fingerprint`).
    pub fingerprint: String,
    /// `exact` or `command_prefix` (`GrantMatch::as_str`).
    pub match_kind: &'static str,
    /// The approved request's language; `None` covers only requests without one.
    pub language: Option<String>,
    /// What later requests must match: the normalised code (`exact`) or the command
    /// prefix (`command_prefix`), as `policy::grants::action_key` made it.
    pub action_key: String,
    /// The reviewer id of the click (a Slack user id or `web:<name>`); requests the
    /// grant approves are decided in this name.
    pub granted_by: String,
    /// The click's time, also the approval's.
    pub created_at: DateTime<Utc>,
    /// `created_at` plus the duration clicked (one the rule offers, at most its
    /// `grant_max_secs`).
    pub expires_at: DateTime<Utc>,
}

/// What a submitted request would need from a grant to be approved by it (computed by
/// the domain from the policy as it is now).
#[derive(Debug, Clone)]
pub struct GrantProbe {
    /// The name of the rule that routes the request now; grants of other rules do
    /// not apply.
    pub rule: String,
    /// The rule's fingerprint now: grants made under another one cover nothing.
    pub fingerprint: String,
    /// The request's language; a grant must have the same one (`None` matches `None`).
    pub language: Option<String>,
    /// The request's action key under the rule's `grant_match`: the normalised code
    /// or its command prefix.
    pub action_key: String,
    /// Grants made before this are void (the rule's `grant_max_secs` now).
    pub made_after: DateTime<Utc>,
}

/// The reason an agent is told for a request a grant approved: it names the grant and
/// the reviewer who made it.
pub fn approved_by_grant(grant: &Grant) -> String {
    format!(
        "Approved by standing grant {} from {} (rule \"{}\", until {})",
        grant.id,
        crate::model::mentions(std::slice::from_ref(&grant.granted_by)),
        grant.rule,
        grant.expires_at
    )
}

/// The fate of a request `grant` approves: decided at once in the grant's maker's
/// name, posted as an FYI (with a Revoke button).
pub(super) fn by_grant(grant: &Grant, at: DateTime<Utc>) -> Fate {
    Fate::Decided {
        decision: Decision {
            status: Status::Approved,
            reason: approved_by_grant(grant),
            decided_by: grant.granted_by.clone(),
            at,
        },
        event: NewEvent::new(
            "grant_used",
            None,
            serde_json::json!({ "grant": grant.id, "granted_by": grant.granted_by,
                                "rule": grant.rule, "expires_at": grant.expires_at }),
        ),
        notify: true,
    }
}

impl Store {
    /// Approves request `id` (if it is still pending) and stores the grant its
    /// approver made, in one transaction: a grant exists only if its approval does.
    /// `None`: the request was not pending; nothing was written.
    pub async fn decide_with_grant(
        &self,
        id: ApprovalId,
        decision: Decision,
        event: NewEvent,
        grant: NewGrant,
    ) -> StoreResult<Option<(Approval, Grant)>> {
        let decided = dispatch!(self, decide_with_grant(id, decision, event, grant))?;
        if let Some((approval, _)) = &decided {
            self.signals.outbox.mark(&approval.channel);
            self.signals.callbacks.decided();
        }
        Ok(decided)
    }

    /// Revokes grant `id` as `by`: every request inserted after this returns is
    /// checked against the revoked grant. The revocation is audited on the trail of
    /// the request that made the grant, and the FYI messages of requests it approved
    /// are rewritten (their Revoke button goes). `Ok(None)`: no such grant; a grant
    /// revoked before is returned as it was.
    pub async fn revoke_grant(
        &self,
        id: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Grant>> {
        let revoked = dispatch!(self, revoke_grant(id, by, now))?;
        Ok(revoked.map(|(grant, channels)| {
            for channel in channels {
                self.signals.outbox.mark(&channel);
            }
            grant
        }))
    }

    /// One grant by id.
    pub async fn grant(&self, id: &str) -> StoreResult<Option<Grant>> {
        dispatch!(self, grant(id))
    }

    /// The grant that approved request `id`, if one did.
    pub async fn grant_used_by(&self, id: ApprovalId) -> StoreResult<Option<Grant>> {
        dispatch!(self, grant_used_by(id))
    }

    /// Grants of `agent` (all agents with `None`), newest first, at most `limit`;
    /// with `active_at`, only those neither revoked nor expired then.
    pub async fn grants(
        &self,
        agent: Option<String>,
        active_at: Option<DateTime<Utc>>,
        limit: u32,
    ) -> StoreResult<Vec<Grant>> {
        dispatch!(self, grants(agent, active_at, limit))
    }
}
