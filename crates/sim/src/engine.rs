//! The discrete-event engine.
//!
//! Events sit in a binary heap ordered by `(time, sequence number)`; the
//! sequence number makes ties resolve in scheduling order, so a run is a pure
//! function of the scenario, the selector and the seed. Randomness comes from
//! separate streams (arrivals, service times, keys, the world's antagonists,
//! one per proxy for its selector) so that two algorithms run on the same
//! seed see the same arrivals and service demands (common random numbers),
//! and their differences come from their decisions alone.
//!
//! Each proxy has its own [`BackendSet`] whose [`BackendState`]s are its own:
//! it sees only its own requests in flight, the latencies and errors it
//! observed, and — when `[reports]` is set — every backend's true
//! utilisation, delivered `lag` after it was sampled. Requests count as in
//! flight through the balance crate's [`InFlightGuard`], held in the request
//! table until the proxy gets its answer or gives up at the timeout. A
//! timed-out request stays on its server, which keeps working on it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use fastrand::Rng;
use fulcrum_balance::selector::GeoPoint;
use fulcrum_balance::{
    Algorithm, Backend, BackendSet, InFlightGuard, Nanos, Outcome, PickContext, Selector,
    SelectorConfig, SECOND,
};

use crate::dist::{exponential, mix64};
use crate::metrics::{cdf_points, percentile, Metrics, Shares};
use crate::scenario::{Arrivals, Discipline, FailureMode, Scenario};
use crate::server::{JobRef, Lru, Server};

/// Builds a selector for a snapshot: normally `Algorithm::build`, or any
/// other [`Selector`] (tests validate the engine with textbook policies).
pub type BuildSelector<'a> = dyn Fn(&BackendSet, &SelectorConfig) -> Box<dyn Selector> + 'a;

/// Runs `scenario` once with `algorithm` and `seed`.
pub fn run(scenario: &Scenario, algorithm: Algorithm, seed: u64) -> Metrics {
    run_with(scenario, &|set, config| algorithm.build(set, config), seed)
}

/// Runs `scenario` once with selectors made by `build` and `seed`.
pub fn run_with(scenario: &Scenario, build: &BuildSelector<'_>, seed: u64) -> Metrics {
    Engine::new(scenario, build, seed).run()
}

#[derive(Debug)]
enum EventKind {
    Arrival,
    Departure { server: u32, gen: u64 },
    ErrorReply { job: JobRef },
    Timeout { job: JobRef },
    SpeedChange { server: u32, speed: f64 },
    Antagonist { server: u32, busy: bool },
    Health { server: u32, healthy: bool },
    Membership { server: u32, join: bool },
    ReportTick,
    ReportDeliver { values: Box<[f64]> },
    Sample,
}

