//! Reminders and escalation, the domain side: scheduling a request's first nudge at
//! submit, firing due ones (the nudge worker, which is the deadline worker's loop over
//! another source: `deadlines::run` with [`NudgeSource`]), and who may decide once a
//! request was escalated.
//!
//! What is due is computed from the policy as it is now (`policy::nudges`), so a
//! restart with other settings applies them to pending requests at their next look.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::json;

use super::{approvers::Refusal, deadlines::DeadlineSource, ApprovalService, ServiceError};
use crate::{
    model::Approval,
    policy::{
        nudges::{NudgeState, Nudges},
        Action, Plan, Subject,
    },
    store::{nudges::Fire, NewEvent},
};

/// Nudges fired per look; more due ones are taken at once in the next look.
const BATCH: u32 = 64;

/// The nudge worker's source: `deadlines::run(&NudgeSource(service), store.nudge_signal(), …)`.
pub struct NudgeSource(pub ApprovalService);

impl DeadlineSource for NudgeSource {
    fn next_deadline(&self) -> BoxFuture<'_, Result<Option<DateTime<Utc>>, ServiceError>> {
        Box::pin(async move { Ok(self.0.store().next_nudge().await?) })
    }

    fn expire_due(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<usize, ServiceError>> {
        Box::pin(self.0.nudge_due(now))
    }
}

/// Why a due reminder for `approval` cannot be sent, or `None` when it can: reminders
/// are replies in the thread of the request's Slack message, so there must be one.
fn reminder_skipped(approval: &Approval) -> Option<&'static str> {
    if approval.channel.is_empty() {
        Some("Slack is not configured: reminders are replies in the request's Slack thread, and the review page shows the request already")
    } else if approval.message_ts.is_none() {
        Some("the request's Slack message has not been posted, so there is no thread to remind in")
    } else {
        None
    }
}

impl ApprovalService {
    /// The reminder and escalation settings of the rule that routes `approval` now.
    pub(super) fn nudges_for(&self, approval: &Approval) -> Nudges {
        let subject = Subject {
            agent: Some(&approval.agent),
            language: approval.language.as_deref(),
            code: &approval.code,
            context: approval.context.as_ref(),
        };
        let rule = self
            .inner
            .policy
            .matching_rule(&subject, approval.required_approvals);
        match &rule.action {
            Action::Route(route) => route.nudges.clone(),
            _ => Nudges::default(),
        }
    }

    /// When a request routed by `plan` at `now` is first due for a nudge.
    pub(super) fn first_nudge(&self, plan: &Plan, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let Plan::Route { rule, .. } = plan else {
            return None;
        };
        let rule = self.inner.policy.rules.iter().find(|r| &r.name == rule)?;
        match &rule.action {
            Action::Route(route) => route.nudges.first(now),
            _ => None,
        }
    }

    /// Fires every nudge due at `now` (at most `BATCH`, 64); returns how many were due.
    pub async fn nudge_due(&self, now: DateTime<Utc>) -> Result<usize, ServiceError> {
        let due = self.inner.store.due_nudges(now, BATCH).await?;
        for found in &due {
            let approval = &found.approval;
            let nudges = self.nudges_for(approval);
            let plan = nudges.due(
                NudgeState {
                    created_at: approval.created_at,
                    reminders: found.reminders,
                    escalated: found.escalated,
                },
                now,
            );
            let mut events = Vec::new();
            // A reminder goes to the thread of the request's Slack message: only one
            // with such a message is sent (the store queues it on the same condition).
            let skipped = plan.remind.then(|| reminder_skipped(approval)).flatten();
            if plan.remind {
                let waiting_for = self
                    .waiting_for(approval, plan.escalate || found.escalated)
                    .await?;
                events.push(match skipped {
                    None => NewEvent::new(
                        "reminded",
                        None,
                        json!({ "reminder": plan.reminders, "waiting_for": waiting_for }),
                    ),
                    Some(reason) => NewEvent::new(
                        "reminder_skipped",
                        None,
                        json!({ "reminder": plan.reminders, "waiting_for": waiting_for, "reason": reason }),
                    ),
                });
            }
            // A hook's host stops waiting at its own timeout: moving the deadline past
            // the hook budget would leave buttons that decide nothing anyone waits for.
            let extends_secs = nudges
                .escalation_extends_secs
                .filter(|_| !approval.waited_on_by_a_hook());
            let extends =
                chrono::Duration::seconds(i64::try_from(extends_secs.unwrap_or(0)).unwrap_or(0));
            if plan.escalate {
                let mut detail = json!({ "to": nudges.escalate_to, "channel": nudges.escalate_channel,
                                         "extends_secs": extends_secs });
                if extends_secs != nudges.escalation_extends_secs {
                    detail["deadline_kept"] = json!("a coding agent's hook is waiting");
                }
                events.push(NewEvent::new("escalated", None, detail));
            }
            let fire = Fire {
                remind: plan.remind,
                reminders: plan.reminders,
                escalate: plan.escalate.then(|| {
                    (
                        nudges
                            .escalate_channel
                            .clone()
                            .filter(|_| !approval.channel.is_empty()),
                        extends,
                    )
                }),
                next: plan.next,
                events,
            };
            let Some(fired) = self
                .inner
                .store
                .fire_nudge(approval.id, found.due_at.clone(), fire)
                .await?
            else {
                continue;
            };
            if plan.remind {
                match skipped {
                    None => {
                        self.metrics().nudge("reminder");
                        tracing::info!(request_id = %approval.id, reminder = plan.reminders, "reminder queued");
                    }
                    Some(reason) => {
                        tracing::debug!(request_id = %approval.id, reminder = plan.reminders, reason, "reminder skipped");
                    }
                }
            }
            if plan.escalate {
                self.metrics().nudge("escalation");
                tracing::info!(request_id = %approval.id, expires_at = %fired.expires_at, "request escalated");
            }
            self.inner.recent.remember(&fired);
            self.changed(fired.id);
        }
        Ok(due.len())
    }

