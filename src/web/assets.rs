//! Files the page loads, compiled into the binary: the page loads nothing from
//! anywhere else (its Content-Security-Policy forbids it, see `web::pages`).
//!
//! htmx and its server-sent-events extension are vendored, minified, under `assets/`
//! (from the npm packages `htmx.org` 2.0.11 and `htmx-ext-sse` 2.2.4; BSD-2-Clause,
//! see `assets/htmx.LICENSE`); `app.js` and `app.css` are ours.

use axum::{
    extract::Path,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};

/// `(name, content type, bytes)` of every asset, served at `/web/assets/<name>`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/htmx-2.0.11.min.js"),
    ),
    (
        "sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/htmx-ext-sse-2.2.4.min.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/app.css"),
    ),
];

/// `GET /web/assets/{name}`: public (the sign-in page needs its stylesheet), cached
/// for an hour; 404 for anything not embedded.
pub async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
