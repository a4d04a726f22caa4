//! The per-request proxy logic.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use fulcrum_balance::selector::pick_or_fall_back;
use fulcrum_balance::{BackendId, InFlightGuard, Outcome, PickContext};
use fulcrum_config::HashKey;
use http::header::HeaderName;
use http::uri::{PathAndQuery, Scheme};
use http::{header, request, HeaderValue, Request, Response, StatusCode, Uri, Version};

use super::error::ProxyError;
use super::grpc;
use super::routing;
use super::server::ClientBody;
use super::upgrade;
use crate::admission;
use crate::body::{BodyLimits, ProxyBody, RequestBody, Upload};
use crate::clock;
use crate::geoip;
use crate::headers;
use crate::health;
use crate::metrics::ResponseClass;
use crate::routes::Route;
use crate::state::{ClusterSnapshot, Runtime};
use crate::upstream::{is_idempotent, UpstreamBody};

/// Most backends one request can try: the first attempt plus the largest
/// `retries` a cluster may configure. The cluster's `retries` (default 2)
/// and its retry budget decide how many are actually made.
const MAX_ATTEMPTS: usize = 1 + fulcrum_config::MAX_RETRIES as usize;

/// What the proxy knows about the client connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The listener's name.
    pub listener: Arc<str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's `X-Forwarded-For` entry, built once per connection
    /// ([`headers::forwarded_for`]).
    pub forwarded_for: HeaderValue,
    /// The client's certificate as an `X-Forwarded-Client-Cert` element,
    /// when it presented one ([`crate::client_cert`]).
    pub client_cert: Option<Box<HeaderValue>>,
    /// The listener's access log (off unless configured).
    pub access_log: Arc<crate::access_log::AccessLog>,
}

/// Proxies one request. Never fails: errors become responses.
///
/// The request's head is borrowed, not moved: a future holds every
/// argument it was given for its whole life, so a head (224 bytes) passed
/// by value down `handle`, `proxy` and `forward_to` would be stored once
/// per level, and the whole future is copied as a request starts.
pub async fn handle(
    runtime: &Runtime,
    conn: &ConnInfo,
    parts: &mut request::Parts,
    body: ClientBody,
) -> Response<ProxyBody> {
    // Read before the request path rewrites the version for the backend.
    let http2 = parts.version == Version::HTTP_2;
    let entry = conn.access_log.enabled().then(|| {
        crate::access_log::Pending::start(&conn.access_log, &conn.forwarded_for, conn.peer, parts)
    });
    let response = match proxy(runtime, conn, parts, body).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(listener = %conn.listener, client = %conn.peer, error = %e, "request answered by proxy");
            e.into_response()
        }
    };
    // gRPC runs over HTTP/2 only: HTTP/1 requests skip the header lookup.
    if http2
        && response.status().as_u16() >= 400
        && response.body().is_local()
        && grpc::is_grpc(&parts.headers)
    {
        return log(grpc::local_answer(response), entry);
    }
    log(response, entry)
}

/// Hands `response`'s body the access log `entry`, if the listener logs.
fn log(
    mut response: Response<ProxyBody>,
    entry: Option<Box<crate::access_log::Pending>>,
) -> Response<ProxyBody> {
    let Some(mut entry) = entry else {
        return response;
    };
    let served = response
        .extensions_mut()
        .remove::<crate::access_log::Served>();
    let request_id = response.headers().get(&X_REQUEST_ID).cloned();
    entry.answered(response.status().as_u16(), served, request_id);
    response.map(|body| ProxyBody::logged(body, entry))
}

