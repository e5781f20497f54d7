//! Leases on shared work, and the fence that stops a replica from sending once it can
//! no longer be sure its lease is still its own.
//!
//! On PostgreSQL every replica may deliver the Slack outbox and the decision callbacks,
//! so work is claimed for a while (a lease), not forever: a replica killed mid-send
//! leaves its work to the others once the lease lapses. The danger is the opposite
//! case, work that *outlives* its lease (a slow Slack call, a receiver that hangs, a
//! paused replica): a second replica could then claim and send the same thing. Each
//! kind of work closes that gap structurally:
//!
//! - **Slack outbox lanes** (lease `GREENLIGHT_OUTBOX_LEASE_SECS`, default 30 s): a
//!   lane's batch can take long (a post retries until its request's deadline), so the
//!   lane renews its lease every third of the lease while it works ([`hold`]) and
//!   every write that completes a row is conditional on the lease still being this
//!   replica's (`store::postgres::outbox`). The moment a renewal finds the lease taken,
//!   or no renewal has been confirmed for two thirds of the lease (the database is out
//!   of reach: another replica may claim it once it lapses), [`hold`] returns and the
//!   lane drops its batch, cancelling the Slack call in flight, before the lease can
//!   lapse. The next claimer finds rows with `attempts > 1` and looks in the channel's
//!   history for a post that reached Slack (`slack::history`); a rewrite sent twice
//!   renders the request as it stands, so the later one is never older.
//! - **Callbacks** (lease `GREENLIGHT_CALLBACK_LEASE_SECS`, default 5 s over the attempt
//!   timeout): one attempt is one POST bounded by `GREENLIGHT_CALLBACK_TIMEOUT_SECS`
//!   (default 10 s), and [`check`] refuses at start-up a lease that does not exceed it
//!   by [`CALLBACK_MARGIN`]. A delivery is claimed only when it can be sent at once
//!   (`callbacks::worker`), and the attempt is cut at the claim's local fence
//!   ([`Fence`]), so it ends before the lease does. The retry write is conditional on
//!   the row's `attempts` still being this claim's.
//!
//! What remains: a replica paused (or cut off from the network) *after* its last check
//! and *while* its request is already on the wire can still have that one request land
//! after another replica took over. For callbacks that is a duplicate POST under the
//! same `webhook-id`, which receivers deduplicate by (the Standard Webhooks contract);
//! for a Slack post it is a second message whose buttons act on the same request.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Default outbox lane lease.
pub const DEFAULT_OUTBOX_LEASE: Duration = Duration::from_secs(30);
/// The shortest outbox lease accepted: renewals come every third of it, and a
/// renewal is one small write, so a second between them is the least that leaves
/// room for a loaded database.
pub const MIN_OUTBOX_LEASE: Duration = Duration::from_secs(3);
/// Default time one callback attempt may take (connect, send, answer).
pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than one callback attempt its lease must be: room for the writes
/// that record the attempt and for clock skew between replicas (a claim's lease is
/// stamped with the claiming replica's clock).
pub const CALLBACK_MARGIN: Duration = Duration::from_secs(1);
/// The longest lease or attempt timeout accepted, in seconds.
const MAX_SECS: f64 = 3600.0;

/// A setting that cannot be used: the variable and what is wrong with it (one line).
pub type LeaseError = (&'static str, String);

/// Reads a duration in (possibly fractional) seconds; `None` when unset.
fn seconds(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<Duration>, LeaseError> {
    let Some(raw) = get(var) else {
        return Ok(None);
    };
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0 && *secs <= MAX_SECS)
        .map(|secs| Some(Duration::from_secs_f64(secs)))
        .ok_or((
            var,
            format!("{raw:?} must be a number of seconds above 0 and at most {MAX_SECS}"),
        ))
}

/// The leases and the callback attempt timeout, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leases {
    /// An outbox lane's lease (`GREENLIGHT_OUTBOX_LEASE_SECS`, default 30 s, at least
    /// [`MIN_OUTBOX_LEASE`]), renewed every third of it while the lane works.
    pub outbox: Duration,
    /// A claimed callback delivery's lease (`GREENLIGHT_CALLBACK_LEASE_SECS`, default
    /// the attempt timeout plus 5 s); above the timeout by at least [`CALLBACK_MARGIN`].
    pub callback: Duration,
    /// The most one callback attempt may take, connect to last byte
    /// (`GREENLIGHT_CALLBACK_TIMEOUT_SECS`, default 10 s).
    pub callback_timeout: Duration,
}

