//! Mapping between SQLite rows and domain types. Kept apart so the queries in
//! `store/mod.rs` read as queries.

use chrono::{DateTime, Utc};
use sqlx::{sqlite::SqliteRow, Row};

use super::{Event, StoreError, StoreResult};
use crate::model::{Approval, ApprovalId, Status};

/// The columns `approval_from_row` reads, in one place so every query selects them.
pub(super) const APPROVAL_COLUMNS: &str = "id, agent, code, language, title, context, \
     requester_slack_id, required_approvals, channel, message_ts, status, reason, decided_by, \
     decided_at, created_at, expires_at";

pub(super) fn approval_from_row(row: &SqliteRow) -> StoreResult<Approval> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let context: Option<String> = row.try_get("context")?;
    let decided_at: Option<String> = row.try_get("decided_at")?;
    let required: i64 = row.try_get("required_approvals")?;
    Ok(Approval {
        id: ApprovalId::parse(&id).ok_or_else(|| corrupt("id", &id))?,
        agent: row.try_get("agent")?,
        code: row.try_get("code")?,
        language: row.try_get("language")?,
        title: row.try_get("title")?,
        context: context
            .map(|raw| serde_json::from_str(&raw).map_err(|_| corrupt("context", &id)))
            .transpose()?,
        requester_slack_id: row.try_get("requester_slack_id")?,
        required_approvals: u32::try_from(required)
            .map_err(|_| corrupt("required_approvals", &id))?,
        channel: row.try_get("channel")?,
        message_ts: row.try_get("message_ts")?,
        status: Status::parse(&status).ok_or_else(|| corrupt("status", &id))?,
        reason: row.try_get("reason")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: decided_at.map(|raw| parse_time(&raw, &id)).transpose()?,
        created_at: parse_time(&row.try_get::<String, _>("created_at")?, &id)?,
        expires_at: parse_time(&row.try_get::<String, _>("expires_at")?, &id)?,
    })
}

pub(super) fn event_from_row(row: &SqliteRow) -> StoreResult<Event> {
    let detail: String = row.try_get("detail")?;
    let seq: i64 = row.try_get("seq")?;
    Ok(Event {
        seq,
        approval_id: row.try_get("approval_id")?,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        detail: serde_json::from_str(&detail).map_err(|_| corrupt("detail", &seq.to_string()))?,
    })
}

fn parse_time(raw: &str, id: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| corrupt("timestamp", id))
}

fn corrupt(column: &str, id: &str) -> StoreError {
    StoreError::Corrupt(format!("{column} of {id}"))
}