async fn proxy(
    runtime: &Runtime,
    conn: &ConnInfo,
    req: &mut request::Parts,
    body: ClientBody,
) -> Result<Response<ProxyBody>, ProxyError> {
    let present = Present::of(&req.headers);
    check_framing(req, &present)?;
    let snapshot = runtime.snapshot();
    let listener = snapshot
        .listeners
        .get(&*conn.listener)
        .ok_or(ProxyError::NoRoute)?;
    let listener = Arc::clone(listener);
    check_uri(req, &listener.config.limits)?;
    let ip = conn.peer.ip();
    let config = &listener.config;
    if !crate::routes::admits(&config.allow, &config.deny, ip) {
        return Err(ProxyError::Forbidden);
    }
    let trusted = || config.trusted_proxies.iter().any(|n| n.contains(ip));
    if present.forwarded_for && !trusted() {
        // Only trusted proxies may say who the client is; from anyone else
        // the header is dropped, and the peer's address alone is sent.
        req.headers.remove(&headers::X_FORWARDED_FOR);
    }
    if present.client_cert || conn.client_cert.is_some() {
        forward_client_cert(req, conn, present.client_cert && trusted());
    }
    let request_id = config
        .request_id
        .then(|| request_id(req, present.request_id && trusted()));
    let host = authority(req);
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());
    let matched = listener
        .routes
        .select(host_str, &req.method, &req.uri, &req.headers)
        .ok_or(ProxyError::NoRoute)?;
    let route = matched.route;
    // The route's own access lists and body limit, after the listener's.
    if route.is_some_and(|r| !r.admits(ip)) {
        return Err(ProxyError::Forbidden);
    }
    let mut body_limits = listener.body_limits;
    if let Some(max) = route.and_then(|r| r.max_body_bytes()) {
        body_limits.max_bytes = max;
    }
    if present.content_length {
        check_declared_body(req, body_limits.max_bytes)?;
    }
    let route_priority = route.and_then(|r| r.priority());
    let mut limit = None;
    if let Some(limiter) = route.and_then(|r| r.rate_limit()) {
        // Boxed here and below: a future is as large as its largest state,
        // and the hot path moves this one several times per request; the
        // rarely taken branches (rate limiting, which may wait on Redis,
        // admission, upgrades) must not make every request's future larger.
        let verdict = Box::pin(limiter.check(conn.peer.ip(), &req.headers)).await;
        if !verdict.allowed {
            return Ok(routing::finish(
                route,
                Some(verdict),
                Ok(verdict.too_many_requests()),
            ));
        }
        limit = Some(verdict);
    }
    if let Some((redirect, route)) = route.and_then(|r| Some((r.redirect()?, r))) {
        let response = redirect.response(conn.tls, host_str, &req.uri, route.rewrite());
        return Ok(routing::finish(Some(route), limit, Ok(response)));
    }
    let cluster = Arc::clone(
        matched
            .cluster
            .and_then(|name| snapshot.clusters.get(name))
            .ok_or(ProxyError::NoRoute)?,
    );
    // The decision trail is for operators: only clients in `debug_from` get it.
    let debug = present.debug
        && req
            .headers
            .get(&X_FULCRUM_DEBUG)
            .is_some_and(|v| v.as_bytes() == b"1")
        && listener
            .config
            .debug_from
            .iter()
            .any(|n| n.contains(conn.peer.ip()));
    // Admission: classify while the route is at hand, then wait for a slot
    // in priority order, or be shed (503 + Retry-After).
    let rank = cluster.admission.as_ref().map(|a| {
        let trusted = admission::trusted(&listener.config.priority_from, conn.peer.ip());
        a.classify(route_priority, &req.headers, trusted)
    });
    // Geo: the client's position, from a trusted header, else from the
    // listener's GeoIP database.
    let client = (cluster.config.algorithm == fulcrum_balance::Algorithm::Geo)
        .then(|| {
            let trusted = admission::trusted(&listener.config.location_from, conn.peer.ip());
            geoip::client_location(&req.headers, trusted, &cluster.set)
                .or_else(|| listener.geoip.as_ref()?.locate(conn.peer.ip()))
        })
        .flatten();
    drop(snapshot);
    let permit = match (&cluster.admission, rank) {
        (Some(admission), Some(rank)) => match Box::pin(admission.acquire(rank)).await {
            Ok(permit) => Some(permit),
            Err(why) => {
                let shed = admission.shed_response(cluster.name(), rank, why);
                return Ok(routing::finish(route, limit, Ok(shed)));
            }
        },
        _ => None,
    };
    let result = if present.upgrade && upgrade::requested(req) {
        // Rare: the head is taken whole (an empty one is left behind).
        let head = std::mem::replace(req, Request::new(()).into_parts().0);
        Box::pin(upgrade::forward(
            &cluster,
            conn,
            Request::from_parts(head, body),
            host,
            route,
            body_limits,
        ))
        .await
    } else {
        // The answer's fields may go to the client as the backend's bytes
        // (never read into a header map, `Upstream::send`) when nothing
        // on the way reads or edits them: an HTTP/1 client (HTTP/2's
        // encoder needs the map), no route edits of answer fields, no
        // rate-limit fields (they replace same-named ones), no sticky
        // cookie and no decision trail. Load reports and `Retry-After` are
        // read from the bytes. The proxy's own additions (Via,
        // Connection) are never in them.
        let raw_answer = req.version <= Version::HTTP_11
            && limit.is_none()
            && route.is_none_or(|r| r.response_headers().is_empty())
            && cluster.sticky.is_none()
            && !debug;
        let request = Routed {
            host,
            route,
            body_limits,
            raw_answer,
        };
        forward_to(&cluster, conn, req, body, request, debug, client).await
    };
    // The admission slot is held until the response body is done.
    let result = result.map(|response| response.map(|b| b.with_permit(permit)));
    let mut response = routing::finish(route, limit, result);
    if let Some(id) = request_id {
        response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    }
    Ok(response)
}

