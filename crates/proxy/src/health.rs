//! Health checking at run time: active probers, the supervisor that keeps
//! them in step with the configuration, and reporting of transitions.
//!
//! The state machine itself is pure and lives in
//! [`fulcrum_balance::health`]; this module feeds it.
//!
//! * One **supervisor** task per [`Runtime`] ([`supervise`]) wakes every
//!   [`TICK`], reads the current snapshot and
//!   - when the snapshot changed since the last tick, starts a prober for every `(cluster, address)` of a cluster with
//!     `[cluster.NAME.health]`, restarts it when its settings change and
//!     stops it when the backend or the health section goes away (the
//!     backend's `Arc<BackendState>` survives reloads, so a reload does not
//!     reset what probes learned);
//!   - ends expired outlier ejections ([`BackendState::tick_health`]);
//!   - recomputes each cluster's panic mode and logs changes.
//! * A **prober** task probes one backend every `interval` (every
//!   `unhealthy_interval` while it is down) plus a random `jitter`, starting
//!   at a random offset so probes of many backends do not line up. An HTTP
//!   probe opens a fresh connection (as HAProxy does: it also checks that
//!   the backend accepts), sends `METHOD path` with the configured Host and
//!   `connection: close`, and passes when the status is in `expect_status`
//!   and, if set, the body (first 64 KiB) contains `body_contains`. A TCP
//!   probe passes when the connect succeeds. Each probe is bounded by
//!   `timeout`. A TCP probe may `send` bytes and then `expect` the reply to
//!   start with given bytes. Probes to a cluster with `tls` run the TLS
//!   handshake first, with the pool's TLS setup
//!   ([`crate::backend_tls`]).
//! * Passive observations come from the request path
//!   (`crate::http::service`) through [`BackendState::record_outcome`]; its
//!   transitions are reported here too ([`report`]).
//!
//! Every transition is logged with its reason: `warn` when a backend goes
//! down, `info` when it comes back; panic mode is logged at `warn`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fulcrum_balance::{BackendId, BackendState, HealthPolicy, Nanos, Outcome, Transition};
use fulcrum_config::{ClusterConfig, HealthConfig, HealthKind};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend_tls::BackendTls;
use crate::clock;
use crate::state::{ClusterSnapshot, Runtime, Snapshot};

/// How often the supervisor reconciles probers, ends ejections and checks
/// panic mode: 100 ms keeps an ejection's end and a new backend's first
/// probe prompt, at a cost of one pass over the backends.
pub const TICK: Duration = Duration::from_millis(100);

/// Most of an HTTP probe's body searched for `body_contains`.
pub const PROBE_BODY_LIMIT: usize = 64 * 1024;

/// The health thresholds of a cluster's configuration.
pub fn policy(cluster: &ClusterConfig) -> HealthPolicy {
    let (rise, fall) = cluster.health.as_ref().map_or((2, 2), |h| (h.rise, h.fall));
    HealthPolicy {
        rise,
        fall,
        consecutive_failures: cluster.outlier.consecutive_failures,
        base_ejection: cluster.outlier.base_ejection.as_nanos() as u64,
        max_ejection: cluster.outlier.max_ejection.as_nanos() as u64,
        max_ejection_percent: cluster.outlier.max_ejection_percent,
    }
}

/// Logs a backend's health transition and updates its cluster's panic mode.
/// `detail` adds what the last observation was (e.g. a probe's error).
pub fn report(cluster: &ClusterSnapshot, address: &str, t: &Transition, detail: Option<&str>) {
    let detail = detail.unwrap_or("");
    if t.up {
        tracing::info!(cluster = %cluster.name(), backend = %address, reason = %t.reason, "backend up");
    } else if let Some(d) = t.ejected_for {
        tracing::warn!(
            cluster = %cluster.name(),
            backend = %address,
            reason = %t.reason,
            ejected_for = ?Duration::from_nanos(d),
            "backend ejected"
        );
    } else {
        tracing::warn!(cluster = %cluster.name(), backend = %address, reason = %t.reason, last_error = %detail, "backend down");
    }
    refresh_panic(cluster);
}