#[derive(Debug)]
struct Event {
    at: Nanos,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One backend of the world, with what the engine knows about it.
struct World {
    name: String,
    group: usize,
    server: Server,
    /// Speed set by the scenario's steps.
    base_speed: f64,
    /// Capacity left by the antagonist (1.0 when idle).
    antagonist_factor: f64,
    cache: Option<Lru>,
    member: bool,
}

/// One proxy's private view of the cluster.
struct ProxyView {
    /// One `Backend` per world server, holding this proxy's own state.
    all: Vec<Backend>,
    /// Set index -> server index.
    members: Vec<u32>,
    set: BackendSet,
    selector: Box<dyn Selector>,
    rng: Rng,
}

#[derive(Default)]
struct Request {
    gen: u32,
    live: bool,
    proxy: u32,
    server: u32,
    arrived: Nanos,
    measured: bool,
    guard: Option<InFlightGuard>,
    /// The proxy has its answer (or gave up at the timeout).
    answered: bool,
    /// The server still holds the request.
    at_server: bool,
}

#[derive(Default)]
struct Collector {
    measured: u64,
    latencies: Vec<u64>,
    timeouts: u64,
    errors: u64,
    dispatched: Vec<u64>,
    ratio_sum: f64,
    ratio_n: u64,
    ratio_max: f64,
    ratio_floor_sum: f64,
    rif: Vec<u32>,
    lookups: u64,
    hits: u64,
    final_backlog: Vec<u64>,
    /// Measured requests from a client source (`[[clients]]`).
    located: u64,
    /// ... of which arrived while the client's home zone was up.
    home_up: u64,
    /// ... of those, served in the home zone.
    in_zone: u64,
    /// Located requests sent to a zone farther than one with headroom.
    farther: u64,
}

/// A zone of the world: the backends sharing a `zone` name.
struct SimZone {
    centre: Option<GeoPoint>,
    servers: Vec<usize>,
}

/// A client source with its zones ordered nearest first.
struct SimClient {
    point: GeoPoint,
    /// Cumulative share, for drawing a source per arrival.
    cumulative: f64,
    /// `(zone, distance km)`, nearest first; the first is the home zone.
    order: Vec<(usize, f64)>,
}

/// The map: zones, which zone each server is in, and the client sources.
#[derive(Default)]
struct Geography {
    zones: Vec<SimZone>,
    server_zone: Vec<Option<usize>>,
    clients: Vec<SimClient>,
}

impl Geography {
    fn new(sc: &Scenario, world: &[World]) -> Self {
        let mut names: Vec<&str> = Vec::new();
        let mut zones: Vec<SimZone> = Vec::new();
        let mut server_zone = Vec::new();
        for (s, w) in world.iter().enumerate() {
            let zone = sc.groups[w.group]
                .location
                .as_ref()
                .and_then(|l| l.zone.as_deref());
            let Some(zone) = zone else {
                server_zone.push(None);
                continue;
            };
            let z = match names.iter().position(|n| *n == zone) {
                Some(z) => z,
                None => {
                    names.push(zone);
                    zones.push(SimZone {
                        centre: None,
                        servers: Vec::new(),
                    });
                    names.len() - 1
                }
            };
            zones[z].servers.push(s);
            server_zone.push(Some(z));
        }
        for z in &mut zones {
            let points: Vec<GeoPoint> = z
                .servers
                .iter()
                .filter_map(|&s| sc.groups[world[s].group].location.as_ref()?.point)
                .collect();
            let n = points.len() as f64;
            if n > 0.0 {
                z.centre = GeoPoint::new(
                    points.iter().map(|p| p.lat).sum::<f64>() / n,
                    points.iter().map(|p| p.lon).sum::<f64>() / n,
                );
            }
        }
        let total: f64 = sc.clients.iter().map(|c| c.share).sum();
        let mut acc = 0.0;
        let clients = sc
            .clients
            .iter()
            .map(|c| {
                acc += c.share / total;
                let mut order: Vec<(usize, f64)> = zones
                    .iter()
                    .enumerate()
                    .map(|(i, z)| {
                        (
                            i,
                            z.centre.map_or(f64::INFINITY, |p| c.point.distance_km(p)),
                        )
                    })
                    .collect();
                order.sort_by(|a, b| a.1.total_cmp(&b.1));
                SimClient {
                    point: c.point,
                    cumulative: acc,
                    order,
                }
            })
            .collect();
        Geography {
            zones,
            server_zone,
            clients,
        }
    }
}

enum ArrivalSource {
    Poisson(crate::scenario::RateProfile),
    Trace(Arc<Vec<crate::scenario::TraceRecord>>, usize),
}

/// Stream tags mixed into the seed so each random stream is independent.
const STREAM_ARRIVALS: u64 = 0xa1;
const STREAM_SERVICE: u64 = 0xb2;
const STREAM_KEYS: u64 = 0xc3;
const STREAM_WORLD: u64 = 0xd4;
const STREAM_PROXY: u64 = 0xe5;
const STREAM_CLIENTS: u64 = 0xf6;

fn stream(seed: u64, tag: u64, index: u64) -> Rng {
    Rng::with_seed(mix64(mix64(seed ^ (tag << 56)) ^ index))
}

struct Engine<'a> {
    sc: &'a Scenario,
    build: &'a BuildSelector<'a>,
    now: Nanos,
    seq: u64,
    events: BinaryHeap<Reverse<Event>>,
    world: Vec<World>,
    proxies: Vec<ProxyView>,
    requests: Vec<Request>,
    free: Vec<u32>,
    source: ArrivalSource,
    rng_arrivals: Rng,
    rng_service: Rng,
    rng_keys: Rng,
    rng_world: Rng,
    rng_clients: Rng,
    geo: Geography,
    stats: Collector,
    done: Vec<JobRef>,
    /// Requests each server has from the proxies' point of view (sent and
    /// neither answered nor given up on), summed over proxies.
    outstanding: Vec<u32>,
}

