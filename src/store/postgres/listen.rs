//! Cross-replica wake-ups: every write transaction `NOTIFY`s what it changed on one
//! channel, and every replica `LISTEN`s there (sqlx's `PgListener`, one connection of
//! its own). PostgreSQL delivers a notification only when its transaction commits, so
//! a replica never wakes for a change it cannot read yet.
//!
//! A payload is `<sender> <kind> <argument>`:
//! - `d <id>`: the request is final: long-polls on it answer, live lists refresh;
//! - `c <id>`: the request was stored or voted on: live lists refresh;
//! - `o <channel>`: the channel has outbox rows: its lane starts (or claims again);
//! - `x <rfc3339>`: a pending request expires then: the deadline worker looks sooner;
//! - `n <rfc3339>`: a pending request's reminder or escalation is due then: the nudge
//!   worker looks sooner;
//! - `k -`: a decision callback was queued: the callbacks worker claims.
//!
//! A replica ignores its own notifications (it signalled itself at commit). Missed
//! notifications (the listening connection dropped) are made up for at reconnection:
//! the deadline worker and every outbox channel are woken, and a long-poll re-reads
//! the request at the end of its wait anyway.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{postgres::PgListener, Postgres as Pg, Transaction};

use super::Postgres;
use crate::{
    model::{rfc3339, ApprovalId},
    store::{RemoteChange, Signals, StoreResult},
};

/// The one `LISTEN` channel.
pub const CHANNEL: &str = "greenlight";

/// What a transaction tells the other replicas once it commits.
pub(super) enum Note<'a> {
    Decided(ApprovalId),
    Changed(ApprovalId),
    Outbox(&'a str),
    Deadline(DateTime<Utc>),
    Nudge(DateTime<Utc>),
    Callback,
}

/// Queues `note` in `tx`: delivered to every listener when `tx` commits, never if it
/// rolls back.
pub(super) async fn notify(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    note: Note<'_>,
) -> StoreResult<()> {
    let payload = match note {
        Note::Decided(id) => format!("{me} d {id}"),
        Note::Changed(id) => format!("{me} c {id}"),
        Note::Outbox("") => return Ok(()),
        Note::Outbox(channel) => format!("{me} o {channel}"),
        Note::Deadline(at) => format!("{me} x {}", rfc3339(at)),
        Note::Nudge(at) => format!("{me} n {}", rfc3339(at)),
        Note::Callback => format!("{me} k -"),
    };
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Starts listening; returns once the `LISTEN` is in place, so nothing committed after
/// the store is connected goes unheard.
pub(super) async fn start(store: Postgres, signals: Arc<Signals>) -> StoreResult<()> {
    let mut listener = PgListener::connect_with(&store.pool).await?;
    listener.listen(CHANNEL).await?;
    tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(note)) => apply(&store, &signals, note.payload()),
                // The connection dropped; the next try_recv reconnects and re-listens.
                Ok(None) => catch_up(&store, &signals).await,
                Err(error) => {
                    if store.pool.is_closed() {
                        return;
                    }
                    tracing::warn!(%error, "LISTEN connection failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    catch_up(&store, &signals).await;
                }
            }
        }
    });
    Ok(())
}

/// Passes one notification to this replica's workers and waiters.
fn apply(store: &Postgres, signals: &Signals, payload: &str) {
    let mut parts = payload.splitn(3, ' ');
    let (Some(sender), Some(kind), Some(argument)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    if sender == &*store.me {
        return;
    }
    match kind {
        "d" | "c" => {
            if let Some(id) = ApprovalId::parse(argument) {
                let _ = signals.remote.send(RemoteChange {
                    id,
                    decided: kind == "d",
                });
            }
        }
        "o" => signals.outbox.mark(argument),
        "x" => {
            if let Ok(at) = DateTime::parse_from_rfc3339(argument) {
                signals.deadlines.inserted(at.with_timezone(&Utc));
            }
        }
        "n" => {
            if let Ok(at) = DateTime::parse_from_rfc3339(argument) {
                signals.nudges.inserted(at.with_timezone(&Utc));
            }
        }
        "k" => signals.callbacks.decided(),
        _ => {}
    }
}

/// After notifications may have been missed: wake the deadline, nudge and callbacks
/// workers and every channel with outbox rows.
async fn catch_up(store: &Postgres, signals: &Signals) {
    signals.deadlines.inserted(Utc::now());
    signals.nudges.inserted(Utc::now());
    signals.callbacks.decided();
    if let Ok(channels) = store.outbox_channels().await {
        for channel in channels {
            signals.outbox.mark(&channel);
        }
    }
}
