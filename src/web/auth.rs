//! Who is signed in: the session cookie, the extractor every page handler takes, the
//! CSRF check, and the sign-in / sign-out handlers.
//!
//! Sign-in forms carry a CSRF token too, before there is a session: `GET` sets it in a
//! short-lived `HttpOnly`, `SameSite=Strict` cookie and in the form; the `POST` must
//! bring both, equal (a double-submit token), so another site cannot sign a browser in
//! as someone else.

use askama::Template;
use axum::{
    body::Bytes,
    extract::{FromRequestParts, Path, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    Json,
};
use serde::{de::DeserializeOwned, Deserialize};

use chrono::Utc;

use super::{
    identity, reviewers,
    reviewers::WebReviewer,
    sessions::{
        binding, binding_matches, csrf_for, csrf_matches, random_token, token_hash, SESSION_TTL,
    },
    views::{Chrome, LinkPage, MessagePage, Note, SignInPage},
    Web, SIGN_IN_BUCKET,
};
use crate::{http::AppState, model::Reviewer, store::web_sessions::NewSession};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "gl_session";
/// The sign-in forms' CSRF cookie.
const SIGNIN_COOKIE: &str = "gl_signin";

/// A signed-in reviewer, from the session cookie. Handlers that take it are never
/// reached without a live session: a page request is sent to the sign-in page, any
/// other gets 401.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The reviewer as the approval domain knows them.
    pub reviewer: Reviewer,
    /// Their name, for the page.
    pub name: String,
    /// The session's CSRF token.
    pub csrf: String,
    cookie: String,
}

impl SignedIn {
    /// Whether a POST carried this session's CSRF token.
    pub fn csrf_ok(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|token| csrf_matches(&self.csrf, token))
    }

    /// For a POST whose form carries nothing but the CSRF token: `Err` with the 403
    /// page when the token is missing or not this session's.
    pub fn check_csrf_form(&self, body: &Bytes) -> Result<(), Box<Response>> {
        let form: CsrfForm = form(body);
        if self.csrf_ok(form.csrf.as_deref()) {
            Ok(())
        } else {
            Err(Box::new(csrf_refused()))
        }
    }

    /// The header (site name and sign-out form) of this reviewer's pages.
    pub fn chrome(&self) -> Chrome {
        Chrome {
            signed_in: Some(self.name.clone()),
            csrf: self.csrf.clone(),
        }
    }
}

/// Not signed in: where to go instead. Also what a session lookup that failed (the
/// database unreachable) answers: no session is assumed, with a 503.
pub struct NotSignedIn {
    page: bool,
    unavailable: bool,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        if self.unavailable {
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "sessions cannot be checked right now; try again shortly",
            )
        } else if self.page {
            Redirect::to("/web/signin").into_response()
        } else {
            json_error(
                StatusCode::UNAUTHORIZED,
                "not_signed_in",
                "sign in to the review page first",
            )
        }
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = NotSignedIn;

    /// One lookup by primary key in the store, then checks against this process's
    /// configuration: the reviewer must still exist under the same name and id, and
    /// (for configured reviewers) with the same secret as at sign-in.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let mut rejected = NotSignedIn {
            page: parts.method == Method::GET,
            unavailable: false,
        };
        let Some(cookie) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(rejected);
        };
        let web = &state.web;
        let stored = match state
            .service
            .store()
            .web_session(&token_hash(&cookie), Utc::now())
            .await
        {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(rejected),
            Err(error) => {
                tracing::error!(%error, "web session lookup failed");
                rejected.unavailable = true;
                return Err(rejected);
            }
        };
        let Some(reviewer) = web.reviewer_for(&stored.reviewer) else {
            return Err(rejected);
        };
        let expected = binding(&cookie, web.binding_secret(reviewer));
        if !binding_matches(&stored.binding, &expected) {
            return Err(rejected);
        }
        Ok(SignedIn {
            reviewer: reviewer.reviewer(),
            name: reviewer.name.clone(),
            csrf: csrf_for(&cookie),
            cookie,
        })
    }
}

/// `{"error": {"code", "message"}}` with `status`, like every API error.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// A POST without this session's CSRF token: refused, changing nothing.
pub fn csrf_refused() -> Response {
    json_error(
        StatusCode::FORBIDDEN,
        "csrf",
        "this form is missing its CSRF token or it does not match your session; reload the page and try again",
    )
}

