//! The control path with one cluster of 10 000 backends (issue #8): reading
//! and validating the file, building the first snapshot, applying a reload,
//! and diffing two models for the reload's report.
//!
//! Every step runs once per configuration change, never per request, so
//! what matters is that each is linear in the number of backends: a
//! quadratic step costs seconds at 10 000 and stalls the admin API (reloads
//! hold the control lock). The 100-backend case is there to see the slope.
//!
//! Backends are `10.x.y.z:8080` with weights 1–4 and no health checks; the
//! benchmarks open no sockets.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use fulcrum_config::{Command, Config};
use fulcrum_proxy::admin::reload::backend_changes;
use fulcrum_proxy::Runtime;

/// The configuration file text of one listener and one cluster of `n` backends.
fn config_text(n: usize, weight_offset: usize) -> String {
    let mut text = String::from(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\ncluster = \"app\"\n\n[cluster.app]\nbackends = [\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "  {{ address = \"10.{}.{}.{}:8080\", weight = {} }},\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255,
            1 + (i + weight_offset) % 4
        ));
    }
    text.push_str("]\n");
    text
}

fn config(n: usize, weight_offset: usize) -> Config {
    fulcrum_config::parse(&config_text(n, weight_offset), None).expect("valid configuration")
}

fn control_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    group.sample_size(10);
    for n in [100, 10_000] {
        let text = config_text(n, 0);
        group.bench_with_input(BenchmarkId::new("parse_validate", n), &n, |b, _| {
            b.iter(|| black_box(fulcrum_config::parse(black_box(&text), None).is_ok()))
        });

        let first = config(n, 0);
        group.bench_with_input(BenchmarkId::new("snapshot_build", n), &n, |b, _| {
            b.iter_batched(
                || first.clone(),
                |c| black_box(Runtime::new(c)),
                BatchSize::LargeInput,
            )
        });

        // A reload that changes every backend's weight: the new snapshot
        // keeps each backend's learned state (a registry lookup per backend).
        let second = config(n, 1);
        let runtime = Runtime::new(first.clone());
        let mut flip = false;
        group.bench_with_input(BenchmarkId::new("reload_apply", n), &n, |b, _| {
            b.iter_batched(
                || {
                    flip = !flip;
                    Box::new(if flip { second.clone() } else { first.clone() })
                },
                |c| black_box(runtime.apply([Command::Replace(c)]).is_ok()),
                BatchSize::LargeInput,
            )
        });

        // What dropping stale metric handles cost before it used a set: one
        // linear `BackendSet::find` per configured backend.
        let snapshot = runtime.snapshot_owned();
        let set = &snapshot.clusters["app"].set;
        group.bench_with_input(
            BenchmarkId::new("find_each_backend_linear", n),
            &n,
            |b, _| {
                b.iter(|| {
                    set.backends()
                        .iter()
                        .filter(|x| set.find(black_box(&x.address)).is_some())
                        .count()
                })
            },
        );

        group.bench_with_input(BenchmarkId::new("reload_diff", n), &n, |b, _| {
            b.iter(|| black_box(backend_changes(&first, &second).len()))
        });

        // A file with an error at every backend: each problem is given its
        // line in the file.
        let bad = text.replace(":8080\"", "\"");
        group.bench_with_input(
            BenchmarkId::new("parse_every_backend_invalid", n),
            &n,
            |b, _| b.iter(|| black_box(fulcrum_config::parse(black_box(&bad), None).is_err())),
        );
    }
    group.finish();
}

criterion_group!(benches, control_path);
criterion_main!(benches);
