//! The agent API as an OpenAPI 3.1 document, generated from the handlers' and types'
//! annotations, served at `GET /openapi.json` and checked in at `docs/openapi.json`
//! (a test fails when they drift; regenerate with
//! `cargo run --quiet -- openapi > docs/openapi.json`).

use std::sync::LazyLock;

use axum::{routing::get, Json, Router};
use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use super::{approvals, batches, grants, health, hooks, AppState};
use crate::{
    error::{ErrorBody, ErrorDetail},
    model::{ApprovalId, ApprovalView, BatchStatus, BatchView, Status},
    readiness::{Checks, Report},
    store::{grants::Grant, Event},
};

/// The document's source: the paths and schemas listed in its `#[openapi]` attribute.
/// A route left out of it fails a unit test (`tests` below) unless listed as
/// undocumented on purpose.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "greenlight agent API",
        description = "Ask a person, in Slack or on the web review page, to approve or deny what an AI agent wants to do. \
            Every /v1 call needs `Authorization: Bearer <token>` (GREENLIGHT_API_TOKENS). \
            Errors are always `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        approvals::submit,
        approvals::fetch,
        approvals::cancel,
        approvals::events,
        approvals::list,
        batches::submit,
        batches::fetch,
        grants::list,
        grants::revoke,
        hooks::claude_code_hook,
        health::healthz,
        health::readyz,
    ),
    components(schemas(
        ApprovalId,
        ApprovalView,
        Status,
        ErrorBody,
        ErrorDetail,
        Event,
        Report,
        Checks,
        approvals::SubmitBody,
        approvals::ApprovalList,
        approvals::EventList,
        batches::BatchBody,
        BatchView,
        BatchStatus,
        Grant,
        grants::GrantList,
        grants::RevokedGrant,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "approvals", description = "Submit requests and learn their outcome"),
        (name = "grants", description = "Standing grants (\"Approve for 30 min\"): agents list theirs, reviewers revoke"),
        (name = "hooks", description = "Coding agents' permission hooks"),
        (name = "operations", description = "Health and readiness probes (no auth)"),
    )
)]
pub struct ApiDoc;

/// Adds the security schemes the /v1 paths refer to: `bearer` (agents) and `session`
/// (a reviewer's review-page cookie).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An agent token from GREENLIGHT_API_TOKENS (the part after `name:`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "gl_session",
                "A reviewer's review-page session, from signing in at /web/signin",
            ))),
        );
    }
}

/// The document as pretty JSON with a trailing newline: what `greenlight openapi`
/// prints and `docs/openapi.json` holds.
pub fn document() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    json.push('\n');
    json
}

static DOCUMENT: LazyLock<serde_json::Value> =
    LazyLock::new(|| serde_json::to_value(ApiDoc::openapi()).unwrap_or_default());

/// `GET /openapi.json`: the document, built once per process.
pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(DOCUMENT.clone()) }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use regex::Regex;

    /// Routes served on purpose without being in the agent API's document, and why.
    const UNDOCUMENTED: [(&str, &str); 4] = [
        (
            "/slack/",
            "Slack's interactivity endpoint: Slack signs and shapes its calls",
        ),
        ("/web", "the review page: HTML for people, not an API"),
        ("/metrics", "Prometheus' text format, for a scraper"),
        ("/openapi.json", "the document itself"),
    ];

    /// Every route the source mounts (axum's route calls, with their method routers),
    /// as (path, method).
    fn routes_in_source() -> BTreeSet<(String, String)> {
        let route = Regex::new(r#"\.route\(\s*"([^"]+)",\s*([^\n]*)"#).expect("regex");
        let method = Regex::new(r"\b(get|post|put|delete|patch)\(").expect("regex");
        let mut found = BTreeSet::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src is readable") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.to_string_lossy().ends_with("tests.rs")
                {
                    // Test code mounts fakes (a fake Slack's routes): only what comes
                    // before a file's tests counts.
                    let text = std::fs::read_to_string(&path).expect("source");
                    let served = text.split("#[cfg(test)]").next().unwrap_or_default();
                    for c in route.captures_iter(served) {
                        for m in method.captures_iter(&c[2]) {
                            found.insert((c[1].to_owned(), m[1].to_owned()));
                        }
                    }
                }
            }
        }
        found
    }

    /// The router and the document cannot drift apart: every route the source mounts
    /// (outside [`UNDOCUMENTED`]) is a path and method of the document, and every
    /// documented one is mounted. (`tests/e2e/production/openapi.rs` calls each
    /// documented one on the running server.)
    #[test]
    fn every_served_route_is_documented_and_every_documented_one_served() {
        let served: BTreeSet<(String, String)> = routes_in_source()
            .into_iter()
            .filter(|(path, _)| !UNDOCUMENTED.iter().any(|(p, _)| path.starts_with(p)))
            .collect();
        assert!(
            served.contains(&("/v1/approvals".into(), "post".into()))
                && served.contains(&("/v1/grants/{id}".into(), "delete".into())),
            "the source scan finds the routes: {served:?}"
        );
        let doc =
            serde_json::to_value(<super::ApiDoc as utoipa::OpenApi>::openapi()).expect("document");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.insert((path.clone(), method.clone()));
            }
        }
        let missing: Vec<_> = served.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "served but not in the OpenAPI document: {missing:?}"
        );
        let stale: Vec<_> = documented.difference(&served).collect();
        assert!(stale.is_empty(), "documented but not served: {stale:?}");
    }
}
