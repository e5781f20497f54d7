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
use serde_json::{json, Value};

use super::{
    extract::{url_pairs, Agent},
    AppState,
};
use crate::{
    approval::Revoked,
    error::{ApiError, Result},
    web::{NotSignedIn, SignedIn},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/grants", get(list))
        .route("/v1/grants/{id}", delete(revoke))
}

/// `GET /v1/grants[?all=true]`: the calling agent's grants, newest first (at most
/// 500); live ones only unless `all=true` (then revoked and expired ones too, until
/// retention prunes them).
async fn list(
    State(state): State<AppState>,
    agent: Agent,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
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
    Ok(Json(json!({ "grants": grants })))
}

/// `DELETE /v1/grants/{id}`: revokes a grant for a signed-in reviewer with a say over
/// it (see the module docs). 200 with the grant (also when it was revoked before),
/// 401 without a session, 403 for an agent token or a reviewer without a say, 404 for
/// an unknown id.
async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    signed: std::result::Result<SignedIn, NotSignedIn>,
) -> Result<Json<Value>> {
    if headers.contains_key(AUTHORIZATION) {
        return Err(ApiError::Forbidden(
            "agents cannot revoke grants; a reviewer revokes them from Slack or with a review-page session".into(),
        ));
    }
    let Ok(signed) = signed else {
        return Err(ApiError::Unauthorized);
    };
    match state.service.revoke_grant(&id, &signed.reviewer).await? {
        Revoked::Done(grant) => Ok(Json(json!({ "grant": grant }))),
        Revoked::NotFound => Err(ApiError::NotFound(format!("no grant with id {id}"))),
        Revoked::Refused(refusal) => Err(ApiError::Forbidden(format!(
            "{} (grants are revoked by their maker or an approver of their rule)",
            refusal.as_str()
        ))),
    }
}