impl<'a> Engine<'a> {
    fn new(sc: &'a Scenario, build: &'a BuildSelector<'a>, seed: u64) -> Self {
        let mut world = Vec::new();
        for (gi, g) in sc.groups.iter().enumerate() {
            for i in 0..g.count {
                let name = if g.count == 1 {
                    g.name.clone()
                } else {
                    format!("{}-{i}", g.name)
                };
                world.push(World {
                    name,
                    group: gi,
                    server: Server::new(g.discipline, g.workers, g.speed),
                    base_speed: g.speed,
                    antagonist_factor: 1.0,
                    cache: g.cache.map(|c| Lru::new(c.capacity)),
                    member: g.join_at.is_none(),
                });
            }
        }
        let proxies = (0..sc.proxies)
            .map(|p| {
                let all: Vec<Backend> = world
                    .iter()
                    .map(|w| {
                        let mut b = Backend::new(w.name.clone(), sc.groups[w.group].weight);
                        b.location = sc.groups[w.group].location.clone();
                        b
                    })
                    .collect();
                let (members, set) = snapshot(&all, &world, sc);
                ProxyView {
                    selector: build(&set, &sc.selector),
                    all,
                    members,
                    set,
                    rng: stream(seed, STREAM_PROXY, p as u64),
                }
            })
            .collect();
        let source = match &sc.arrivals {
            Arrivals::Poisson(profile) => ArrivalSource::Poisson(profile.clone()),
            Arrivals::Trace(records) => ArrivalSource::Trace(Arc::clone(records), 0),
        };
        let n = world.len();
        let geo = Geography::new(sc, &world);
        Engine {
            sc,
            build,
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            world,
            proxies,
            requests: Vec::new(),
            free: Vec::new(),
            source,
            rng_arrivals: stream(seed, STREAM_ARRIVALS, 0),
            rng_service: stream(seed, STREAM_SERVICE, 0),
            rng_keys: stream(seed, STREAM_KEYS, 0),
            rng_world: stream(seed, STREAM_WORLD, 0),
            rng_clients: stream(seed, STREAM_CLIENTS, 0),
            geo,
            stats: Collector {
                dispatched: vec![0; n],
                ..Collector::default()
            },
            done: Vec::new(),
            outstanding: vec![0; n],
        }
    }

    fn push(&mut self, at: Nanos, kind: EventKind) {
        self.seq += 1;
        self.events.push(Reverse(Event {
            at,
            seq: self.seq,
            kind,
        }));
    }

    fn schedule_world(&mut self) {
        let sc = self.sc;
        for s in 0..self.world.len() {
            let g = &sc.groups[self.world[s].group];
            let server = s as u32;
            for &(at, speed) in &g.speed_changes {
                self.push(at, EventKind::SpeedChange { server, speed });
            }
            if let Some(a) = g.antagonist {
                // Start in the stationary mix of busy and idle.
                let busy = self.rng_world.f64() < a.busy as f64 / (a.busy + a.idle) as f64;
                self.push(0, EventKind::Antagonist { server, busy });
            }
            for f in &g.failures {
                if let Some(detect) = f.detect {
                    self.push(
                        f.from.saturating_add(detect),
                        EventKind::Health {
                            server,
                            healthy: false,
                        },
                    );
                    if f.until != Nanos::MAX {
                        self.push(
                            f.until.saturating_add(detect),
                            EventKind::Health {
                                server,
                                healthy: true,
                            },
                        );
                    }
                }
            }
            if let Some(at) = g.join_at {
                self.push(at, EventKind::Membership { server, join: true });
            }
            if let Some(at) = g.leave_at {
                self.push(
                    at,
                    EventKind::Membership {
                        server,
                        join: false,
                    },
                );
            }
        }
        if let Some(r) = sc.reports {
            self.push(0, EventKind::ReportTick);
            let _ = r;
        }
        self.push(sc.warmup, EventKind::Sample);
    }

