//! The set of running listeners, kept in step with the configuration.
//!
//! Listeners are identified by name. After every applied change the
//! supervisor ([`ListenerSet::supervise`]) compares the configured HTTP
//! listeners with the running ones:
//!
//! * a new name is bound and starts accepting;
//! * a removed name stops accepting at once; its open connections are asked
//!   to finish their current requests and close (HTTP/1 `Connection: close`,
//!   HTTP/2 GOAWAY), exactly as on shutdown, so nothing in flight is cut;
//! * a name whose `bind` changed is stopped as above and bound anew;
//! * any other change (limits, routes) is handed to the running accept loop:
//!   new connections get the new limits, the socket is never closed.
//!
//! Binding happens after the new snapshot is live, so a listener that cannot
//! be bound on reload (address in use) is logged and reported in
//! [`ListenerSet::failures`]; the rest of the configuration stays applied
//! and the bind is retried on the next change.
//!
//! Addresses are compared as configured, so a listener on port 0 keeps its
//! OS-chosen port across reloads.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulcrum_config::{ListenerConfig, Protocol};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::listener::accept_loop;
use crate::state::Runtime;
use crate::tls::TlsTerminator;

/// One running accept loop.
#[derive(Debug)]
struct Running {
    config: ListenerConfig,
    addr: SocketAddr,
    /// `Some(config)`: keep serving with these settings; `None`: stop.
    control: watch::Sender<Option<ListenerConfig>>,
}

/// The listeners a [`Server`](crate::Server) is running now.
#[derive(Debug, Default)]
pub struct ListenerSet {
    running: Mutex<Vec<Running>>,
    failures: Mutex<Vec<String>>,
}

/// How often and how long a reload retries binding an address that a
/// listener being stopped still holds (its accept loop drops the socket
/// within a scheduler tick).
const REBIND_ATTEMPTS: u32 = 20;
const REBIND_PAUSE: Duration = Duration::from_millis(25);

impl ListenerSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Running listeners: `(name, bound address)`, in configuration order.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.lock()
            .iter()
            .map(|r| (r.config.name.clone(), r.addr))
            .collect()
    }

    /// Listeners the last reconciliation could not bind, with the reason.
    pub fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts an accept loop on an already bound socket.
    pub(crate) fn start(
        &self,
        socket: TcpListener,
        config: ListenerConfig,
        tls: Option<Arc<TlsTerminator>>,
        runtime: &Arc<Runtime>,
        shutdown: &watch::Sender<bool>,
        alive: &mpsc::Sender<()>,
    ) -> SocketAddr {
        let addr = socket.local_addr().expect("bound socket has an address");
        tracing::info!(listener = %config.name, address = %addr, "listening (http)");
        let (control, settings) = watch::channel(Some(config.clone()));
        tokio::spawn(accept_loop(
            socket,
            settings,
            Arc::clone(runtime),
            shutdown.subscribe(),
            alive.clone(),
            tls,
        ));
        self.lock().push(Running {
            config,
            addr,
            control,
        });
        addr
    }

    /// Follows the runtime's configuration until shutdown.
    pub(crate) async fn supervise(
        self: Arc<Self>,
        runtime: Arc<Runtime>,
        shutdown: watch::Sender<bool>,
        alive: mpsc::Sender<()>,
    ) {
        let mut changes = runtime.subscribe();
        let mut stop = shutdown.subscribe();
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                _ = stop.changed() => break,
            }
            self.reconcile(&runtime, &shutdown, &alive).await;
        }
    }

    async fn reconcile(
        &self,
        runtime: &Arc<Runtime>,
        shutdown: &watch::Sender<bool>,
        alive: &mpsc::Sender<()>,
    ) {
        let snapshot = runtime.snapshot_owned();
        let wanted: Vec<ListenerConfig> = runtime
            .config()
            .listeners
            .into_iter()
            .filter(|l| l.protocol == Protocol::Http && snapshot.listeners.contains_key(&l.name))
            .collect();
        let mut to_bind = Vec::new();
        {
            let mut running = self.lock();
            running.retain(|r| {
                match wanted.iter().find(|w| w.name == r.config.name) {
                    Some(w) if w.bind == r.config.bind => {
                        if *w != r.config {
                            let _ = r.control.send(Some(w.clone()));
                        }
                        true
                    }
                    _ => {
                        tracing::info!(listener = %r.config.name, address = %r.addr, "listener removed; finishing its connections");
                        let _ = r.control.send(None);
                        false
                    }
                }
            });
            for r in running.iter_mut() {
                if let Some(w) = wanted.iter().find(|w| w.name == r.config.name) {
                    r.config = w.clone();
                }
            }
            for w in &wanted {
                if !running.iter().any(|r| r.config.name == w.name) {
                    to_bind.push(w.clone());
                }
            }
        }
        let mut failures = Vec::new();
        for config in to_bind {
            let tls = match TlsTerminator::new(&config, runtime.snapshot().generation) {
                Ok(tls) => tls.map(Arc::new),
                Err(e) => {
                    tracing::error!(listener = %config.name, error = %e, "cannot load the new listener's certificates");
                    failures.push(format!("listener `{}`: {e}", config.name));
                    continue;
                }
            };
            match bind_with_retry(config.bind).await {
                Ok(socket) => {
                    crate::listener::set_options(&socket, &config);
                    self.start(socket, config, tls, runtime, shutdown, alive);
                }
                Err(e) => {
                    tracing::error!(listener = %config.name, address = %config.bind, error = %e, "cannot bind the new listener; will retry on the next change");
                    failures.push(format!(
                        "listener `{}`: cannot bind {}: {e}",
                        config.name, config.bind
                    ));
                }
            }
        }
        *self.failures.lock().unwrap_or_else(|e| e.into_inner()) = failures;
    }
}

async fn bind_with_retry(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut attempt = 0;
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < REBIND_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(REBIND_PAUSE).await;
            }
            r => return r,
        }
    }
}
