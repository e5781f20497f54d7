//! Reading and managing state rather than asking for a decision: a batch by id
//! (`GET /v1/batches/{id}`), the agent's standing grants (`GET /v1/grants`), and
//! revoking one as a person (`DELETE /v1/grants/{id}` with a review-page session).
//!
//! Each is one exchange (revoking: three), never retried: the caller asked a question
//! and gets the service's answer or the reason there is none ([`ClientError`]).

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    protocol::{self, Exchange},
    wire::Approval,
    Client, ClientError,
};

/// The most one `GET /v1/batches/{id}?wait=N` may hold (the server's limit).
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(60);

/// A batch as `GET /v1/batches/{id}` shows it: its items as `GET /v1/approvals/{id}`
/// shows each, in the order they were submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Batch {
    /// The batch id, as `POST /v1/batches` answered it.
    pub id: Uuid,
    /// `Decided` once every item is final.
    pub status: BatchStatus,
    /// The batch's `title` (at most 200 characters), if it was given one.
    #[serde(default)]
    pub title: Option<String>,
    /// One approval object per item, in the order of the batch's `actions`.
    pub approvals: Vec<Approval>,
}

/// `Decided` once every item is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    /// At least one item is still pending.
    Pending,
    /// Every item is final (each has its own status).
    Decided,
}

/// A standing grant ("Approve for 30 min") as `GET /v1/grants` shows it. Times are
/// RFC 3339 text, UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Grant {
    /// A random UUID: what [`Client::revoke_grant`] takes.
    pub id: String,
    /// The agent whose requests it approves.
    pub agent: String,
    /// The policy rule it was made under.
    pub rule: String,
    /// `exact` (the same code, whitespace normalised) or `command_prefix`.
    pub match_kind: String,
    /// The request's language; the grant covers requests of that same language only.
    #[serde(default)]
    pub language: Option<String>,
    /// The normalised code, or the command prefix, it covers.
    pub action_key: String,
    /// The reviewer whose click made it.
    pub granted_by: String,
    /// The request whose approval made it.
    pub approval_id: String,
    /// When it was made.
    pub created_at: String,
    /// When it stops applying. It also stops once older than the rule's current
    /// `grant_max_secs`, which this does not show.
    pub expires_at: String,
    /// When it was revoked; `None` if it was not.
    #[serde(default)]
    pub revoked_at: Option<String>,
    /// Who revoked it: a reviewer id, or a `greenlight (…)` note saying why when
    /// greenlight revoked it at start-up (its maker no longer an approver).
    #[serde(default)]
    pub revoked_by: Option<String>,
}

#[derive(Deserialize)]
struct GrantList {
    grants: Vec<Grant>,
}

#[derive(Deserialize)]
struct RevokedGrant {
    grant: Grant,
}

impl Client {
    /// `GET /v1/batches/{id}`: the batch as it is now or, with a non-zero `wait` (at most
    /// [`MAX_BATCH_WAIT`]), as soon as every item is decided within that time.
    ///
    /// Errors: `Rejected` (404 for an unknown batch, 403 for another agent's),
    /// `Unauthorized` (401), `Unreachable`, `Malformed`.
    pub async fn get_batch(&self, id: &str, wait: Duration) -> Result<Batch, ClientError> {
        let wait = wait.min(MAX_BATCH_WAIT);
        let call = self
            .http
            .get(self.url(&format!("/v1/batches/{}", path_segment(id))))
            .query(&[("wait", wait.as_secs())])
            .bearer_auth(self.token.expose_secret())
            .timeout(wait + self.settings.request_timeout);
        self.read(call, "reading a batch").await
    }

    /// `GET /v1/grants`: this agent's standing grants, newest first; live ones only
    /// unless `all` (then revoked and expired ones too).
    pub async fn list_grants(&self, all: bool) -> Result<Vec<Grant>, ClientError> {
        let call = self
            .http
            .get(self.url("/v1/grants"))
            .query(&[("all", all)])
            .bearer_auth(self.token.expose_secret())
            .timeout(self.settings.request_timeout);
        let list: GrantList = self.read(call, "listing grants").await?;
        Ok(list.grants)
    }

