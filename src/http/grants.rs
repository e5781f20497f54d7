//! Standing grants over HTTP: `GET /v1/grants` lists them, `DELETE /v1/grants/{id}`
//! revokes one.
//!
//! Who may do what:
//! - Listing takes an agent's bearer token and shows that agent's own grants only: an
//!   agent learns which of its actions are pre-approved, and nothing about others.
//! - Revoking is for people with a say over the grant's rule, never for agents (an
//!   agent has no business widening or narrowing its own permissions, and a token
//!   leaked with an agent must not be able to touch grants). The person proves who
//!   they are with a review-page session (`gl_session` cookie from `/web/signin`):
//!   they must have made the grant or be allowed to decide requests of its rule (the
//!   approver list as the policy has it now). An `Authorization` header is refused
//!   with 403 whatever else the call carries, so an agent token can never count.
//!   The session cookie is `SameSite=Strict`, and a cross-site `DELETE` needs a CORS
//!   preflight greenlight never grants, so no CSRF token is asked for.

use axum::{
    extract::{Path, RawQuery, State},
    http::{header::AUTHORIZATION, HeaderMap},
    routing::{delete, get},
    Json, Router,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    extract::{url_pairs, Agent},
    AppState,
};
use crate::{
    approval::{approvers::Refusal, Revoked},
    error::{ApiError, ErrorBody, Result},
    store::grants::Grant,
    web::{NotSignedIn, SignedIn},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/grants", get(list))
        .route("/v1/grants/{id}", delete(revoke))
}

/// `GET /v1/grants`: the body of the answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct GrantList {
    grants: Vec<Grant>,
}

/// `DELETE /v1/grants/{id}`: the body of the answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RevokedGrant {
    grant: Grant,
}

/// List the calling agent's standing grants.
///
/// Newest first (at most 500); live ones only unless `all=true` (then revoked and
/// expired ones too, until retention prunes them).
#[utoipa::path(
    get,
    path = "/v1/grants",
    tag = "grants",
    params(("all" = Option<bool>, Query, description = "Include revoked and expired grants")),
    responses(
        (status = 200, description = "The agent's grants", body = GrantList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: `all` is not true or false", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    agent: Agent,
    RawQuery(query): RawQuery,
) -> Result<Json<GrantList>> {
    let mut all = false;
    for (key, value) in url_pairs(query.as_deref()) {
        match (key.as_str(), value.as_str()) {
            ("all", "true") => all = true,
            ("all", "false") => all = false,
            ("all", other) => {
                return Err(ApiError::Invalid(format!(
                    "all must be true or false, not {other:?}"
                )))
            }
            _ => {}
        }
    }
    let grants = state.service.grants(Some(&agent.0), all).await?;
    Ok(Json(GrantList { grants }))
}

/// Revoke a standing grant (a person, never an agent).
///
/// For a signed-in reviewer (the review page's `gl_session` cookie) who made the grant
/// or may decide requests of its rule. 200 with the grant (also when it was revoked
/// before), 401 without a session, 403 for any call with an `Authorization` header or a
/// reviewer without a say, 404 for an unknown id.
#[utoipa::path(
    delete,
    path = "/v1/grants/{id}",
    tag = "grants",
    params(("id" = String, Path, description = "The grant's id")),
    responses(
        (status = 200, description = "Revoked (or already revoked)", body = RevokedGrant),
        (status = 401, description = "`unauthorized`: no review-page session", body = ErrorBody),
        (status = 403, description = "`forbidden`: an agent token, or a reviewer without a say over the grant", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("session" = []))
)]
pub(super) async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    signed: std::result::Result<SignedIn, NotSignedIn>,
) -> Result<Json<RevokedGrant>> {
    if headers.contains_key(AUTHORIZATION) {
        return Err(ApiError::Forbidden(
            "agents cannot revoke grants; a reviewer revokes them from Slack or with a review-page session".into(),
        ));
    }
    let Ok(signed) = signed else {
        return Err(ApiError::SessionRequired);
    };
    match state.service.revoke_grant(&id, &signed.reviewer).await? {
        Revoked::Done(grant) => Ok(Json(RevokedGrant { grant: *grant })),
        Revoked::NotFound => Err(ApiError::NotFound(format!("no grant with id {id}"))),
        Revoked::Refused(refusal) => Err(ApiError::Forbidden(refused(refusal).into())),
    }
}

/// The 403 message for a refused revocation, for a person (the audit trail keeps the
/// refusal's code, such as `not_approver`).
fn refused(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Unverified => "your approver status could not be verified (a user group's members could not be read), so the grant was not revoked; try again later",
        _ => "only the reviewer who made this grant or an approver of its rule may revoke it",
    }
}
