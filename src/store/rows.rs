//! Mapping between database rows and domain types, for rows read through sqlx (the
//! SQLite reader pool, PostgreSQL) and through rusqlite (the SQLite writer's
//! `RETURNING` rows, and the point lookups of `sqlite::readers`). Kept apart so the
//! queries read as queries, and shared so both backends give byte-identical values.

use chrono::{DateTime, Utc};
use sqlx::{postgres::PgRow, sqlite::SqliteRow, Row};

/// A row of either driver, by column name.
pub(super) trait Columns {
    fn text(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;

    fn required_text(&self, column: &str) -> StoreResult<String> {
        self.text(column)?
            .ok_or_else(|| StoreError::Corrupt(format!("{column} is NULL")))
    }
}

impl Columns for SqliteRow {
    fn text(&self, column: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        Ok(self.try_get(column)?)
    }
}

impl Columns for PgRow {
    fn text(&self, column: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        Ok(self.try_get(column)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> StoreResult<Option<String>> {
        Ok(self.get(column)?)
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        Ok(self.get(column)?)
    }
}

use super::{Event, StoreError, StoreResult};
use crate::model::{Approval, ApprovalId, Status};

/// The columns `approval_from_row` reads, in one place so every query selects them.
pub(super) const APPROVAL_COLUMNS: &str = "id, agent, code, language, title, context, \
     requester_slack_id, required_approvals, channel, message_ts, status, reason, decided_by, \
     decided_at, created_at, expires_at";

pub(super) fn approval_from_row(row: &impl Columns) -> StoreResult<Approval> {
    let id = row.required_text("id")?;
    let status = row.required_text("status")?;
    let context = row.text("context")?;
    let decided_at = row.text("decided_at")?;
    let required = row.int("required_approvals")?;
    Ok(Approval {
        id: ApprovalId::parse(&id).ok_or_else(|| corrupt("id", &id))?,
        agent: row.required_text("agent")?,
        code: row.required_text("code")?,
        language: row.text("language")?,
        title: row.text("title")?,
        context: context
            .map(|raw| serde_json::from_str(&raw).map_err(|_| corrupt("context", &id)))
            .transpose()?,
        requester_slack_id: row.text("requester_slack_id")?,
        required_approvals: u32::try_from(required)
            .map_err(|_| corrupt("required_approvals", &id))?,
        channel: row.required_text("channel")?,
        message_ts: row.text("message_ts")?,
        status: Status::parse(&status).ok_or_else(|| corrupt("status", &id))?,
        reason: row.required_text("reason")?,
        decided_by: row.text("decided_by")?,
        decided_at: decided_at.map(|raw| parse_time(&raw, &id)).transpose()?,
        created_at: parse_time(&row.required_text("created_at")?, &id)?,
        expires_at: parse_time(&row.required_text("expires_at")?, &id)?,
    })
}

pub(super) fn event_from_row(row: &impl Columns) -> StoreResult<Event> {
    let detail = row.required_text("detail")?;
    let seq = row.int("seq")?;
    Ok(Event {
        seq,
        approval_id: row.required_text("approval_id")?,
        at: row.required_text("at")?,
        kind: row.required_text("kind")?,
        actor: row.text("actor")?,
        detail: serde_json::from_str(&detail).map_err(|_| corrupt("detail", &seq.to_string()))?,
    })
}

pub(super) fn parse_time(raw: &str, id: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| corrupt("timestamp", id))
}

fn corrupt(column: &str, id: &str) -> StoreError {
    StoreError::Corrupt(format!("{column} of {id}"))
}