/// The request's `X-Request-Id`: the one it carries if its sender is
/// trusted, else a new one (128 random bits in hex), put in the request.
fn request_id(req: &mut request::Parts, keep: bool) -> HeaderValue {
    if keep {
        if let Some(id) = req.headers.get(&X_REQUEST_ID) {
            return id.clone();
        }
    }
    let id = HeaderValue::from_str(&format!("{:032x}", fastrand::u128(..)))
        .expect("hex digits are a valid header value");
    req.headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

/// What routing decided about a request, beyond its cluster.
struct Routed<'r> {
    /// The request's authority.
    host: Option<HeaderValue>,
    /// The matched route (`None`: the listener's default cluster).
    route: Option<&'r Route>,
    /// Size and rate limits of the request body.
    body_limits: BodyLimits,
    /// Whether the answer's fields may stay as the backend's bytes.
    raw_answer: bool,
}

/// Sends a routed request to `cluster`, retrying elsewhere when allowed.
async fn forward_to(
    cluster: &ClusterSnapshot,
    conn: &ConnInfo,
    parts: &mut request::Parts,
    body: ClientBody,
    routed: Routed<'_>,
    debug: bool,
    client: Option<fulcrum_balance::selector::GeoPoint>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Routed {
        host,
        route,
        body_limits,
        raw_answer,
    } = routed;
    // `TE` is hop-by-hop, but its `trailers` says the client takes
    // trailers, which an HTTP/2 backend may ask for (gRPC servers do).
    let te_trailers = cluster.config.http2
        && parts
            .headers
            .get_all(header::TE)
            .iter()
            .any(|v| headers::tokens(v).any(|t| t.eq_ignore_ascii_case(b"trailers")));
    let forwarding = headers::Forwarding::take(
        &mut parts.headers,
        parts.version,
        &conn.forwarded_for,
        host.as_ref(),
        conn.tls,
    );
    // The forwarding fields are written by the upstream encoder, unless
    // something reads or edits the fields after this: the route's edits
    // (which may name them) or a hash of a field.
    let forwarding = if route.is_none_or(|r| r.request_headers().is_empty())
        && !matches!(cluster.config.hash_key, HashKey::Header(_))
    {
        Some(forwarding)
    } else {
        forwarding.insert_into(&mut parts.headers);
        None
    };
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    parts.version = Version::HTTP_11;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let path = routing::prepare_upstream(route, &mut parts.headers, path);
    // Only the hashing selectors read the key; the others skip the hash.
    let key = matches!(
        cluster.config.algorithm,
        fulcrum_balance::Algorithm::RingHash | fulcrum_balance::Algorithm::Maglev
    )
    .then(|| request_key(&cluster.config.hash_key, parts, conn))
    .flatten();
    let mut decisions = debug.then(String::new);
    let mut body = Some(RequestBody::new(body, body_limits));
    let max_attempts = 1 + (cluster.config.retries as usize).min(MAX_ATTEMPTS - 1);
    let mut tried = [BackendId(0); MAX_ATTEMPTS];
    let mut attempts = 0;
    let mut rng = fastrand::Rng::new();
    let mut last_error = None;
    // The last retryable answer (502/503/504), returned if no retry does better.
    // Boxed: it is rarely needed, and the future would carry its 224 bytes.
    let mut held: Option<Box<(Response<UpstreamBody>, InFlightGuard, BackendId)>> = None;
    let mut only_connect_failures = true;
    // Whether the last attempt failed before reaching the backend.
    let mut connect_failed = false;
    let idempotent = is_idempotent(&parts.method);
    // One clock read serves the first attempt: its deadline, its pick's
    // `now` and its start (a retry reads the clock again).
    let arrived = Instant::now();
    let deadline = arrived + cluster.config.response_timeout;
    let mut attempt_start = Some(arrived);
    let try_timeout = cluster
        .config
        .try_timeout
        .unwrap_or(cluster.config.response_timeout);
    // A sticky session's backend takes the first attempt.
    let pinned = cluster
        .sticky
        .as_ref()
        .and_then(|t| t.lookup(&parts.headers, &cluster.set));
    let mut pin = pinned;
    // Every attempt sends the same head, with an origin-form target: the
    // pool connects to the backend's authority.
    parts.uri = Uri::from(path);
    cluster.retry_budget.deposit();
    while attempts < max_attempts {
        let Some(request_body) = body.take() else {
            break;
        };
        let started = attempt_start.take().unwrap_or_else(Instant::now);
        let remaining = deadline.saturating_duration_since(started);
        if remaining.is_zero() {
            break;
        }
        let now = clock::at(started);
        let mut ctx = PickContext {
            now,
            key,
            rng: &mut rng,
            exclude: &tried[..attempts],
            client,
            ignore_health: false,
        };
        // Out of healthy backends (say the one left was just refused, dead
        // but not yet marked down), the request falls back to the enabled
        // ones, health ignored, rather than fail while one may be alive.
        let picked = match pin.take() {
            Some(id) => Some(id),
            None => pick_or_fall_back(
                cluster.selector.as_ref(),
                &cluster.set,
                &mut ctx,
                decisions.as_mut(),
            ),
        };
        let Some(id) = picked else {
            break;
        };
        // A retry after a refused or timed-out connect is free: nothing
        // reached a backend, so it cannot feed a retry storm, and a dead
        // backend must cost a retry, not a user error, even when a whole
        // cluster is failing (panic mode spreads over dead backends too).
        if attempts > 0 && !connect_failed && !cluster.retry_budget.try_withdraw(now) {
            tracing::debug!(cluster = %cluster.name(), "retry refused: the cluster's retry budget is spent");
            break;
        }
        tried[attempts] = id;
        attempts += 1;
        connect_failed = false;
        let backend = cluster.set.get(id);
        let metrics = &cluster.backend_metrics[id.index()];
        metrics.picked();
        if attempts > 1 {
            cluster.metrics.retries.fetch_add(1, Relaxed);
        }
        let retry_body = request_body.reclaim();
        let addr = &cluster.backend_addrs[id.index()];
        let guard = backend.state.load.start();
        let sent = {
            let send = std::pin::pin!(cluster.upstream.send(
                addr,
                parts,
                forwarding.as_ref(),
                request_body,
                started,
                raw_answer
            ));
            response_within(send, try_timeout.min(remaining), retry_body.as_ref()).await
        };
        if !matches!(sent, Ok(Ok(_))) {
            // A body the proxy cut off (too large, too slow) is the
            // client's doing: answer 413/408 and blame no backend.
            match retry_body.as_ref().map(RequestBody::upload) {
                Some(Upload::Cut(cut)) => {
                    tracing::debug!(cluster = %cluster.name(), client = %conn.peer, %cut, "request body cut off; upstream request aborted");
                    return Err(cut.into());
                }
                // Likewise a body the client broke off: a 400, not a 502.
                Some(Upload::Failed) => {
                    tracing::debug!(cluster = %cluster.name(), client = %conn.peer, "request body broke off; upstream request aborted");
                    return Err(ProxyError::BadBody);
                }
                _ => {}
            }
        }
        let finished = clock::now();
        let latency = finished.saturating_sub(now);
        let decay = cluster.selector_config.decay;
        match sent {
            Ok(Ok(response)) => {
                only_connect_failures = false;
                let status = response.status();
                metrics.record(ResponseClass::of(status), latency);
                let outcome = if status.is_server_error() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                // A backend asking for less (429, Retry-After) is made less
                // attractive through its Load error rate, without counting
                // against its health.
                let throttled = status == StatusCode::TOO_MANY_REQUESTS
                    || response.headers().contains_key(header::RETRY_AFTER)
                    || response
                        .body()
                        .raw_fields()
                        .is_some_and(|f| f.has_retry_after());
                let load_outcome = if throttled { Outcome::Failure } else { outcome };
                backend
                    .state
                    .load
                    .observe(finished, latency, load_outcome, decay);
                health::observe(cluster, id, outcome, finished);
                let gateway_error = matches!(status.as_u16(), 502..=504);
                if gateway_error && attempts < max_attempts {
                    if let Some(b) = replayable(retry_body, idempotent, false) {
                        tracing::debug!(cluster = %cluster.name(), backend = %backend.address, %status, "retrying elsewhere");
                        held = Some(Box::new((response, guard, id)));
                        body = Some(b);
                        continue;
                    }
                }
                let mut response = forward(cluster, id, response, guard, decisions, finished);
                if conn.access_log.enabled() {
                    response
                        .extensions_mut()
                        .insert(served(cluster, id, attempts));
                }
                headers::recycle(std::mem::take(&mut parts.headers));
                return Ok(stick(cluster, id, pinned, response));
            }
            Ok(Err(e)) => {
                metrics.record(ResponseClass::Failed, latency);
                backend
                    .state
                    .load
                    .observe(finished, latency, Outcome::Failure, decay);
                health::observe(cluster, id, Outcome::Failure, finished);
                let connect = e.is_connect();
                only_connect_failures &= connect;
                connect_failed = connect;
                tracing::debug!(cluster = %cluster.name(), backend = %backend.address, error = %e, connect, "upstream attempt failed");
                last_error = Some(ProxyError::Upstream {
                    cluster: cluster.name().to_owned(),
                    backend: backend.address.clone(),
                    reason: error_chain(&e),
                });
                body = replayable(retry_body, idempotent, connect);
            }
            Err(_elapsed) => {
                only_connect_failures = false;
                metrics.record(ResponseClass::Failed, latency);
                backend
                    .state
                    .load
                    .observe(finished, latency, Outcome::Failure, decay);
                health::observe(cluster, id, Outcome::Failure, finished);
                tracing::debug!(cluster = %cluster.name(), backend = %backend.address, "upstream attempt timed out");
                last_error = Some(ProxyError::Timeout {
                    cluster: cluster.name().to_owned(),
                    backend: backend.address.clone(),
                });
                body = replayable(retry_body, idempotent, false);
            }
        }
    }
    if let Some((response, guard, id)) = held.map(|h| *h) {
        let mut response = forward(cluster, id, response, guard, decisions, clock::now());
        if conn.access_log.enabled() {
            response
                .extensions_mut()
                .insert(served(cluster, id, attempts));
        }
        return Ok(stick(cluster, id, pinned, response));
    }
    if attempts > 0 && only_connect_failures {
        // Every backend tried refused the connection: none is there to
        // serve, which is a 503, not a bad answer (502).
        tracing::debug!(cluster = %cluster.name(), attempts, "no backend accepted a connection");
        last_error = None;
    }
    if last_error.is_none() && Instant::now() >= deadline {
        last_error = Some(ProxyError::Timeout {
            cluster: cluster.name().to_owned(),
            backend: "-".to_owned(),
        });
    }
    Err(last_error.unwrap_or_else(|| {
        cluster.metrics.no_backend.fetch_add(1, Relaxed);
        ProxyError::NoBackend {
            cluster: cluster.name().to_owned(),
        }
    }))
}

