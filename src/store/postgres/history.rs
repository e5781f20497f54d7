//! PostgreSQL: the web page's filtered history.

use super::Postgres;
use crate::model::{Approval, Status};
use crate::store::{
    history::HistoryFilter,
    rows::{approval_from_row, APPROVAL_COLUMNS},
    StoreResult,
};

impl Postgres {
    /// Requests matching `filter`, newest first (`created_at`, then id), at most `limit`.
    /// The reviewer filter matches one whole entry of the comma-separated `decided_by`
    /// (`position`, not `LIKE`, so `%` and `_` in a name stand for themselves).
    pub async fn history(&self, filter: &HistoryFilter, limit: u32) -> StoreResult<Vec<Approval>> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR agent = $2)
               AND ($3::text IS NULL OR
                    position(',' || $3 || ',' IN ',' || coalesce(decided_by, '') || ',') > 0)
             ORDER BY created_at DESC, id LIMIT $4"
        ))
        .bind(filter.status.map(Status::as_str))
        .bind(filter.agent.as_deref())
        .bind(filter.reviewer.as_deref())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }
}
