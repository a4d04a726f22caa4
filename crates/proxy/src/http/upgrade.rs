//! WebSocket and HTTP/1.1 Upgrade pass-through.
//!
//! An upgrade request (`Connection: upgrade` plus `Upgrade: PROTOCOL`)
//! keeps those two headers on its way upstream (every other hop-by-hop
//! header is still removed). When the backend answers `101 Switching
//! Protocols`, the client gets the 101 with the backend's `Upgrade`, and
//! both connections are handed over (the client's by the HTTP/1 server's
//! [`OnUpgrade`], the backend's by hyper's client) and
//! joined byte for byte with `tokio::io::copy_bidirectional` until either
//! side closes. The backend counts as in flight for the whole life of the
//! tunnel (its [`InFlightGuard`](fulcrum_balance::InFlightGuard) moves into
//! the tunnel task), so least-loaded selectors see long-lived sockets.
//!
//! Any other answer is forwarded like a normal response. Upgrades are not
//! retried: the request is sent to one backend only (sticky sessions and
//! the Selector decide which).

use super::server::{ClientBody, OnUpgrade};
use bytes::Bytes;
use fulcrum_balance::{Outcome, PickContext};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;

use super::error::ProxyError;
use super::routing;
use super::service::{error_chain, upstream_uri, ConnInfo};
use crate::body::{BodyLimits, ProxyBody, RequestBody};
use crate::clock;
use crate::headers;
use crate::health;
use crate::routes::Route;
use crate::state::ClusterSnapshot;

/// Whether the request asks to switch protocols (HTTP/1.1 only).
pub fn requested(req: &http::request::Parts) -> bool {
    req.version == Version::HTTP_11
        && req.headers.contains_key(header::UPGRADE)
        && req
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Puts `Connection: upgrade` and `Upgrade: protocol` back after the
/// hop-by-hop headers were removed.
fn keep_upgrade(headers: &mut http::HeaderMap, protocol: Option<HeaderValue>) {
    if let Some(p) = protocol {
        headers.insert(header::UPGRADE, p);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Sends an upgrade request to one backend and, on 101, tunnels.
pub(super) async fn forward(
    cluster: &ClusterSnapshot,
    conn: &ConnInfo,
    mut req: Request<ClientBody>,
    host: Option<HeaderValue>,
    route: Option<&Route>,
    body_limits: BodyLimits,
) -> Result<Response<ProxyBody>, ProxyError> {
    let client_side = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(ProxyError::BadFraming {
            reason: "upgrade on a connection that cannot hand over",
        })?;
    let (mut parts, body) = req.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    headers::prepare_request(
        &mut parts.headers,
        parts.version,
        conn.peer.ip(),
        host.as_ref(),
        conn.tls,
    );
    keep_upgrade(&mut parts.headers, protocol);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let path = routing::prepare_upstream(route, &mut parts.headers, path);
    let pinned = cluster
        .sticky
        .as_ref()
        .and_then(|t| t.lookup(&parts.headers, &cluster.set));
    let mut rng = fastrand::Rng::new();
    let now = clock::now();
    let id = match pinned {
        Some(id) => Some(id),
        None => fulcrum_balance::selector::pick_or_fall_back(
            cluster.selector.as_ref(),
            &cluster.set,
            &mut PickContext::new(now, &mut rng),
            None,
        ),
    }
    .ok_or_else(|| ProxyError::NoBackend {
        cluster: cluster.name().to_owned(),
    })?;
    let backend = cluster.set.get(id);
    let mut upstream_req = Request::from_parts(parts, RequestBody::new(body, body_limits));
    *upstream_req.uri_mut() = upstream_uri(cluster, id, &path);
    let guard = backend.state.load.start();
    let started = clock::now();
    let sent = tokio::time::timeout(
        cluster.config.response_timeout,
        cluster.upstream.client().request(upstream_req),
    )
    .await;
    let finished = clock::now();
    let latency = finished.saturating_sub(started);
    let decay = cluster.selector_config.decay;
    let mut response = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            backend
                .state
                .load
                .observe(finished, latency, Outcome::Failure, decay);
            health::observe(cluster, id, Outcome::Failure, finished);
            return Err(ProxyError::Upstream {
                cluster: cluster.name().to_owned(),
                backend: backend.address.clone(),
                reason: error_chain(&e),
            });
        }
        Err(_) => {
            backend
                .state
                .load
                .observe(finished, latency, Outcome::Failure, decay);
            health::observe(cluster, id, Outcome::Failure, finished);
            return Err(ProxyError::Timeout {
                cluster: cluster.name().to_owned(),
                backend: backend.address.clone(),
            });
        }
    };
    let outcome = if response.status().is_server_error() {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    backend
        .state
        .load
        .observe(finished, latency, outcome, decay);
    health::observe(cluster, id, outcome, finished);
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let backend_side = switching.then(|| hyper::upgrade::on(&mut response));
    let (mut rparts, rbody) = response.into_parts();
    let protocol = rparts.headers.get(header::UPGRADE).cloned();
    headers::remove_hop_by_hop(&mut rparts.headers);
    headers::append_via(&mut rparts.headers, Version::HTTP_11);
    if let Some(t) = &cluster.sticky {
        t.stick(id, pinned, &mut rparts.headers);
    }
    let Some(backend_side) = backend_side else {
        return Ok(Response::from_parts(
            rparts,
            ProxyBody::upstream(rbody, guard),
        ));
    };
    keep_upgrade(&mut rparts.headers, protocol);
    let address = backend.address.clone();
    let cluster_name = cluster.name().to_owned();
    tokio::spawn(async move {
        // Held until the tunnel closes: the backend is busy all along.
        let _in_flight = guard;
        match tokio::join!(client_side, backend_side) {
            (Ok(client), Ok(upstream)) => {
                let mut client = client;
                let mut upstream = TokioIo::new(upstream);
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => {
                        tracing::debug!(cluster = %cluster_name, backend = %address, up, down, "tunnel closed")
                    }
                    Err(e) => {
                        tracing::debug!(cluster = %cluster_name, backend = %address, error = %e, "tunnel ended with an error")
                    }
                }
            }
            (client, upstream) => {
                tracing::debug!(cluster = %cluster_name, backend = %address, client_ok = client.is_ok(), upstream_ok = upstream.is_ok(), "upgrade failed");
            }
        }
    });
    Ok(Response::from_parts(rparts, ProxyBody::local(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut r = Request::builder().version(version).uri("/ws");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap().into_parts().0
    }

    #[test]
    fn upgrade_requested_needs_both_headers_on_http11() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert!(requested(&req(Version::HTTP_11, &ws)));
        assert!(!requested(&req(Version::HTTP_2, &ws)));
        assert!(!requested(&req(Version::HTTP_11, &ws[1..])));
        assert!(!requested(&req(
            Version::HTTP_11,
            &[("connection", "upgrade")]
        )));
    }

    #[test]
    fn keep_upgrade_restores_the_stripped_headers() {
        let mut h = http::HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let protocol = h.get(header::UPGRADE).cloned();
        headers::remove_hop_by_hop(&mut h);
        assert!(h.is_empty());
        keep_upgrade(&mut h, protocol);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }
}