/// Waits up to `limit` for the backend's response head, counted from the
/// end of the request body's upload (as Envoy's route timeout), or while
/// it streams from its last progress: while the client is still sending,
/// the backend cannot be expected to answer, and a slow upload is the body
/// limits' business (408), not a backend failure. A backend that stops
/// reading the body stops its progress, so it still times out.
///
/// `send` is pinned by the caller: a future taken by value would be held
/// twice, as argument and as pinned local.
async fn response_within<F: std::future::Future>(
    mut send: std::pin::Pin<&mut F>,
    limit: std::time::Duration,
    body: Option<&RequestBody>,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, send.as_mut()).await {
            Ok(out) => return Ok(out),
            Err(elapsed) => {
                let now = tokio::time::Instant::now();
                let next = match body.map_or(Upload::Idle, RequestBody::upload) {
                    Upload::Streaming(at) | Upload::Done(at) => at + limit,
                    Upload::Idle | Upload::Cut(_) | Upload::Failed => return Err(elapsed),
                };
                if next <= now {
                    return Err(elapsed);
                }
                until = next;
            }
        }
    }
}

/// The body for another attempt, if the request may be sent again.
///
/// * after a connect failure nothing was sent: any request whose body was
///   not read may go again;
/// * after an answer or a broken exchange the backend may have acted on
///   the request: only idempotent methods, or requests whose (non-empty)
///   body it never started reading, go again.
///
/// A body that was partly read is never replayed (it is not buffered).
fn replayable(
    body: Option<RequestBody>,
    idempotent: bool,
    connect_failure: bool,
) -> Option<RequestBody> {
    let body = body?.reclaim()?;
    let untouched = !body.is_empty() && !body.was_read();
    (connect_failure || idempotent || untouched).then_some(body)
}

