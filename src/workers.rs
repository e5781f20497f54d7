//! Background workers: started by name, restarted when one panics, stopped together.
//!
//! Every worker is a loop over the store (deadlines, the Slack outbox, retention), so
//! starting it again is the whole of its recovery: nothing it held in memory is lost
//! that the store does not still have. A panic in one therefore costs a log line, a
//! count in `greenlight_worker_restarts_total{worker}` and a short pause, not the
//! silent end of expiry or posting while `/readyz` still says ready.

use std::{future::Future, panic::AssertUnwindSafe, time::Duration};

use futures::FutureExt;
use tokio::{task::JoinHandle, time::Instant};

use crate::metrics::Metrics;

/// The first pause before a panicked worker starts again.
pub const RESTART_MIN: Duration = Duration::from_millis(100);
/// The longest pause between restarts of a worker that keeps panicking.
pub const RESTART_MAX: Duration = Duration::from_secs(30);
/// A worker that ran this long before panicking starts its next pause from
/// [`RESTART_MIN`] again: the fault was not in starting.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The running workers, by name. Dropping it stops them all.
pub struct Workers {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    metrics: Metrics,
}

impl Workers {
    /// No workers yet; restarts are counted in `metrics`
    /// (`greenlight_worker_restarts_total`).
    pub fn new(metrics: Metrics) -> Self {
        Self {
            tasks: Vec::new(),
            metrics,
        }
    }

    /// Runs `make()` as the worker `name`. When that future panics, a new one is made
    /// and run after a pause that doubles from [`RESTART_MIN`] up to [`RESTART_MAX`];
    /// when it returns, the worker is done (a one-off check, say).
    pub fn start<F, Fut>(&mut self, name: &'static str, make: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        tracing::debug!(worker = name, "starting");
        let metrics = self.metrics.clone();
        let task = tokio::spawn(supervise(name, make, move || {
            metrics.worker_restarted(name)
        }));
        self.tasks.push((name, task));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (name, task) in &self.tasks {
            tracing::debug!(worker = name, "stopping");
            task.abort();
        }
    }
}

/// Runs the worker until it returns, restarting it after each panic.
async fn supervise<F, Fut>(name: &'static str, make: F, on_restart: impl Fn())
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut pause = RESTART_MIN;
    loop {
        let started = Instant::now();
        // The future runs in this task (not a task of its own), so aborting the
        // supervisor stops the worker too.
        let Err(panic) = AssertUnwindSafe(make()).catch_unwind().await else {
            tracing::debug!(worker = name, "finished");
            return;
        };
        if started.elapsed() >= HEALTHY_RUN {
            pause = RESTART_MIN;
        }
        tracing::error!(
            worker = name,
            panic = panic_message(&*panic),
            restart_in_ms = pause.as_millis() as u64,
            "a background worker panicked; restarting it"
        );
        on_restart();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RESTART_MAX);
    }
}

/// The text a panic carried, when it was a string (`panic!("…")` carries one).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;

    /// Starts a worker that panics on its first `panics` runs and then returns;
    /// answers how many runs and restarts there were.
    async fn run_panicking(panics: usize) -> (usize, usize, Duration) {
        let runs = Arc::new(AtomicUsize::new(0));
        let restarts = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let make = {
            let runs = runs.clone();
            move || {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                async move {
                    if run < panics {
                        panic!("worker fault {run}");
                    }
                }
            }
        };
        let counted = restarts.clone();
        supervise("test", make, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .await;
        (
            runs.load(Ordering::SeqCst),
            restarts.load(Ordering::SeqCst),
            started.elapsed(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_returns_is_not_restarted() {
        assert_eq!(run_panicking(0).await, (1, 0, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_worker_restarts_with_doubling_pauses() {
        let (runs, restarts, took) = run_panicking(3).await;
        assert_eq!((runs, restarts), (4, 3));
        // 100 ms + 200 ms + 400 ms of pauses.
        assert_eq!(took, Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pause_stops_growing_at_the_cap() {
        let (_, restarts, took) = run_panicking(12).await;
        assert_eq!(restarts, 12);
        // 0.1+0.2+…+25.6 s doubling (9 pauses), then three at the 30 s cap.
        let doubling: u64 = (0..9).map(|i| 100u64 << i).sum();
        assert_eq!(took, Duration::from_millis(doubling + 3 * 30_000));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_workers_stops_a_running_worker() {
        let runs = Arc::new(AtomicUsize::new(0));
        let mut workers = Workers::new(Metrics::new());
        let counter = runs.clone();
        workers.start("forever", move || {
            let counter = counter.clone();
            async move {
                loop {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        drop(workers);
        let seen = runs.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            seen,
            "the worker ran on after the drop"
        );
        assert_eq!(seen, 3);
    }
}
