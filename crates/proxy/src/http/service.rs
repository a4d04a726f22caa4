//! The per-request proxy logic.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use fulcrum_balance::{BackendId, Outcome, PickContext};
use fulcrum_config::HashKey;
use http::header::HeaderName;
use http::uri::{PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::error::ProxyError;
use crate::body::{ProxyBody, RequestBody};
use crate::clock;
use crate::headers;
use crate::metrics::ResponseClass;
use crate::state::{ClusterSnapshot, Runtime};

/// Most backends one request tries. Connect failures are retried on other
/// backends (nothing was sent, so it is always safe); three attempts ride
/// out two dead backends without letting one request hammer a whole cluster.
const MAX_ATTEMPTS: usize = 3;

/// What the proxy knows about the client connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The listener's name.
    pub listener: Arc<str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Proxies one request. Never fails: errors become responses.
pub async fn handle(
    runtime: Arc<Runtime>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    match proxy(&runtime, &conn, req).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(listener = %conn.listener, client = %conn.peer, error = %e, "request answered by proxy");
            e.into_response()
        }
    }
}

async fn proxy(
    runtime: &Runtime,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    check_framing(&req)?;
    let snapshot = runtime.snapshot();
    let listener = snapshot
        .listeners
        .get(&*conn.listener)
        .ok_or(ProxyError::NoRoute)?;
    let host = authority(&req);
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());
    let cluster_name = listener
        .routes
        .find(host_str, req.uri().path())
        .ok_or(ProxyError::NoRoute)?;
    let cluster = Arc::clone(
        snapshot
            .clusters
            .get(cluster_name)
            .ok_or(ProxyError::NoRoute)?,
    );
    // The decision trail is for operators: only clients in `debug_from` get it.
    let debug = req
        .headers()
        .get(&X_FULCRUM_DEBUG)
        .is_some_and(|v| v.as_bytes() == b"1")
        && listener
            .config
            .debug_from
            .iter()
            .any(|n| n.contains(conn.peer.ip()));
    drop(snapshot);

    let (mut parts, body) = req.into_parts();
    headers::prepare_request(
        &mut parts.headers,
        parts.version,
        conn.peer.ip(),
        host.as_ref(),
        conn.tls,
    );
    parts.version = Version::HTTP_11;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let key = request_key(&cluster.config.hash_key, &parts, conn);
    let mut decisions = debug.then(String::new);
    let mut body = Some(RequestBody::new(body));
    let mut tried = [BackendId(0); MAX_ATTEMPTS];
    let mut attempts = 0;
    let mut rng = fastrand::Rng::new();
    let mut last_error = None;
    while attempts < MAX_ATTEMPTS {
        let Some(request_body) = body.take() else {
            break;
        };
        let now = clock::now();
        let mut ctx = PickContext {
            now,
            key,
            rng: &mut rng,
            exclude: &tried[..attempts],
        };
        let picked = match decisions.as_mut() {
            None => cluster.selector.pick(&cluster.set, &mut ctx),
            Some(out) => {
                if !out.is_empty() {
                    out.push_str(" | ");
                }
                cluster.selector.explain(&cluster.set, &mut ctx, out)
            }
        };
        let Some(id) = picked else {
            break;
        };
        tried[attempts] = id;
        attempts += 1;
        let backend = cluster.set.get(id);
        let metrics = &cluster.backend_metrics[id.index()];
        metrics.picked();
        if attempts > 1 {
            cluster.metrics.retries.fetch_add(1, Relaxed);
        }
        let retry_body = request_body.reclaim();
        let mut upstream_req = Request::from_parts(clone_parts(&parts), request_body);
        *upstream_req.uri_mut() = upstream_uri(&cluster, id, &path);
        let guard = backend.state.load.start();
        let started = Instant::now();
        let sent = tokio::time::timeout(
            cluster.config.response_timeout,
            cluster.upstream.client().request(upstream_req),
        )
        .await;
        let finished = clock::now();
        let latency = finished.saturating_sub(clock::at(started));
        let decay = cluster.selector_config.decay;
        match sent {
            Ok(Ok(response)) => {
                metrics.record(ResponseClass::of(response.status()), latency);
                let outcome = if response.status().is_server_error() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                backend
                    .state
                    .load
                    .observe(finished, latency, outcome, decay);
                let (mut rparts, rbody) = response.into_parts();
                if cluster.config.load_reports {
                    record_load_report(&rparts.headers, &backend.state.load, finished);
                }
                headers::remove_hop_by_hop(&mut rparts.headers);
                headers::append_via(&mut rparts.headers, Version::HTTP_11);
                if let Some(text) = decisions.take() {
                    if let Ok(v) = HeaderValue::try_from(text) {
                        rparts.headers.insert(X_FULCRUM_DECISION.clone(), v);
                    }
                }
                return Ok(Response::from_parts(
                    rparts,
                    ProxyBody::upstream(rbody, guard),
                ));
            }
            Ok(Err(e)) => {
                metrics.record(ResponseClass::Failed, latency);
                backend
                    .state
                    .load
                    .observe(finished, latency, Outcome::Failure, decay);
                let connect = e.is_connect();
                tracing::debug!(cluster = %cluster.name(), backend = %backend.address, error = %e, connect, "upstream attempt failed");
                last_error = Some(ProxyError::Upstream {
                    cluster: cluster.name().to_owned(),
                    backend: backend.address.clone(),
                    reason: error_chain(&e),
                });
                // Nothing reached the backend on a connect failure, so any
                // request may go elsewhere if its body is still unread.
                if connect {
                    body = retry_body;
                }
            }
            Err(_elapsed) => {
                metrics.record(ResponseClass::Failed, latency);
                backend
                    .state
                    .load
                    .observe(finished, latency, Outcome::Failure, decay);
                last_error = Some(ProxyError::Timeout {
                    cluster: cluster.name().to_owned(),
                    backend: backend.address.clone(),
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        cluster.metrics.no_backend.fetch_add(1, Relaxed);
        ProxyError::NoBackend {
            cluster: cluster.name().to_owned(),
        }
    }))
}

/// Request header asking for the decision trail.
pub static X_FULCRUM_DEBUG: HeaderName = HeaderName::from_static("x-fulcrum-debug");
/// Response header carrying the decision trail.
pub static X_FULCRUM_DECISION: HeaderName = HeaderName::from_static("x-fulcrum-decision");
/// ORCA load report response header.
static ENDPOINT_LOAD_METRICS: HeaderName = HeaderName::from_static("endpoint-load-metrics");

/// Feeds a backend's ORCA load report into its Load.
fn record_load_report(
    headers: &http::HeaderMap,
    load: &fulcrum_balance::Load,
    now: fulcrum_balance::Nanos,
) {
    let Some(value) = headers
        .get(&ENDPOINT_LOAD_METRICS)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    if let Some(u) = fulcrum_balance::orca::parse(value)
        .ok()
        .and_then(|r| r.utilisation())
    {
        load.report(now, u);
    }
}

/// Hashes the cluster's request key. Fixed SipHash keys, so every Fulcrum
/// instance maps a key to the same backend.
fn request_key(key: &HashKey, parts: &http::request::Parts, conn: &ConnInfo) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match key {
        HashKey::ClientIp => conn.peer.ip().hash(&mut h),
        HashKey::Path => parts.uri.path().hash(&mut h),
        HashKey::Header(name) => parts.headers.get(name.as_str())?.as_bytes().hash(&mut h),
        HashKey::Cookie(name) => cookie(&parts.headers, name)?.hash(&mut h),
    }
    Some(h.finish())
}

/// The value of cookie `name`, if the request carries it.
fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Refuses requests whose body length could be read two ways (RFC 9112
/// §6.3): a proxy that forwards them enables request smuggling.
fn check_framing<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let h = req.headers();
    if req.version() <= Version::HTTP_11 {
        let te = h.contains_key(header::TRANSFER_ENCODING);
        let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
        let first = lengths.next();
        if te && first.is_some() {
            return Err(ProxyError::BadFraming {
                reason: "both Content-Length and Transfer-Encoding",
            });
        }
        if let Some(first) = first {
            if lengths.next().is_some() || first.to_str().map_or(true, |v| v.contains(',')) {
                return Err(ProxyError::BadFraming {
                    reason: "more than one Content-Length",
                });
            }
        }
    }
    Ok(())
}

/// The request's authority: the Host header, or the URI's (HTTP/2 `:authority`).
fn authority<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(h) = req.headers().get(header::HOST) {
        return Some(h.clone());
    }
    req.uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

fn upstream_uri(cluster: &ClusterSnapshot, id: BackendId, path: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(cluster.authorities[id.index()].clone());
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).expect("scheme, authority and path are all set")
}

/// A copy of the request head for one attempt (the original is kept for retries).
fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