/// Turns the backend's answer into the client's.
fn forward(
    cluster: &ClusterSnapshot,
    id: BackendId,
    response: Response<UpstreamBody>,
    guard: InFlightGuard,
    decisions: Option<String>,
    finished: fulcrum_balance::Nanos,
) -> Response<ProxyBody> {
    let backend = cluster.set.get(id);
    let (mut rparts, rbody) = response.into_parts();
    if cluster.config.load_reports {
        let report = match rbody.raw_fields() {
            Some(raw) => raw.load_report(),
            None => rparts
                .headers
                .get(&ENDPOINT_LOAD_METRICS)
                .map(HeaderValue::as_bytes),
        };
        record_load_report(report, &backend.state.load, finished);
    }
    if !rbody.hop_by_hop_removed() {
        headers::remove_hop_by_hop(&mut rparts.headers);
    }
    headers::append_via(&mut rparts.headers, Version::HTTP_11);
    // The proxy speaks its own version to the client (RFC 9110 §6.2); an
    // HTTP/1.0 backend's version would end the client's keep-alive.
    // hyper still answers an HTTP/1.0 client in HTTP/1.0.
    rparts.version = Version::HTTP_11;
    if let Some(text) = decisions {
        if let Ok(v) = HeaderValue::try_from(text) {
            rparts.headers.insert(X_FULCRUM_DECISION.clone(), v);
        }
    }
    let body = ProxyBody::upstream(rbody, guard);
    Response::from_parts(rparts, body)
}

