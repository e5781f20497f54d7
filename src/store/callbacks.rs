//! Decision callbacks in the store: where a request's `callback_url` is kept, and the
//! delivery rows the callbacks worker (`crate::callbacks`) sends.
//!
//! A delivery row is written by `on_decided_in`, which the one write that ends a
//! request (`requests::decide_in`) calls inside its own transaction: the decision and
//! the promise to tell the application about it commit together, so a crash between
//! the decision and the delivery only delays the delivery until the next start. The
//! body is rendered at that moment and stored, so every retry sends the same bytes under
//! the same `event_id` (the `webhook-id` receivers deduplicate by).
//!
//! `attempts` is raised when a row is claimed, before the receiver is called: a row
//! found at start-up with `attempts > 0` may already have been delivered once, which
//! the receiver's deduplication by `webhook-id` absorbs.
//!
//! On PostgreSQL several replicas' workers claim rows: a claim takes them
//! `FOR UPDATE SKIP LOCKED` and moves their `not_before` a lease ahead, so no two
//! replicas send the same attempt; a replica that dies mid-send leaves the row due
//! again when the lease runs out. A committed delivery row wakes the other replicas'
//! workers through `NOTIFY`. Queries: `sqlite/callbacks.rs`, `postgres/callbacks.rs`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::{dispatch, NewEvent, Store, StoreResult};
use crate::model::{rfc3339, ApprovalId};

/// The `type` of a single request's callback.
pub const APPROVAL_DECIDED: &str = "approval.decided";
/// The `type` of a batch's callback.
pub const BATCH_DECIDED: &str = "batch.decided";

/// Wakes the callbacks worker when a delivery row may have been committed. A spare
/// wake costs one indexed read; a missed one cannot happen (`Notify` keeps a permit).
#[derive(Debug, Default)]
pub struct CallbackSignal {
    notify: Notify,
}

impl CallbackSignal {
    /// A decision was committed: there may be a callback to send.
    pub fn decided(&self) {
        self.notify.notify_one();
    }

    /// Resolves at the next [`CallbackSignal::decided`] (or at once if one came since
    /// the last wait).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }
}

/// A claimed delivery.
#[derive(Clone, PartialEq)]
pub struct Delivery {
    /// The row's id, increasing as rows are queued: what [`ClaimShape::in_flight`]
    /// and [`Store::next_callback_due`] name it by.
    pub seq: i64,
    /// The `webhook-id`: one per event, the same on every retry.
    pub event_id: String,
    /// The agent whose secret signs it.
    pub agent: String,
    /// Where to POST: the canonical URL the request or batch was submitted with
    /// (`CallbackSettings::check_url`).
    pub url: String,
    /// The exact bytes to send (JSON).
    pub body: String,
    /// The request whose audit trail records the attempts (a batch's first item).
    pub audit_id: ApprovalId,
    /// Claims so far, this one included.
    pub attempts: u32,
}

impl std::fmt::Debug for Delivery {
    // The body holds the decision, not a secret, but it can be long: leave it out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("seq", &self.seq)
            .field("event_id", &self.event_id)
            .field("agent", &self.agent)
            .field("url", &self.url)
            .field("audit_id", &self.audit_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// What the callbacks worker may claim now, so that one slow receiver cannot hold up
/// the others: at most `limit` deliveries, at most `per_host` in flight per receiver
/// ([`host_key`]), and none of those already in flight (`in_flight`, by `seq`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimShape {
    /// Most deliveries this claim returns: the worker's free slots.
    pub limit: u32,
    /// Most deliveries in flight per receiver, those in `in_flight` included.
    pub per_host: usize,
    /// Deliveries in flight now: `seq` → [`host_key`] of its URL.
    pub in_flight: HashMap<i64, String>,
}

impl ClaimShape {
    /// Rows looked at per claim: more than `limit`, so a receiver's backlog that
    /// reached its cap within this claim leaves room for other receivers' rows.
    pub(crate) fn window(&self) -> u32 {
        self.limit.saturating_mul(4)
    }

    /// The `seq`s in flight (excluded from the claim).
    pub(crate) fn in_flight_seqs(&self) -> Vec<i64> {
        self.in_flight.keys().copied().collect()
    }

    /// Hosts at their cap already: the claim's SQL leaves their rows alone (by URL
    /// prefix, which [`host_key`] is for the canonical URLs stored at submit).
    pub(crate) fn busy(&self) -> Vec<String> {
        self.counts()
            .into_iter()
            .filter(|(_, n)| *n >= self.per_host)
            .map(|(host, _)| host)
            .collect()
    }

    fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for host in self.in_flight.values() {
            *counts.entry(host.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Of `candidates` (`seq`, `url`, oldest first), those to claim: in order, up to
    /// `limit`, without taking any host past `per_host` in flight.
    pub(crate) fn pick(&self, candidates: &[(i64, String)]) -> Vec<i64> {
        let mut counts = self.counts();
        let mut picked = Vec::new();
        for (seq, url) in candidates {
            if picked.len() >= self.limit as usize {
                break;
            }
            if self.in_flight.contains_key(seq) {
                continue;
            }
            let n = counts.entry(host_key(url)).or_insert(0);
            if *n < self.per_host {
                *n += 1;
                picked.push(*seq);
            }
        }
        picked
    }
}

/// The receiver a callback URL reaches, as the worker counts them: the URL up to its
/// path, `scheme://host[:port]/`. Stored URLs are canonical (`url::Url`'s
/// serialisation, from `CallbackSettings::check_url`), so every stored URL of that
/// receiver starts with exactly this. A URL that does not parse is its own receiver.
pub fn host_key(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.has_host() => {
            format!("{}/", &parsed[..url::Position::BeforePath])
        }
        _ => url.to_owned(),
    }
}

/// The callback body: `{"type", "timestamp", "data"}` (see docs/api-contract.md).
pub(crate) fn payload(kind: &str, at: DateTime<Utc>, data: Value) -> String {
    json!({ "type": kind, "timestamp": rfc3339(at), "data": data }).to_string()
}

impl Store {
    /// What wakes the callbacks worker.
    pub fn callback_signal(&self) -> &CallbackSignal {
        &self.signals.callbacks
    }

    /// Claims deliveries due at `now` as `shape` allows (oldest first, at most
    /// `shape.per_host` in flight per receiver, none already in flight), raising their
    /// `attempts`. On PostgreSQL the claim also moves their `not_before` a lease ahead,
    /// so no other replica claims them while this one sends; a delivery cut off by a
    /// crash is due again at the next start (SQLite) or when its lease runs out
    /// (PostgreSQL).
    pub async fn claim_callbacks(
        &self,
        now: DateTime<Utc>,
        shape: &ClaimShape,
    ) -> StoreResult<Vec<Delivery>> {
        let mut claimed = dispatch!(self, claim_callbacks(now, shape))?;
        claimed.sort_by_key(|d| d.seq);
        Ok(claimed)
    }

    /// When the earliest delivery not in `in_flight` (by `seq`) may be tried; `None`
    /// when there is none.
    pub async fn next_callback_due(&self, in_flight: &[i64]) -> StoreResult<Option<DateTime<Utc>>> {
        dispatch!(self, next_callback_due(in_flight))
    }

    /// The delivery is over (delivered, or given up on): removes it and appends
    /// `events` to its request's trail, in one transaction. Not fenced by the claim:
    /// a delivered callback is delivered, whoever holds the row now.
    pub async fn callback_done(
        &self,
        delivery: &Delivery,
        events: Vec<NewEvent>,
    ) -> StoreResult<()> {
        dispatch!(self, callback_done(delivery, events))
    }

    /// The attempt failed; the delivery is tried again at `not_before`, and `event`
    /// goes on its request's trail. On PostgreSQL only while the row is still this
    /// claim's (its `attempts` unchanged): a lease that lapsed leaves the row to the
    /// replica that claimed it since.
    pub async fn callback_retry(
        &self,
        delivery: &Delivery,
        not_before: DateTime<Utc>,
        event: NewEvent,
    ) -> StoreResult<()> {
        dispatch!(self, callback_retry(delivery, not_before, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_is_its_scheme_host_and_port() {
        assert_eq!(
            host_key("http://127.0.0.1:4000/cb?x=1"),
            "http://127.0.0.1:4000/"
        );
        assert_eq!(
            host_key("https://hooks.example.com/a/b"),
            "https://hooks.example.com/"
        );
        assert_eq!(
            host_key("https://hooks.example.com:443/a"),
            "https://hooks.example.com/"
        );
        assert_eq!(host_key("http://[::1]:8080/"), "http://[::1]:8080/");
        assert_eq!(host_key("not a url"), "not a url");
        // The key is a prefix of every canonical URL of that receiver, and of no other.
        let a = url::Url::parse("HTTP://Example.com:8080/cb")
            .expect("url")
            .to_string();
        assert!(a.starts_with(&host_key(&a)));
        assert!(!"http://example.com:80800/cb".starts_with(&host_key(&a)));
    }

    fn shape(in_flight: &[(i64, &str)]) -> ClaimShape {
        ClaimShape {
            limit: 4,
            per_host: 2,
            in_flight: in_flight
                .iter()
                .map(|(seq, url)| (*seq, host_key(url)))
                .collect(),
        }
    }

    #[test]
    fn a_claim_caps_each_receiver_and_skips_what_is_in_flight() {
        let slow = "http://slow.test/cb";
        let fast = "http://fast.test/cb";
        let candidates: Vec<(i64, String)> = [
            (1, slow),
            (2, slow),
            (3, slow),
            (4, fast),
            (5, slow),
            (6, fast),
        ]
        .iter()
        .map(|(seq, url)| (*seq, (*url).to_owned()))
        .collect();
        assert_eq!(shape(&[]).pick(&candidates), vec![1, 2, 4, 6]);
        // One of slow's is in flight: one more of slow's, then fast's.
        let one = shape(&[(1, slow)]);
        assert_eq!(one.pick(&candidates), vec![2, 4, 6]);
        assert!(one.busy().is_empty());
        // slow is at its cap: only fast's, and slow is named busy for the SQL.
        let full = shape(&[(1, slow), (2, slow)]);
        assert_eq!(full.pick(&candidates), vec![4, 6]);
        assert_eq!(full.busy(), vec!["http://slow.test/".to_owned()]);
        assert_eq!(full.window(), 16);
    }
}