/// A cookie's value from the `Cookie` header(s).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, path `/web`, `Secure` behind
/// TLS; `max_age` 0 deletes it.
pub fn set_cookie(web: &Web, name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
    let secure = if web.inner.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let raw = format!(
        "{name}={value}; Path=/web; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    );
    // Names are ours and values are hex tokens: always a valid header value.
    HeaderValue::from_str(&raw).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A form body, leniently: fields missing or a body that is not a form give the
/// default, so the handler can refuse with the right answer (a missing CSRF token is
/// a 403, not a parse error).
pub fn form<T: DeserializeOwned + Default>(body: &Bytes) -> T {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// Renders a template as an HTML response with `status`; a template that cannot
/// render is a 500.
pub fn html(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(error) => {
            tracing::error!(%error, "web page did not render");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

/// A page with one message, for someone not signed in.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    html(
        status,
        &MessagePage {
            chrome: Chrome {
                signed_in: None,
                csrf: String::new(),
            },
            title: title.into(),
            text: text.into(),
        },
    )
}

/// A fresh sign-in CSRF token: in a cookie, and for the form.
fn signin_token(web: &Web) -> (String, HeaderValue) {
    let token = random_token();
    let cookie = set_cookie(web, SIGNIN_COOKIE, &token, 3600);
    (token, cookie)
}

fn signin_form(web: &Web, status: StatusCode, note: Option<Note>) -> Response {
    let (token, cookie) = signin_token(web);
    let mut response = html(
        status,
        &SignInPage {
            chrome: Chrome {
                signed_in: None,
                csrf: token,
            },
            note,
            secrets: web.secrets(),
        },
    );
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// `GET /web/signin`.
pub async fn signin_page(State(state): State<AppState>) -> Response {
    signin_form(&state.web, StatusCode::OK, None)
}

#[derive(Debug, Default, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    token: String,
}

/// Checks the sign-in CSRF pair and the rate limit; `Err` is the answer to send.
async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    form: &SignInForm,
) -> Result<(), Box<Response>> {
    csrf_paired(headers, form)?;
    rate_limited(state).await
}

/// The sign-in form's CSRF token matches its cookie.
fn csrf_paired(headers: &HeaderMap, form: &SignInForm) -> Result<(), Box<Response>> {
    let paired = cookie(headers, SIGNIN_COOKIE).is_some_and(|c| csrf_matches(&c, &form.csrf));
    if paired {
        Ok(())
    } else {
        Err(Box::new(csrf_refused()))
    }
}

/// Charges one attempt to the sign-in limit; `Err` is the 429 to send, or a 503 when
/// the shared limit cannot be read (no attempt is let through uncounted).
async fn rate_limited(state: &AppState) -> Result<(), Box<Response>> {
    let taken = match state.web.inner.sign_ins.take(SIGN_IN_BUCKET, 1).await {
        Ok(taken) => taken,
        Err(error) => {
            tracing::error!(%error, "the web sign-in limit could not be read");
            return Err(Box::new(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "sign-in attempts cannot be counted right now; try again shortly",
            )));
        }
    };
    if let Err(wait) = taken {
        tracing::warn!("web sign-in rate limit reached");
        let secs = wait.as_secs().max(1);
        let mut response = message(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts",
            &format!("Too many sign-in attempts. Try again in {secs} seconds."),
        );
        if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Err(Box::new(response));
    }
    Ok(())
}

/// Starts a session for `reviewer` (stored, so every replica knows it) and sends them
/// to the pending list; a store failure is a 500 and no session.
async fn start_session(state: &AppState, reviewer: &WebReviewer) -> Response {
    let web = &state.web;
    let cookie = random_token();
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(SESSION_TTL).unwrap_or(chrono::Duration::hours(12));
    let session = NewSession {
        token_hash: token_hash(&cookie),
        reviewer: identity(reviewer),
        binding: binding(&cookie, web.binding_secret(reviewer)),
        created_at: now,
        expires_at: now + ttl,
    };
    if let Err(error) = state.service.store().create_web_session(session).await {
        tracing::error!(%error, "web session could not be stored");
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        );
    }
    tracing::info!(reviewer = %reviewer.name, "web reviewer signed in");
    let mut response = Redirect::to("/web").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(web, SESSION_COOKIE, &cookie, SESSION_TTL.as_secs()),
    );
    headers.append(header::SET_COOKIE, set_cookie(web, SIGNIN_COOKIE, "", 0));
    response
}

