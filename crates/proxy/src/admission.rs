//! Admission control on the request path: priority classes, a concurrency
//! limit per cluster, a priority queue, shedding with 503 + `Retry-After`.
//!
//! The algorithm is pure and lives in [`fulcrum_balance::admission`]; this
//! module gives it a lock and a way to wake waiters:
//!
//! * one [`Admission`] per cluster, kept across reloads while its settings
//!   stay the same (so the adaptive limit keeps what it learned);
//! * the controller sits behind a `std` mutex held only for the few
//!   instructions of a decision — never across an `await`;
//! * a queued request waits on a one-shot channel; whoever frees a slot pops
//!   the most important waiter under the lock and sends it a [`Permit`]
//!   after unlocking;
//! * the [`Permit`] is an RAII guard carried by the response body: the slot
//!   is freed, and the round trip fed to the adaptive limit, when the last
//!   byte is sent or the client goes away — no path can leak a slot.
//!
//! Counters per class (admitted, shed by reason) and the time spent queued
//! are kept here for the metrics (`fulcrum_admission_*`); they live as long
//! as the state, so a reload that changes the admission settings starts
//! them again from zero (Prometheus reads that as a counter reset).
//!
//! Classification: a route's `priority`, overridden by an
//! `x-fulcrum-priority` header from a client in the listener's
//! `priority_from` networks; anything else gets the cluster's default
//! class.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use fulcrum_balance::admission::{Admit, Controller, GradientConfig, GradientLimit, Limit, Ticket};
use fulcrum_balance::Nanos;
use fulcrum_config::{AdmissionConfig, IpNet};
use http::header::HeaderName;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use tokio::sync::oneshot;

use crate::body::ProxyBody;
use crate::clock;
use crate::metrics::LatencyHistogram;

/// Request header naming the priority class (honoured from `priority_from`).
pub static X_FULCRUM_PRIORITY: HeaderName = HeaderName::from_static("x-fulcrum-priority");
/// Response header saying why the proxy shed a request.
pub static X_FULCRUM_SHED: HeaderName = HeaderName::from_static("x-fulcrum-shed");

type Waker = oneshot::Sender<Permit>;

/// One cluster's admission state.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    controller: Mutex<Controller<Waker>>,
    counters: Counters,
}

/// What happened to the requests of each class, for the metrics.
#[derive(Debug)]
struct Counters {
    /// Requests given a slot, by class rank.
    admitted: Box<[AtomicU64]>,
    /// Requests shed, by class rank and [`Shed::index`].
    shed: Box<[[AtomicU64; Shed::ALL.len()]]>,
    /// Time from joining the queue to a slot or a shed answer, for the
    /// requests that had to wait.
    queue_wait: LatencyHistogram,
}

/// A copy of one class's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounts {
    /// Requests given a slot.
    pub admitted: u64,
    /// Requests shed, in the order of [`Shed::ALL`].
    pub shed: [u64; Shed::ALL.len()],
}

/// Why a request was shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// The queue was full of requests at least as important.
    QueueFull = 0,
    /// A more important request took its place in the queue.
    Displaced = 1,
    /// It waited `queue_timeout` without a slot freeing.
    Timeout = 2,
}

impl Shed {
    /// Every reason, in the order of [`Shed::index`].
    pub const ALL: [Shed; 3] = [Shed::QueueFull, Shed::Displaced, Shed::Timeout];

    /// Position in [`Shed::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `x-fulcrum-shed` value (also the `reason` label of
    /// `fulcrum_admission_shed_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue-full",
            Shed::Displaced => "displaced",
            Shed::Timeout => "queue-timeout",
        }
    }
}

impl Admission {
    /// Fresh state for `config`, at `now`.
    pub fn new(config: &AdmissionConfig, now: Nanos) -> Arc<Self> {
        let limit = if config.adaptive {
            Limit::Gradient(GradientLimit::new(
                GradientConfig {
                    initial: config.limit,
                    min: config.min_limit,
                    max: config.max_limit,
                    ..GradientConfig::default()
                },
                now,
            ))
        } else {
            Limit::Static(config.limit)
        };
        let classes = config.classes.len();
        Arc::new(Self {
            config: config.clone(),
            controller: Mutex::new(Controller::new(limit, config.max_queue)),
            counters: Counters {
                admitted: (0..classes).map(|_| AtomicU64::new(0)).collect(),
                shed: (0..classes).map(|_| Default::default()).collect(),
                queue_wait: LatencyHistogram::default(),
            },
        })
    }

