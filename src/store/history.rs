//! The web page's history: requests filtered by status, agent and reviewer.

use super::{
    rows::{approval_from_row, APPROVAL_COLUMNS},
    Store, StoreResult,
};
use crate::model::{Approval, Status};

/// What the history shows; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub status: Option<Status>,
    /// The agent's name, exactly.
    pub agent: Option<String>,
    /// A reviewer id as `decided_by` holds it (one of its comma-separated ids).
    pub reviewer: Option<String>,
}

impl Store {
    /// Requests matching `filter`, newest first, at most `limit`.
    pub async fn history(&self, filter: &HistoryFilter, limit: u32) -> StoreResult<Vec<Approval>> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR agent = ?2)
               AND (?3 IS NULL OR instr(',' || coalesce(decided_by, '') || ',', ',' || ?3 || ',') > 0)
             ORDER BY created_at DESC, id LIMIT ?4"
        ))
        .bind(filter.status.map(Status::as_str))
        .bind(filter.agent.as_deref())
        .bind(filter.reviewer.as_deref())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }
}