    fn run(mut self) -> Metrics {
        self.schedule_world();
        self.schedule_next_arrival(0);
        let mut backlog_taken = false;
        while let Some(Reverse(event)) = self.events.pop() {
            if !backlog_taken && event.at >= self.sc.duration {
                self.take_backlog();
                backlog_taken = true;
            }
            self.now = event.at;
            self.handle(event.kind);
        }
        if !backlog_taken {
            self.take_backlog();
        }
        self.finish()
    }

    fn take_backlog(&mut self) {
        self.stats.final_backlog = self
            .world
            .iter()
            .map(|w| w.server.in_system() as u64)
            .collect();
    }

    fn handle(&mut self, kind: EventKind) {
        match kind {
            EventKind::Arrival => self.arrival(),
            EventKind::Departure { server, gen } => {
                let s = server as usize;
                if self.world[s].server.departure_gen != gen {
                    return;
                }
                let mut done = std::mem::take(&mut self.done);
                self.world[s].server.complete(self.now, &mut done);
                for job in done.drain(..) {
                    self.reply(job, Outcome::Success, true);
                }
                self.done = done;
                self.reschedule(s);
            }
            EventKind::ErrorReply { job } => self.reply(job, Outcome::Failure, false),
            EventKind::Timeout { job } => self.timeout(job),
            EventKind::SpeedChange { server, speed } => {
                let w = &mut self.world[server as usize];
                w.base_speed = speed;
                let effective = w.base_speed * w.antagonist_factor;
                w.server.set_speed(self.now, effective);
                self.reschedule(server as usize);
            }
            EventKind::Antagonist { server, busy } => self.antagonist(server, busy),
            EventKind::Health { server, healthy } => {
                for p in &self.proxies {
                    p.all[server as usize].state.set_healthy(healthy);
                }
            }
            EventKind::Membership { server, join } => {
                self.world[server as usize].member = join;
                for p in &mut self.proxies {
                    if join && self.sc.slow_start > 0 {
                        p.all[server as usize].state.start_ramp(self.now);
                    }
                    rebuild(p, &self.world, self.sc, self.build);
                }
            }
            EventKind::ReportTick => {
                let values: Box<[f64]> =
                    self.world.iter().map(|w| w.server.utilisation()).collect();
                let r = self.sc.reports.expect("report ticks only with [reports]");
                self.push(self.now + r.lag, EventKind::ReportDeliver { values });
                if self.now + r.interval < self.sc.duration {
                    self.push(self.now + r.interval, EventKind::ReportTick);
                }
            }
            EventKind::ReportDeliver { values } => {
                for p in &self.proxies {
                    for (b, v) in p.all.iter().zip(values.iter()) {
                        b.state.load.report(self.now, *v);
                    }
                }
            }
            EventKind::Sample => self.sample(),
        }
    }

    fn schedule_next_arrival(&mut self, after: Nanos) {
        let duration = self.sc.duration;
        let next = match &mut self.source {
            ArrivalSource::Poisson(profile) => {
                let max = profile.max_rate();
                if max <= 0.0 {
                    return;
                }
                let mean_gap = SECOND as f64 / max;
                let mut t = after as f64;
                loop {
                    t += exponential(&mut self.rng_arrivals, mean_gap);
                    if t >= duration as f64 {
                        return;
                    }
                    // Thinning: accept with probability rate(t) / max.
                    if self.rng_arrivals.f64() * max < profile.rate_at(t as Nanos) {
                        break t as Nanos;
                    }
                }
            }
            ArrivalSource::Trace(records, cursor) => match records.get(*cursor) {
                Some(r) if r.at < duration => r.at,
                _ => return,
            },
        };
        self.push(next, EventKind::Arrival);
    }