/// Which backend answered, for the access log.
fn served(cluster: &ClusterSnapshot, id: BackendId, attempts: usize) -> crate::access_log::Served {
    crate::access_log::Served {
        cluster: Arc::from(cluster.name()),
        backend: Arc::from(cluster.set.get(id).address.as_str()),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
    }
}

/// Names backend `id` in the cluster's sticky cookie, unless the request
/// already did.
fn stick(
    cluster: &ClusterSnapshot,
    id: BackendId,
    pinned: Option<BackendId>,
    mut response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if let Some(table) = &cluster.sticky {
        table.stick(id, pinned, response.headers_mut());
    }
    response
}

/// Request and response header naming a request (`request_id`).
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Request header asking for the decision trail.
pub static X_FULCRUM_DEBUG: HeaderName = HeaderName::from_static("x-fulcrum-debug");
/// Response header carrying the decision trail.
pub static X_FULCRUM_DECISION: HeaderName = HeaderName::from_static("x-fulcrum-decision");
/// ORCA load report response header.
static ENDPOINT_LOAD_METRICS: HeaderName = HeaderName::from_static("endpoint-load-metrics");

/// Feeds a backend's ORCA load report (an `Endpoint-Load-Metrics` value)
/// into its Load.
fn record_load_report(
    report: Option<&[u8]>,
    load: &fulcrum_balance::Load,
    now: fulcrum_balance::Nanos,
) {
    let Some(value) = report.and_then(|v| std::str::from_utf8(v).ok()) else {
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
fn request_key(key: &HashKey, parts: &request::Parts, conn: &ConnInfo) -> Option<u64> {
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

/// Sets the request's `X-Forwarded-Client-Cert` ([`crate::client_cert`]):
/// one sent by a peer that is not `trusted` is dropped; the client's own
/// certificate, if it gave one, is appended to what is left.
fn forward_client_cert(req: &mut request::Parts, conn: &ConnInfo, trusted: bool) {
    use crate::client_cert::X_FORWARDED_CLIENT_CERT as XFCC;
    let prior = req.headers.remove(&XFCC).filter(|_| trusted);
    let value = match (prior, conn.client_cert.as_deref()) {
        (Some(prior), Some(mine)) => {
            let mut v = Vec::with_capacity(prior.len() + 1 + mine.len());
            v.extend_from_slice(prior.as_bytes());
            v.push(b',');
            v.extend_from_slice(mine.as_bytes());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()
        }
        (prior, mine) => prior.or_else(|| mine.cloned()),
    };
    if let Some(value) = value {
        req.headers.insert(XFCC.clone(), value);
    }
}

/// Which of the fields the proxy looks up are in a request.
///
/// One pass over the request's names (usually a handful) instead of a
/// hashed lookup for each field, most of which a request does not have:
/// those lookups were about 1 000 instructions per request.
#[derive(Debug, Default)]
struct Present {
    content_length: bool,
    transfer_encoding: bool,
    host: bool,
    upgrade: bool,
    forwarded_for: bool,
    client_cert: bool,
    request_id: bool,
    debug: bool,
}

impl Present {
    fn of(headers: &http::HeaderMap) -> Present {
        let mut present = Present::default();
        for name in headers.keys() {
            if name == header::CONTENT_LENGTH {
                present.content_length = true;
            } else if name == header::TRANSFER_ENCODING {
                present.transfer_encoding = true;
            } else if name == header::HOST {
                present.host = true;
            } else if name == header::UPGRADE {
                present.upgrade = true;
            } else if name == headers::X_FORWARDED_FOR {
                present.forwarded_for = true;
            } else if name == crate::client_cert::X_FORWARDED_CLIENT_CERT {
                present.client_cert = true;
            } else if name == X_REQUEST_ID {
                present.request_id = true;
            } else if name == X_FULCRUM_DEBUG {
                present.debug = true;
            }
        }
        present
    }
}

/// Refuses requests whose body length could be read two ways (RFC 9112
/// §6.3): a proxy that forwards them enables request smuggling.
fn check_framing(req: &request::Parts, present: &Present) -> Result<(), ProxyError> {
    let h = &req.headers;
    if req.version <= Version::HTTP_11 {
        if !present.content_length && !present.transfer_encoding {
            return Ok(());
        }
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
    } else {
        // HTTP/2 and later, downgraded to HTTP/1.1 towards the backend. The
        // h2 codec already refuses connection-specific headers, `te` other
        // than `trailers`, CR/LF/NUL in values and pseudo-header misuse
        // (RFC 9113 §8.2); a Host that disagrees with `:authority` is
        // left to us (§8.3.1): two hops could route by different ones.
        if !present.host {
            return Ok(());
        }
        let mut hosts = h.get_all(header::HOST).iter();
        if let (Some(host), Some(authority)) = (hosts.next(), req.uri.authority()) {
            if hosts.next().is_some()
                || !host
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes())
            {
                return Err(ProxyError::BadFraming {
                    reason: "Host disagrees with :authority",
                });
            }
        }
    }
    Ok(())
}

/// Refuses request targets beyond the listener's `max_uri_bytes` (414).
fn check_uri(req: &request::Parts, limits: &fulcrum_config::HttpLimits) -> Result<(), ProxyError> {
    let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong {
            limit: limits.max_uri_bytes,
        });
    }
    Ok(())
}