/// Feeds one request attempt's outcome into the backend's passive health
/// (outlier detection) and reports an ejection.
#[inline]
pub fn observe(cluster: &ClusterSnapshot, id: BackendId, outcome: Outcome, now: Nanos) {
    let b = cluster.set.get(id);
    if let Some(t) = b
        .state
        .record_outcome(outcome, now, &cluster.health, &cluster.set)
    {
        report(cluster, &b.address, &t, None);
    }
}

/// Recomputes a cluster's panic mode and logs a change.
pub fn refresh_panic(cluster: &ClusterSnapshot) {
    if let Some(change) = cluster.set.refresh_panic() {
        if change.active {
            tracing::warn!(
                cluster = %cluster.name(),
                healthy = change.healthy,
                enabled = change.enabled,
                threshold_percent = cluster.set.panic_threshold(),
                "panic mode: too few healthy backends, ignoring health and spreading over all enabled backends"
            );
        } else {
            tracing::info!(
                cluster = %cluster.name(),
                healthy = change.healthy,
                enabled = change.enabled,
                "panic mode over"
            );
        }
    }
}

/// A running prober and what it was started with.
struct Prober {
    config: HealthConfig,
    policy: HealthPolicy,
    state: Arc<BackendState>,
    task: JoinHandle<()>,
}

/// Runs health checking for `runtime` until `shutdown` turns true.
///
/// Every [`TICK`] it advances each backend's health state machine and the
/// clusters' panic state. Probers are reconciled with the configuration
/// only when the snapshot changed (a reload or an API change publishes a new
/// one), so a steady tick allocates nothing per backend.
pub async fn supervise(runtime: Arc<Runtime>, mut shutdown: watch::Receiver<bool>) {
    let mut probers: HashMap<(String, String), Prober> = HashMap::new();
    let mut reconciled: Option<Arc<Snapshot>> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
        let snapshot = runtime.snapshot_owned();
        let now = clock::now();
        for cluster in snapshot.clusters.values() {
            for b in cluster.set.backends() {
                if let Some(t) = b.state.tick_health(now, &cluster.health) {
                    report(cluster, &b.address, &t, None);
                }
                if cluster.config.health.is_none() {
                    // Health checking off: no stale probe verdict may keep it down.
                    if let Some(t) = b.state.clear_probe_verdict(now) {
                        report(cluster, &b.address, &t, Some("health checking turned off"));
                    }
                }
            }
            refresh_panic(cluster);
        }
        if !reconciled
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &snapshot))
        {
            reconcile(&runtime, &snapshot, &mut probers);
            reconciled = Some(snapshot);
        }
    }
    for (_, p) in probers {
        p.task.abort();
    }
}

/// Starts a prober for each health-checked backend of `snapshot` that has
/// none (or whose check, policy or state changed) and stops the probers of
/// backends that are gone.
fn reconcile(
    runtime: &Arc<Runtime>,
    snapshot: &Snapshot,
    probers: &mut HashMap<(String, String), Prober>,
) {
    let mut live = HashSet::new();
    for cluster in snapshot.clusters.values() {
        let Some(config) = &cluster.config.health else {
            continue;
        };
        for b in cluster.set.backends() {
            let key = (cluster.name().to_owned(), b.address.clone());
            let current = probers.get(&key).is_some_and(|p| {
                p.config == *config && p.policy == cluster.health && Arc::ptr_eq(&p.state, &b.state)
            });
            if !current {
                let task = tokio::spawn(probe_loop(
                    Arc::clone(runtime),
                    key.0.clone(),
                    key.1.clone(),
                    Arc::clone(&b.state),
                    config.clone(),
                    cluster.health.clone(),
                ));
                let prober = Prober {
                    config: config.clone(),
                    policy: cluster.health.clone(),
                    state: Arc::clone(&b.state),
                    task,
                };
                if let Some(old) = probers.insert(key.clone(), prober) {
                    old.task.abort();
                }
            }
            live.insert(key);
        }
    }
    probers.retain(|key, p| {
        let keep = live.contains(key);
        if !keep {
            p.task.abort();
        }
        keep
    });
}

