//! Nanoseconds per operation on the request hot path: route matching with
//! 1 000 routes, and the header rewrite every proxied request goes through.
//!
//! The routes are what a large virtual-hosting config looks like: one exact
//! host and path prefix per tenant, every tenth on a wildcard host. The
//! request matches near the end of the table (the worst case of a
//! first-match scan) or nothing at all (falls through to the default).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fulcrum_config::model::{HostMatch, RouteConfig};
use fulcrum_proxy::headers;
use fulcrum_proxy::routes::RouteTable;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

const ROUTES: usize = 1_000;

fn routes() -> RouteTable {
    let configs: Vec<RouteConfig> = (0..ROUTES)
        .map(|i| RouteConfig {
            host: Some(if i % 10 == 9 {
                HostMatch::Suffix(format!(".tenant{i}.example.com"))
            } else {
                HostMatch::Exact(format!("tenant{i}.example.com"))
            }),
            path_prefix: Some(format!("/api/v{}", i % 3)),
            cluster: format!("c{}", i % 16),
            ..RouteConfig::default()
        })
        .collect();
    RouteTable::new(&configs, Some("default"))
}

fn route_select(c: &mut Criterion) {
    let table = routes();
    let headers = HeaderMap::new();
    let method = Method::GET;
    let mut group = c.benchmark_group("route_select_1000");
    let hit: Uri = "/api/v1/users/42".parse().unwrap();
    let hit_host = format!("tenant{}.example.com", ROUTES - 3);
    group.bench_function("match_near_end", |b| {
        b.iter(|| {
            let m = table.select(
                Some(black_box(&hit_host)),
                &method,
                black_box(&hit),
                &headers,
            );
            black_box(m.and_then(|m| m.cluster))
        })
    });
    let miss: Uri = "/".parse().unwrap();
    group.bench_function("no_match_default", |b| {
        b.iter(|| {
            let m = table.select(
                Some(black_box("elsewhere.org")),
                &method,
                black_box(&miss),
                &headers,
            );
            black_box(m.and_then(|m| m.cluster))
        })
    });
    group.finish();
}

/// The headers curl or a browser-like client typically sends.
fn client_headers(with_forwarded: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("app.example.com"));
    h.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64)"),
    );
    h.insert(
        "accept",
        HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
    );
    h.insert(
        "accept-encoding",
        HeaderValue::from_static("gzip, deflate, br"),
    );
    h.insert(
        "accept-language",
        HeaderValue::from_static("en-GB,en;q=0.5"),
    );
    h.insert("connection", HeaderValue::from_static("keep-alive"));
    h.insert(
        "cookie",
        HeaderValue::from_static("session=abc123; theme=dark"),
    );
    if with_forwarded {
        h.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("203.0.113.7"),
        );
    }
    h
}

fn prepare_request(c: &mut Criterion) {
    let host = HeaderValue::from_static("app.example.com");
    let client = "192.0.2.44".parse().unwrap();
    let mut group = c.benchmark_group("headers_prepare_request");
    for (name, fwd) in [("plain", false), ("appends_forwarded_for", true)] {
        let template = client_headers(fwd);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || template.clone(),
                |h| headers::prepare_request(h, Version::HTTP_11, client, Some(&host), false),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, route_select, prepare_request);
criterion_main!(benches);
