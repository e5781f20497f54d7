//! Property-based fuzzing of the parsers that hostile input reaches (issue #16,
//! item 5): Slack interaction payloads, the request signature check and the policy
//! file. Each property feeds generated input, structured near the real formats and
//! mutated at random, and requires: no panic, no hang (every input is judged within
//! [`HANG`]), and every refusal a clear error (one line, saying what is wrong).
//!
//! A short run is part of `cargo test` (proptest's default of 256 cases per property,
//! or `PROPTEST_CASES`). A long run, in release mode:
//!
//! ```sh
//! PROPTEST_CASES=1000000 cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! Each property prints how many inputs it tried (visible with `--nocapture`). A
//! failure prints the smallest input that still fails; turn it into a plain unit test
//! beside the parser with the fix.

mod interaction;
mod policy;
mod signature;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use proptest::{
    strategy::Strategy,
    test_runner::{Config, TestCaseError, TestRunner},
};

/// The longest any single input may take to be judged. Generous: debug builds on a
/// shared machine; a parser that hangs takes forever, not two seconds.
pub const HANG: Duration = Duration::from_secs(2);

/// Runs `judge` on one input and fails if it takes longer than [`HANG`].
pub fn within_hang_limit<T>(what: &str, judge: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = judge();
    let took = started.elapsed();
    assert!(took < HANG, "{what} took {took:?} on one input");
    out
}

/// A refusal is clear when it is one non-empty line that names a problem.
pub fn assert_clear(error: &str) {
    assert!(!error.trim().is_empty(), "an empty error message");
    assert!(
        !error.contains('\n') && !error.contains('\r'),
        "a multi-line error message: {error:?}"
    );
}

/// Runs `property` on inputs from `strategy`: `PROPTEST_CASES` of them (256 by
/// default), each within [`HANG`]; prints how many inputs were tried (shrinking a
/// failure included) and fails with the smallest failing input.
pub fn fuzz<S>(name: &str, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    // `Config::default()` reads PROPTEST_CASES and the other PROPTEST_* settings.
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let tried = AtomicU64::new(0);
    let result = runner.run(&strategy, |input| {
        let n = tried.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(100_000) {
            eprintln!("fuzz {name}: {n} inputs so far");
        }
        within_hang_limit(name, || property(input))
    });
    println!(
        "fuzz {name}: {} inputs tried ({cases} cases asked)",
        tried.load(Ordering::Relaxed)
    );
    if let Err(failure) = result {
        panic!("fuzz {name}: {failure}");
    }
}
