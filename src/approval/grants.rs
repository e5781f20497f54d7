//! Standing grants, the domain side: which requests a grant may be offered for or
//! used on, the "Approve for 30 min" click that makes one, and revocation.
//!
//! A grant is offered, made and used only under a routed rule that allows grants
//! (`grant_max_secs`), is not high-risk, and for a request that needs one approval.
//! All of that is read from the policy as it is now, at each step: a restart with a
//! policy that no longer allows grants (or changed what the rule matches, see
//! `policy::grants::fingerprint`) stops every existing grant from applying.
//!
//! Using a grant is decided in the store, inside the insert's own write
//! (`store::grants`), so a revocation committed before a request is inserted is never
//! missed.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{
    approvers::Refusal,
    outcomes::Answer,
    service::{to_the_end, ApprovalService, ServiceError},
};
use crate::{
    model::{mentions, Approval, ApprovalId, Decision, NewApproval, Reviewer, Status},
    policy::{
        grants::{action_key, GrantRule},
        Action, Plan, Rule, Subject,
    },
    store::{
        grants::{Grant, GrantProbe, NewGrant},
        NewEvent,
    },
};

/// What revoking a grant did, for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now (or it was revoked before): the grant as it stands.
    Done(Box<Grant>),
    /// No grant has that id (for the FYI's Revoke button: no grant approved that
    /// request); nothing changed.
    NotFound,
    /// The person may not revoke it (not an approver of its rule, and not its maker).
    Refused(Refusal),
}

/// Under which rule and for which action a request could be covered by a grant.
struct Eligible<'a> {
    rule: &'a Rule,
    grants: &'a GrantRule,
    key: String,
}

