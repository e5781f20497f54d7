//! The agent API as an OpenAPI 3.1 document, generated from the handlers' and types'
//! annotations, served at `GET /openapi.json` and checked in at `docs/openapi.json`
//! (a test fails when they drift; regenerate with
//! `cargo run --quiet -- openapi > docs/openapi.json`).

use std::sync::LazyLock;

use axum::{routing::get, Json, Router};
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use super::{approvals, batches, health, AppState};
use crate::{
    error::{ErrorBody, ErrorDetail},
    model::{ApprovalId, ApprovalView, BatchStatus, BatchView, Status},
    readiness::{Checks, Report},
    store::Event,
};

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
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "approvals", description = "Submit requests and learn their outcome"),
        (name = "operations", description = "Health and readiness probes (no auth)"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme the /v1 paths refer to.
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

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(DOCUMENT.clone()) }))
}
