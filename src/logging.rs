//! Log output: human-readable lines by default, JSON lines for a log pipeline
//! (`GREENLIGHT_LOG_FORMAT=json`), level and filters from `RUST_LOG`.
//!
//! What is logged is decided where it is logged; this module only chooses the shape.
//! Secrets stay out by construction: tokens and the signing secret live in
//! `SecretString`s whose `Debug` is redacted, HTTP spans carry the method and the
//! route template but never headers, and approval code is never a log field.

use tracing_subscriber::{filter::Directive, fmt, EnvFilter};

use crate::config::{ConfigError, LogFormat};

/// The filter without `RUST_LOG`: `info`, except PostgreSQL's `NOTICE`s, which sqlx
/// logs at `info` (target `sqlx::postgres::notice`). The only one greenlight causes is
/// the migrator's "relation \"_sqlx_migrations\" already exists, skipping" at every
/// start, which reads like a problem and is not; PostgreSQL's warnings still show.
const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// The log filter for `RUST_LOG`'s value (`None` when unset or blank: the default,
/// `info` with PostgreSQL notices from `warn`), parsed by tracing-subscriber's
/// fallible parser. Config loading calls it so that an
/// invalid value stops start-up like any other setting, rather than being ignored
/// (`EnvFilter::from_default_env` drops what it cannot parse).
///
/// Err: `RUST_LOG` invalid, quoting the first directive the parser refuses and why.
pub fn filter(directives: Option<&str>) -> Result<EnvFilter, ConfigError> {
    let Some(directives) = directives else {
        return Ok(EnvFilter::new(DEFAULT_FILTER));
    };
    EnvFilter::builder().parse(directives).map_err(|error| {
        // The parser says why but not which: ask it about each directive, split at
        // commas as it splits them.
        let culprit = directives
            .split(',')
            .filter(|d| !d.is_empty())
            .find(|d| d.parse::<Directive>().is_err())
            .unwrap_or(directives);
        ConfigError::Invalid {
            var: "RUST_LOG",
            problem: format!(
                "{culprit:?} is not a log filter directive ({error}); use levels and targets such as info or warn,greenlight=debug"
            ),
        }
    })
}

/// Installs the global subscriber, writing to stderr (stdout carries only the
/// "listening on" line tools wait for), filtered by `directives` (`RUST_LOG`; see
/// [`filter`], whose error this returns). A second call is a no-op.
pub fn init(format: LogFormat, directives: Option<&str>) -> Result<(), ConfigError> {
    let builder = fmt()
        .with_env_filter(filter(directives)?)
        .with_writer(std::io::stderr);
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn an_invalid_directive_is_named() {
        for (value, culprit) in [
            ("[[[", "\"[[[\""),
            ("info,greenlight=loud", "\"greenlight=loud\""),
        ] {
            let error = filter(Some(value)).expect_err(value).to_string();
            assert!(
                error.starts_with(&format!("RUST_LOG is invalid: {culprit} is not")),
                "{error}"
            );
        }
    }

    #[test]
    fn valid_directives_and_the_default_parse() {
        for value in [None, Some("info"), Some("warn,greenlight=debug,sqlx=off")] {
            assert!(filter(value).is_ok(), "{value:?}");
        }
    }
}
