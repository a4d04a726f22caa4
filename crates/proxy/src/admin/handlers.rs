//! The admin API's request handlers. Each mutating handler turns its request
//! into [`Command`]s and hands them to [`Runtime::apply`](crate::Runtime::apply).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fulcrum_balance::AdminState;
use fulcrum_config::{BackendConfig, Command, CommandError};
use serde_json::{json, Map, Value};

use super::{error, Shared};
use crate::admin::{effective, reload, DEFAULT_DRAIN_TIMEOUT};

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(admin): State<Shared>) -> Response {
    let mut problems: Vec<String> = Vec::new();
    if let Some(l) = &admin.listeners {
        problems.extend(l.failures());
        if l.addresses().is_empty() {
            problems.push("no listener is running".into());
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({ "ready": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "problems": problems })),
        )
            .into_response()
    }
}

pub(super) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such admin endpoint; see /api/v1/clusters, /metrics, /",
        None,
    )
}

/// OpenMetrics for clients that ask for it (Prometheus does), the classic
/// text format otherwise.
pub(super) async fn metrics(State(admin): State<Shared>, headers: HeaderMap) -> Response {
    use crate::metrics::{encode, to_classic_text, CLASSIC_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE};
    let text = encode(&admin.runtime);
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, CLASSIC_CONTENT_TYPE)],
            to_classic_text(&text),
        )
            .into_response()
    }
}

pub(super) async fn clusters(State(admin): State<Shared>) -> Response {
    Json(admin.sampler.view()).into_response()
}

pub(super) async fn config(State(admin): State<Shared>) -> Response {
    Json(effective::to_file(&admin.runtime.config())).into_response()
}

pub(super) async fn listeners(State(admin): State<Shared>) -> Response {
    let (running, failures) = match &admin.listeners {
        Some(l) => (l.addresses(), l.failures()),
        None => (Vec::new(), Vec::new()),
    };
    let running: Vec<Value> = running
        .into_iter()
        .map(|(name, addr)| json!({ "name": name, "address": addr.to_string() }))
        .collect();
    Json(json!({ "listeners": running, "failures": failures })).into_response()
}

pub(super) async fn events(State(admin): State<Shared>) -> Response {
    let rx = admin.sampler.subscribe();
    // The first event is the current view, then one per sample.
    let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let data = rx.borrow_and_update().clone();
        let event = Event::default().event("clusters").data(data.as_str());
        Some((Ok::<_, Infallible>(event), (rx, false)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub(super) async fn reload(State(admin): State<Shared>) -> Response {
    let Some(path) = admin.config_path.clone() else {
        return error(
            StatusCode::CONFLICT,
            "this instance was not started from a configuration file (demo), so there is nothing to reload",
            None,
        );
    };
    let runtime = std::sync::Arc::clone(&admin.runtime);
    let result = tokio::task::spawn_blocking(move || reload::reload_file(&runtime, &path)).await;
    match result {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e.message, None),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload task failed: {e}"),
            None,
        ),
    }
}

/// A validation problem: 400 naming the field.
fn invalid(field: &str, message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message, Some(field))
}

fn boxed_invalid(field: &str, message: impl Into<String>) -> Box<Response> {
    Box::new(invalid(field, message))
}

fn command_error(e: CommandError) -> Response {
    match &e {
        CommandError::NoCluster { .. } | CommandError::NoBackend { .. } => {
            error(StatusCode::NOT_FOUND, e.to_string(), None)
        }
        CommandError::DuplicateBackend { .. } => {
            error(StatusCode::CONFLICT, e.to_string(), Some("address"))
        }
        CommandError::Invalid { field, message } => invalid(field, message.clone()),
    }
}

/// Parses a JSON object body, naming the offending field on any problem.
fn object(body: &Bytes, allowed: &[&str]) -> Result<Map<String, Value>, Box<Response>> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("body is not valid JSON: {e}"),
            None,
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "body must be a JSON object",
            None,
        )));
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Box::new(invalid(
            k,
            format!(
                "unknown field `{k}`; expected one of: {}",
                allowed.join(", ")
            ),
        )));
    }
    Ok(map)
}

fn weight(map: &Map<String, Value>) -> Result<Option<u32>, Box<Response>> {
    match map.get("weight") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|w| u32::try_from(w).ok())
            .map(Some)
            .ok_or_else(|| {
                boxed_invalid(
                    "weight",
                    format!(
                        "must be a whole number from 0 to {}, got {v}",
                        fulcrum_config::MAX_WEIGHT
                    ),
                )
            }),
    }
}

