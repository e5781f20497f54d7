//! `doctor`'s PostgreSQL check: the database is reachable, migrated, and accepts
//! greenlight's writes (not a standby, not `default_transaction_read_only`, and the
//! role may create in its schema and write greenlight's tables). It only looks: no
//! migration runs and nothing is written.

use super::{Check, Level};
use crate::store::{redact_url, Store};

/// Checks the PostgreSQL database at `url`; the URL is shown without its password.
pub(super) async fn check(url: &str) -> Check {
    let name = "database";
    let shown = redact_url(url);
    let fix = "check GREENLIGHT_DATABASE_URL (host, port, user, password, database) and that PostgreSQL accepts this host";
    let store = match Store::open_read_only(url).await {
        Ok(store) => store,
        Err(error) => {
            return Check::new(
                Level::Fail,
                name,
                format!(
                    "cannot reach {shown} ({}): {fix}",
                    hide(&error, url, &shown)
                ),
            )
        }
    };
    let checked = async {
        store.ping().await?;
        let pending = store.pending_migrations().await?;
        let refuses = store.refuses_writes().await?;
        Ok::<_, crate::store::StoreError>((pending, refuses))
    }
    .await;
    store.close().await;
    match checked {
        Ok((_, true)) => Check::new(
            Level::Fail,
            name,
            format!("{shown} is read-only for this role (a standby, default_transaction_read_only, or a role without CREATE on its schema or INSERT/UPDATE/DELETE on greenlight's tables): point greenlight serve at the primary with a role that owns the schema"),
        ),
        Ok((pending, false)) if pending.is_empty() => Check::new(
            Level::Ok,
            name,
            format!("{shown} reachable, writable and up to date"),
        ),
        Ok((pending, false)) => Check::new(
            Level::Warn,
            name,
            format!(
                "{shown} lacks {} schema migration(s); greenlight serve applies them at start",
                pending.len()
            ),
        ),
        Err(error) => Check::new(
            Level::Fail,
            name,
            format!("cannot read {shown} ({}): {fix}", hide(&error, url, &shown)),
        ),
    }
}

/// The error's text with the URL (and so its password) replaced by its redacted form.
fn hide(error: &impl std::fmt::Display, url: &str, shown: &str) -> String {
    error.to_string().replace(url, shown)
}