/// Refuses a declared body (`Content-Length`) beyond `max` bytes (413)
/// before anything is sent upstream. A body without a declared length is
/// measured as it streams ([`RequestBody`]).
fn check_declared_body(req: &request::Parts, max: u64) -> Result<(), ProxyError> {
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ProxyError::BodyTooLarge { limit: max });
    }
    Ok(())
}

/// The request's authority: the Host header, or the URI's (HTTP/2 `:authority`).
fn authority(req: &request::Parts) -> Option<HeaderValue> {
    if let Some(h) = req.headers.get(header::HOST) {
        return Some(h.clone());
    }
    req.uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

pub(super) fn upstream_uri(cluster: &ClusterSnapshot, id: BackendId, path: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if cluster.config.tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    parts.authority = Some(cluster.backend_addrs[id.index()].authority().clone());
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).expect("scheme, authority and path are all set")
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_certificate_is_appended_to_a_trusted_peers_xfcc_and_replaces_another() {
        use crate::client_cert::X_FORWARDED_CLIENT_CERT as XFCC;
        let conn = |mine: Option<&'static str>| ConnInfo {
            listener: Arc::from("web"),
            peer: "127.0.0.1:1".parse().unwrap(),
            tls: true,
            forwarded_for: HeaderValue::from_static("127.0.0.1"),
            client_cert: mine.map(|v| Box::new(HeaderValue::from_static(v))),
            access_log: crate::access_log::AccessLogs::default().get("web"),
        };
        let request = |xfcc: Option<&'static str>| {
            let mut req = Request::new(()).into_parts().0;
            if let Some(v) = xfcc {
                req.headers
                    .insert(XFCC.clone(), HeaderValue::from_static(v));
            }
            req
        };
        let cases = [
            (Some("Hash=a"), Some("Hash=b"), true, Some("Hash=a,Hash=b")),
            (Some("Hash=a"), Some("Hash=b"), false, Some("Hash=b")),
            (Some("Hash=a"), None, true, Some("Hash=a")),
            (Some("Hash=a"), None, false, None),
            (None, Some("Hash=b"), false, Some("Hash=b")),
        ];
        for (sent, mine, trusted, expected) in cases {
            let mut req = request(sent);
            forward_client_cert(&mut req, &conn(mine), trusted);
            assert_eq!(
                req.headers.get(&XFCC).map(|v| v.to_str().unwrap()),
                expected,
                "{sent:?} {mine:?} {trusted}"
            );
        }
    }

    #[test]
    fn present_notes_each_looked_up_field_and_nothing_else() {
        let mut h = http::HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert("x-other", HeaderValue::from_static("1"));
        let none = Present::of(&h);
        assert!(
            !(none.content_length
                || none.transfer_encoding
                || none.host
                || none.upgrade
                || none.forwarded_for
                || none.debug),
            "{none:?}"
        );
        for name in [
            "content-length",
            "transfer-encoding",
            "host",
            "upgrade",
            "x-forwarded-for",
            "x-fulcrum-debug",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        let all = Present::of(&h);
        assert!(
            all.content_length
                && all.transfer_encoding
                && all.host
                && all.upgrade
                && all.forwarded_for
                && all.debug,
            "{all:?}"
        );
    }
}