    /// Approvers who have not approved yet: the rule's list (or
    /// `GREENLIGHT_APPROVERS`), and once `escalated`, `escalate_to`. Empty when
    /// anyone may decide.
    pub async fn waiting_for(
        &self,
        approval: &Approval,
        escalated: bool,
    ) -> Result<Vec<String>, ServiceError> {
        let mut who = self.access(approval).approvers.unwrap_or_default();
        if escalated {
            who.extend(self.nudges_for(approval).escalate_to.unwrap_or_default());
        }
        let voted = if approval.required_approvals > 1 {
            self.inner.store.votes(approval.id).await?
        } else {
            Vec::new()
        };
        // Someone in both lists is named once, where the rule's list puts them.
        let mut named = std::collections::HashSet::new();
        who.retain(|id| {
            !voted.contains(id)
                && approval.requester_slack_id.as_deref() != Some(id)
                && named.insert(id.clone())
        });
        Ok(who)
    }

    /// Whether the request was escalated, for the Slack layer's reminder wording.
    pub async fn escalated(&self, approval: &Approval) -> Result<bool, ServiceError> {
        Ok(self.inner.store.escalation(approval.id).await?.is_some())
    }

    /// Whether `user` may decide `approval` as one of its rule's `escalate_to`, once
    /// it was escalated. Fails closed (`Unverified`) when a group cannot be read.
    pub(super) async fn escalation_allows(
        &self,
        approval: &Approval,
        user: &str,
    ) -> Result<bool, Refusal> {
        let Some(extra) = self.nudges_for(approval).escalate_to else {
            return Ok(false);
        };
        match self.inner.store.escalation(approval.id).await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(false),
            Err(_) => return Err(Refusal::Unverified),
        }
        self.inner
            .directory
            .allows(&extra, user)
            .await
            .map_err(|_| Refusal::Unverified)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        metrics::Metrics,
        model::{ApprovalId, NewApproval},
        policy::{parse, Defaults},
        store::{outbox::Kind, Store},
    };

    const POLICY: &str = r#"
