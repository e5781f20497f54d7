//! The web review page, served by the same binary under `/web`: a second surface
//! beside Slack, and the only one when Slack is not configured.
//!
//! Reviewers (`GREENLIGHT_REVIEWERS`, see [`reviewers`]) sign in with their secret;
//! with none configured, one local reviewer, who has no secret, signs in with the
//! one-time link `serve` prints (a restart prints a new one). The sign-in pages offer
//! only the way that works ([`Web::secrets`]). A session is a random cookie (`HttpOnly`, `SameSite=Strict`, and
//! `Secure` when `GREENLIGHT_PUBLIC_URL` is https) whose SHA-256 the database maps to
//! the reviewer's name and id ([`sessions`], `crate::store::web_sessions`), so any
//! replica serves any signed-in reviewer, a link printed by one works on any (once),
//! and a restart signs nobody out. A session whose reviewer this process's
//! configuration no longer has (removed, renamed, another Slack id, another secret)
//! is no session. Every POST carries the session's CSRF token. Sign-in attempts are
//! rate-limited ([`SIGN_INS_PER_MINUTE`], shared by the replicas on PostgreSQL).
//! Every page but the sign-in pages and the static assets needs a session.
//!
//! Deciding goes through the same `ApprovalService` calls as a Slack click
//! (`approve`, `deny`), so approver lists, the no-self-approval rule, N-of-M votes and
//! "the first decision wins" are the domain's, not this module's; the page only asks
//! the service which buttons to show (`refusal_for`). The service's change feed
//! (`subscribe_changes`) keeps the pending list and an open request live over
//! server-sent events (`live`), whichever surface made the change.
//!
//! # Layout
//! - [`reviewers`]: `GREENLIGHT_REVIEWERS`. [`sessions`]: sessions, links, CSRF.
//! - `auth`: the signed-in extractor, cookies, sign-in and sign-out handlers.
//! - `pages`: the pending list, request view, Approve / Deny, history.
//! - `grants`: the standing grants list on the pending page, and Revoke.
//! - `live`: server-sent events. `views`: askama templates (`templates/web/`).
//! - `highlight`: syntect. `assets`: htmx, its SSE extension, our script and CSS.

mod assets;
mod auth;
mod grants;
mod highlight;
mod live;
mod pages;
pub mod reviewers;
pub mod sessions;
mod views;

/// The signed-in reviewer, for other HTTP areas that act for a person (revoking a
/// standing grant, `crate::http::grants`).
pub use auth::{NotSignedIn, SignedIn};

use std::sync::Arc;

use axum::{
    http::{header, HeaderValue},
    middleware,
    response::Response,
    routing::{get, post},
    Router,
};
use futures::future::BoxFuture;
use tokio::time::Instant;

use chrono::Utc;

use self::{reviewers::WebReviewer, sessions::LINK_TTL};
use crate::{
    approval::approvers::GroupMembers,
    config::Config,
    http::AppState,
    limits::Buckets,
    store::{
        web_sessions::{NewLink, WebIdentity},
        Store, StoreResult,
    },
};

/// Sign-in attempts (secret or link) allowed a minute, across all clients and, on
/// PostgreSQL, all replicas: enough for a team, far too few to guess a 16-character
/// secret.
pub const SIGN_INS_PER_MINUTE: u32 = 20;

/// The sign-in limit's bucket: a space, so no agent's name (whose bucket sits in the
/// same table on PostgreSQL) can be it.
const SIGN_IN_BUCKET: &str = "web sign-in";

/// The name of the reviewer who signs in with the printed link when
/// `GREENLIGHT_REVIEWERS` is unset.
pub const LOCAL_REVIEWER: &str = "local";

/// User groups without Slack: they cannot be read, so an approver list naming one
/// refuses everyone not listed by id (fail closed).
pub struct NoSlackGroups;

impl GroupMembers for NoSlackGroups {
    fn members<'a>(
        &'a self,
        _group: &'a str,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async { Err("Slack is not configured, so user groups cannot be read".into()) })
    }
}

/// The page's reviewers and sign-in state. Cheap to clone.
#[derive(Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

struct Inner {
    reviewers: Vec<WebReviewer>,
    /// True when no reviewers are configured and the one reviewer is the local one.
    local: bool,
    /// Sign-in attempts, shared by the replicas of one PostgreSQL database.
    sign_ins: Buckets,
    /// Mark cookies `Secure`: reviewers reach greenlight over https.
    secure_cookies: bool,
}

