//! Pacing one channel's posts at the rate Slack has shown it accepts.
//!
//! Slack documents about one `chat.postMessage` per second per channel, "short bursts
//! tolerated", and answers past that with HTTP 429 and `Retry-After: <seconds>`. A
//! poster that only waits out each 429 and then sends as fast as it can spends the
//! limit on refusals: one 429 per burst, plus a jittered wait per refusal. After the
//! first 429 a [`Pacer`] instead spaces the channel's sends evenly at the rate the
//! channel has just shown: the posts it accepted in the last `Retry-After` window
//! (at least a second), over that window, with a 2 % margin so that clock noise at a
//! window's edge does not cost a refusal. A 429 while already paced slows the pace by
//! at least a quarter, so a stricter limiter is found in a few steps and never
//! hammered. A minute without a 429 forgets the pace (the limit may have been a
//! passing workspace-wide squeeze).
//!
//! One pacer per channel, used by that channel's outbox lane only, which sends one
//! message at a time: no jitter is needed between its own sends (jitter keeps many
//! waiters from stampeding back together; a lane is one waiter).

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Margin over the shown interval between two sends.
const MARGIN: f64 = 1.02;
/// How much a 429 while paced slows the pace, at least.
const SLOWER: f64 = 1.25;
/// The shortest window the rate is judged over.
const MIN_WINDOW: Duration = Duration::from_secs(1);
/// A pace is forgotten after this long without a 429.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Accepted sends remembered for the estimate (more than any window will hold at
/// Slack's per-channel rates).
const HISTORY: usize = 256;

#[derive(Debug)]
struct State {
    /// When recent accepted sends went out, oldest first.
    accepted: VecDeque<Instant>,
    /// The spacing between sends, once a 429 showed the channel's rate.
    interval: Option<Duration>,
    /// The earliest the next send may go.
    next: Option<Instant>,
    /// When the last 429 came.
    limited_at: Option<Instant>,
}

/// Spaces one channel's sends (see the module doc). Shared by reference; every
/// method takes the lock only briefly and never across an await.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<State>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