/// Reads `GREENLIGHT_OUTBOX_LEASE_SECS`, `GREENLIGHT_CALLBACK_TIMEOUT_SECS` and
/// `GREENLIGHT_CALLBACK_LEASE_SECS` through `get`, and refuses a combination under
/// which work could outlive its lease: an outbox lease under [`MIN_OUTBOX_LEASE`], or
/// a callback lease not longer than the attempt timeout plus [`CALLBACK_MARGIN`].
pub fn check(get: impl Fn(&str) -> Option<String>) -> Result<Leases, LeaseError> {
    let outbox = seconds(&get, "GREENLIGHT_OUTBOX_LEASE_SECS")?.unwrap_or(DEFAULT_OUTBOX_LEASE);
    if outbox < MIN_OUTBOX_LEASE {
        return Err((
            "GREENLIGHT_OUTBOX_LEASE_SECS",
            format!(
                "{} s is too short: a lane renews its lease every third of it, so it must be at least {} s",
                outbox.as_secs_f64(),
                MIN_OUTBOX_LEASE.as_secs()
            ),
        ));
    }
    let callback_timeout =
        seconds(&get, "GREENLIGHT_CALLBACK_TIMEOUT_SECS")?.unwrap_or(DEFAULT_CALLBACK_TIMEOUT);
    let callback = seconds(&get, "GREENLIGHT_CALLBACK_LEASE_SECS")?
        .unwrap_or(callback_timeout + Duration::from_secs(5));
    if callback < callback_timeout + CALLBACK_MARGIN {
        return Err((
            "GREENLIGHT_CALLBACK_LEASE_SECS",
            format!(
                "{} s must exceed the callback attempt timeout (GREENLIGHT_CALLBACK_TIMEOUT_SECS, {} s) by at least {} s, or a slow attempt could be sent again by another replica",
                callback.as_secs_f64(),
                callback_timeout.as_secs_f64(),
                CALLBACK_MARGIN.as_secs()
            ),
        ));
    }
    Ok(Leases {
        outbox,
        callback,
        callback_timeout,
    })
}

/// The leases as the process environment sets them (checked at start-up by
/// `config::Config::from_lookup`, so a value that fails [`check`] here never ran a
/// server; the defaults stand in for it).
pub fn from_env() -> Leases {
    check(|key| std::env::var(key).ok().filter(|v| !v.trim().is_empty())).unwrap_or(Leases {
        outbox: DEFAULT_OUTBOX_LEASE,
        callback: DEFAULT_CALLBACK_TIMEOUT + Duration::from_secs(5),
        callback_timeout: DEFAULT_CALLBACK_TIMEOUT,
    })
}

/// Until when a lease is surely still ours, by this process's monotonic clock.
///
/// A lease written by a statement *sent* at `t` lapses at the database's clock no
/// earlier than `t + lease` (the statement ran after it was sent). The fence keeps a
/// third of the lease as margin, so a replica stops sending well before another may
/// claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    lease: Duration,
    valid_until: Instant,
}

impl Fence {
    /// A fence for a lease taken (or renewed) by a statement sent at `sent_at`.
    pub fn new(lease: Duration, sent_at: Instant) -> Self {
        Self {
            lease,
            valid_until: sent_at + lease - lease / 3,
        }
    }

    /// A renewal sent at `sent_at` was confirmed.
    pub fn renewed(&mut self, sent_at: Instant) {
        self.valid_until = self.valid_until.max(sent_at + self.lease - self.lease / 3);
    }

    /// Past this instant the lease may be someone else's: stop sending.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// How often to renew: a third of the lease, so one failed renewal still leaves
    /// a second try before the fence closes.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }
}

/// Why [`hold`] let go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// A renewal found the lease held by another replica.
    Taken,
    /// No renewal was confirmed before the fence closed (the last error, in words).
    Unconfirmed(String),
}

