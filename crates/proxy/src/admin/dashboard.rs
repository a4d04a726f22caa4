//! The live dashboard: one page, its script and style embedded in the
//! binary (no build step, no CDN). The page reads `/api/v1/events` (SSE,
//! one view a second) with `fetch`, so it can send the bearer token that a
//! non-loopback admin listener requires, and draws its charts as inline SVG.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../../assets/dashboard.html");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard.css");

/// The assets never change within one binary, but a new binary must not be
/// shadowed by a cached old script: no caching.
const NO_STORE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-store");

pub(super) async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), NO_STORE],
        PAGE,
    )
}

pub(super) async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            NO_STORE,
        ],
        SCRIPT,
    )
}

pub(super) async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), NO_STORE],
        STYLE,
    )
}
