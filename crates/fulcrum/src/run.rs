//! `fulcrum run` and `fulcrum reload`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fulcrum_config::Config;
use fulcrum_proxy::admin::{AdminOptions, AdminServer};
use fulcrum_proxy::{Runtime, Server};
use tokio::signal::unix::{signal, SignalKind};

/// Time given to requests in flight when stopping.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Loads `path`, serves it until SIGINT/SIGTERM, reloads it on SIGHUP.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = fulcrum_config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = crate::tokio_runtime(config.runtime.worker_threads)?;
    rt.block_on(serve(config, Some(path.to_owned())))
}

/// Serves `config` until a stop signal; reloads `path` (if any) on SIGHUP.
pub async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    // Before anything is bound or announced: a SIGHUP sent as soon as the
    // listeners show must reload, not kill the process (the default action).
    let signals = StopSignals::install()?;
    let admin_bind = config.admin.bind;
    // Read the token before binding anything: a bad token file stops the start.
    let token = fulcrum_proxy::admin::load_token(&config.admin, admin_bind)?;
    let runtime = Runtime::new(config);
    let server = Server::start(Arc::clone(&runtime)).await?;
    let config = runtime.config();
    for (name, addr) in server.listeners() {
        let scheme = config
            .listeners
            .iter()
            .find(|l| &l.name == name)
            .map_or("http", |l| match (l.protocol, l.tls.is_some()) {
                (fulcrum_config::Protocol::Http, false) => "http",
                (fulcrum_config::Protocol::Http, true) => "https",
                (fulcrum_config::Protocol::Tcp, false) => "tcp",
                (fulcrum_config::Protocol::Tcp, true) => "tls",
                (fulcrum_config::Protocol::Udp, _) => "udp",
            });
        eprintln!("fulcrum: listener `{name}` on {scheme}://{addr}");
    }
    let admin = start_admin(&runtime, &server, admin_bind, token, path.clone()).await?;
    signals.wait(&runtime, path.as_deref()).await;
    admin.shutdown().await;
    stop(server).await;
    Ok(())
}

/// Starts the admin listener and announces it.
pub async fn start_admin(
    runtime: &Arc<Runtime>,
    server: &Server,
    bind: SocketAddr,
    token: Option<fulcrum_proxy::admin::Token>,
    config_path: Option<PathBuf>,
) -> anyhow::Result<AdminServer> {
    let admin = AdminServer::start(
        Arc::clone(runtime),
        AdminOptions {
            bind,
            token,
            config_path,
            listeners: Some(Arc::clone(server.live_listeners())),
        },
    )
    .await?;
    eprintln!("fulcrum: admin on http://{}", admin.local_addr());
    Ok(admin)
}

/// The signals that stop or reload a running instance, listened for from
/// the moment they are installed (a signal that arrives before
/// [`wait`](Self::wait) is kept, not lost to its default action).
pub struct StopSignals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Takes over SIGHUP, SIGTERM and SIGINT.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGINT or SIGTERM, reloading `path` on SIGHUP meanwhile.
    /// A second SIGINT or SIGTERM afterwards exits at once.
    pub async fn wait(self, runtime: &Runtime, path: Option<&Path>) {
        let StopSignals {
            mut hup,
            mut term,
            mut int,
        } = self;
        loop {
            tokio::select! {
                _ = hup.recv() => match path {
                    Some(p) => {
                        let _ = reload_file(runtime, p);
                    }
                    None => tracing::warn!("SIGHUP ignored: this instance has no configuration file"),
                },
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        // A second signal exits at once.
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("fulcrum: second signal, exiting now");
            std::process::exit(130);
        });
    }
}

/// Re-reads the file and swaps it in; a bad file is logged and refused, the
/// running configuration stays.
///
/// The same path as `POST /api/v1/reload`: a reload replaces the running
/// model with the file (see `fulcrum_proxy::admin::reload`).
pub fn reload_file(runtime: &Runtime, path: &Path) -> Result<u64, String> {
    fulcrum_proxy::admin::reload::reload_file(runtime, path)
        .map(|report| report.generation)
        .map_err(|e| e.message)
}

/// Graceful stop with a bounded grace period.
pub async fn stop(server: Server) {
    eprintln!("fulcrum: stopping; finishing requests in flight");
    if !server.shutdown(SHUTDOWN_GRACE).await {
        eprintln!("fulcrum: grace period over, closing remaining connections");
    }
}

/// `fulcrum reload`: asks the admin API of a running instance to reload.
pub fn reload(admin: SocketAddr) -> anyhow::Result<()> {
    let rt = crate::tokio_runtime(Some(1))?;
    rt.block_on(async move {
        use http_body_util::{BodyExt, Empty};
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .with_context(|| format!("cannot reach the admin API at {admin}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = hyper::Request::post(format!("http://{admin}/api/v1/reload"))
            .header(hyper::header::HOST, admin.to_string());
        if let Ok(token) = std::env::var("FULCRUM_ADMIN_TOKEN") {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
        let resp = sender
            .send_request(req.body(Empty::<bytes::Bytes>::new())?)
            .await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&body);
        if status.is_success() {
            println!("{}", text.trim());
            Ok(())
        } else {
            anyhow::bail!("reload refused ({status}): {}", text.trim())
        }
    })
}