impl ApprovalService {
    /// The rule and action key that make a request eligible for grants, if it is:
    /// routed by a rule with grants, not high-risk, one approval needed.
    fn eligible(
        &self,
        agent: &str,
        language: Option<&str>,
        code: &str,
        context: Option<&serde_json::Value>,
        required_approvals: u32,
    ) -> Option<Eligible<'_>> {
        if required_approvals > 1 {
            return None;
        }
        let subject = Subject {
            agent: Some(agent),
            language,
            code,
            context,
        };
        let rule = self
            .inner
            .policy
            .matching_rule(&subject, required_approvals);
        let Action::Route(route) = &rule.action else {
            return None;
        };
        if route.high_risk || route.required_approvals.is_some_and(|n| n > 1) {
            return None;
        }
        let grants = route.grants.as_ref()?;
        let key = action_key(grants.matching, code, rule.when.command_prefix.as_deref())?;
        Some(Eligible { rule, grants, key })
    }

    fn eligible_approval(&self, approval: &Approval) -> Option<Eligible<'_>> {
        self.eligible(
            &approval.agent,
            approval.language.as_deref(),
            &approval.code,
            approval.context.as_ref(),
            approval.required_approvals,
        )
    }

    /// What a grant must match for `new` (routed by `plan`) to be approved at once.
    pub(super) fn grant_probe(
        &self,
        new: &NewApproval,
        plan: &Plan,
        now: DateTime<Utc>,
    ) -> Option<GrantProbe> {
        let Plan::Route {
            required_approvals,
            high_risk: false,
            ..
        } = plan
        else {
            return None;
        };
        let found = self.eligible(
            &new.agent,
            new.language.as_deref(),
            &new.code,
            new.context.as_ref(),
            *required_approvals,
        )?;
        Some(GrantProbe {
            rule: found.rule.name.clone(),
            fingerprint: found.rule.fingerprint.clone(),
            language: new.language.clone(),
            action_key: found.key,
            made_after: now - seconds(found.grants.max_secs),
        })
    }

    /// The grant durations (seconds) a pending request's message offers; empty when
    /// the policy offers none for it.
    pub(super) fn grant_offer(&self, approval: &Approval) -> Vec<u64> {
        self.eligible_approval(approval)
            .map(|found| found.grants.durations_secs.clone())
            .unwrap_or_default()
    }

    /// An "Approve for `secs`" click: the same checks as Approve, then the request is
    /// approved and the grant stored, in one write. Refused (changing nothing) when
    /// the policy does not offer this duration for the request now.
    pub async fn approve_with_grant(
        &self,
        id: ApprovalId,
        reviewer: &Reviewer,
        secs: u64,
    ) -> Result<Answer, ServiceError> {
        let Some(approval) = self.current(id).await? else {
            return Ok(Answer::Unknown);
        };
        if approval.status.is_final() {
            return Ok(self.already_final(approval, reviewer, "grant", None));
        }
        if let Err(refusal) = self.may_decide(&approval, &reviewer.id, true).await {
            return Ok(self.refuse(approval, reviewer, "grant", None, refusal));
        }
        let offered = self
            .eligible_approval(&approval)
            .filter(|found| found.grants.durations_secs.contains(&secs))
            .map(|found| {
                (
                    found.rule.name.clone(),
                    found.rule.fingerprint.clone(),
                    found.grants.matching,
                    found.key,
                )
            });
        let Some((rule, fingerprint, matching, action_key)) = offered else {
            return Ok(self.refuse(approval, reviewer, "grant", None, Refusal::GrantNotOffered));
        };
        let now = Utc::now();
        let decision = Decision {
            status: Status::Approved,
            reason: format!(
                "{}{}; and the same action from {} for {} (a standing grant)",
                reviewer.surface.approved_clause(),
                mentions(std::slice::from_ref(&reviewer.id)),
                approval.agent,
                crate::policy::grants::duration_label(secs).trim_start_matches("Approve for ")
            ),
            decided_by: reviewer.id.clone(),
            at: now,
        };
        let event = NewEvent::new(
            "decided",
            Some(&reviewer.id),
            json!({ "via": "click", "button": "grant", "status": "approved", "user": reviewer.display(),
                    "grant_secs": secs, "surface": reviewer.surface.as_str() }),
        );
        let grant = NewGrant {
            agent: approval.agent.clone(),
            rule,
            fingerprint,
            match_kind: matching.as_str(),
            language: approval.language.clone(),
            action_key,
            granted_by: reviewer.id.clone(),
            created_at: now,
            expires_at: now + seconds(secs),
        };
        let this = self.clone();
        let decided = to_the_end(async move {
            let decided = this
                .inner
                .store
                .decide_with_grant(id, decision, event, grant)
                .await?;
            if let Some((approval, grant)) = &decided {
                tracing::info!(request_id = %approval.id, grant = %grant.id, secs, "standing grant made");
                this.metrics().grant("made");
                this.decided(approval, false);
            }
            Ok(decided)
        })
        .await?;
        Ok(match decided {
            Some((approval, _)) => Answer::Decided(approval),
            None => self.already_final(self.get(id).await?, reviewer, "grant", None),
        })
    }

    /// Revokes grant `grant_id` for `reviewer`, who must be its maker or allowed to
    /// decide requests like the one that made it (the approver list of its rule as it
    /// is now; fails closed when that cannot be verified).
    pub async fn revoke_grant(
        &self,
        grant_id: &str,
        reviewer: &Reviewer,
    ) -> Result<Revoked, ServiceError> {
        let Some(grant) = self.inner.store.grant(grant_id).await? else {
            return Ok(Revoked::NotFound);
        };
        self.revoke(grant, reviewer).await
    }

    /// The Revoke button on the FYI of request `id`: revokes the grant that approved it.
    pub async fn revoke_grant_of(
        &self,
        id: ApprovalId,
        reviewer: &Reviewer,
    ) -> Result<Revoked, ServiceError> {
        let Some(grant) = self.inner.store.grant_used_by(id).await? else {
            return Ok(Revoked::NotFound);
        };
        self.revoke(grant, reviewer).await
    }

    async fn revoke(&self, grant: Grant, reviewer: &Reviewer) -> Result<Revoked, ServiceError> {
        if grant.granted_by != reviewer.id {
            let made_by = match ApprovalId::parse(&grant.approval_id) {
                Some(id) => self.inner.store.get(id).await?,
                None => None,
            };
            let Some(approval) = made_by else {
                // The request that made it was pruned: only its maker may revoke.
                return Ok(Revoked::Refused(Refusal::NotApprover));
            };
            if let Some(approvers) = self.access(&approval).approvers {
                match self.inner.directory.allows(&approvers, &reviewer.id).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(Revoked::Refused(Refusal::NotApprover)),
                    Err(_) => return Ok(Revoked::Refused(Refusal::Unverified)),
                }
            }
        }
        let this = self.clone();
        let (id, by) = (grant.id.clone(), reviewer.id.clone());
        let revoked = to_the_end(async move {
            let revoked = this.inner.store.revoke_grant(&id, &by, Utc::now()).await?;
            if revoked
                .as_ref()
                .is_some_and(|g| g.revoked_by.as_deref() == Some(by.as_str()))
            {
                tracing::info!(grant = %id, by = %by, "standing grant revoked");
                this.metrics().grant("revoked");
            }
            Ok(revoked)
        })
        .await?;
        Ok(revoked.map_or(Revoked::NotFound, |g| Revoked::Done(Box::new(g))))
    }

    /// Revokes every live grant whose maker may no longer decide requests of its rule
    /// under the policy as loaded now (taken off the approver list, or the list
    /// narrowed), so an offboarded reviewer's grants stop approving. Run once at
    /// start-up, before requests are taken: approver lists change only with the
    /// policy, which is read at start. A maker who cannot be checked (a user-group
    /// lookup failing) loses the grant too: when in doubt, ask a person. A grant whose
    /// making request was pruned is left to its expiry. Returns how many were revoked.
    pub async fn revoke_grants_of_former_approvers(&self) -> Result<usize, ServiceError> {
        let now = Utc::now();
        let live = self.inner.store.grants(None, Some(now), u32::MAX).await?;
        let mut revoked = 0;
        for grant in live {
            let made_by = match ApprovalId::parse(&grant.approval_id) {
                Some(id) => self.inner.store.get(id).await?,
                None => None,
            };
            let Some(approval) = made_by else { continue };
            let Some(approvers) = self.access(&approval).approvers else {
                continue;
            };
            if matches!(
                self.inner
                    .directory
                    .allows(&approvers, &grant.granted_by)
                    .await,
                Ok(true)
            ) {
                continue;
            }
            tracing::warn!(grant = %grant.id, maker = %grant.granted_by, rule = %grant.rule, "standing grant revoked: its maker may no longer decide requests of its rule");
            self.inner
                .store
                .revoke_grant(&grant.id, FORMER_APPROVER, now)
                .await?;
            self.metrics().grant("revoked");
            revoked += 1;
        }
        Ok(revoked)
    }

    /// Grants of `agent` (every agent with `None`), newest first; only live ones
    /// unless `all`.
    pub async fn grants(&self, agent: Option<&str>, all: bool) -> Result<Vec<Grant>, ServiceError> {
        let active_at = (!all).then(Utc::now);
        Ok(self
            .inner
            .store
            .grants(agent.map(str::to_owned), active_at, 500)
            .await?)
    }
}