    /// Revokes grant `id` as a person: signs in to the review page with
    /// `reviewer_secret` (a reviewer's secret from `GREENLIGHT_REVIEWERS`, who made the
    /// grant or is an approver of its rule) and sends `DELETE /v1/grants/{id}` with that
    /// session. The agent's token is never sent: the server refuses agents here.
    /// Returns the revoked grant (also when it was revoked before).
    ///
    /// Errors: `Unauthorized` (a wrong secret), `Rejected` (403 for a reviewer without
    /// a say, 404 for an unknown id), `Unreachable`, `Malformed`.
    pub async fn revoke_grant(
        &self,
        id: &str,
        reviewer_secret: &str,
    ) -> Result<Grant, ClientError> {
        const DURING: &str = "revoking a grant";
        let started = Instant::now();
        let timeout = self.settings.request_timeout;
        let unreachable = |error: reqwest::Error| ClientError::Unreachable {
            url: self.base_url.clone(),
            problem: protocol::describe_error(&error),
            attempts: 1,
            elapsed: started.elapsed(),
        };
        // The sign-in form: its CSRF token, paired with the cookie it sets.
        let page = self
            .http
            .get(self.url("/web/signin"))
            .timeout(timeout)
            .send()
            .await
            .map_err(unreachable)?;
        let signin = cookie(&page, "gl_signin")
            .ok_or_else(|| malformed(DURING, "the sign-in page set no gl_signin cookie"))?;
        let html = page.text().await.map_err(unreachable)?;
        let csrf = hidden_value(&html, "csrf")
            .ok_or_else(|| malformed(DURING, "the sign-in page has no csrf field"))?;
        // Signing in answers 303 with the session cookie (redirects are not followed).
        let signed = self
            .http
            .post(self.url("/web/signin"))
            .header(reqwest::header::COOKIE, signin)
            .form(&[("csrf", csrf.as_str()), ("secret", reviewer_secret)])
            .timeout(timeout)
            .send()
            .await
            .map_err(unreachable)?;
        let session = match signed.status().as_u16() {
            302 | 303 => cookie(&signed, "gl_session")
                .ok_or_else(|| malformed(DURING, "signing in set no gl_session cookie"))?,
            401 => {
                return Err(ClientError::Unauthorized(
                    "that secret is not a reviewer's secret (GREENLIGHT_REVIEWERS)".into(),
                ))
            }
            status => {
                return Err(ClientError::Rejected(format!(
                    "signing in to the review page answered HTTP {status}"
                )))
            }
        };
        let call = self
            .http
            .delete(self.url(&format!("/v1/grants/{}", path_segment(id))))
            .header(reqwest::header::COOKIE, session)
            .timeout(timeout);
        let revoked: RevokedGrant = self.read(call, DURING).await?;
        Ok(revoked.grant)
    }

    /// One exchange whose 200 answer is a `T`.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        call: reqwest::RequestBuilder,
        during: &'static str,
    ) -> Result<T, ClientError> {
        let started = Instant::now();
        match self.exchange(call).await {
            Exchange::Reply {
                status: 200, body, ..
            } => serde_json::from_slice(&body).map_err(|e| malformed(during, &e.to_string())),
            Exchange::Reply {
                status: 401, body, ..
            } => Err(ClientError::Unauthorized(protocol::error_text(401, &body))),
            Exchange::Reply { status, body, .. } => {
                Err(ClientError::Rejected(protocol::error_text(status, &body)))
            }
            Exchange::Failed(problem) => Err(ClientError::Unreachable {
                url: self.base_url.clone(),
                problem,
                attempts: 1,
                elapsed: started.elapsed(),
            }),
        }
    }
}

fn malformed(during: &'static str, detail: &str) -> ClientError {
    ClientError::Malformed {
        during,
        detail: detail.to_owned(),
        id: None,
    }
}

/// `name=value` of a cookie `response` sets (not a deletion), for a `Cookie` header.
/// The review page's cookies have `Path=/web`, so a jar would not send the session to
/// `/v1/grants`: it is sent by hand.
fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next())
        .find(|pair| pair.starts_with(&prefix) && pair.len() > prefix.len())
        .map(str::to_owned)
}

/// The value of the first `<input … name="NAME" value="…">` in `html`.
fn hidden_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    html[start..].split('"').next().map(str::to_owned)
}

/// `raw` as one path segment: ids are UUIDs, but nothing the caller passes may add a
/// segment or a query.
fn path_segment(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_server_shapes() {
        let grant: Grant = serde_json::from_value(serde_json::json!({
            "id": "g1", "agent": "ci", "rule": "tests", "match_kind": "exact",
            "language": null, "action_key": "cargo test", "granted_by": "U1",
            "approval_id": "a1", "created_at": "2026-11-30T00:00:00Z",
            "expires_at": "2026-11-30T00:30:00Z", "revoked_at": null, "revoked_by": null,
            "something_new": 1
        }))
        .expect("grant");
        assert_eq!(grant.action_key, "cargo test");
        assert_eq!(grant.revoked_by, None);
        assert_eq!(
            hidden_value(
                r#"<input type="hidden" name="csrf" value="abc123">"#,
                "csrf"
            ),
            Some("abc123".into())
        );
        assert_eq!(path_segment("../x?y=1"), "xy1");
    }
}