/// Keeps a lease while the caller works: renews it through `renew` (`Ok(true)`: still
/// ours and extended; `Ok(false)`: someone else's) every [`Fence::renew_every`], and
/// returns as soon as it is lost or can no longer be vouched for. Never returns while
/// renewals succeed, so the caller races it against the work (`tokio::select!`) and
/// drops the work when it returns.
pub async fn hold<F, Fut, E>(mut fence: Fence, mut renew: F) -> Lost
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, E>>,
    E: std::fmt::Display,
{
    let mut last_error = String::from("no renewal was confirmed");
    let mut next = Instant::now() + fence.renew_every();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(fence.valid_until()) => {
                return Lost::Unconfirmed(last_error);
            }
            () = tokio::time::sleep_until(next) => {}
        }
        let sent_at = Instant::now();
        let renewed = tokio::select! {
            () = tokio::time::sleep_until(fence.valid_until()) => {
                return Lost::Unconfirmed(last_error);
            }
            renewed = renew() => renewed,
        };
        match renewed {
            Ok(true) => {
                fence.renewed(sent_at);
                next = sent_at + fence.renew_every();
            }
            Ok(false) => return Lost::Taken,
            Err(error) => {
                last_error = error.to_string();
                // Try again soon: the fence still has time left.
                next = Instant::now() + (fence.renew_every() / 4).max(Duration::from_millis(50));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
    };

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn defaults_keep_every_attempt_inside_its_lease() {
        let leases = check(lookup(&[])).expect("defaults are valid");
        assert_eq!(leases.outbox, Duration::from_secs(30));
        assert_eq!(leases.callback_timeout, Duration::from_secs(10));
        assert_eq!(leases.callback, Duration::from_secs(15));
    }

    #[test]
    fn a_callback_lease_not_above_the_attempt_timeout_is_refused() {
        let (var, problem) = check(lookup(&[("GREENLIGHT_CALLBACK_LEASE_SECS", "10")]))
            .expect_err("10 s lease, 10 s attempts");
        assert_eq!(var, "GREENLIGHT_CALLBACK_LEASE_SECS");
        assert!(
            problem.contains("GREENLIGHT_CALLBACK_TIMEOUT_SECS, 10 s"),
            "{problem}"
        );
        assert!(!problem.contains('\n'));
        // A shorter attempt makes a short lease valid.
        let leases = check(lookup(&[
            ("GREENLIGHT_CALLBACK_LEASE_SECS", "2"),
            ("GREENLIGHT_CALLBACK_TIMEOUT_SECS", "1"),
        ]))
        .expect("1 s attempts in a 2 s lease");
        assert_eq!(leases.callback, Duration::from_secs(2));
        // The default lease follows the attempt timeout.
        let leases = check(lookup(&[("GREENLIGHT_CALLBACK_TIMEOUT_SECS", "30")])).expect("valid");
        assert_eq!(leases.callback, Duration::from_secs(35));
    }

    #[test]
    fn a_short_or_unreadable_outbox_lease_is_refused() {
        let (var, _) = check(lookup(&[("GREENLIGHT_OUTBOX_LEASE_SECS", "1")])).expect_err("1 s");
        assert_eq!(var, "GREENLIGHT_OUTBOX_LEASE_SECS");
        for raw in ["soon", "-3", "NaN", "0", "100000"] {
            let (var, problem) =
                check(lookup(&[("GREENLIGHT_OUTBOX_LEASE_SECS", raw)])).expect_err(raw);
            assert_eq!(var, "GREENLIGHT_OUTBOX_LEASE_SECS");
            assert!(problem.contains(raw), "{problem}");
        }
        let leases = check(lookup(&[("GREENLIGHT_OUTBOX_LEASE_SECS", "4.5")])).expect("4.5 s");
        assert_eq!(leases.outbox, Duration::from_millis(4500));
    }

    #[test]
    fn the_fence_closes_a_third_of_the_lease_early_and_never_moves_back() {
        let t0 = Instant::now();
        let mut fence = Fence::new(Duration::from_secs(30), t0);
        assert_eq!(fence.valid_until(), t0 + Duration::from_secs(20));
        assert_eq!(fence.renew_every(), Duration::from_secs(10));
        fence.renewed(t0 + Duration::from_secs(10));
        assert_eq!(fence.valid_until(), t0 + Duration::from_secs(30));
        // A late confirmation of an older renewal does not shorten it.
        fence.renewed(t0 + Duration::from_secs(5));
        assert_eq!(fence.valid_until(), t0 + Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn hold_keeps_a_lease_that_renews_and_lets_go_when_it_is_taken() {
        let renewals = Arc::new(AtomicUsize::new(0));
        let counter = renewals.clone();
        let fence = Fence::new(Duration::from_secs(3), Instant::now());
        let held = hold(fence, move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, String>(n < 10) }
        });
        let started = Instant::now();
        assert_eq!(held.await, Lost::Taken);
        // Ten renewals a second apart succeeded, the eleventh found it taken.
        assert_eq!(renewals.load(Ordering::SeqCst), 11);
        assert_eq!(started.elapsed(), Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn hold_lets_go_at_the_fence_when_no_renewal_is_confirmed() {
        let fence = Fence::new(Duration::from_secs(3), Instant::now());
        let started = Instant::now();
        let lost = hold(fence, || async { Err::<bool, _>("database unreachable") }).await;
        assert_eq!(lost, Lost::Unconfirmed("database unreachable".into()));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn hold_does_not_wait_on_a_renewal_past_the_fence() {
        let fence = Fence::new(Duration::from_secs(3), Instant::now());
        let started = Instant::now();
        let lost = hold(fence, std::future::pending::<Result<bool, String>>).await;
        assert!(matches!(lost, Lost::Unconfirmed(_)));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
