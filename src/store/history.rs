//! The web page's history: requests filtered by status, agent and reviewer.

use super::{dispatch, Store, StoreResult};
use crate::model::{Approval, Status};

/// What the history shows; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only requests in this status.
    pub status: Option<Status>,
    /// The agent's name, exactly.
    pub agent: Option<String>,
    /// A reviewer id as `decided_by` holds it (one of its comma-separated ids).
    pub reviewer: Option<String>,
}

impl Store {
    /// Requests matching `filter`, newest first, at most `limit`.
    pub async fn history(&self, filter: &HistoryFilter, limit: u32) -> StoreResult<Vec<Approval>> {
        dispatch!(self, history(filter, limit))
    }
}
