//! The web console: one page, served at `GET /`, whose script, style sheet and icon are
//! compiled into the binary (`console/`), so `up` needs no files and the browser fetches
//! nothing from the internet. Plain HTML, CSS and JavaScript: there is no build step.
//!
//! The page reads `GET /api/events` (see `live`) and calls the same mutating routes as the
//! CLI, with the bearer token the operator enters (kept in the tab's `sessionStorage`).
//!
//! Every answer carries a strict Content-Security-Policy: only this origin's own script and
//! style run (no inline code, no `eval`), and the page connects only to this origin, so data
//! shown on it (an activity's description, a reason) can never become code.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub const INDEX_HTML: &str = include_str!("console/index.html");
pub const CONSOLE_JS: &str = include_str!("console/console.js");
pub const CONSOLE_CSS: &str = include_str!("console/console.css");
pub const ICON_SVG: &str = include_str!("console/icon.svg");

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /` and the page's assets under `/console/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
        .route(
            "/console/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A new binary may bring new assets under the same names, so browsers must not reuse
    // stale copies; fetching them again on each load is cheap (small, and on loopback).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