/// `POST /web/signin`: by secret. Without reviewer secrets ([`Web::secrets`]) nothing
/// signs in here: the page says to use the printed link instead.
pub async fn signin(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: SignInForm = form(&body);
    if let Err(response) = admit(&state, &headers, &form).await {
        return *response;
    }
    let web = &state.web;
    let found = web
        .secrets()
        .then(|| reviewers::by_secret(&web.inner.reviewers, form.secret.trim()))
        .flatten()
        .and_then(|index| web.inner.reviewers.get(index));
    match found {
        Some(reviewer) => start_session(&state, reviewer).await,
        None => {
            tracing::info!("web sign-in with a wrong secret");
            let text = if web.secrets() {
                "That secret is not a reviewer's secret."
            } else {
                "No reviewer has a secret here: sign in with the one-time link greenlight serve printed."
            };
            let note = Note {
                class: "error",
                code: None,
                text: text.into(),
            };
            signin_form(web, StatusCode::UNAUTHORIZED, Some(note))
        }
    }
}

/// What anyone holding a wrong, used or expired link is told: one message for all
/// three, so a link's state is not revealed; then what works instead, which depends on
/// whether reviewers have secrets ([`Web::secrets`]): links are printed only for the
/// local reviewer, who has none.
fn bad_link(web: &Web) -> &'static str {
    if web.secrets() {
        "This sign-in link is wrong, already used or expired. Sign in with your reviewer secret instead."
    } else {
        "This sign-in link is wrong, already used or expired. Each link works once, for an hour: restart greenlight serve for a new one."
    }
}

/// `GET /web/link/{token}`: asks to confirm; a GET never uses the link up.
pub async fn link_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let web = &state.web;
    let holder = match state
        .service
        .store()
        .peek_web_link(&token_hash(&token), Utc::now())
        .await
    {
        Ok(holder) => holder,
        Err(error) => {
            tracing::error!(%error, "web sign-in link lookup failed");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "sign-in links cannot be checked right now; try again shortly",
            );
        }
    };
    let Some(name) = holder
        .as_ref()
        .and_then(|who| web.reviewer_for(who))
        .map(|r| r.name.clone())
    else {
        return message(StatusCode::GONE, "Sign-in link not valid", bad_link(web));
    };
    let (csrf, cookie) = signin_token(web);
    let mut response = html(
        StatusCode::OK,
        &LinkPage {
            chrome: Chrome {
                signed_in: None,
                csrf,
            },
            token,
            name,
        },
    );
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// `POST /web/link`: uses the link up and signs in.
///
/// A valid link is never refused for the rate limit: its token is 256 random bits,
/// so the limit has nothing to protect there, and charging it would let anyone who
/// floods the secret form lock the printed link's reviewer out. Only a wrong link
/// counts as an attempt.
pub async fn link(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: SignInForm = form(&body);
    if let Err(response) = csrf_paired(&headers, &form) {
        return *response;
    }
    let redeemed = state
        .service
        .store()
        .redeem_web_link(&token_hash(&form.token), Utc::now())
        .await;
    let holder = match redeemed {
        Ok(holder) => holder,
        Err(error) => {
            tracing::error!(%error, "web sign-in link could not be used");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "sign-in links cannot be checked right now; try again shortly",
            );
        }
    };
    // A link for a reviewer this replica does not have is used up and refused.
    match holder.as_ref().and_then(|who| state.web.reviewer_for(who)) {
        Some(reviewer) => start_session(&state, reviewer).await,
        None => match rate_limited(&state).await {
            Err(response) => *response,
            Ok(()) => message(
                StatusCode::GONE,
                "Sign-in link not valid",
                bad_link(&state.web),
            ),
        },
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: Option<String>,
}

/// `POST /web/signout`.
pub async fn signout(signed: SignedIn, State(state): State<AppState>, body: Bytes) -> Response {
    if let Err(refused) = signed.check_csrf_form(&body) {
        return *refused;
    }
    if let Err(error) = state
        .service
        .store()
        .end_web_session(&token_hash(&signed.cookie))
        .await
    {
        tracing::error!(%error, "web session could not be ended");
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error: you are still signed in; try again",
        );
    }
    let mut response = Redirect::to("/web/signin").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state.web, SESSION_COOKIE, "", 0),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; gl_session=abc; gl_sessionx=no"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn a_missing_form_reads_as_empty() {
        let parsed: CsrfForm = form(&Bytes::from_static(b"\xff\xfe not a form"));
        assert_eq!(parsed.csrf, None);
        let parsed: CsrfForm = form(&Bytes::from_static(b"csrf=abc&other=1"));
        assert_eq!(parsed.csrf.as_deref(), Some("abc"));
    }
}
