//! The admin listener: API, metrics, dashboard.
//!
//! ```text
//! GET    /                                        live dashboard (embedded assets)
//! GET    /api/v1/clusters                         clusters, backends, live Load
//! POST   /api/v1/clusters/{cluster}/backends      add a backend   -> Command::AddBackend
//! PATCH  /api/v1/clusters/{cluster}/backends/{b}  weight / state  -> Command::UpdateBackend
//! DELETE /api/v1/clusters/{cluster}/backends/{b}  drain, wait, remove
//! GET    /api/v1/config                           effective configuration (file keys)
//! POST   /api/v1/reload                           re-read the file (see [`reload`])
//! GET    /api/v1/listeners                        listeners running now
//! GET    /api/v1/events                           SSE: the clusters view every second
//! GET    /metrics                                 Prometheus text
//! GET    /healthz, /readyz                        liveness, readiness
//! ```
//!
//! Every change goes through [`Runtime::apply`] as a [`Command`](fulcrum_config::Command):
//! the same code path as the configuration file.
//!
//! Access: a bearer token ([`auth`]) is required for every mutating call
//! (anything but GET/HEAD). When the admin listener is not on loopback it
//! is required for every call except `/healthz`, `/readyz` and the static
//! dashboard page (which holds no data; it asks for the token to fetch any).
//! With no token configured (allowed on loopback only) mutating calls are
//! refused.

pub mod auth;
mod dashboard;
pub mod effective;
mod handlers;
pub mod reload;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use tokio::sync::watch;

use crate::listener_set::ListenerSet;
use crate::state::Runtime;
pub use auth::{load_token, Token, TOKEN_ENV};

/// Longest a `DELETE` waits for a draining backend's requests to finish
/// before removing it anyway (requests still running then complete: the
/// snapshot they hold keeps the backend alive). Override per call with
/// `?timeout=`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("admin: cannot bind {address}: {source}")]
    Bind {
        /// Address from `[admin] bind`.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The token file could not be used.
    #[error("admin.token_file `{path}`: {reason}")]
    TokenFile {
        /// The configured path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A non-loopback admin listener without a token.
    #[error("admin: refusing to serve the admin API on non-loopback {address} without a token; set [admin] token_file or FULCRUM_ADMIN_TOKEN, or bind to 127.0.0.1")]
    NoToken {
        /// The address.
        address: SocketAddr,
    },
}

/// What the admin listener needs besides the runtime.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// Where to listen (port 0 picks one).
    pub bind: SocketAddr,
    /// The bearer token, if any (see [`load_token`]).
    pub token: Option<Token>,
    /// The file `POST /api/v1/reload` re-reads; `None` (the demo) answers 409.
    pub config_path: Option<PathBuf>,
    /// The proxy's running listeners, for `/api/v1/listeners` and `/readyz`.
    pub listeners: Option<Arc<ListenerSet>>,
}

/// State shared by the handlers.
#[derive(Debug)]
struct Admin {
    runtime: Arc<Runtime>,
    token: Option<Token>,
    open_reads: bool,
    config_path: Option<PathBuf>,
    listeners: Option<Arc<ListenerSet>>,
    sampler: Arc<view::Sampler>,
}

type Shared = Arc<Admin>;

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds the admin listener and starts serving.
    pub async fn start(runtime: Arc<Runtime>, opts: AdminOptions) -> Result<Self, AdminError> {
        if opts.token.is_none() && !opts.bind.ip().is_loopback() {
            return Err(AdminError::NoToken { address: opts.bind });
        }
        let socket = tokio::net::TcpListener::bind(opts.bind)
            .await
            .map_err(|source| AdminError::Bind {
                address: opts.bind,
                source,
            })?;
        let addr = socket.local_addr().map_err(|source| AdminError::Bind {
            address: opts.bind,
            source,
        })?;
        let (stop, stopped) = watch::channel(false);
        let sampler = view::Sampler::new(Arc::clone(&runtime));
        tokio::spawn(Arc::clone(&sampler).run(stopped.clone()));
        if opts.token.is_none() {
            tracing::warn!(address = %addr, "admin API has no token: read-only (set [admin] token_file or FULCRUM_ADMIN_TOKEN to allow changes)");
        }
        let shared = Arc::new(Admin {
            runtime,
            token: opts.token,
            open_reads: opts.bind.ip().is_loopback(),
            config_path: opts.config_path,
            listeners: opts.listeners,
            sampler,
        });
        let app = router(shared);
        let mut stopped2 = stopped;
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped2.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(socket, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
        tracing::info!(address = %addr, "admin API listening");
        Ok(Self { addr, stop, task })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the admin listener (open SSE streams end at once).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/assets/dashboard.js", get(dashboard::script))
        .route("/assets/dashboard.css", get(dashboard::style))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/api/v1/clusters", get(handlers::clusters))
        .route(
            "/api/v1/clusters/{cluster}/backends",
            post(handlers::add_backend),
        )
        .route(
            "/api/v1/clusters/{cluster}/backends/{backend}",
            patch(handlers::update_backend).delete(handlers::remove_backend),
        )
        .route("/api/v1/config", get(handlers::config))
        .route("/api/v1/reload", post(handlers::reload))
        .route("/api/v1/listeners", get(handlers::listeners))
        .route("/api/v1/events", get(handlers::events))
        .fallback(handlers::not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            authorize,
        ))
        .with_state(shared)
}

/// Paths anyone may read even on a non-loopback admin listener.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/healthz" | "/readyz" | "/assets/dashboard.js" | "/assets/dashboard.css"
    )
}

async fn authorize(State(admin): State<Shared>, req: Request, next: Next) -> Response {
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD);
    let needs_token = mutating || !(admin.open_reads || is_public(req.uri().path()));
    if !needs_token {
        return next.run(req).await;
    }
    let Some(token) = &admin.token else {
        return error(
            StatusCode::UNAUTHORIZED,
            "this admin API has no token configured, so it is read-only; set [admin] token_file or FULCRUM_ADMIN_TOKEN",
            None,
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if token.accepts(given) {
        next.run(req).await
    } else {
        // Never log the header: it may be a near-miss of the real token.
        tracing::info!(method = %req.method(), path = %req.uri().path(), "admin call refused: missing or wrong bearer token");
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (send `Authorization: Bearer <token>`)",
            None,
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"fulcrum-admin\""),
        );
        r
    }
}

/// A JSON error: `{"error": "...", "field": "..."}`.
fn error(status: StatusCode, message: impl Into<String>, field: Option<&str>) -> Response {
    let mut body = serde_json::json!({ "error": message.into() });
    if let Some(f) = field {
        body["field"] = serde_json::Value::from(f);
    }
    (status, Json(body)).into_response()
}
