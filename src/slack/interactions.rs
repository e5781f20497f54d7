//! What greenlight does with a verified Slack interaction, whatever carried it (the
//! signed HTTP endpoint or a Socket Mode envelope): turn it into domain calls, then
//! tell the clicker what happened.
//!
//! Each click's state change is committed by the domain before this returns, so the
//! ack Slack gets means the click is durable. What the clicker sees afterwards (an
//! ephemeral note, the deny-reason dialog, a code view) is sent in the background: the
//! ack never waits on a Web API call.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{
    api::SlackClient,
    blocks,
    interaction::{Button, Click, Payload, User},
    modal::{self, REASON_BLOCK_ID},
    views,
};
use crate::{
    approval::{Answer, ApprovalService, ReasonOutcome, Revoked, ServiceError},
    model::{Approval, ApprovalId, Reviewer, SYSTEM_ACTOR},
};

/// Shown under the reason field when it was left blank.
pub const EMPTY_REASON_ERROR: &str =
    "Say why you are denying this request: the agent is told your reason.";

/// How long after a click `views.open` may still be tried (the reason dialog, the
/// code and context views): the trigger id dies 3 s after Slack sent the click, and
/// some of that was spent getting here.
const TRIGGER_BUDGET: Duration = Duration::from_millis(2500);

/// A reviewer hears "already decided" about one request at most this often, however
/// often they (or a replaying proxy) click.
pub const NOTE_EVERY: Duration = Duration::from_secs(60);

/// The interaction handler shared by every transport. Cheap to clone.
#[derive(Clone)]
pub struct Interactions {
    inner: Arc<Inner>,
}

struct Inner {
    service: ApprovalService,
    slack: SlackClient,
    /// When each (request, reviewer) last got an "already decided" note.
    noted: DashMap<(ApprovalId, String), Instant>,
    /// When `noted` was last swept of entries older than [`NOTE_EVERY`].
    swept: std::sync::Mutex<Instant>,
}

impl Interactions {
    /// `slack` holds the bot token (`xoxb-…`): it sends the ephemeral notes and opens
    /// the modals that follow a click.
    pub fn new(service: ApprovalService, slack: SlackClient) -> Self {
        Self {
            inner: Arc::new(Inner {
                service,
                slack,
                noted: DashMap::new(),
                swept: std::sync::Mutex::new(Instant::now()),
            }),
        }
    }

    /// Applies every greenlight action in `payload`. Returns the body to ack with, if
    /// the interaction needs one (dialog errors); `None` acks with an empty 200 (which,
    /// for a dialog submission, closes it).
    pub async fn handle(&self, payload: &Payload) -> Result<Option<Value>, ServiceError> {
        // "View full code" / "Show context": read-only, answered in the background.
        let trigger_deadline = Instant::now() + TRIGGER_BUDGET;
        views::spawn(
            &self.inner.service,
            &self.inner.slack,
            payload,
            trigger_deadline,
        );
        if let Some(deny) = payload.deny_reason() {
            // Blank is refused in the dialog itself; anything else goes to the agent as
            // typed (the Slack message escapes it).
            let Some(reason) = deny.reason.filter(|r| !r.trim().is_empty()) else {
                return Ok(Some(field_error(EMPTY_REASON_ERROR)));
            };
            let outcome = self
                .inner
                .service
                .deny(deny.approval_id, &reviewer(&deny.user), &reason)
                .await?;
            tracing::info!(request_id = %deny.approval_id, user = %deny.user.id, outcome = ?outcome, "deny reason submitted");
            return Ok(match outcome {
                ReasonOutcome::Denied => None,
                ReasonOutcome::Refused(message) => Some(field_error(&message)),
                ReasonOutcome::AlreadyFinal(approval) => {
                    Some(field_error(&late_denial_note(&approval)))
                }
            });
        }
        for click in payload.clicks() {
            let received = Instant::now();
            let who = reviewer(&click.user);
            let answer = match click.button {
                Button::Approve => self.inner.service.approve(click.approval_id, &who).await?,
                Button::Deny => {
                    self.inner
                        .service
                        .deny_clicked(click.approval_id, &who, click.trigger_id.as_deref())
                        .await?
                }
                Button::Grant(secs) => {
                    self.inner
                        .service
                        .approve_with_grant(click.approval_id, &who, secs)
                        .await?
                }
                Button::Revoke => {
                    self.revoke_clicked(&click, who).await?;
                    continue;
                }
            };
            let outcome = answer.outcome();
            // Clicks that change nothing are audited in aggregate; logging each one
            // at info would cost more than answering it.
            if matches!(answer, Answer::AlreadyFinal { .. }) {
                tracing::debug!(request_id = %click.approval_id, user = %click.user.id, outcome = outcome.as_str(), "click");
            } else {
                tracing::info!(request_id = %click.approval_id, user = %click.user.id, outcome = outcome.as_str(), "click");
            }
            self.inner.service.metrics().click(outcome.as_str());
            self.follow_up(&click, who, answer, received);
        }
        Ok(None)
    }

