//! Exporting the audit trail as JSON lines, for a SIEM or an archive.
//!
//! One event per line, in the order they happened (`seq`), each carrying its request
//! id. Pages through the store so a large trail streams instead of loading at once.

use std::io::Write;

use chrono::{DateTime, Utc};

use crate::store::{Store, StoreError};

const PAGE: u32 = 1000;

/// Why an export stopped part-way; the events before it were already written to
/// `out`, in order.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A page of events could not be read from the database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output refused a line (a closed pipe, a full disk), or an event did not
    /// serialise.
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// Writes every event at or after `since` (all when `None`) to `out`; returns the count.
pub async fn export(
    store: &Store,
    since: Option<DateTime<Utc>>,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let mut after_seq = 0;
    let mut written = 0;
    loop {
        let page = store.events_page(since, after_seq, PAGE).await?;
        let Some(last) = page.last() else { break };
        after_seq = last.seq;
        for event in &page {
            serde_json::to_writer(&mut *out, event).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.flush()?;
    Ok(written)
}

/// Parses `--since`: an RFC 3339 timestamp such as `2026-11-25T00:00:00Z`.
pub fn parse_since(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!("--since {raw:?} is not an RFC 3339 timestamp such as 2026-11-25T00:00:00Z")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_offsets_and_rejects_dates_only() {
        let t = parse_since("2026-11-25T10:00:00+01:00").expect("valid");
        assert_eq!(t.to_rfc3339(), "2026-11-25T09:00:00+00:00");
        assert!(parse_since("2026-11-25").is_err());
        assert!(parse_since("yesterday").is_err());
    }
}
