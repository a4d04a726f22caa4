//! The running configuration: the model, its immutable snapshot, and the
//! learned per-backend state that outlives both.
//!
//! Every change — a file load or reload, an admin API call — is a
//! [`Command`] applied by [`Runtime::apply`]: the model is edited under a
//! mutex (the control path), a new [`Snapshot`] is built from it, and the
//! snapshot is published with one atomic pointer swap. The request path
//! only ever does `runtime.snapshot()`: one lock-free load.
//!
//! [`BackendState`] (load, health, slow-start clock) is kept in a registry
//! keyed by `(cluster, address)`, so a reload, a weight change or a
//! remove-and-add of the same backend keeps what the balancer has learned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use fulcrum_balance::{
    Backend, BackendSet, BackendState, HealthPolicy, RetryBudget, Selector, SelectorConfig,
};
use fulcrum_config::{ClusterConfig, Command, CommandError, Config, ListenerConfig};

use crate::admission::Admission;
use crate::clock;
use crate::metrics::{BackendMetrics, ClusterMetrics, ProxyMetrics};
use crate::routes::RouteTable;
use crate::upstream::Upstream;

/// An immutable view of one cluster, shared by all requests that load it.
#[derive(Debug)]
pub struct ClusterSnapshot {
    /// The cluster's validated configuration.
    pub config: ClusterConfig,
    /// The backends with their shared live state.
    pub set: BackendSet,
    /// The selector built for `set`.
    pub selector: Box<dyn Selector>,
    /// Selector tunables (decay, ...).
    pub selector_config: SelectorConfig,
    /// The upstream connection pool.
    pub upstream: Upstream,
    /// Each backend's address (URI authority and pool key), by [`fulcrum_balance::BackendId`].
    pub backend_addrs: Vec<crate::upstream::BackendAddr>,
    /// Health thresholds (probes and outlier detection).
    pub health: HealthPolicy,
    /// The cluster's retry budget (survives reloads while its settings do).
    pub retry_budget: Arc<RetryBudget>,
    /// The cluster's counters.
    pub metrics: Arc<ClusterMetrics>,
    /// Each backend's counters, by [`fulcrum_balance::BackendId`].
    pub backend_metrics: Vec<Arc<BackendMetrics>>,
    /// Sticky-session cookie values, when the cluster has `sticky`.
    pub sticky: Option<crate::sticky::StickyTable>,
    /// Concurrency limit and priority queue, if configured (survives
    /// reloads while its settings do).
    pub admission: Option<Arc<Admission>>,
}