[[rule]]
name = "deploys"
code = '^deploy'
approvers = ["U0ALICE", "U0BOB"]
remind_after_secs = 60
remind_every_secs = 60
escalate_after_secs = 150
escalate_to = ["U0CAROL", "U0ALICE"]
escalation_extends_secs = 100
"#;

    async fn kinds(service: &ApprovalService, id: ApprovalId) -> Vec<String> {
        let events = service.store().events(id).await.expect("events");
        events.into_iter().map(|e| e.kind).collect()
    }

    fn count(trail: &[String], kind: &str) -> usize {
        trail.iter().filter(|k| *k == kind).count()
    }

    /// The worker's loop is `deadlines::run` (tested there with paused time); this
    /// drives its source with explicit times, since sqlx's pool cannot run under
    /// paused time. No Slack message is ever posted here, so each due reminder is
    /// audited as `reminder_skipped` (nothing to reply to), once per slot.
    async fn service_in(dir: &tempfile::TempDir) -> ApprovalService {
        let url = format!("sqlite://{}", dir.path().join("n.db").display());
        let store = Store::connect(&url).await.expect("store");
        ApprovalService::new(
            store,
            Arc::new(crate::web::NoSlackGroups),
            Defaults {
                channel: "C1".into(),
                approvers: None,
            },
            Arc::new(parse(POLICY, "p.toml").expect("policy")),
            Metrics::new(),
        )
    }

    fn deploy(required_approvals: u32) -> NewApproval {
        NewApproval {
            agent: "ci".into(),
            code: "deploy".into(),
            language: None,
            title: None,
            context: None,
            timeout_secs: 600,
            requester_slack_id: None,
            required_approvals,
            idempotency_key: None,
            request_hash: "h".into(),
            callback_url: None,
        }
    }

    fn reviewer(id: &str) -> crate::model::Reviewer {
        crate::model::Reviewer {
            id: id.into(),
            name: None,
            surface: crate::model::Surface::Slack,
        }
    }

    #[tokio::test]
    async fn nudges_fire_once_each_at_their_time() {
        let dir = tempfile::tempdir().expect("dir");
        let service = service_in(&dir).await;
        let (approval, _) = service.submit(deploy(1), None).await.expect("submit");
        let source = NudgeSource(service.clone());
        let at = |secs: i64| approval.created_at + chrono::Duration::seconds(secs);
        // The store keeps milliseconds.
        let ms = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
        assert_eq!(
            ms(source.next_deadline().await.expect("next")),
            ms(Some(at(60)))
        );
        let carol = reviewer("U0CAROL");
        assert_eq!(source.expire_due(at(59)).await.expect("look"), 0);
        assert_eq!(
            count(&kinds(&service, approval.id).await, "reminder_skipped"),
            0
        );
        // Due at 60 s: one reminder, however often the worker looks.
        for _ in 0..3 {
            source.expire_due(at(60)).await.expect("look");
        }
        assert_eq!(
            count(&kinds(&service, approval.id).await, "reminder_skipped"),
            1
        );
        assert_eq!(
            ms(source.next_deadline().await.expect("next")),
            ms(Some(at(120)))
        );
        assert!(service.refusal_for(&approval, &carol, true).await.is_some());
        // 150 s: reminder 2 (due at 120) and the escalation, once.
        for _ in 0..3 {
            source.expire_due(at(150)).await.expect("look");
        }
        let trail = kinds(&service, approval.id).await;
        assert_eq!(
            (
                count(&trail, "reminder_skipped"),
                count(&trail, "escalated")
            ),
            (2, 1),
            "{trail:?}"
        );
        let now = service.get(approval.id).await.expect("get");
        assert_eq!(
            now.expires_at.timestamp_millis() - approval.expires_at.timestamp_millis(),
            100_000
        );
        assert!(service.refusal_for(&now, &carol, true).await.is_none());
        assert_eq!(
            ms(source.next_deadline().await.expect("next")),
            ms(Some(at(180)))
        );
        source.expire_due(at(400)).await.expect("look");
        let trail = kinds(&service, approval.id).await;
        assert_eq!(
            (
                count(&trail, "reminder_skipped"),
                count(&trail, "escalated")
            ),
            (3, 1),
            "{trail:?}"
        );
        // Decided: nothing more is due.
        service.approve(approval.id, &carol).await.expect("approve");
        assert_eq!(source.next_deadline().await.expect("next"), None);
    }

    /// Someone in both the rule's approvers and `escalate_to` is named once.
    #[tokio::test]
    async fn an_escalated_request_names_each_approver_it_waits_for_once() {
        let dir = tempfile::tempdir().expect("dir");
        let service = service_in(&dir).await;
        let (approval, _) = service.submit(deploy(1), None).await.expect("submit");
        let who = service.waiting_for(&approval, true).await.expect("who");
        assert_eq!(who, ["U0ALICE", "U0BOB", "U0CAROL"]);
    }

    /// The escalation post is rendered before it is sent, and recorded after: a vote
    /// counted in between is missing from it. Recording it queues a rewrite whenever
    /// the request has votes (and not otherwise: that rewrite would change nothing),
    /// in the request's own lane.
    #[tokio::test]
    async fn recording_an_escalation_post_queues_its_rewrite_once_votes_exist() {
        let dir = tempfile::tempdir().expect("dir");
        let service = service_in(&dir).await;
        let store = service.store().clone();
        // Rewrites queued in a lane: the request's own ("C1"), so that they keep
        // their order with the rewrites its votes and decision queue there.
        let rewrites = |lane: &'static str, id: ApprovalId| {
            let store = store.clone();
            async move {
                let rows = store
                    .claim_outbox(lane, Utc::now(), 16, Vec::new())
                    .await
                    .expect("claim");
                rows.iter()
                    .filter(|r| r.approval_id == id && r.kind == Kind::EscalationUpdate)
                    .count()
            }
        };
        // The escalation post of `id` recorded (no outbox row of its own: seq -1).
        let recorded = |id: ApprovalId| {
            let store = store.clone();
            async move {
                store
                    .escalation_posted(-1, id, "C0ESC".into(), format!("1.{id}"))
                    .await
                    .expect("recorded");
            }
        };
        let (quiet, _) = service.submit(deploy(2), None).await.expect("submit");
        recorded(quiet.id).await;
        assert_eq!(
            rewrites("C1", quiet.id).await,
            0,
            "no vote: nothing to rewrite"
        );

        let (voted, _) = service.submit(deploy(2), None).await.expect("submit");
        let answer = service
            .approve(voted.id, &reviewer("U0ALICE"))
            .await
            .expect("vote");
        assert!(
            matches!(answer, crate::approval::Answer::Counted { .. }),
            "{answer:?}"
        );
        recorded(voted.id).await;
        assert_eq!(
            rewrites("C0ESC", voted.id).await,
            0,
            "not in the escalation lane"
        );
        assert_eq!(
            rewrites("C1", voted.id).await,
            1,
            "the vote must reach the post"
        );
    }
}
