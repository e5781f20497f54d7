//! SQLite: approval votes (the two-person rule).
//!
//! Counting and deciding happen in one job of the group-committing writer:
//! the vote is inserted, the distinct voters are counted, and if that reaches the
//! request's `required_approvals` the request is approved by the same conditional
//! UPDATE every other decision uses. Two approvers clicking at once are therefore
//! serialized: the first is counted, the second sees both votes and decides. Exactly
//! one decision, every vote kept.

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::{insert_event, outbox, requests::decide_in, Sqlite};
use crate::model::{rfc3339, ApprovalId, Decision};
use crate::store::{NewEvent, StoreResult, Vote};

impl Sqlite {
    /// Records `user`'s approval of `id`. `decide` builds the decision and its event
    /// from the full voter list when the vote completes the approval; `counted` builds
    /// the event for a vote that does not (whose outbox rows then show the progress, in
    /// the escalation channel too once the request was escalated).
    pub async fn record_approval(
        &self,
        id: ApprovalId,
        user: String,
        at: DateTime<Utc>,
        decide: impl FnOnce(&[String]) -> (Decision, NewEvent) + Send + 'static,
        counted: impl FnOnce(&[String], u32) -> NewEvent + Send + 'static,
    ) -> StoreResult<Vote> {
        self.write(Box::new(move |conn| {
            vote_in(conn, id, &user, at, decide, counted)
        }))
        .await
    }

    /// Who has approved `id` so far, oldest first.
    pub async fn votes(&self, id: ApprovalId) -> StoreResult<Vec<String>> {
        self.readers.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT user_id FROM votes WHERE approval_id = ? ORDER BY seq")?
                .query_map([id.to_string()], |row| row.get(0))?
                .collect::<Result<_, _>>()?)
        })
    }
}

fn vote_in(
    conn: &rusqlite::Connection,
    id: ApprovalId,
    user: &str,
    at: DateTime<Utc>,
    decide: impl FnOnce(&[String]) -> (Decision, NewEvent),
    counted: impl FnOnce(&[String], u32) -> NewEvent,
) -> StoreResult<Vote> {
    let row = conn
        .prepare_cached(
            "SELECT status, required_approvals, channel, message_ts FROM approvals WHERE id = ?",
        )?
        .query_row([id.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?.is_some(),
            ))
        })
        .optional()?;
    let Some((status, required, channel, posted)) = row else {
        return Ok(Vote::NotPending);
    };
    if status != "pending" {
        return Ok(Vote::NotPending);
    }
    let inserted = conn
        .prepare_cached(
            "INSERT INTO votes (approval_id, user_id, at) VALUES (?, ?, ?)
             ON CONFLICT (approval_id, user_id) DO NOTHING",
        )?
        .execute(rusqlite::params![id.to_string(), user, rfc3339(at)])?;
    let voters = voters(conn, id)?;
    if inserted == 0 {
        return Ok(Vote::Repeat(voters));
    }
    let required = u32::try_from(required.max(1)).unwrap_or(1);
    if (voters.len() as u64) < u64::from(required) {
        insert_event(conn, id, at, &counted(&voters, required))?;
        if posted {
            outbox::enqueue_in(conn, id, &channel, crate::store::outbox::Kind::Update)?;
        }
        // An escalated request shows its progress in both channels.
        super::nudges::escalation_update_in(conn, id, &channel)?;
        return Ok(Vote::Counted { voters, channel });
    }
    let (decision, event) = decide(&voters);
    // We read `pending` in this transaction on the only writer, so this decides.
    Ok(match decide_in(conn, id, &decision, &event)? {
        Some(approval) => Vote::Decided(Box::new(approval)),
        None => Vote::NotPending,
    })
}

/// Who has approved `id` so far, oldest first, inside the writer's transaction.
fn voters(conn: &rusqlite::Connection, id: ApprovalId) -> StoreResult<Vec<String>> {
    let mut statement =
        conn.prepare_cached("SELECT user_id FROM votes WHERE approval_id = ? ORDER BY seq")?;
    let rows = statement.query_map([id.to_string()], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