    /// The Revoke button on a grant-approved request's FYI: revokes its grant (the
    /// store rewrites the FYI) and tells the clicker what happened.
    async fn revoke_clicked(&self, click: &Click, who: Reviewer) -> Result<(), ServiceError> {
        let revoked = self
            .inner
            .service
            .revoke_grant_of(click.approval_id, &who)
            .await?;
        tracing::info!(request_id = %click.approval_id, user = %who.id, outcome = ?revoked, "revoke click");
        let text = match revoked {
            Revoked::Done(grant) if grant.revoked_by.as_deref() == Some(who.id.as_str()) => {
                format!(
                    "Grant {} is revoked: later requests like this one go to review again.",
                    grant.id
                )
            }
            Revoked::Done(grant) => format!("Grant {} was already revoked.", grant.id),
            Revoked::NotFound => "That grant no longer exists.".to_owned(),
            Revoked::Refused(refusal) => refusal.explain().to_owned(),
        };
        if let Some(channel) = click.channel.clone() {
            self.send_note(channel, who.id, text);
        }
        Ok(())
    }

    /// What the clicker sees after the ack.
    fn follow_up(&self, click: &Click, who: Reviewer, answer: Answer, received: Instant) {
        let note = match answer {
            Answer::Refused { approval, refusal } => {
                Some((approval.channel, refusal.explain().to_owned()))
            }
            Answer::AlreadyFinal { approval, .. } => {
                self.note_due(approval.id, &who.id).then(|| {
                    (
                        approval.channel.clone(),
                        blocks::already_decided_note(&approval),
                    )
                })
            }
            Answer::RepeatVote {
                approval,
                voters,
                required,
            } => Some((approval.channel, repeat_vote_note(required, &voters))),
            Answer::ReasonNeeded(approval) => {
                if let Some(trigger_id) = click.trigger_id.clone() {
                    self.open_reason_dialog(
                        approval,
                        who.clone(),
                        trigger_id,
                        received + TRIGGER_BUDGET,
                    );
                }
                None
            }
            Answer::Unknown | Answer::Decided(_) | Answer::Counted { .. } | Answer::RepeatDeny => {
                None
            }
        };
        if let Some((channel, text)) = note {
            let channel = click.channel.clone().unwrap_or(channel);
            self.send_note(channel, who.id, text);
        }
    }

    /// Whether `user` may hear "already decided" about `id` now: once per
    /// [`NOTE_EVERY`]. Entries older than that are swept at most once per
    /// [`NOTE_EVERY`], so the map holds about a minute of notes and a click never pays
    /// for a scan of it.
    fn note_due(&self, id: ApprovalId, user: &str) -> bool {
        let now = Instant::now();
        let noted = &self.inner.noted;
        let sweep = self.inner.swept.lock().is_ok_and(|mut swept| {
            let due = now.duration_since(*swept) >= NOTE_EVERY;
            if due {
                *swept = now;
            }
            due
        });
        if sweep {
            noted.retain(|_, at| now.duration_since(*at) < NOTE_EVERY);
        }
        let mut due = false;
        noted
            .entry((id, user.to_owned()))
            .and_modify(|at| {
                if now.duration_since(*at) >= NOTE_EVERY {
                    *at = now;
                    due = true;
                }
            })
            .or_insert_with(|| {
                due = true;
                now
            });
        due
    }

    fn send_note(&self, channel: String, user: String, text: String) {
        let slack = self.inner.slack.clone();
        tokio::spawn(async move {
            if let Err(error) = slack.post_ephemeral(&channel, &user, &text).await {
                tracing::warn!(%error, "could not send an ephemeral note");
            }
        });
    }

    /// Opens the deny-reason dialog in the background.
    ///
    /// Why not before acking: the trigger id and the ack share one 3 s window from the
    /// moment Slack sent the click. Starting `views.open` in a task starts it just as
    /// early, while the ack goes back at once, so a slow `views.open` can never turn
    /// into the "this app did not respond" error Slack shows when an ack is late. The
    /// task owns the failure path: if the dialog cannot be opened, it denies at once,
    /// so a request is never left hanging on a dialog nobody saw.
    fn open_reason_dialog(
        &self,
        approval: Approval,
        who: Reviewer,
        trigger_id: String,
        deadline: Instant,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let view = modal::deny_reason_view(&approval);
            let Err(error) = this
                .inner
                .slack
                .open_view(&trigger_id, &view, deadline)
                .await
            else {
                return;
            };
            tracing::warn!(request_id = %approval.id, %error, "could not open the deny-reason modal; denying without a reason");
            if let Err(error) = this
                .inner
                .service
                .deny_without_reason(approval.id, &who, error.code())
                .await
            {
                tracing::error!(request_id = %approval.id, %error, "could not deny after the modal failed");
            }
        });
    }
}

/// What a reviewer who approves twice is told.
pub(crate) fn repeat_vote_note(required: u32, voters: &[String]) -> String {
    format!(
        "You already approved this request; it needs {required} approvals from different people ({}).",
        blocks::approval_progress(required, voters)
    )
}

/// The reviewer behind a Slack user: the id decides, the handle makes audit entries
/// readable.
pub fn reviewer(user: &User) -> Reviewer {
    Reviewer {
        id: user.id.clone(),
        name: user
            .username
            .clone()
            .or_else(|| user.name.clone())
            .filter(|n| !n.is_empty()),
        surface: crate::model::Surface::Slack,
    }
}

/// `response_action: errors` keeps the dialog open with `message` under the reason.
/// What a deny reason submitted after the request ended is told, under its field.
fn late_denial_note(approval: &Approval) -> String {
    format!(
        "This request was already {} by {}; your denial changed nothing.",
        approval.status.as_str(),
        approval.decided_by.as_deref().unwrap_or(SYSTEM_ACTOR)
    )
}

fn field_error(message: &str) -> Value {
    json!({ "response_action": "errors", "errors": { REASON_BLOCK_ID: message } })
}