    fn arrival(&mut self) {
        let now = self.now;
        let (key, traced_work) = match &mut self.source {
            ArrivalSource::Trace(records, cursor) => {
                let r = &records[*cursor];
                *cursor += 1;
                (r.key, r.service)
            }
            ArrivalSource::Poisson(_) => (None, None),
        };
        let key = key.or_else(|| self.sc.keys.as_ref().map(|k| k.sample(&mut self.rng_keys)));
        let work = traced_work.unwrap_or_else(|| self.sc.service.sample(&mut self.rng_service));
        let proxy = if self.proxies.len() > 1 {
            self.rng_arrivals.usize(0..self.proxies.len())
        } else {
            0
        };
        self.schedule_next_arrival(now);
        let measured = now >= self.sc.warmup;
        if measured {
            self.stats.measured += 1;
        }

        let source = (!self.geo.clients.is_empty()).then(|| {
            let u = self.rng_clients.f64();
            let clients = &self.geo.clients;
            clients
                .iter()
                .position(|c| u < c.cumulative)
                .unwrap_or(clients.len() - 1)
        });
        let view = &mut self.proxies[proxy];
        let mut ctx = PickContext {
            now,
            key,
            rng: &mut view.rng,
            exclude: &[],
            client: source.map(|c| self.geo.clients[c].point),
            ignore_health: false,
        };
        let Some(id) = view.selector.pick(&view.set, &mut ctx) else {
            if measured {
                self.stats.errors += 1;
            }
            return;
        };
        let server = view.members[id.index()] as usize;
        let guard = Some(view.set.get(id).state.load.start());
        if measured {
            self.stats.dispatched[server] += 1;
            if let Some(c) = source {
                self.account_geo(c, server);
            }
        }
        self.outstanding[server] += 1;
        let job = self.alloc(Request {
            gen: 0,
            live: true,
            proxy: proxy as u32,
            server: server as u32,
            arrived: now,
            measured,
            guard,
            answered: false,
            at_server: true,
        });
        if let Some(timeout) = self.sc.timeout {
            self.push(now + timeout, EventKind::Timeout { job });
        }

        let group = &self.sc.groups[self.world[server].group];
        if let Some(f) = group
            .failures
            .iter()
            .find(|f| f.from <= now && now < f.until)
        {
            self.requests[job.slot as usize].at_server = false;
            if f.mode == FailureMode::FailFast {
                self.push(now + f.latency, EventKind::ErrorReply { job });
            }
            return;
        }
        let mut work = work;
        for s in group
            .stalls
            .iter()
            .filter(|s| s.from <= now && now < s.until)
        {
            work *= s.factor;
        }
        if let (Some(cache), Some(key), Some(spec)) =
            (&mut self.world[server].cache, key, group.cache)
        {
            let hit = cache.touch(key);
            if measured {
                self.stats.lookups += 1;
                self.stats.hits += hit as u64;
            }
            if !hit {
                work *= spec.miss_factor;
            }
        }
        self.world[server].server.admit(now, work, job);
        self.reschedule(server);
    }

    /// Whether server `s` can take work now: a member outside any failure
    /// window.
    fn serving(&self, s: usize) -> bool {
        let now = self.now;
        self.world[s].member
            && !self.sc.groups[self.world[s].group]
                .failures
                .iter()
                .any(|f| f.from <= now && now < f.until)
    }

    /// Whether zone `z` has a serving backend with an idle worker (the
    /// ground truth, not any proxy's view).
    fn zone_has_headroom(&self, z: usize) -> bool {
        self.geo.zones[z].servers.iter().any(|&s| {
            let g = &self.sc.groups[self.world[s].group];
            self.serving(s)
                && (g.discipline == Discipline::Delay
                    || self.world[s].server.in_system() < g.workers as usize)
        })
    }

    /// Counts a measured request from client source `c` sent to `server`,
    /// before the server admits it.
    fn account_geo(&mut self, c: usize, server: usize) {
        let order = &self.geo.clients[c].order;
        let served = self.geo.server_zone[server];
        let home = order.first().map(|o| o.0);
        let home_up =
            home.is_some_and(|h| self.geo.zones[h].servers.iter().all(|&s| self.serving(s)));
        let served_km = served
            .and_then(|z| order.iter().find(|o| o.0 == z))
            .map_or(f64::INFINITY, |o| o.1);
        let farther = order
            .iter()
            .take_while(|o| o.1 < served_km)
            .any(|o| self.zone_has_headroom(o.0));
        let st = &mut self.stats;
        st.located += 1;
        if home_up {
            st.home_up += 1;
            st.in_zone += u64::from(served.is_some() && served == home);
        }
        st.farther += u64::from(farther);
    }