fn state(map: &Map<String, Value>) -> Result<Option<AdminState>, Box<Response>> {
    match map.get("state") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(AdminState::parse)
            .map(Some)
            .ok_or_else(|| {
                boxed_invalid(
                    "state",
                    format!("must be \"enabled\", \"draining\" or \"disabled\", got {v}"),
                )
            }),
    }
}

/// The view of one backend after a change.
fn backend_json(admin: &Shared, cluster: &str, address: &str) -> Value {
    let view = admin.sampler.view();
    view.clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.backends.iter().find(|b| b.address == address))
        .map(|b| serde_json::to_value(b).unwrap_or(Value::Null))
        .unwrap_or(Value::Null)
}

pub(super) async fn add_backend(
    State(admin): State<Shared>,
    Path(cluster): Path<String>,
    body: Bytes,
) -> Response {
    let map = match object(&body, &["address", "weight", "state"]) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let Some(address) = map.get("address").and_then(Value::as_str) else {
        return invalid("address", "missing; write the backend as \"host:port\"");
    };
    let (weight, state) = match (weight(&map), state(&map)) {
        (Ok(w), Ok(s)) => (w.unwrap_or(1), s.unwrap_or_default()),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let backend = BackendConfig {
        address: address.to_owned(),
        weight,
        state,
        location: None,
    };
    match admin.runtime.apply([Command::AddBackend {
        cluster: cluster.clone(),
        backend,
    }]) {
        Ok(generation) => {
            tracing::info!(cluster = %cluster, backend = %address, weight, state = %state, generation, "backend added through the admin API");
            (
                StatusCode::CREATED,
                Json(json!({ "generation": generation, "backend": backend_json(&admin, &cluster, address) })),
            )
                .into_response()
        }
        Err(e) => command_error(e),
    }
}

pub(super) async fn update_backend(
    State(admin): State<Shared>,
    Path((cluster, address)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let map = match object(&body, &["weight", "state"]) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let (weight, state) = match (weight(&map), state(&map)) {
        (Ok(w), Ok(s)) => (w, s),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    match admin.runtime.apply([Command::UpdateBackend {
        cluster: cluster.clone(),
        address: address.clone(),
        weight,
        state,
    }]) {
        Ok(generation) => {
            tracing::info!(cluster = %cluster, backend = %address, ?weight, state = ?state.map(AdminState::as_str), generation, "backend updated through the admin API");
            Json(json!({ "generation": generation, "backend": backend_json(&admin, &cluster, &address) }))
                .into_response()
        }
        Err(e) => command_error(e),
    }
}

/// Parses `?timeout=` as `250ms`, `5s` or plain seconds.
fn parse_timeout(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    let secs = s.strip_suffix('s').unwrap_or(s);
    secs.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 3600.0)
        .map(Duration::from_secs_f64)
}

pub(super) async fn remove_backend(
    State(admin): State<Shared>,
    Path((cluster, address)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let timeout = match query.get("timeout") {
        None => DEFAULT_DRAIN_TIMEOUT,
        Some(t) => match parse_timeout(t) {
            Some(d) => d,
            None => {
                return invalid(
                    "timeout",
                    format!("`{t}` is not a duration like \"5s\" or \"250ms\""),
                )
            }
        },
    };
    // 1. Drain: no new requests go to the backend from the next snapshot on.
    if let Err(e) = admin.runtime.apply([Command::UpdateBackend {
        cluster: cluster.clone(),
        address: address.clone(),
        weight: None,
        state: Some(AdminState::Draining),
    }]) {
        return command_error(e);
    }
    // 2. Wait for its requests in flight to finish, bounded.
    let started = Instant::now();
    let load = {
        let snapshot = admin.runtime.snapshot_owned();
        snapshot.clusters.get(&cluster).and_then(|c| {
            c.set
                .find(&address)
                .map(|id| std::sync::Arc::clone(&c.set.get(id).state.load))
        })
    };
    let mut drained = true;
    if let Some(load) = load {
        while load.in_flight() > 0 {
            if started.elapsed() >= timeout {
                drained = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // 3. Remove.
    match admin.runtime.apply([Command::RemoveBackend {
        cluster: cluster.clone(),
        address: address.clone(),
    }]) {
        Ok(generation) => {
            tracing::info!(cluster = %cluster, backend = %address, drained, waited_ms = started.elapsed().as_millis() as u64, generation, "backend removed through the admin API");
            Json(json!({
                "generation": generation,
                "removed": { "cluster": cluster, "address": address },
                "drained": drained,
                "waited_ms": started.elapsed().as_millis() as u64,
            }))
            .into_response()
        }
        Err(e) => command_error(e),
    }
}
