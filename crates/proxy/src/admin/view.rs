//! What the admin API and the dashboard show: clusters, backends and their
//! live signals, plus rates and percentiles computed once a second.
//!
//! Counters only ever grow, so "requests per second" and "p99 now" are
//! differences between samples. The [`Sampler`] takes one sample a second
//! (off the request path, on a blocking thread), keeps the last [`WINDOW`]
//! histogram readings per backend to compute windowed percentiles, and,
//! while an SSE stream is open, publishes the rendered view, so a hundred
//! open dashboards cost one rendering and none cost none.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::{HistogramCounts, ResponseClass};
use crate::state::Runtime;

/// Time between samples (and SSE events).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples over which percentiles are computed: 5 s smooths single slow
/// requests at low traffic while still showing a change within seconds.
pub const WINDOW: usize = 5;

/// One backend as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct BackendView {
    /// `host:port`, the backend's identity.
    pub address: String,
    /// Configured weight.
    pub weight: u32,
    /// Operator state: `enabled`, `draining` or `disabled`.
    pub state: &'static str,
    /// Health checking's verdict.
    pub healthy: bool,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Peak-EWMA latency estimate in milliseconds (`null` before the first answer).
    pub latency_ewma_ms: Option<f64>,
    /// EWMA error rate, 0..1.
    pub error_rate: f64,
    /// Completed requests since the backend appeared.
    pub requests_total: u64,
    /// Failed requests (connect errors, timeouts, 5xx) since the backend appeared.
    pub failures_total: u64,
    /// Requests per second over the last sample interval.
    pub requests_per_second: f64,
    /// Share of the cluster's requests over the last interval, 0..1.
    pub share: f64,
    /// Median upstream latency over the last few seconds, milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile upstream latency over the last few seconds, milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Upstream attempts that got no answer (connect failure, reset, timeout).
    pub failed_attempts_total: u64,
}

/// One cluster as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterView {
    /// Name.
    pub name: String,
    /// Selector (configuration spelling).
    pub algorithm: String,
    /// Requests per second over all backends.
    pub requests_per_second: f64,
    /// Backends in configuration order.
    pub backends: Vec<BackendView>,
    /// Admission control, when the cluster has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionView>,
}

/// A cluster's admission control as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AdmissionView {
    /// Requests holding a slot now.
    pub in_flight: u32,
    /// Requests waiting in the queue now.
    pub queued: usize,
    /// The concurrency limit now (an adaptive limit moves).
    pub limit: u32,
    /// Every class, most important first.
    pub classes: Vec<AdmissionClassView>,
}

/// One priority class's counters.
#[derive(Clone, Debug, Serialize)]
pub struct AdmissionClassView {
    /// Class name.
    pub name: String,
    /// Requests given a slot.
    pub admitted_total: u64,
    /// Requests shed, by reason (`queue-full`, `displaced`, `queue-timeout`).
    pub shed_total: std::collections::BTreeMap<&'static str, u64>,
}

impl AdmissionView {
    fn of(admission: &crate::admission::Admission) -> Self {
        let (in_flight, queued, limit) = admission.status();
        let classes = admission
            .classes()
            .map(|(name, counts)| AdmissionClassView {
                name: name.to_owned(),
                admitted_total: counts.admitted,
                shed_total: crate::admission::Shed::ALL
                    .iter()
                    .map(|why| (why.as_str(), counts.shed[why.index()]))
                    .collect(),
            })
            .collect();
        Self {
            in_flight,
            queued,
            limit,
            classes,
        }
    }
}

/// `GET /api/v1/clusters` and every SSE event.
#[derive(Clone, Debug, Serialize)]
pub struct ClustersView {
    /// Generation of the running configuration.
    pub generation: u64,
    /// Milliseconds since the Unix epoch when the view was taken.
    pub time_ms: u64,
    /// Clusters by name.
    pub clusters: Vec<ClusterView>,
}

/// Per-backend history kept by the sampler.
#[derive(Debug, Default)]
struct History {
    requests: u64,
    at: Option<Instant>,
    rate: f64,
    histograms: VecDeque<HistogramCounts>,
}

/// Samples counters once a second and publishes the rendered view.
#[derive(Debug)]
pub struct Sampler {
    runtime: Arc<Runtime>,
    history: Mutex<HashMap<(String, String), History>>,
    latest: watch::Sender<Arc<String>>,
}

impl Sampler {
    /// A sampler for `runtime`; call [`Sampler::run`] to start sampling.
    pub fn new(runtime: Arc<Runtime>) -> Arc<Self> {
        let s = Arc::new(Self {
            runtime,
            history: Mutex::new(HashMap::new()),
            latest: watch::Sender::new(Arc::new(String::new())),
        });
        s.sample();
        s
    }