impl Web {
    /// The configured reviewers, or the local reviewer (with a random secret nobody
    /// knows: they sign in with the printed link).
    pub fn new(config: &Config, store: &Store) -> Self {
        let local = config.reviewers.is_empty();
        let reviewers = if local {
            vec![WebReviewer {
                name: LOCAL_REVIEWER.into(),
                slack_user_id: None,
                secret: sessions::random_token().into(),
            }]
        } else {
            config.reviewers.clone()
        };
        Self {
            inner: Arc::new(Inner {
                reviewers,
                local,
                sign_ins: Buckets::for_store(store, SIGN_INS_PER_MINUTE),
                secure_cookies: config
                    .public_url
                    .as_deref()
                    .is_some_and(|url| url.starts_with("https://")),
            }),
        }
    }

    /// Whether reviewers sign in with secrets (`GREENLIGHT_REVIEWERS` is set). Without
    /// them the one reviewer is the local one, whose secret is random and known to
    /// nobody: only the one-time link `serve` prints signs in, so the sign-in pages
    /// must not ask for a secret.
    pub fn secrets(&self) -> bool {
        !self.inner.local
    }

    /// Every reviewer's id (`web:<name>` or their Slack user id), in configured order.
    pub fn reviewer_ids(&self) -> Vec<String> {
        self.inner.reviewers.iter().map(WebReviewer::id).collect()
    }

    /// The line `serve` prints: with the local reviewer, a fresh one-time sign-in link
    /// (valid for [`LINK_TTL`], stored so that any replica takes it); otherwise where
    /// to sign in with a secret. `Err`: the link could not be stored.
    pub async fn start_line(&self, store: &Store, base: &str) -> StoreResult<String> {
        let Some(local) = self.inner.reviewers.first().filter(|_| self.inner.local) else {
            return Ok(format!(
                "greenlight review page: {base}/web (sign in with a reviewer secret from GREENLIGHT_REVIEWERS)"
            ));
        };
        let token = sessions::random_token();
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(LINK_TTL).unwrap_or(chrono::Duration::hours(1));
        store
            .issue_web_link(NewLink {
                token_hash: sessions::token_hash(&token),
                reviewer: identity(local),
                created_at: now,
                expires_at: now + ttl,
            })
            .await?;
        Ok(format!(
            "greenlight review page: {base}/web/link/{token} (one-time sign-in link for the reviewer \"{LOCAL_REVIEWER}\", valid {} minutes; restart for a new one)",
            LINK_TTL.as_secs() / 60
        ))
    }

    /// How the page names a reviewer id (a vote, a decider): `name (id)` for a
    /// configured reviewer, the id itself otherwise (someone who voted in Slack).
    pub fn display_name(&self, id: &str) -> String {
        match self.inner.reviewers.iter().find(|r| r.id() == id) {
            Some(reviewer) if reviewer.id() != crate::model::web_reviewer_id(&reviewer.name) => {
                format!("{} ({id})", reviewer.name)
            }
            _ => id.to_owned(),
        }
    }

    /// The configured reviewer a stored session or link names, if this process has
    /// them under the same name and id; `None` fails closed (removed, renamed, or given
    /// another Slack user id since).
    fn reviewer_for(&self, who: &WebIdentity) -> Option<&WebReviewer> {
        self.inner
            .reviewers
            .iter()
            .find(|r| r.name == who.name)
            .filter(|r| r.id() == who.id)
    }

    /// The secret a session of `reviewer` is bound to: theirs, or none for the local
    /// reviewer (whose secret is random per process, so nobody knows it).
    fn binding_secret<'a>(&self, reviewer: &'a WebReviewer) -> Option<&'a str> {
        use secrecy::ExposeSecret;
        (!self.inner.local).then(|| reviewer.secret.expose_secret())
    }
}

/// How the store names `reviewer` in a session or link row.
fn identity(reviewer: &WebReviewer) -> WebIdentity {
    WebIdentity {
        name: reviewer.name.clone(),
        id: reviewer.id(),
    }
}

/// The page's routes; everything but the sign-in pages and assets needs a session.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/web", get(pages::pending))
        .route("/web/", get(pages::pending))
        .route("/web/events", get(live::events))
        .route("/web/requests/{id}", get(pages::request))
        .route("/web/requests/{id}/status", get(pages::status))
        .route("/web/requests/{id}/approve", post(pages::approve))
        .route("/web/requests/{id}/deny", post(pages::deny))
        .route("/web/history", get(pages::history))
        .route("/web/grants/{id}/revoke", post(grants::revoke))
        .route("/web/signin", get(auth::signin_page).post(auth::signin))
        .route("/web/link/{token}", get(auth::link_page))
        .route("/web/link", post(auth::link))
        .route("/web/signout", post(auth::signout))
        .route("/web/assets/{name}", get(assets::serve))
        .layer(middleware::map_response(protect))
}

/// Headers on every page response: no framing, no referrer (a sign-in link is in the
/// URL), nothing loaded from elsewhere, nothing cached but the assets.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    // syntect colours with style attributes, and htmx adds one <style> element: styles
    // may be inline; scripts and everything else come from this origin only.
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}