    /// Whether this state was built for `config` (else a reload rebuilds it).
    pub fn matches(&self, config: &AdmissionConfig) -> bool {
        self.config == *config
    }

    /// The settings.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// `(in flight, queued, current limit)`, for status pages and tests.
    pub fn status(&self) -> (u32, usize, u32) {
        let c = self.lock();
        (c.in_flight(), c.queued(), c.limit())
    }

    /// Every class, most important first, with its counters.
    pub fn classes(&self) -> impl Iterator<Item = (&str, ClassCounts)> {
        (0..self.config.classes.len() as u8)
            .map(|rank| (self.config.class_name(rank), self.class_counts(rank)))
    }

    /// The counters of the class of rank `rank`.
    fn class_counts(&self, rank: u8) -> ClassCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rank = rank as usize;
        ClassCounts {
            admitted: self.counters.admitted.get(rank).map_or(0, load),
            shed: self
                .counters
                .shed
                .get(rank)
                .map_or([0; Shed::ALL.len()], |s| s.each_ref().map(load)),
        }
    }

    /// How long the requests that had to queue waited.
    pub fn queue_wait(&self) -> &LatencyHistogram {
        &self.counters.queue_wait
    }

    /// The rank of a request: the trusted header's class, else the route's,
    /// else the default.
    pub fn classify(&self, route: Option<&str>, headers: &HeaderMap, trusted: bool) -> u8 {
        let from_header = trusted
            .then(|| headers.get(&X_FULCRUM_PRIORITY)?.to_str().ok())
            .flatten()
            .and_then(|name| self.config.rank(name.trim()));
        from_header
            .or_else(|| route.and_then(|name| self.config.rank(name)))
            .unwrap_or(self.config.default_rank)
    }

    /// Waits for a slot for a request of class `rank`, at most
    /// `queue_timeout`, and counts the outcome.
    pub async fn acquire(self: &Arc<Self>, rank: u8) -> Result<Permit, Shed> {
        let outcome = self.wait_for_slot(rank).await;
        let class = rank as usize;
        match &outcome {
            Ok(_) => {
                if let Some(c) = self.counters.admitted.get(class) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(why) => {
                if let Some(c) = self.counters.shed.get(class) {
                    c[why.index()].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        outcome
    }

    async fn wait_for_slot(self: &Arc<Self>, rank: u8) -> Result<Permit, Shed> {
        let (tx, rx) = oneshot::channel();
        let decision = self.lock().admit(rank, tx);
        let ticket = match decision {
            Admit::Now => return Ok(Permit::new(self)),
            Admit::Shed(_) => return Err(Shed::QueueFull),
            // Dropping the displaced waiter's sender wakes it as shed.
            Admit::WaitDisplacing(ticket, _displaced) => ticket,
            Admit::Wait(ticket) => ticket,
        };
        let mut waiting = Waiting {
            admission: self,
            ticket: Some(ticket),
            since: clock::now(),
        };
        let mut rx = rx;
        match tokio::time::timeout(self.config.queue_timeout, &mut rx).await {
            Ok(Ok(permit)) => {
                waiting.ticket = None;
                Ok(permit)
            }
            Ok(Err(_displaced)) => {
                waiting.ticket = None;
                Err(Shed::Displaced)
            }
            Err(_elapsed) => {
                let still_queued = waiting.cancel();
                if still_queued {
                    return Err(Shed::Timeout);
                }
                // Woken (or displaced) just as the timeout fired: take the
                // slot if it has arrived; otherwise the sender finds the
                // channel closed and frees the slot itself.
                rx.try_recv().map_err(|_| Shed::Timeout)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Controller<Waker>> {
        // Every controller call leaves it consistent, so a poisoned lock
        // (a panic elsewhere while holding it) is safe to reuse.
        self.controller.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(self: &Arc<Self>, rtt: Option<Nanos>) {
        let mut woken = Vec::new();
        self.lock().release(clock::now(), rtt, &mut woken);
        for waker in woken {
            // A waiter that left meanwhile returns the permit, whose drop
            // frees the slot again (outside the lock).
            let _ = waker.send(Permit::new(self));
        }
    }

    /// The 503 a shed request gets: `Retry-After` in whole seconds (at
    /// least 1, about one queue timeout: by then the queue has turned over).
    pub fn shed_response(&self, cluster: &str, rank: u8, why: Shed) -> Response<ProxyBody> {
        let class = self.config.class_name(rank);
        let text = format!(
            "503 service unavailable: cluster `{cluster}` is overloaded; {class} request shed ({})\n",
            why.as_str()
        );
        let mut response = Response::new(ProxyBody::local(Bytes::from(text)));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let retry_after = retry_after_secs(self.config.queue_timeout);
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(
            X_FULCRUM_SHED.clone(),
            HeaderValue::from_static(why.as_str()),
        );
        response
    }
}

fn retry_after_secs(queue_timeout: Duration) -> u64 {
    queue_timeout.as_secs_f64().ceil().max(1.0) as u64
}

/// Whether `peer` is in `networks`.
pub fn trusted(networks: &[IpNet], peer: std::net::IpAddr) -> bool {
    networks.iter().any(|n| n.contains(peer))
}

/// Removes a waiter from the queue if its future is dropped (the client
/// went away) or times out; records how long it waited.
struct Waiting<'a> {
    admission: &'a Arc<Admission>,
    ticket: Option<Ticket>,
    /// When it joined the queue.
    since: Nanos,
}

impl Waiting<'_> {
    /// Cancels the wait; `true` when the waiter was still queued.
    fn cancel(&mut self) -> bool {
        match self.ticket.take() {
            Some(t) => self.admission.lock().cancel(t),
            None => false,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.cancel();
        let waited = clock::now().saturating_sub(self.since);
        self.admission.counters.queue_wait.observe(waited);
    }
}

/// An admitted request's slot, freed on drop.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    started: Nanos,
}

impl Permit {
    fn new(admission: &Arc<Admission>) -> Self {
        Self {
            admission: Arc::clone(admission),
            started: clock::now(),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let rtt = clock::now().saturating_sub(self.started);
        self.admission.release(Some(rtt));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(limit: u32, max_queue: usize, timeout_ms: u64) -> AdmissionConfig {
        AdmissionConfig {
            limit,
            adaptive: false,
            min_limit: 1,
            max_limit: 1000,
            queue_timeout: Duration::from_millis(timeout_ms),
            max_queue,
            classes: vec!["critical".into(), "normal".into(), "bulk".into()],
            default_rank: 1,
        }
    }

    #[tokio::test]
    async fn admission_wakes_the_most_important_waiter_first() {
        let a = Admission::new(&config(1, 10, 5_000), 1);
        let first = a.acquire(1).await.unwrap();
        let bulk = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.acquire(2).await.map(|_| "bulk") }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let crit = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.acquire(0).await.map(|_| "crit") }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.status(), (1, 2, 1));
        drop(first);
        assert_eq!(crit.await.unwrap(), Ok("crit"));
        assert_eq!(bulk.await.unwrap(), Ok("bulk"));
        assert_eq!(a.status(), (0, 0, 1));
    }

    #[tokio::test]
    async fn admission_sheds_after_the_queue_timeout_and_frees_nothing_twice() {
        let a = Admission::new(&config(1, 10, 50), 1);
        let held = a.acquire(1).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(a.acquire(1).await.err(), Some(Shed::Timeout));
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(a.status(), (1, 0, 1));
        drop(held);
        assert_eq!(a.status(), (0, 0, 1));
    }

    #[tokio::test]
    async fn admission_full_queue_sheds_bulk_for_critical() {
        let a = Admission::new(&config(1, 1, 5_000), 1);
        let held = a.acquire(1).await.unwrap();
        let bulk = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.acquire(2).await.err() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.acquire(2).await.err(), Some(Shed::QueueFull));
        let crit = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.acquire(0).await.is_ok() }
        });
        assert_eq!(bulk.await.unwrap(), Some(Shed::Displaced));
        drop(held);
        assert!(crit.await.unwrap());
    }

    #[tokio::test]
    async fn admission_forgets_a_waiter_whose_client_left() {
        let a = Admission::new(&config(1, 10, 5_000), 1);
        let held = a.acquire(1).await.unwrap();
        let gone = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.acquire(1).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        assert_eq!(a.status(), (1, 0, 1));
        drop(held);
        assert_eq!(a.status(), (0, 0, 1));
    }

    #[test]
    fn admission_classifies_by_trusted_header_then_route() {
        let a = Admission::new(&config(1, 1, 1), 1);
        let mut h = HeaderMap::new();
        h.insert(&X_FULCRUM_PRIORITY, HeaderValue::from_static("critical"));
        assert_eq!(a.classify(Some("bulk"), &h, true), 0);
        assert_eq!(a.classify(Some("bulk"), &h, false), 2);
        assert_eq!(a.classify(None, &h, false), 1);
        let r = a.shed_response("app", 2, Shed::Timeout);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
