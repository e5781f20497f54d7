//! Running greenlight in production (#7): readiness, metrics, logs, graceful shutdown,
//! the OpenAPI document and submission limits.
//!
//! Shutdown and logging are tested on the real binary (`CARGO_BIN_EXE_greenlight`):
//! signals, the global log subscriber and process exit codes only exist there.

mod health;
mod limits;
mod logs;
mod metrics;
mod openapi;
mod shutdown;

use std::collections::HashMap;

pub use crate::helpers::binary::{command, Binary};

/// Parses a Prometheus text scrape into `series → value` (series as written, labels
/// included).
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Scrapes `/metrics` at `base`.
pub async fn scrape(http: &reqwest::Client, base: &str) -> HashMap<String, f64> {
    let response = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    parse_metrics(&response.text().await.expect("metrics text"))
}

/// One series' value, 0 when absent.
pub fn value(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}