    /// The last rendered view, refreshed every [`SAMPLE_INTERVAL`] while
    /// someone is subscribed.
    pub fn subscribe(&self) -> watch::Receiver<Arc<String>> {
        if self.latest.receiver_count() == 0 {
            // Nobody was watching, so the last samples were not rendered.
            let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            self.publish(&history);
        }
        self.latest.subscribe()
    }

    /// Samples every [`SAMPLE_INTERVAL`] until `stop` flips.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            // With thousands of backends a sample takes milliseconds of
            // CPU: a blocking thread takes it, not a worker serving requests.
            let this = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || this.sample()).await;
        }
    }

    /// Takes one sample and publishes the view.
    pub fn sample(&self) {
        let now = Instant::now();
        let snapshot = self.runtime.snapshot_owned();
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let mut live = HashMap::new();
        for (name, cluster) in &snapshot.clusters {
            for (b, m) in cluster.set.backends().iter().zip(&cluster.backend_metrics) {
                let key = (name.clone(), b.address.clone());
                let mut h = history.remove(&key).unwrap_or_default();
                let requests = b.state.load.requests();
                if let Some(at) = h.at {
                    let dt = now.duration_since(at).as_secs_f64();
                    if dt > 0.0 {
                        h.rate = requests.saturating_sub(h.requests) as f64 / dt;
                    }
                }
                h.requests = requests;
                h.at = Some(now);
                h.histograms.push_back(m.latency.counts());
                while h.histograms.len() > WINDOW + 1 {
                    h.histograms.pop_front();
                }
                live.insert(key, h);
            }
        }
        *history = live;
        // Rendered only for open event streams: the JSON of 10 000 backends
        // is megabytes, and `GET /api/v1/clusters` renders its own.
        if self.latest.receiver_count() > 0 {
            self.publish(&history);
        }
    }

    fn publish(&self, history: &HashMap<(String, String), History>) {
        let json = serde_json::to_string(&self.render(history)).expect("views serialize");
        self.latest.send_replace(Arc::new(json));
    }

    /// The current view (rates from the last sample, signals read now).
    pub fn view(&self) -> ClustersView {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        self.render(&history)
    }

    fn render(&self, history: &HashMap<(String, String), History>) -> ClustersView {
        let snapshot = self.runtime.snapshot_owned();
        let mut clusters: Vec<ClusterView> = snapshot
            .clusters
            .iter()
            .map(|(name, cluster)| {
                let mut backends: Vec<BackendView> = cluster
                    .set
                    .backends()
                    .iter()
                    .zip(&cluster.backend_metrics)
                    .map(|(b, m)| {
                        let h = history.get(&(name.clone(), b.address.clone()));
                        let window = h.and_then(|h| {
                            let first = h.histograms.front()?;
                            let last = h.histograms.back()?;
                            Some(last.since(first))
                        });
                        let load = &b.state.load;
                        BackendView {
                            address: b.address.clone(),
                            weight: b.weight,
                            state: b.admin.as_str(),
                            healthy: b.state.is_healthy(),
                            in_flight: load.in_flight(),
                            latency_ewma_ms: load.latency_estimate().map(|n| n / 1e6),
                            error_rate: load.error_rate(),
                            requests_total: load.requests(),
                            failures_total: load.failures(),
                            requests_per_second: h.map_or(0.0, |h| h.rate),
                            share: 0.0,
                            latency_p50_ms: window.and_then(|w| w.quantile(0.5)).map(|s| s * 1e3),
                            latency_p99_ms: window.and_then(|w| w.quantile(0.99)).map(|s| s * 1e3),
                            failed_attempts_total: m.responses(ResponseClass::Failed),
                        }
                    })
                    .collect();
                let total: f64 = backends.iter().map(|b| b.requests_per_second).sum();
                if total > 0.0 {
                    for b in &mut backends {
                        b.share = b.requests_per_second / total;
                    }
                }
                ClusterView {
                    name: name.clone(),
                    algorithm: cluster.config.algorithm.to_string(),
                    requests_per_second: total,
                    backends,
                    admission: cluster.admission.as_deref().map(AdmissionView::of),
                }
            })
            .collect();
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        ClustersView {
            generation: snapshot.generation,
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            clusters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> Arc<Runtime> {
        Runtime::new(crate::test_support::app_config(
            "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\" }]",
        ))
    }

    #[test]
    fn samples_without_subscribers_render_nothing() {
        let sampler = Sampler::new(runtime());
        sampler.sample();
        assert!(sampler.latest.borrow().is_empty());
    }

    #[test]
    fn subscribe_publishes_the_current_view_when_nobody_was_watching() {
        let sampler = Sampler::new(runtime());
        sampler.sample();
        let rx = sampler.subscribe();
        let json: serde_json::Value = serde_json::from_str(&rx.borrow()).unwrap();
        assert_eq!(json["clusters"][0]["name"], "app");
        assert_eq!(json["clusters"][0]["backends"].as_array().unwrap().len(), 2);
        // With a subscriber, every sample publishes.
        sampler.sample();
        assert!(rx.has_changed().unwrap());
    }
}