/// Probes one backend forever (until aborted by the supervisor).
async fn probe_loop(
    runtime: Arc<Runtime>,
    cluster: String,
    address: String,
    state: Arc<BackendState>,
    config: HealthConfig,
    policy: HealthPolicy,
) {
    let mut rng = fastrand::Rng::new();
    // Start at a random point of the interval so probes spread out.
    tokio::time::sleep(random_up_to(&mut rng, config.interval)).await;
    loop {
        let started = Instant::now();
        let (tls, http2) = runtime
            .snapshot()
            .clusters
            .get(&cluster)
            .map_or((None, false), |c| {
                (c.upstream.tls().cloned(), c.config.http2)
            });
        let probe = probe_once(&address, &config, tls.as_deref(), http2);
        let result = match tokio::time::timeout(config.timeout, probe).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", config.timeout)),
        };
        let now = clock::now();
        let latency = started.elapsed().as_nanos() as u64;
        if let Err(e) = &result {
            tracing::debug!(cluster = %cluster, backend = %address, error = %e, "health probe failed");
        }
        if let Some(t) = state.record_probe(result.is_ok(), latency, now, &policy) {
            let snapshot = runtime.snapshot();
            match snapshot.clusters.get(&cluster) {
                Some(c) => report(c, &address, &t, result.as_ref().err().map(String::as_str)),
                None => {
                    tracing::info!(cluster = %cluster, backend = %address, up = t.up, reason = %t.reason, "backend health changed")
                }
            }
        }
        let base = if state.health.probe_up() {
            config.interval
        } else {
            config.unhealthy_interval
        };
        tokio::time::sleep(base + random_up_to(&mut rng, config.jitter)).await;
    }
}

fn random_up_to(rng: &mut fastrand::Rng, max: Duration) -> Duration {
    let nanos = max.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rng.u64(0..=nanos))
}

/// One probe; `Err` says why it failed.
async fn probe_once(
    address: &str,
    config: &HealthConfig,
    tls: Option<&Result<BackendTls, String>>,
    http2: bool,
) -> Result<(), String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => probe_stream(address, config, stream, http2, "http").await,
        Some(Err(e)) => Err(e.clone()),
        Some(Ok(tls)) => {
            let stream = if http2 || matches!(config.kind, HealthKind::Grpc { .. }) {
                tls.connect_h2(address, stream).await
            } else {
                tls.connect(address, stream).await
            };
            let stream = stream.map_err(|e| e.to_string())?;
            probe_stream(address, config, stream, http2, "https").await
        }
    }
}

/// The probe's exchange over a connected (maybe TLS) stream, in HTTP/2
/// when the cluster speaks it to its backends (`http2`).
async fn probe_stream<S>(
    address: &str,
    config: &HealthConfig,
    mut stream: S,
    http2: bool,
    scheme: &str,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let path = match &config.kind {
        HealthKind::Tcp => return tcp_exchange(config, &mut stream).await,
        HealthKind::Grpc { service } => {
            return grpc_check(address, config, stream, scheme, service).await
        }
        HealthKind::Http { path } => path,
    };
    let host = config.host.as_deref().unwrap_or(address);
    let request = http::Request::builder()
        .method(config.method.as_str())
        .header(http::header::USER_AGENT, "fulcrum-health-check");
    // HTTP/2 names the authority in the target (`:authority`) and has no
    // `Connection`; the connection is dropped after the probe anyway.
    let request = if http2 {
        request.uri(format!("{scheme}://{host}{path}"))
    } else {
        request
            .uri(path.as_str())
            .header(http::header::HOST, host)
            .header(http::header::CONNECTION, "close")
    };
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let (response, conn) = send_probe(stream, http2, request).await?;
    let outcome = async {
        let response = response.map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        if !config.accepts_status(status) {
            return Err(format!("status {status}"));
        }
        if let Some(needle) = &config.body_contains {
            let body = Limited::new(response.into_body(), PROBE_BODY_LIMIT)
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            let found = body
                .windows(needle.len().max(1))
                .any(|w| w == needle.as_bytes());
            if !found {
                return Err(format!("body does not contain `{needle}`"));
            }
        }
        Ok(())
    }
    .await;
    conn.abort();
    outcome
}

/// Sends a probe's `request` on `stream` in HTTP/2 or HTTP/1.1: its
/// answer (or why there is none), and the connection's task, which the
/// caller aborts when done with the answer.
async fn send_probe<S, B>(
    stream: S,
    http2: bool,
    request: http::Request<B>,
) -> Result<
    (
        hyper::Result<http::Response<hyper::body::Incoming>>,
        tokio::task::JoinHandle<()>,
    ),
    String,
