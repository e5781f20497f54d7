//! The figures that change with `BENCH_REPLICAS`: labels for the per-replica lines,
//! the cross-replica click → answer verdicts (issue #11: an agent long-polling one
//! replica is "answered within 50 ms of the click" that lands on another), and the
//! count of requests the stand-in Slack saw posted more than once. With one replica
//! the labels are empty, so a single-process run prints what it always printed.

use std::{fmt::Display, time::Duration};

use super::{ms, percentile, slack::PostedRequests, verdict};

/// Issue #11: a click on one replica answers a long-poll on another within 50 ms.
const TARGET_CROSS_REPLICA: Duration = Duration::from_millis(50);

/// `"replica 2: "` for replica index 1 of several; nothing for a single process.
pub fn label(index: usize, count: usize) -> String {
    if count == 1 {
        String::new()
    } else {
        format!("replica {}: ", index + 1)
    }
}

/// What the restart line says was killed: with several replicas, only the first
/// (the others keep serving, as they would in a rolling deploy or a crash).
pub fn restart_label(count: usize) -> String {
    if count == 1 {
        String::new()
    } else {
        format!(
            "replica 1 of {count} (the other {} kept serving) ",
            count - 1
        )
    }
}

/// The index and value of the largest of per-replica RSS figures (KiB).
pub fn largest(rss_kib: &[u64]) -> (usize, u64) {
    rss_kib
        .iter()
        .copied()
        .enumerate()
        .max_by_key(|(_, kib)| *kib)
        .unwrap_or((0, 0))
}

/// p50 and p99 of the click → answer samples (sorted), each against issue #11's
/// 50 ms. Every sample polled on one replica and clicked on the next one.
pub fn cross_replica_verdicts(latencies: &[Duration]) {
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let value = percentile(latencies, p);
        verdict(
            &format!("  cross-replica {name}"),
            ms(value),
            format!("≤ {} (issue #11)", ms(TARGET_CROSS_REPLICA)),
            value <= TARGET_CROSS_REPLICA,
        );
    }
}

/// The correctness line on Slack posts: every request must be posted once, on any
/// number of replicas. Reported, not asserted: a run that posts twice says so.
pub fn posted_line(posted: &PostedRequests, submitted: usize) {
    println!(
        "Slack posts: {} distinct requests posted for {submitted} submitted; posted twice: {}{}{}",
        posted.distinct,
        posted.twice,
        if posted.twice > 0 { " (WRONG)" } else { "" },
        if posted.without_id > 0 {
            format!("; {} posts named no request", posted.without_id)
        } else {
            String::new()
        }
    );
}

/// `a, b, c`: addresses or pids of the replicas in a progress line.
pub fn list<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
