//! Upstream connections: one keep-alive pool per cluster.
//!
//! HTTP/1.1 to backends through hyper-util's pooled client, keyed by backend
//! authority, with `TCP_NODELAY` and the cluster's connect timeout. The pool
//! survives reloads as long as the cluster's connection settings do not
//! change, so a reload does not cost a reconnect storm. A cluster with
//! `tls` connects with TLS ([`crate::backend_tls`]).

use std::time::Duration;

use fulcrum_config::{ClusterConfig, UpstreamTlsConfig};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::backend_tls::{BackendTls, TlsSetup, UpstreamConnector};
use crate::body::RequestBody;

/// The connection settings an [`Upstream`] was built with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle: usize,
    tls: Option<UpstreamTlsConfig>,
}

impl Settings {
    fn of(cluster: &ClusterConfig) -> Self {
        Self {
            connect_timeout: cluster.connect_timeout,
            pool_idle_timeout: cluster.pool_idle_timeout,
            pool_max_idle: cluster.pool_max_idle,
            tls: cluster.tls.clone(),
        }
    }
}

/// A cluster's upstream client; cheap to clone (shares the pool).
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<UpstreamConnector, RequestBody>,
    connector: UpstreamConnector,
    settings: Settings,
}

impl Upstream {
    /// A new pool for `cluster`.
    pub fn new(cluster: &ClusterConfig) -> Self {
        let settings = Settings::of(cluster);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let tls = cluster.tls.as_ref().map(|t| {
            BackendTls::new(t, settings.connect_timeout).map_err(|e| {
                tracing::error!(cluster = %cluster.name, error = %e, "cannot set up TLS to backends; connects will fail");
                format!("cluster `{}`: tls: {e}", cluster.name)
            })
        });
        let connector = UpstreamConnector::new(connector, tls);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle)
            .retry_canceled_requests(false)
            .set_host(false)
            .build(connector.clone());
        Self {
            client,
            connector,
            settings,
        }
    }

    /// Whether this pool was built with `cluster`'s current settings.
    pub fn matches(&self, cluster: &ClusterConfig) -> bool {
        self.settings == Settings::of(cluster)
    }

    /// The TLS setup to backends: `None` without `tls`, `Err` if it failed to load.
    pub fn tls(&self) -> Option<&TlsSetup> {
        self.connector.tls()
    }

    /// The HTTP client.
    #[inline]
    pub fn client(&self) -> &Client<UpstreamConnector, RequestBody> {
        &self.client
    }
}
