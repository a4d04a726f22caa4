//! Errors on the request path and the responses they become.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{BodyCut, ProxyBody};

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request's framing is ambiguous (request smuggling risk).
    #[error("ambiguous request framing: {reason}")]
    BadFraming {
        /// What was ambiguous.
        reason: &'static str,
    },
    /// The client's request body broke off: the client closed the
    /// connection before its end, or its chunked framing was malformed.
    #[error("request body incomplete or malformed")]
    BadBody,
    /// The request target is longer than the listener's `max_uri_bytes`.
    #[error("request target longer than {limit} bytes")]
    UriTooLong {
        /// The limit.
        limit: usize,
    },
    /// The declared body is larger than the listener's `max_body_bytes`.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The request body arrived slower than the listener's `min_body_rate`.
    #[error("request body arrived slower than min_body_rate")]
    BodyTooSlow,
    /// The client's address is denied (or not allowed) on this listener or route.
    #[error("client address refused by the listener's or route's allow/deny lists")]
    Forbidden,
    /// No route matched and the listener has no default cluster.
    #[error("no route for this request")]
    NoRoute,
    /// The cluster has no backend that can take the request.
    #[error("no usable backend in cluster `{cluster}`")]
    NoBackend {
        /// Cluster name.
        cluster: String,
    },
    /// Connecting to or talking with the backend failed.
    #[error("upstream error in cluster `{cluster}` ({backend}): {reason}")]
    Upstream {
        /// Cluster name.
        cluster: String,
        /// Backend address.
        backend: String,
        /// What failed.
        reason: String,
    },
    /// The backend did not answer in time.
    #[error("upstream timeout in cluster `{cluster}` ({backend})")]
    Timeout {
        /// Cluster name.
        cluster: String,
        /// Backend address.
        backend: String,
    },
}

impl From<BodyCut> for ProxyError {
    fn from(cut: BodyCut) -> Self {
        match cut {
            BodyCut::TooLarge { limit } => ProxyError::BodyTooLarge { limit },
            BodyCut::TooSlow => ProxyError::BodyTooSlow,
        }
    }
}

impl ProxyError {
    /// The status code this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadFraming { .. } | ProxyError::BadBody => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoBackend { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short plain-text response naming the cluster (never backend
    /// internals beyond what an operator needs).
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let text = match &self {
            ProxyError::BadFraming { reason } => format!("400 bad request: {reason}\n"),
            ProxyError::BadBody => {
                "400 bad request: the request body is incomplete or malformed\n".to_owned()
            }
            ProxyError::UriTooLong { limit } => {
                format!("414 uri too long: the request target exceeds {limit} bytes\n")
            }
            ProxyError::BodyTooLarge { limit } => {
                format!("413 content too large: the request body exceeds {limit} bytes\n")
            }
            ProxyError::BodyTooSlow => {
                "408 request timeout: the request body arrived too slowly\n".to_owned()
            }
            ProxyError::Forbidden => "403 forbidden\n".to_owned(),
            ProxyError::NoRoute => "404 not found: no route matches this request\n".to_owned(),
            ProxyError::NoBackend { cluster } => {
                format!("503 service unavailable: no usable backend in cluster `{cluster}`\n")
            }
            ProxyError::Upstream { cluster, .. } => {
                format!("502 bad gateway: the backend of cluster `{cluster}` failed\n")
            }
            ProxyError::Timeout { cluster, .. } => {
                format!("504 gateway timeout: the backend of cluster `{cluster}` did not answer in time\n")
            }
        };
        let mut response = Response::new(ProxyBody::local(Bytes::from(text)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // The unread body (or the rest of a refused head) must not be
        // parsed as the next request: close.
        if matches!(
            self,
            ProxyError::BadFraming { .. }
                | ProxyError::BadBody
                | ProxyError::UriTooLong { .. }
                | ProxyError::BodyTooLarge { .. }
                | ProxyError::BodyTooSlow
        ) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