    fn alloc(&mut self, mut request: Request) -> JobRef {
        match self.free.pop() {
            Some(slot) => {
                let entry = &mut self.requests[slot as usize];
                request.gen = entry.gen;
                *entry = request;
                JobRef {
                    slot,
                    gen: entry.gen,
                }
            }
            None => {
                let slot = self.requests.len() as u32;
                self.requests.push(request);
                JobRef { slot, gen: 0 }
            }
        }
    }

    fn release(&mut self, slot: u32) {
        let r = &mut self.requests[slot as usize];
        r.live = false;
        r.gen = r.gen.wrapping_add(1);
        r.guard = None;
        self.free.push(slot);
    }

    fn reschedule(&mut self, s: usize) {
        let server = &mut self.world[s].server;
        server.departure_gen += 1;
        let gen = server.departure_gen;
        if let Some(at) = server.next_departure(self.now) {
            self.push(
                at,
                EventKind::Departure {
                    server: s as u32,
                    gen,
                },
            );
        }
    }

    /// An answer reaches the proxy: from the server (`from_server`) or a
    /// fail-fast error.
    fn reply(&mut self, job: JobRef, outcome: Outcome, from_server: bool) {
        let now = self.now;
        let decay = self.sc.selector.decay;
        let r = &mut self.requests[job.slot as usize];
        if !r.live || r.gen != job.gen {
            return;
        }
        if from_server {
            r.at_server = false;
        }
        if !r.answered {
            r.answered = true;
            self.outstanding[r.server as usize] -= 1;
            let latency = now - r.arrived;
            self.proxies[r.proxy as usize].all[r.server as usize]
                .state
                .load
                .observe(now, latency, outcome, decay);
            r.guard = None;
            if r.measured {
                match outcome {
                    Outcome::Success => self.stats.latencies.push(latency),
                    Outcome::Failure => self.stats.errors += 1,
                }
            }
        }
        if !r.at_server {
            self.release(job.slot);
        }
    }

    fn timeout(&mut self, job: JobRef) {
        let now = self.now;
        let decay = self.sc.selector.decay;
        let r = &mut self.requests[job.slot as usize];
        if !r.live || r.gen != job.gen || r.answered {
            return;
        }
        r.answered = true;
        self.outstanding[r.server as usize] -= 1;
        let latency = now - r.arrived;
        self.proxies[r.proxy as usize].all[r.server as usize]
            .state
            .load
            .observe(now, latency, Outcome::Failure, decay);
        r.guard = None;
        if r.measured {
            self.stats.timeouts += 1;
            self.stats.latencies.push(latency);
        }
        if !r.at_server {
            self.release(job.slot);
        }
    }

    fn antagonist(&mut self, server: u32, busy: bool) {
        let spec = self.sc.groups[self.world[server as usize].group]
            .antagonist
            .expect("antagonist events only for groups with one");
        let (factor, mean) = if busy {
            let [lo, hi] = spec.loss;
            (1.0 - (lo + (hi - lo) * self.rng_world.f64()), spec.busy)
        } else {
            (1.0, spec.idle)
        };
        let w = &mut self.world[server as usize];
        w.antagonist_factor = factor;
        let effective = w.base_speed * factor;
        w.server.set_speed(self.now, effective);
        self.reschedule(server as usize);
        let next = self.now + exponential(&mut self.rng_world, mean as f64).max(1.0) as Nanos;
        if next < self.sc.duration {
            self.push(
                next,
                EventKind::Antagonist {
                    server,
                    busy: !busy,
                },
            );
        }
    }

    fn sample(&mut self) {
        let mut max = 0u32;
        let mut sum = 0u64;
        let mut members = 0u64;
        for (s, w) in self.world.iter().enumerate() {
            if !w.member {
                continue;
            }
            members += 1;
            let in_flight = self.outstanding[s];
            max = max.max(in_flight);
            sum += in_flight as u64;
            self.stats.rif.push(w.server.in_system() as u32);
        }
        if sum > 0 {
            let ratio = max as f64 * members as f64 / sum as f64;
            // No assignment of `sum` requests to `members` backends has a
            // maximum below ceil(sum / members): the floor any selector,
            // bounded-load or oracle, can reach at this instant.
            let floor = sum.div_ceil(members) as f64 * members as f64 / sum as f64;
            self.stats.ratio_floor_sum += floor;
            self.stats.ratio_sum += ratio;
            self.stats.ratio_n += 1;
            self.stats.ratio_max = self.stats.ratio_max.max(ratio);
        }
        let next = self.now + self.sc.sample_interval;
        if next < self.sc.duration {
            self.push(next, EventKind::Sample);
        }
    }

