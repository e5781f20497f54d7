//! PostgreSQL: approval votes (the two-person rule). The vote's transaction locks the
//! request's row (`SELECT … FOR UPDATE`) before it counts, so two approvers clicking
//! at once on two replicas are serialized exactly as the SQLite writer serializes
//! them: the first is counted, the second sees both votes and decides.

use chrono::{DateTime, Utc};
use sqlx::{Postgres as Pg, Row, Transaction};

use super::{
    insert_event,
    listen::{notify, Note},
    outbox,
    requests::decide_in,
    Postgres,
};
use crate::model::{rfc3339, ApprovalId, Decision};
use crate::store::{outbox::Kind, NewEvent, StoreResult, Vote};

impl Postgres {
    /// Records `user`'s approval of `id` in one transaction that first locks the
    /// request's row (`SELECT … FOR UPDATE`), so votes on several replicas count one
    /// after the other. `decide` builds the decision and its event from the full voter
    /// list when the vote completes the approval (then the conditional `UPDATE` of every
    /// decision ends it); `counted` builds the event of a vote that does not, which
    /// queues rewrites of whichever of its messages are posted (its own, the escalation
    /// one) and `NOTIFY`s the change. A repeated vote changes nothing (`Vote::Repeat`);
    /// an unknown or final request gives `Vote::NotPending`.
    pub async fn record_approval(
        &self,
        id: ApprovalId,
        user: String,
        at: DateTime<Utc>,
        decide: impl FnOnce(&[String]) -> (Decision, NewEvent) + Send + 'static,
        counted: impl FnOnce(&[String], u32) -> NewEvent + Send + 'static,
    ) -> StoreResult<Vote> {
        let mut tx = self.begin().await?;
        let vote = vote_in(&mut tx, &self.me, id, &user, at, decide, counted).await?;
        self.commit(tx).await?;
        Ok(vote)
    }

    /// Who has approved `id` so far (Slack user ids or `web:<name>`), oldest first.
    pub async fn votes(&self, id: ApprovalId) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT user_id FROM votes WHERE approval_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| row.try_get("user_id").map_err(Into::into))
            .collect()
    }
}

async fn vote_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    id: ApprovalId,
    user: &str,
    at: DateTime<Utc>,
    decide: impl FnOnce(&[String]) -> (Decision, NewEvent),
    counted: impl FnOnce(&[String], u32) -> NewEvent,
) -> StoreResult<Vote> {
    let row = sqlx::query(
        "SELECT status, required_approvals, channel, message_ts FROM approvals
         WHERE id = $1 FOR UPDATE",
    )
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(Vote::NotPending);
    };
    let status: String = row.try_get("status")?;
    let required: i64 = row.try_get("required_approvals")?;
    let channel: String = row.try_get("channel")?;
    let posted = row.try_get::<Option<String>, _>("message_ts")?.is_some();
    if status != "pending" {
        return Ok(Vote::NotPending);
    }
    let inserted = sqlx::query(
        "INSERT INTO votes (approval_id, user_id, at) VALUES ($1, $2, $3)
         ON CONFLICT (approval_id, user_id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(user)
    .bind(rfc3339(at))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    let voters: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM votes WHERE approval_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&mut **tx)
            .await?;
    if inserted == 0 {
        return Ok(Vote::Repeat(voters));
    }
    let required = u32::try_from(required.max(1)).unwrap_or(1);
    if (voters.len() as u64) < u64::from(required) {
        insert_event(tx, id, at, &counted(&voters, required)).await?;
        if posted {
            outbox::enqueue_in(tx, me, id, &channel, Kind::Update).await?;
        }
        // An escalated request shows its progress in both channels.
        super::nudges::escalation_update_in(tx, me, id, &channel).await?;
        notify(tx, me, Note::Changed(id)).await?;
        return Ok(Vote::Counted { voters, channel });
    }
    let (decision, event) = decide(&voters);
    // The row is locked by this transaction and was pending: this decides.
    Ok(match decide_in(tx, me, id, &decision, &event).await? {
        Some(approval) => Vote::Decided(Box::new(approval)),
        None => Vote::NotPending,
    })
}
