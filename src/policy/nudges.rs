//! Reminders and escalation, the policy side: a rule's settings and the pure
//! schedule that says, for a pending request, what is due now and when to look next.
//!
//! Keys of a routed rule (all seconds, from 1 to a week):
//! - `remind_after_secs`: a reminder in the message's thread, mentioning the approvers
//!   who have not voted; `remind_every_secs` repeats it, at most that often.
//! - `escalate_after_secs`: the request is posted to `escalate_channel` too (if set),
//!   and the people in `escalate_to` may decide it from then on.
//! - `escalation_extends_secs`: the deadline moves this much later, once, on
//!   escalation.

use chrono::{DateTime, Utc};

/// A rule's reminder and escalation settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nudges {
    /// `remind_after_secs`: seconds from submission to the first reminder; `None`: no
    /// reminders.
    pub remind_after_secs: Option<u64>,
    /// `remind_every_secs`: seconds between later reminders; `None`: one reminder only.
    pub remind_every_secs: Option<u64>,
    /// `escalate_after_secs`: seconds from submission to the escalation (it happens
    /// once); `None`: never escalated.
    pub escalate_after_secs: Option<u64>,
    /// `escalate_to`: approver ids (users, groups, web reviewers) who may decide once
    /// escalated, besides the rule's approvers.
    pub escalate_to: Option<Vec<String>>,
    /// `escalate_channel`: Slack channel id where the request is posted again, with
    /// working buttons, on escalation.
    pub escalate_channel: Option<String>,
    /// `escalation_extends_secs`: seconds the deadline moves later, once, on
    /// escalation; `None`: it stays.
    pub escalation_extends_secs: Option<u64>,
}

/// Where a request stands: reminders sent so far and whether it was escalated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NudgeState {
    /// When the request was submitted; every nudge time counts from it.
    pub created_at: DateTime<Utc>,
    /// Reminders fired so far (a skipped one, with no Slack thread to post in, counts).
    pub reminders: u32,
    /// Already escalated: escalation happens once.
    pub escalated: bool,
}

/// What to do now, and the state and next look after doing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// A reminder is due now.
    pub remind: bool,
    /// The escalation is due now.
    pub escalate: bool,
    /// The reminder count after this one (missed slots, after a restart, are skipped:
    /// one reminder, not a burst).
    pub reminders: u32,
    /// When to look again: the next reminder or the escalation still to come, whichever
    /// is first; `None`: nothing more is ever due.
    pub next: Option<DateTime<Utc>>,
}

fn secs(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

impl Nudges {
    /// True when the rule neither reminds nor escalates.
    pub fn is_empty(&self) -> bool {
        self.remind_after_secs.is_none() && self.escalate_after_secs.is_none()
    }

    /// When reminder number `n` (0-based) is due, if there is one.
    fn reminder_at(&self, created: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
        let first = created + secs(self.remind_after_secs?);
        match (n, self.remind_every_secs) {
            (0, _) => Some(first),
            (n, Some(every)) => Some(first + secs(every.saturating_mul(u64::from(n)))),
            (_, None) => None,
        }
    }

    /// What is due at `now` for a request in `state`.
    pub fn due(&self, state: NudgeState, now: DateTime<Utc>) -> Due {
        let escalate_at = self
            .escalate_after_secs
            .filter(|_| !state.escalated)
            .map(|s| state.created_at + secs(s));
        let escalate = escalate_at.is_some_and(|at| at <= now);
        let remind = self
            .reminder_at(state.created_at, state.reminders)
            .is_some_and(|at| at <= now);
        let mut reminders = state.reminders;
        if remind {
            reminders += 1;
            while self
                .reminder_at(state.created_at, reminders)
                .is_some_and(|at| at <= now)
            {
                reminders += 1;
            }
        }
        let next_reminder = self.reminder_at(state.created_at, reminders);
        let next_escalation = escalate_at.filter(|_| !escalate);
        let next = match (next_reminder, next_escalation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Due {
            remind,
            escalate,
            reminders,
            next,
        }
    }

    /// The first look for a request created at `created`.
    pub fn first(&self, created: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.due(
            NudgeState {
                created_at: created,
                reminders: 0,
                escalated: false,
            },
            created,
        )
        .next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("time")
    }

    #[test]
    fn reminders_repeat_and_escalation_fires_once() {
        let n = Nudges {
            remind_after_secs: Some(10),
            remind_every_secs: Some(20),
            escalate_after_secs: Some(45),
            ..Nudges::default()
        };
        assert_eq!(n.first(at(0)), Some(at(10)));
        let state = |reminders, escalated| NudgeState {
            created_at: at(0),
            reminders,
            escalated,
        };
        let due = n.due(state(0, false), at(10));
        assert_eq!(
            (due.remind, due.escalate, due.reminders, due.next),
            (true, false, 1, Some(at(30)))
        );
        let due = n.due(state(2, false), at(45));
        assert_eq!(
            (due.remind, due.escalate, due.next),
            (false, true, Some(at(50)))
        );
        // After a long outage: one reminder, the slots missed are skipped.
        let due = n.due(state(0, true), at(100));
        assert_eq!(
            (due.remind, due.escalate, due.reminders, due.next),
            (true, false, 5, Some(at(110)))
        );
        // Nothing due before its time.
        let due = n.due(state(0, false), at(9));
        assert!(!due.remind && !due.escalate);
        assert_eq!(due.next, Some(at(10)));
    }

    #[test]
    fn one_reminder_without_repeat_and_nothing_when_empty() {
        let n = Nudges {
            remind_after_secs: Some(5),
            ..Nudges::default()
        };
        let due = n.due(
            NudgeState {
                created_at: at(0),
                reminders: 0,
                escalated: false,
            },
            at(6),
        );
        assert_eq!((due.remind, due.next), (true, None));
        assert_eq!(Nudges::default().first(at(0)), None);
    }
}