    fn finish(mut self) -> Metrics {
        let st = &mut self.stats;
        let unfinished = self
            .requests
            .iter()
            .filter(|r| r.live && r.measured && !r.answered)
            .count() as u64;
        st.latencies.sort_unstable();
        let measured = st.measured.max(1) as f64;
        let ms = |ns: u64| ns as f64 / 1e6;
        let total: u64 = st.dispatched.iter().sum();
        let shares: Vec<(String, f64)> = self
            .world
            .iter()
            .zip(&st.dispatched)
            .map(|(w, &d)| (w.name.clone(), d as f64 / total.max(1) as f64))
            .collect();
        let group_share = self
            .sc
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                let share = self
                    .world
                    .iter()
                    .zip(&shares)
                    .filter(|(w, _)| w.group == gi)
                    .map(|(_, s)| s.1)
                    .sum();
                (g.name.clone(), share)
            })
            .collect();
        let n = st.dispatched.len().max(1) as f64;
        let mean_count = total as f64 / n;
        let var = st
            .dispatched
            .iter()
            .map(|&d| (d as f64 - mean_count).powi(2))
            .sum::<f64>()
            / n;
        st.rif.sort_unstable();
        let mean_ns = if st.latencies.is_empty() {
            0.0
        } else {
            st.latencies.iter().map(|&x| x as f64).sum::<f64>() / st.latencies.len() as f64
        };
        Metrics {
            requests: st.measured,
            p50_ms: ms(percentile(&st.latencies, 0.50)),
            p99_ms: ms(percentile(&st.latencies, 0.99)),
            p999_ms: ms(percentile(&st.latencies, 0.999)),
            mean_ms: mean_ns / 1e6,
            timeout_rate: st.timeouts as f64 / measured,
            error_rate: st.errors as f64 / measured,
            backend_share: Shares(shares),
            group_share: Shares(group_share),
            share_cov: if mean_count > 0.0 {
                var.sqrt() / mean_count
            } else {
                0.0
            },
            max_avg_inflight: if st.ratio_n > 0 {
                st.ratio_sum / st.ratio_n as f64
            } else {
                0.0
            },
            max_avg_inflight_peak: st.ratio_max,
            max_avg_inflight_floor: if st.ratio_n > 0 {
                st.ratio_floor_sum / st.ratio_n as f64
            } else {
                0.0
            },
            rif_p99: st
                .rif
                .get(((st.rif.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0) as f64,
            hit_rate: (st.lookups > 0).then(|| st.hits as f64 / st.lookups as f64),
            in_zone_share: (st.home_up > 0).then(|| st.in_zone as f64 / st.home_up as f64),
            farther_while_headroom: (st.located > 0).then(|| st.farther as f64 / st.located as f64),
            unfinished,
            final_backlog: std::mem::take(&mut st.final_backlog),
            cdf: cdf_points(&st.latencies),
        }
    }
}

/// The snapshot of the current members over a proxy's backends, and the
/// set-index -> server-index map.
fn snapshot(all: &[Backend], world: &[World], sc: &Scenario) -> (Vec<u32>, BackendSet) {
    let members: Vec<u32> = world
        .iter()
        .enumerate()
        .filter(|(_, w)| w.member)
        .map(|(i, _)| i as u32)
        .collect();
    let backends = members.iter().map(|&i| all[i as usize].clone()).collect();
    let mut set = BackendSet::new(backends);
    if sc.slow_start > 0 {
        set = set.with_slow_start(sc.slow_start);
    }
    (members, set)
}

/// Rebuilds a proxy's snapshot and selector after a membership change,
/// keeping each backend's learned state (the shared `BackendState`).
fn rebuild(view: &mut ProxyView, world: &[World], sc: &Scenario, build: &BuildSelector<'_>) {
    let (members, set) = snapshot(&view.all, world, sc);
    view.selector = build(&set, &sc.selector);
    view.members = members;
    view.set = set;
}