impl Pacer {
    /// An unpaced channel: sends go at once until its first 429.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                accepted: VecDeque::new(),
                interval: None,
                next: None,
                limited_at: None,
            }),
        }
    }

    /// When the next send may go (`None`: now).
    pub fn next_send(&self) -> Option<Instant> {
        let mut state = self.lock();
        if let (Some(at), Some(_)) = (state.limited_at, state.interval) {
            if at.elapsed() >= FORGET_AFTER {
                state.interval = None;
                state.next = None;
            }
        }
        state.next.filter(|next| *next > Instant::now())
    }

    /// The current spacing between sends, if the channel is paced.
    pub fn interval(&self) -> Option<Duration> {
        self.lock().interval
    }

    /// A send that went out at `sent` was answered (not with a 429): it used up
    /// some of the channel's rate, whatever Slack said.
    pub fn answered(&self, sent: Instant) {
        let mut state = self.lock();
        state.accepted.push_back(sent);
        while state.accepted.len() > HISTORY {
            state.accepted.pop_front();
        }
        if let Some(interval) = state.interval {
            let next = sent + interval;
            state.next = Some(state.next.map_or(next, |n| n.max(next)));
        }
    }

    /// A send that went out at `sent` got a 429 with `retry_after`: sets the pace
    /// from what the channel accepted and returns how long to wait before sending
    /// again (the `Retry-After`, no jitter).
    pub fn limited(&self, sent: Instant, retry_after: Duration) -> Duration {
        let mut state = self.lock();
        let window = retry_after.max(MIN_WINDOW);
        let since = sent.checked_sub(window);
        let shown = state
            .accepted
            .iter()
            .filter(|at| since.is_none_or(|since| **at >= since))
            .count();
        // Nothing accepted in the window: at most one per window.
        let estimate = window.div_f64(shown.max(1) as f64).mul_f64(MARGIN);
        let interval = match state.interval {
            Some(old) => estimate.max(old.mul_f64(SLOWER)),
            None => estimate,
        };
        let now = Instant::now();
        state.interval = Some(interval.min(window.mul_f64(MARGIN)));
        state.next = Some(now + retry_after);
        state.limited_at = Some(now);
        retry_after
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few numbers, valid after any panic.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's per-channel limiter as the benchmark and the e2e test model it:
    /// `per_window` sends per window, the window opening at the first send after
    /// the last one closed; past that, 429 with the rest of the window (≥ 1 s).
    struct Window {
        per_window: usize,
        opened: Option<Instant>,
        used: usize,
    }

    impl Window {
        fn send(&mut self) -> Result<(), Duration> {
            let now = Instant::now();
            if self
                .opened
                .is_none_or(|at| now.duration_since(at) >= MIN_WINDOW)
            {
                self.opened = Some(now);
                self.used = 0;
            }
            if self.used < self.per_window {
                self.used += 1;
                return Ok(());
            }
            Err(Duration::from_secs(1))
        }
    }

    /// Sends `n` messages through `pacer` to `limiter`; returns (elapsed, 429s).
    async fn send_all(pacer: &Pacer, limiter: &mut Window, n: usize) -> (Duration, usize) {
        let start = Instant::now();
        let mut refusals = 0;
        let mut sent_ok = 0;
        while sent_ok < n {
            if let Some(at) = pacer.next_send() {
                tokio::time::sleep_until(at).await;
            }
            let sent = Instant::now();
            match limiter.send() {
                Ok(()) => {
                    pacer.answered(sent);
                    sent_ok += 1;
                }
                Err(after) => {
                    refusals += 1;
                    tokio::time::sleep(pacer.limited(sent, after)).await;
                }
            }
            // Each send takes a little time of its own.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        (start.elapsed(), refusals)
    }

    #[tokio::test(start_paused = true)]
    async fn after_one_429_the_channel_runs_at_the_rate_it_showed() {
        let pacer = Pacer::new();
        let mut limiter = Window {
            per_window: 5,
            opened: None,
            used: 0,
        };
        let (took, refusals) = send_all(&pacer, &mut limiter, 100).await;
        // 5 a second: 100 take 20 s at best. ≥ 90 % of that rate, one 429.
        assert!(took <= Duration::from_millis(22_200), "{took:?}");
        assert_eq!(refusals, 1, "only the first burst meets a 429");
        let interval = pacer.interval().expect("paced");
        assert!(
            (Duration::from_millis(200)..=Duration::from_millis(210)).contains(&interval),
            "{interval:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stricter_limit_is_found_in_a_few_429s() {
        let pacer = Pacer::new();
        // Shown 5/s, then the channel tightens to 1 a second.
        let mut limiter = Window {
            per_window: 5,
            opened: None,
            used: 0,
        };
        send_all(&pacer, &mut limiter, 10).await;
        limiter.per_window = 1;
        let (_, refusals) = send_all(&pacer, &mut limiter, 30).await;
        assert!(refusals <= 8, "{refusals} refusals");
        let interval = pacer.interval().expect("paced");
        assert!(interval >= Duration::from_millis(900), "{interval:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unpaced_until_a_429_and_forgotten_a_minute_after_the_last() {
        let pacer = Pacer::new();
        pacer.answered(Instant::now());
        assert_eq!(pacer.next_send(), None, "no pace before any 429");
        assert_eq!(pacer.interval(), None);
        let sent = Instant::now();
        assert_eq!(
            pacer.limited(sent, Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        // One accepted in a 3 s window: one per 3 s (plus the margin).
        let interval = pacer.interval().expect("paced");
        assert!(interval >= Duration::from_secs(3) && interval < Duration::from_millis(3100));
        assert!(pacer.next_send().is_some());
        tokio::time::advance(FORGET_AFTER).await;
        assert_eq!(pacer.next_send(), None);
        assert_eq!(pacer.interval(), None);
    }
}
