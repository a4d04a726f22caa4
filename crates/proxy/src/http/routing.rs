//! The glue between the request path and a matched route's actions
//! (see [`crate::routes`] and [`crate::rewrite`]).

use http::uri::PathAndQuery;
use http::{HeaderMap, Response};

use super::error::ProxyError;
use crate::body::ProxyBody;
use crate::ratelimit::Verdict;
use crate::routes::Route;

/// Applies the route's request edits to what goes upstream: header edits
/// (after the proxy's own forwarding headers, so a route may override them)
/// and the path prefix rewrite. Returns the upstream path.
pub(super) fn prepare_upstream(
    route: Option<&Route>,
    headers: &mut HeaderMap,
    path: PathAndQuery,
) -> PathAndQuery {
    let Some(route) = route else { return path };
    route.request_headers().apply(headers);
    match route.rewrite() {
        Some(r) => r.apply(&path),
        None => path,
    }
}

/// Turns the outcome of a routed request into the client's answer: errors
/// become proxy answers, then the route's response header edits and the
/// rate-limit headers are applied (to every answer of the route, the
/// proxy's own included).
pub(super) fn finish(
    route: Option<&Route>,
    limit: Option<Verdict>,
    result: Result<Response<ProxyBody>, ProxyError>,
) -> Response<ProxyBody> {
    let mut response = result.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "request answered by proxy");
        e.into_response()
    });
    if let Some(route) = route {
        route.response_headers().apply(response.headers_mut());
    }
    if let Some(v) = limit {
        v.add_headers(response.headers_mut());
    }
    response
}