>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(stream);
    if http2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((sender.send_request(request).await, conn))
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((sender.send_request(request).await, conn))
    }
}

/// The gRPC health method every check calls.
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// A gRPC check (`type = "grpc"`): `grpc.health.v1.Health/Check` for
/// `service` over HTTP/2 (whatever the cluster's `http2`: gRPC is always
/// HTTP/2). It passes when the call ends with `grpc-status: 0` and the
/// answer says `SERVING`.
async fn grpc_check<S>(
    address: &str,
    config: &HealthConfig,
    stream: S,
    scheme: &str,
    service: &str,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let host = config.host.as_deref().unwrap_or(address);
    let request = http::Request::post(format!("{scheme}://{host}{GRPC_HEALTH_CHECK}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "fulcrum-health-check")
        .body(Full::new(grpc_health_request(service)))
        .map_err(|e| format!("request: {e}"))?;
    let (response, conn) = send_probe(stream, true, request).await?;
    let outcome = async {
        let response = response.map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(format!("status {status}"));
        }
        let (head, body) = response.into_parts();
        let answer = Limited::new(body, PROBE_BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        // A call that fails at once may put its status in the head
        // ("trailers-only").
        let trailers = answer.trailers().cloned().unwrap_or_default();
        let field = |name: &str| {
            trailers
                .get(name)
                .or_else(|| head.headers.get(name))
                .cloned()
        };
        match field("grpc-status") {
            Some(v) if v == "0" => {}
            Some(v) => {
                let message = field("grpc-message")
                    .and_then(|m| m.to_str().ok().map(|m| format!(" ({m})")))
                    .unwrap_or_default();
                return Err(format!(
                    "grpc-status {}{message}",
                    v.to_str().unwrap_or("?")
                ));
            }
            None => return Err("no grpc-status in the answer".into()),
        }
        match grpc_serving_status(&answer.to_bytes())? {
            1 => Ok(()),
            0 => Err("UNKNOWN".into()),
            2 => Err("NOT_SERVING".into()),
            3 => Err("SERVICE_UNKNOWN".into()),
            other => Err(format!("serving status {other}")),
        }
    }
    .await;
    conn.abort();
    outcome
}

/// A `grpc.health.v1.HealthCheckRequest { service }` in its gRPC frame:
/// not compressed, a 4-byte length, then the message (field 1, a string;
/// left out when empty, as proto3 does).
fn grpc_health_request(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at the start of `buf`: its value and length.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The `status` (field 1) of the `grpc.health.v1.HealthCheckResponse` in
/// a gRPC answer body; 0 (`UNKNOWN`) when the field is absent, as proto3
/// leaves out a zero. Other fields are skipped.
fn grpc_serving_status(body: &[u8]) -> Result<u64, String> {
    let bad = |why: &str| Err(format!("invalid health answer: {why}"));
    if body.len() < 5 {
        return bad("no gRPC message");
    }
    if body[0] != 0 {
        return bad("compressed message");
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let Some(mut message) = body.get(5..5 + len) else {
        return bad("message shorter than its length");
    };
    let mut status = 0;
    while !message.is_empty() {
        let Some((tag, n)) = varint(message) else {
            return bad("truncated field");
        };
        message = &message[n..];
        let skip = match tag & 7 {
            0 => {
                let Some((v, n)) = varint(message) else {
                    return bad("truncated varint");
                };
                if tag >> 3 == 1 {
                    status = v;
                }
                n
            }
            1 => 8,
            2 => match varint(message) {
                Some((len, n)) => n.saturating_add(len as usize),
                None => return bad("truncated length"),
            },
            5 => 4,
            _ => return bad("unknown wire type"),
        };
        let Some(rest) = message.get(skip..) else {
            return bad("truncated field");
        };
        message = rest;
    }
    Ok(status)
}

/// A TCP check's `send` and `expect`: the reply must start with `expect`.
async fn tcp_exchange<S>(config: &HealthConfig, stream: &mut S) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(send) = &config.send {
        stream
            .write_all(send.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        stream.flush().await.map_err(|e| format!("send: {e}"))?;
    }
    let Some(expect) = &config.expect else {
        return Ok(());
    };
    let expect = expect.as_bytes();
    let mut reply = Vec::with_capacity(expect.len());
    while reply.len() < expect.len() {
        let mut chunk = [0u8; 512];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    if reply.starts_with(expect) {
        Ok(())
    } else {
        let shown = String::from_utf8_lossy(&reply[..reply.len().min(64)]).into_owned();
        Err(format!(
            "reply {shown:?} does not start with {:?}",
            config.expect.as_deref().unwrap_or_default()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_config::{BackendConfig, Command};
    use fulcrum_testbed::{spawn_backend, BackendOptions};

    #[test]
    fn grpc_health_messages_are_written_and_read_as_protobuf() {
        assert_eq!(&grpc_health_request("")[..], b"\0\0\0\0\0");
        assert_eq!(
            &grpc_health_request("shop.Cart")[..],
            b"\0\0\0\0\x0b\x0a\x09shop.Cart"
        );
        assert_eq!(grpc_serving_status(b"\0\0\0\0\x02\x08\x01"), Ok(1));
        // proto3 leaves a zero (UNKNOWN) out.
        assert_eq!(grpc_serving_status(b"\0\0\0\0\0"), Ok(0));
        // Other fields (a string, a fixed32) are skipped.
        assert_eq!(
            grpc_serving_status(b"\0\0\0\0\x0a\x12\x01x\x1d\x01\x02\x03\x04\x08\x02"),
            Ok(2)
        );
        for bad in [
            &b"\0\0\0"[..],
            b"\x01\0\0\0\x02\x08\x01",
            b"\0\0\0\0\x05\x08\x01",
            b"\0\0\0\0\x01\x08",
            b"\0\0\0\0\x02\x12\x05",
            b"\0\0\0\0\x01\x0b",
        ] {
            assert!(grpc_serving_status(bad).is_err(), "{bad:?}");
        }
    }

    async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..100 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn healthy(runtime: &Runtime, address: &str) -> bool {
        let snapshot = runtime.snapshot();
        let set = &snapshot.clusters["app"].set;
        set.get(set.find(address).unwrap()).state.is_healthy()
    }

    #[tokio::test]
    async fn probers_follow_membership_and_keep_state_across_reloads() {
        let a = spawn_backend(BackendOptions::new("a")).await.unwrap();
        let b = spawn_backend(BackendOptions::new("b")).await.unwrap();
        a.set_healthy(false);
        b.set_healthy(false);
        let runtime = Runtime::new(crate::test_support::app_config(&format!(
            "backends = [{{ address = \"{}\" }}]\npanic_threshold = 0\n\
             [cluster.app.health]\ninterval = \"50ms\"\ntimeout = \"50ms\"\njitter = \"0s\"\n\
             expect_status = \"200\"\nrise = 1\nfall = 1",
            a.addr
        )));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervise(Arc::clone(&runtime), stopped));
        let a_addr = a.addr.to_string();
        assert!(
            wait_until(|| !healthy(&runtime, &a_addr)).await,
            "a marked down"
        );

        // A backend added at run time is probed too.
        let b_addr = b.addr.to_string();
        runtime
            .apply([Command::AddBackend {
                cluster: "app".into(),
                backend: BackendConfig {
                    address: b_addr.clone(),
                    weight: 1,
                    state: Default::default(),
                    location: None,
                },
            }])
            .unwrap();
        assert!(
            wait_until(|| !healthy(&runtime, &b_addr)).await,
            "b marked down"
        );
        // The reload kept a's verdict (its state survived the new snapshot).
        assert!(!healthy(&runtime, &a_addr));
        b.set_healthy(true);
        assert!(wait_until(|| healthy(&runtime, &b_addr)).await, "b back up");
        let state = {
            let snapshot = runtime.snapshot();
            let set = &snapshot.clusters["app"].set;
            Arc::clone(&set.get(set.find(&b_addr).unwrap()).state)
        };
        assert!(state.ramp_since().is_some());

        // Removed: its prober stops, so its probe count stops growing.
        runtime
            .apply([Command::RemoveBackend {
                cluster: "app".into(),
                address: b_addr.clone(),
            }])
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let probes = state
            .health
            .probes
            .load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            state
                .health
                .probes
                .load(std::sync::atomic::Ordering::Relaxed),
            probes
        );
        let _ = stop.send(true);
        task.await.unwrap();
    }
}
