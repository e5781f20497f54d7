//! Log output: human-readable lines by default, JSON lines for a log pipeline
//! (`GREENLIGHT_LOG_FORMAT=json`), level and filters from `RUST_LOG`.
//!
//! What is logged is decided where it is logged; this module only chooses the shape.
//! Secrets stay out by construction: tokens and the signing secret live in
//! `SecretString`s whose `Debug` is redacted, HTTP spans carry the method and the
//! route template but never headers, and approval code is never a log field.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// The filter without `RUST_LOG`: `info`, except PostgreSQL's `NOTICE`s, which sqlx
/// logs at `info` (target `sqlx::postgres::notice`). The only one greenlight causes is
/// the migrator's "relation \"_sqlx_migrations\" already exists, skipping" at every
/// start, which reads like a problem and is not; PostgreSQL's warnings still show.
const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// Installs the global subscriber, writing to stderr (stdout carries only the
/// "listening on" line tools wait for). A second call is a no-op.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // The span list puts each line's context (its `request_id`, the HTTP route) on
        // the line itself, so one line can be understood without its neighbours.
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}
