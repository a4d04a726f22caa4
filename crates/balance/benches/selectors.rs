//! Nanoseconds per pick for every algorithm at 3, 100 and 10 000 backends,
//! and the cost of building each selector (once per snapshot: every reload
//! and admin change) at 100 and 10 000 backends.
//!
//! Backends carry uneven weights (1–4), a few in-flight requests each and a
//! latency history, one in ten is unhealthy, and every request has a key, so
//! each selector runs its realistic path (skips, scores, hashing).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fulcrum_balance::{
    Algorithm, Backend, BackendSet, InFlightGuard, Outcome, PickContext, SelectorConfig,
    MILLISECOND, SECOND,
};

fn cluster(n: usize) -> (BackendSet, Vec<InFlightGuard>) {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut guards = Vec::new();
    let backends = (0..n)
        .map(|i| {
            let b = Backend::new(
                format!("10.{}.{}.{}:8080", i >> 16, (i >> 8) & 255, i & 255),
                rng.u32(1..5),
            );
            for _ in 0..rng.u32(0..6) {
                guards.push(b.state.load.start());
            }
            let latency = rng.u64(1..20) * MILLISECOND;
            b.state
                .load
                .observe(SECOND, latency, Outcome::Success, 10 * SECOND);
            if i % 10 == 9 {
                b.state.set_healthy(false);
            }
            b
        })
        .collect();
    (BackendSet::new(backends), guards)
}

fn selectors(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [3, 100, 10_000] {
        let (set, _guards) = cluster(n);
        for &alg in Algorithm::ALL {
            let selector = alg.build(&set, &SelectorConfig::default());
            let mut rng = fastrand::Rng::with_seed(7);
            let mut key = 0u64;
            let mut now = 2 * SECOND;
            group.bench_with_input(BenchmarkId::new(alg.name(), n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    now += 1_000;
                    let mut ctx = PickContext::new(now, &mut rng);
                    ctx.key = Some(key);
                    black_box(selector.pick(&set, &mut ctx))
                })
            });
        }
    }
    group.finish();
}

/// Building a selector for a new snapshot: the lookup tables of ring-hash
/// and maglev, the weight tables of the weighted algorithms.
fn builds(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for n in [100, 10_000] {
        let (set, _guards) = cluster(n);
        for &alg in Algorithm::ALL {
            group.bench_with_input(BenchmarkId::new(alg.name(), n), &n, |b, _| {
                b.iter(|| black_box(alg.build(black_box(&set), &SelectorConfig::default())))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, selectors, builds);
criterion_main!(benches);