impl ClusterSnapshot {
    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// One listener's routing view.
#[derive(Debug)]
pub struct ListenerSnapshot {
    /// The listener's configuration.
    pub config: ListenerConfig,
    /// Compiled routes.
    pub routes: RouteTable,
    /// The listener's request body limits, computed once (a route's
    /// `max_body_bytes` replaces `max_bytes` per request).
    pub body_limits: crate::body::BodyLimits,
    /// The listener's `geoip_db`, loaded (shared by listeners naming the
    /// same file, kept across reloads while the file is unchanged).
    pub geoip: Option<Arc<crate::geoip::GeoIpDb>>,
}

/// A map by configured name, as every request looks up its listener and
/// cluster. The names come from the configuration, not from clients, so
/// they need no SipHash: foldhash costs a fraction of it (two lookups per
/// request were about 330 instructions with SipHash).
pub type ByName<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Everything the request path needs, swapped atomically on change.
#[derive(Debug)]
pub struct Snapshot {
    /// Clusters by name.
    pub clusters: ByName<Arc<ClusterSnapshot>>,
    /// Listeners by name.
    pub listeners: ByName<Arc<ListenerSnapshot>>,
    /// Monotonic generation, bumped by every applied command.
    pub generation: u64,
}

/// The control-path state behind the published snapshot.
#[derive(Debug)]
struct Control {
    model: Config,
    generation: u64,
    backend_states: HashMap<(String, String), Arc<BackendState>>,
    upstreams: HashMap<String, Upstream>,
    retry_budgets: HashMap<String, Arc<RetryBudget>>,
    metrics: Arc<ProxyMetrics>,
    /// The last built listeners, whose routes' learned state (rate-limit
    /// buckets) the next build keeps.
    listeners: ByName<Arc<ListenerSnapshot>>,
    admissions: HashMap<String, Arc<Admission>>,
    /// Loaded GeoIP databases by path.
    geoip: HashMap<String, Arc<crate::geoip::GeoIpDb>>,
    /// The listeners' access logs, opened anew by every build.
    access_logs: Arc<crate::access_log::AccessLogs>,
}

/// The running configuration.
#[derive(Debug)]
pub struct Runtime {
    snapshot: ArcSwap<Snapshot>,
    control: Mutex<Control>,
    metrics: Arc<ProxyMetrics>,
    /// The model as last loaded from its source (start or `Replace`), before
    /// any API change: what a reload compares against to report overrides.
    baseline: Mutex<Config>,
    /// The generation of the last published snapshot, for watchers (the
    /// listener supervisor, the admin API).
    changes: tokio::sync::watch::Sender<u64>,
    access_logs: Arc<crate::access_log::AccessLogs>,
}

impl Runtime {
    /// Builds the first snapshot from a valid configuration.
    pub fn new(config: Config) -> Arc<Self> {
        let metrics = Arc::new(ProxyMetrics::default());
        let access_logs = Arc::new(crate::access_log::AccessLogs::default());
        let baseline = Mutex::new(config.clone());
        let mut control = Control {
            model: config,
            generation: 0,
            backend_states: HashMap::new(),
            upstreams: HashMap::new(),
            retry_budgets: HashMap::new(),
            metrics: Arc::clone(&metrics),
            listeners: ByName::default(),
            admissions: HashMap::new(),
            geoip: HashMap::new(),
            access_logs: Arc::clone(&access_logs),
        };
        let snapshot = control.build();
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            control: Mutex::new(control),
            metrics,
            baseline,
            changes: tokio::sync::watch::Sender::new(0),
            access_logs,
        })
    }

    /// Listener `name`'s access log (off unless it has `access_log`).
    pub fn access_log(&self, name: &str) -> Arc<crate::access_log::AccessLog> {
        self.access_logs.get(name)
    }

    /// Every listener's access log.
    pub fn access_logs(&self) -> &crate::access_log::AccessLogs {
        &self.access_logs
    }

    /// The current snapshot as an owned pointer (for the control path).
    pub fn snapshot_owned(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The model as last loaded from its source (the initial configuration
    /// or the last `Replace`), without later API changes.
    pub fn baseline(&self) -> Config {
        self.baseline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counters and metric handles of this runtime.
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.metrics
    }

    /// Notified with the new generation after every applied change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The current snapshot: one lock-free load.
    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// A copy of the current configuration model.
    pub fn config(&self) -> Config {
        self.lock().model.clone()
    }

    /// Applies commands atomically: either all apply and one new snapshot is
    /// published, or none does and the running configuration is untouched.
    pub fn apply(&self, commands: impl IntoIterator<Item = Command>) -> Result<u64, CommandError> {
        let mut control = self.lock();
        let mut model = control.model.clone();
        let mut replaced = None;
        for command in commands {
            if let Command::Replace(c) = &command {
                replaced = Some(Config::clone(c));
            }
            model.apply(command)?;
        }
        if let Some(c) = replaced {
            *self.baseline.lock().unwrap_or_else(|e| e.into_inner()) = c;
        }
        control.model = model;
        control.generation += 1;
        let snapshot = control.build();
        let generation = snapshot.generation;
        self.snapshot.store(Arc::new(snapshot));
        drop(control);
        self.changes.send_replace(generation);
        Ok(generation)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        // A panic while holding the lock leaves the model consistent (edits
        // are made on a copy), so a poisoned lock is safe to reuse.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Control {
    /// Every listener's `geoip_db`, by path: the loaded copy while the file
    /// is unchanged, else read again. A file that cannot be read (it was
    /// checked when the configuration was loaded) is logged; the previous
    /// copy, if any, stays in use.
    fn load_geoip(&self) -> HashMap<String, Arc<crate::geoip::GeoIpDb>> {
        let mut out = HashMap::new();
        for l in &self.model.listeners {
            let Some(path) = &l.geoip_db else { continue };
            if out.contains_key(path) {
                continue;
            }
            let previous = self.geoip.get(path);
            let db = match previous {
                Some(db) if db.is_current(path) => Some(Arc::clone(db)),
                _ => match crate::geoip::GeoIpDb::open(path) {
                    Ok(db) => {
                        tracing::info!(listener = %l.name, file = %path, "geoip database loaded");
                        Some(Arc::new(db))
                    }
                    Err(e) => {
                        tracing::error!(listener = %l.name, file = %path, error = %e, "cannot read the geoip_db; clients are placed by header only");
                        previous.cloned()
                    }
                },
            };
            if let Some(db) = db {
                out.insert(path.clone(), db);
            }
        }
        out
    }

    fn build(&mut self) -> Snapshot {
        let now = clock::now();
        let mut live_states = HashMap::new();
        let mut live_upstreams = HashMap::new();
        let mut live_budgets = HashMap::new();
        let mut live_admissions = HashMap::new();
        let mut clusters = ByName::default();
        for (name, cluster) in &self.model.clusters {
            let backends: Vec<Backend> = cluster
                .backends
                .iter()
                .map(|b| {
                    let key = (name.clone(), b.address.clone());
                    let state = match self.backend_states.get(&key) {
                        Some(s) => Arc::clone(s),
                        None => {
                            let s = Arc::new(BackendState::new());
                            s.start_ramp(now);
                            s
                        }
                    };
                    live_states.insert(key, Arc::clone(&state));
                    Backend {
                        address: b.address.clone(),
                        weight: b.weight,
                        admin: b.state,
                        state,
                        location: b.location.clone(),
                    }
                })
                .collect();
            let set = BackendSet::new(backends)
                .with_slow_start(cluster.slow_start.as_nanos() as u64)
                .with_panic_threshold(cluster.panic_threshold);
            let selector_config = SelectorConfig {
                decay: cluster.ewma_decay.as_nanos() as u64,
                hash_balance_factor: cluster.balance_factor,
                geo_max_in_flight: cluster.geo_max_in_flight,
                ..SelectorConfig::default()
            };
            let selector = cluster.algorithm.build(&set, &selector_config);
            let backend_addrs = set
                .backends()
                .iter()
                .map(|b| {
                    crate::upstream::BackendAddr::new(
                        b.address
                            .parse()
                            .expect("backend addresses are validated as host:port"),
                    )
                })
                .collect();
            let upstream = match self.upstreams.get(name) {
                Some(u) if u.matches(cluster) => u.clone(),
                _ => Upstream::new(cluster, self.metrics.cluster(name)),
            };
            live_upstreams.insert(name.clone(), upstream.clone());
            let retry_budget = match self.retry_budgets.get(name) {
                Some(b) if b.matches(cluster.retry_budget, cluster.retry_budget_min) => {
                    Arc::clone(b)
                }
                _ => Arc::new(RetryBudget::new(
                    cluster.retry_budget,
                    cluster.retry_budget_min,
                )),
            };
            live_budgets.insert(name.clone(), Arc::clone(&retry_budget));
            let backend_metrics = set
                .backends()
                .iter()
                .map(|b| self.metrics.backend(name, &b.address))
                .collect();
            let admission = cluster.admission.as_ref().map(|a| {
                let kept = self.admissions.get(name).filter(|k| k.matches(a));
                let admission = kept.cloned().unwrap_or_else(|| Admission::new(a, now));
                live_admissions.insert(name.clone(), Arc::clone(&admission));
                admission
            });
            clusters.insert(
                name.clone(),
                Arc::new(ClusterSnapshot {
                    config: cluster.clone(),
                    selector,
                    selector_config,
                    upstream,
                    backend_addrs,
                    health: crate::health::policy(cluster),
                    retry_budget,
                    metrics: self.metrics.cluster(name),
                    backend_metrics,
                    sticky: cluster
                        .sticky
                        .as_ref()
                        .map(|s| crate::sticky::StickyTable::new(s, name, &set)),
                    set,
                    admission,
                }),
            );
        }
        self.backend_states = live_states;
        self.upstreams = live_upstreams;
        self.retry_budgets = live_budgets;
        self.admissions = live_admissions;
        let geoip = self.load_geoip();
        let listeners = self
            .model
            .listeners
            .iter()
            .map(|l| {
                let mut routes = RouteTable::scoped(&l.routes, l.cluster.as_deref(), &l.name);
                if let Some(previous) = self.listeners.get(&l.name) {
                    routes.carry_over(&previous.routes);
                }
                (
                    l.name.clone(),
                    Arc::new(ListenerSnapshot {
                        config: l.clone(),
                        routes,
                        body_limits: crate::body::BodyLimits::of(&l.limits, None),
                        geoip: l.geoip_db.as_ref().and_then(|p| geoip.get(p).cloned()),
                    }),
                )
            })
            .collect::<ByName<_>>();
        self.listeners = listeners.clone();
        self.geoip = geoip;
        self.access_logs.configure(
            self.model
                .listeners
                .iter()
                .map(|l| (l.name.as_str(), l.access_log.as_ref())),
        );
        let snapshot = Snapshot {
            clusters,
            listeners,
            generation: self.generation,
        };
        self.metrics.retain(&snapshot);
        snapshot
    }
}
