//! Approval votes (the two-person rule), in their own file so the approval rows and
//! the audit trail in `store/mod.rs` read on their own.
//!
//! Counting and deciding happen in one transaction on the single writer connection:
//! the vote is inserted, the distinct voters are counted, and if that reaches the
//! request's `required_approvals` the request is approved by the same conditional
//! UPDATE every other decision uses. Two approvers clicking at once are therefore
//! serialized: the first is counted, the second sees both votes and decides. Exactly
//! one decision, every vote kept.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{decide_in, insert_event, NewEvent, Store, StoreResult};
use crate::approval::{rfc3339, Approval, ApprovalId, Decision};

/// What recording one approval did.
#[derive(Debug)]
pub enum Vote {
    /// The request is not pending (or does not exist): nothing was recorded.
    NotPending,
    /// This person had already approved; the voters so far, oldest first.
    Repeat(Vec<String>),
    /// Counted, more are needed; the voters so far, oldest first.
    Counted(Vec<String>),
    /// This vote was the last one needed: the request is approved.
    Decided(Box<Approval>),
}

impl Store {
    /// Records `user`'s approval of `id`. `decide` builds the decision and its event
    /// from the full voter list when the vote completes the approval; `counted` builds
    /// the event for a vote that does not.
    pub async fn record_approval(
        &self,
        id: ApprovalId,
        user: &str,
        at: DateTime<Utc>,
        decide: impl FnOnce(&[String]) -> (Decision, NewEvent),
        counted: impl FnOnce(&[String], u32) -> NewEvent,
    ) -> StoreResult<Vote> {
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query("SELECT status, required_approvals FROM approvals WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(Vote::NotPending);
        };
        let status: String = row.try_get("status")?;
        let required: i64 = row.try_get("required_approvals")?;
        if status != "pending" {
            tx.rollback().await?;
            return Ok(Vote::NotPending);
        }
        let inserted = sqlx::query(
            "INSERT INTO votes (approval_id, user_id, at) VALUES (?, ?, ?)
             ON CONFLICT (approval_id, user_id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(user)
        .bind(rfc3339(at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let voters = voters(&mut tx, id).await?;
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Vote::Repeat(voters));
        }
        let required = u32::try_from(required.max(1)).unwrap_or(1);
        if (voters.len() as u64) < u64::from(required) {
            insert_event(&mut tx, id, at, &counted(&voters, required)).await?;
            tx.commit().await?;
            return Ok(Vote::Counted(voters));
        }
        let (decision, event) = decide(&voters);
        if !decide_in(&mut tx, id, &decision, &event).await? {
            // Unreachable with one writer (we read `pending` in this transaction), but
            // if it ever happens nothing is half-written.
            tx.rollback().await?;
            return Ok(Vote::NotPending);
        }
        tx.commit().await?;
        match self.get(id).await? {
            Some(approval) => Ok(Vote::Decided(Box::new(approval))),
            None => Ok(Vote::NotPending),
        }
    }

    /// Who has approved `id` so far, oldest first.
    pub async fn votes(&self, id: ApprovalId) -> StoreResult<Vec<String>> {
        let mut conn = self.reader.acquire().await?;
        voters(&mut conn, id).await
    }
}

async fn voters(conn: &mut sqlx::SqliteConnection, id: ApprovalId) -> StoreResult<Vec<String>> {
    let rows = sqlx::query("SELECT user_id FROM votes WHERE approval_id = ? ORDER BY seq")
        .bind(id.to_string())
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| row.try_get("user_id").map_err(Into::into))
        .collect()
}