/// Who revoked a grant whose maker may no longer decide requests of its rule (the
/// `revoked_by` the trail and the FYI show).
pub const FORMER_APPROVER: &str = "greenlight (its maker is no longer an approver of the rule)";

fn seconds(secs: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        metrics::Metrics,
        policy::{parse, Defaults},
        store::Store,
    };

    const POLICY: &str = r#"
[[rule]]
name = "tests"
code = '^cargo test'
grant_max_secs = 3600
grant_durations_secs = [1800]

[[rule]]
name = "risky"
code = '^deploy'
high_risk = true

[[rule]]
name = "git"
command_prefix = ["git log", "git status"]
grant_max_secs = 600
grant_match = "command_prefix"
"#;

    async fn service(dir: &tempfile::TempDir) -> ApprovalService {
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = Store::connect(&url).await.expect("store");
        let policy = parse(POLICY, "p.toml").expect("policy");
        ApprovalService::new(
            store,
            Arc::new(crate::web::NoSlackGroups),
            Defaults {
                channel: "C1".into(),
                approvers: None,
            },
            Arc::new(policy),
            Metrics::new(),
        )
    }

    fn new(agent: &str, code: &str, required: u32) -> NewApproval {
        NewApproval {
            agent: agent.into(),
            code: code.into(),
            language: Some("bash".into()),
            title: None,
            context: None,
            timeout_secs: 60,
            requester_slack_id: None,
            required_approvals: required,
            idempotency_key: None,
            request_hash: code.into(),
            callback_url: None,
        }
    }

    fn reviewer() -> Reviewer {
        Reviewer {
            id: "U0ALICE".into(),
            name: None,
            surface: crate::model::Surface::Slack,
        }
    }

    async fn granted(service: &ApprovalService, agent: &str, code: &str) -> Approval {
        let (first, _) = service
            .submit(new(agent, code, 1), None)
            .await
            .expect("submit");
        assert_eq!(first.status, Status::Pending);
        let answer = service
            .approve_with_grant(first.id, &reviewer(), 1800)
            .await
            .expect("grant");
        assert!(
            matches!(answer, Answer::Decided(ref a) if a.status == Status::Approved),
            "{answer:?}"
        );
        first
    }

    #[tokio::test]
    async fn a_grant_covers_the_same_action_of_the_same_agent_only() {
        let dir = tempfile::tempdir().expect("dir");
        let service = service(&dir).await;
        granted(&service, "ci", "cargo test  --all").await;
        let status = |agent: &'static str, code: &'static str, required: u32| {
            let service = service.clone();
            async move {
                service
                    .submit(new(agent, code, required), None)
                    .await
                    .expect("submit")
                    .0
            }
        };
        let same = status("ci", "cargo test \t --all\n\n", 1).await;
        assert_eq!(same.status, Status::Approved);
        assert_eq!(same.decided_by.as_deref(), Some("U0ALICE"));
        assert!(same.reason.contains("standing grant"), "{}", same.reason);
        assert_eq!(
            status("ci", "cargo test --lib", 1).await.status,
            Status::Pending
        );
        assert_eq!(
            status("other", "cargo test --all", 1).await.status,
            Status::Pending
        );
        // An agent asking for two approvals is never covered.
        assert_eq!(
            status("ci", "cargo test --all", 2).await.status,
            Status::Pending
        );
    }

    #[tokio::test]
    async fn grants_are_not_offered_on_high_risk_or_n_of_m_requests() {
        let dir = tempfile::tempdir().expect("dir");
        let service = service(&dir).await;
        let (risky, _) = service
            .submit(new("ci", "deploy now", 1), None)
            .await
            .expect("submit");
        assert!(service.grant_offer(&risky).is_empty());
        let answer = service
            .approve_with_grant(risky.id, &reviewer(), 1800)
            .await
            .expect("click");
        assert!(
            matches!(
                answer,
                Answer::Refused {
                    refusal: Refusal::GrantNotOffered,
                    ..
                }
            ),
            "{answer:?}"
        );
        let (two, _) = service
            .submit(new("ci", "cargo test", 2), None)
            .await
            .expect("submit");
        assert!(service.grant_offer(&two).is_empty());
        let (one, _) = service
            .submit(new("ci", "cargo test", 1), None)
            .await
            .expect("submit");
        assert_eq!(service.grant_offer(&one), vec![1800]);
        // A duration the rule does not offer changes nothing.
        let answer = service
            .approve_with_grant(one.id, &reviewer(), 3600)
            .await
            .expect("click");
        assert!(matches!(answer, Answer::Refused { .. }), "{answer:?}");
        assert!(service.grants(None, true).await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn command_prefix_grants_cover_the_same_prefix() {
        let dir = tempfile::tempdir().expect("dir");
        let service = service(&dir).await;
        let (first, _) = service
            .submit(new("ci", "git log -n 1", 1), None)
            .await
            .expect("submit");
        assert_eq!(service.grant_offer(&first), vec![600]);
        service
            .approve_with_grant(first.id, &reviewer(), 600)
            .await
            .expect("grant");
        let (later, _) = service
            .submit(new("ci", "git log --oneline", 1), None)
            .await
            .expect("submit");
        assert_eq!(later.status, Status::Approved);
        let (other, _) = service
            .submit(new("ci", "git status", 1), None)
            .await
            .expect("submit");
        assert_eq!(other.status, Status::Pending);
    }

    #[tokio::test]
    async fn a_revoke_queued_before_a_submission_wins() {
        let dir = tempfile::tempdir().expect("dir");
        let service = service(&dir).await;
        granted(&service, "ci", "cargo test").await;
        let grant = service
            .grants(Some("ci"), false)
            .await
            .expect("list")
            .remove(0);
        // Both writes queue on the one writer, the revoke first: the insert's lookup
        // runs after it (in the same batch or a later one) and must not use it.
        let (revoked, submitted) = tokio::join!(
            service
                .inner
                .store
                .revoke_grant(&grant.id, "U0ALICE", Utc::now()),
            async {
                tokio::task::yield_now().await;
                service.submit(new("ci", "cargo test", 1), None).await
            }
        );
        assert!(revoked
            .expect("revoke")
            .is_some_and(|g| g.revoked_at.is_some()));
        assert_eq!(submitted.expect("submit").0.status, Status::Pending);
        assert!(service
            .grants(Some("ci"), false)
            .await
            .expect("list")
            .is_empty());
        assert_eq!(
            service.grants(Some("ci"), true).await.expect("list").len(),
            1
        );
    }

    #[tokio::test]
    async fn an_expired_grant_covers_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let service = service(&dir).await;
        granted(&service, "ci", "cargo test").await;
        let grant = service
            .grants(Some("ci"), false)
            .await
            .expect("list")
            .remove(0);
        // Age the grant in place (the store has no clock of its own to move).
        let id = grant.id.clone();
        service
            .inner
            .store
            .write(Box::new(move |conn| {
                conn.execute(
                    "UPDATE grants SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = ?",
                    [id],
                )?;
                Ok(())
            }))
            .await
            .expect("age");
        let (later, _) = service
            .submit(new("ci", "cargo test", 1), None)
            .await
            .expect("submit");
        assert_eq!(later.status, Status::Pending);
    }
}
