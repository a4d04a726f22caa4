//! The effective configuration written back in the file's own shapes.
//!
//! `GET /api/v1/config` answers with the running model (file plus API
//! changes, defaults filled in) as JSON whose keys are exactly the TOML keys,
//! so what the API shows can be pasted back into a file.

use std::time::Duration;

use fulcrum_config::file::*;
use fulcrum_config::{
    Config, HeaderRewrite, HealthKind, HostMatch, Protocol, ProxyProtocol, RouteConfig, ValueMatch,
};

/// Durations as the configuration writes them: `1s`, `500ms`, `1m30s` is `90s`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.subsec_millis() == 0 && d.subsec_nanos() == 0 {
        format!("{}s", ms / 1000)
    } else if ms > 0 {
        format!("{ms}ms")
    } else {
        format!("{}us", d.as_micros())
    }
}

/// The model in file shapes.
pub fn to_file(config: &Config) -> FileConfig {
    FileConfig {
        admin: Some(FileAdmin {
            bind: Some(config.admin.bind.to_string()),
            token_file: config.admin.token_file.clone(),
        }),
        runtime: Some(FileRuntime {
            worker_threads: config.runtime.worker_threads,
        }),
        listener: config
            .listeners
            .iter()
            .map(|l| FileListener {
                name: Some(l.name.clone()),
                bind: Some(l.bind.to_string()),
                protocol: Some(l.protocol.as_str().to_owned()),
                cluster: l.cluster.clone(),
                header_timeout: Some(duration(l.limits.header_timeout)),
                idle_timeout: Some(duration(l.limits.idle_timeout)),
                max_header_bytes: Some(l.limits.max_header_bytes),
                max_headers: Some(l.limits.max_headers),
                max_connections: Some(l.limits.max_connections),
                max_uri_bytes: Some(l.limits.max_uri_bytes),
                max_body_bytes: Some(l.limits.max_body_bytes),
                max_requests_per_connection: Some(l.limits.max_requests_per_connection),
                max_connections_per_ip: Some(l.limits.max_connections_per_ip),
                body_timeout: (l.protocol == Protocol::Http)
                    .then(|| duration(l.limits.body_timeout)),
                min_body_rate: (l.protocol == Protocol::Http).then_some(l.limits.min_body_rate),
                max_concurrent_streams: (l.protocol == Protocol::Http)
                    .then_some(l.limits.max_concurrent_streams),
                allow: Some(l.allow.iter().map(|n| n.to_string()).collect()),
                deny: Some(l.deny.iter().map(|n| n.to_string()).collect()),
                trusted_proxies: Some(l.trusted_proxies.iter().map(|n| n.to_string()).collect()),
                defer_accept: (l.protocol != Protocol::Udp).then_some(l.defer_accept),
                access_log: l.access_log.as_ref().map(|a| a.path.clone()),
                request_id: (l.protocol == Protocol::Http).then_some(l.request_id),
                access_log_format: l.access_log.as_ref().map(|a| a.format.as_str().to_owned()),
                debug_from: Some(l.debug_from.iter().map(|n| n.to_string()).collect()),
                route: l
                    .routes
                    .iter()
                    .map(route_to_file)
                    .chain(l.sni_routes.iter().map(|r| FileRoute {
                        sni: Some(host_match(&r.sni)),
                        cluster: Some(r.cluster.clone()),
                        ..FileRoute::default()
                    }))
                    .collect(),
                tls: l.tls.as_ref().map(|t| FileTls {
                    cert: Some(t.default.cert.clone()),
                    key: Some(t.default.key.clone()),
                    certificates: (!t.certificates.is_empty()).then(|| {
                        t.certificates
                            .iter()
                            .map(|c| FileCertificate {
                                cert: Some(c.cert.clone()),
                                key: Some(c.key.clone()),
                            })
                            .collect()
                    }),
                    session_tickets: Some(t.session_tickets),
                    client_ca: t.client_ca.clone(),
                    client_crl: t.client_crl.clone(),
                    client_auth: t.client_ca.as_ref().map(|_| {
                        if t.client_cert_optional {
                            "optional"
                        } else {
                            "required"
                        }
                        .to_owned()
                    }),
                }),
                accept_proxy_protocol: Some(l.accept_proxy_protocol),
                proxy_protocol_from: Some(
                    l.proxy_protocol_from
                        .iter()
                        .map(|n| n.to_string())
                        .collect(),
                ),
                max_flows: (l.protocol == Protocol::Udp).then_some(l.max_flows),
                priority_from: Some(l.priority_from.iter().map(|n| n.to_string()).collect()),
                location_from: Some(l.location_from.iter().map(|n| n.to_string()).collect()),
                geoip_db: l.geoip_db.clone(),
            })
            .collect(),
        cluster: config
            .clusters
            .iter()
            .map(|(name, c)| {
                let file = FileCluster {
                    algorithm: Some(c.algorithm.to_string()),
                    backends: Some(
                        c.backends
                            .iter()
                            .map(|b| FileBackend {
                                address: Some(b.address.clone()),
                                weight: Some(b.weight),
                                state: Some(b.state.as_str().to_owned()),
                                zone: b
                                    .location
                                    .as_ref()
                                    .and_then(|l| l.zone.as_deref().map(Into::into)),
                                region: b
                                    .location
                                    .as_ref()
                                    .and_then(|l| l.region.as_deref().map(Into::into)),
                                lat: b.location.as_ref().and_then(|l| l.point).map(|p| p.lat),
                                lon: b.location.as_ref().and_then(|l| l.point).map(|p| p.lon),
                                tls_sni: c
                                    .tls
                                    .as_ref()
                                    .and_then(|t| t.backend_sni.get(&b.address).cloned()),
                            })
                            .collect(),
                    ),
                    connect_timeout: Some(duration(c.connect_timeout)),
                    response_timeout: Some(duration(c.response_timeout)),
                    pool_idle_timeout: Some(duration(c.pool_idle_timeout)),
                    pool_max_idle: Some(c.pool_max_idle),
                    ewma_decay: Some(duration(c.ewma_decay)),
                    slow_start: Some(duration(c.slow_start)),
                    hash_key: Some(c.hash_key.to_string()),
                    balance_factor: Some(c.balance_factor),
                    load_reports: Some(c.load_reports),
                    http2: Some(c.http2),
                    health: c.health.as_ref().map(|h| FileHealth {
                        kind: Some(
                            match h.kind {
                                HealthKind::Http { .. } => "http",
                                HealthKind::Tcp => "tcp",
                                HealthKind::Grpc { .. } => "grpc",
                            }
                            .to_owned(),
                        ),
                        path: match &h.kind {
                            HealthKind::Http { path } => Some(path.clone()),
                            HealthKind::Tcp | HealthKind::Grpc { .. } => None,
                        },
                        service: match &h.kind {
                            HealthKind::Grpc { service } => Some(service.clone()),
                            HealthKind::Http { .. } | HealthKind::Tcp => None,
                        },
                        interval: Some(duration(h.interval)),
                        timeout: Some(duration(h.timeout)),
                        rise: Some(h.rise),
                        fall: Some(h.fall),
                        // Only http checks take these keys.
                        method: matches!(h.kind, HealthKind::Http { .. }).then(|| h.method.clone()),
                        host: h.host.clone(),
                        expect_status: matches!(h.kind, HealthKind::Http { .. }).then(|| {
                            h.expect_status
                                .iter()
                                .map(|(a, b)| {
                                    if a == b {
                                        a.to_string()
                                    } else {
                                        format!("{a}-{b}")
                                    }
                                })
                                .collect::<Vec<_>>()
                                .join(",")
                        }),
                        body_contains: h.body_contains.clone(),
                        jitter: Some(duration(h.jitter)),
                        unhealthy_interval: Some(duration(h.unhealthy_interval)),
                        send: h.send.clone(),
                        expect: h.expect.clone(),
                    }),
                    outlier: Some(FileOutlier {
                        consecutive_failures: Some(c.outlier.consecutive_failures),
                        base_ejection: Some(duration(c.outlier.base_ejection)),
                        max_ejection: Some(duration(c.outlier.max_ejection)),
                        max_ejection_percent: Some(c.outlier.max_ejection_percent),
                    }),
                    retries: Some(c.retries),
                    retry_budget: Some(c.retry_budget),
                    retry_budget_min: Some(c.retry_budget_min),
                    try_timeout: c.try_timeout.map(duration),
                    panic_threshold: Some(c.panic_threshold),
                    geo_max_in_flight: Some(c.geo_max_in_flight),
                    admission: c.admission.as_ref().map(|a| FileAdmission {
                        limit: Some(a.limit),
                        adaptive: Some(a.adaptive),
                        min_limit: a.adaptive.then_some(a.min_limit),
                        max_limit: a.adaptive.then_some(a.max_limit),
                        queue_timeout: Some(duration(a.queue_timeout)),
                        max_queue: Some(a.max_queue),
                        classes: Some(a.classes.clone()),
                        default_class: a.classes.get(a.default_rank as usize).cloned(),
                    }),
                    sticky: c.sticky.as_ref().map(|st| FileSticky {
                        cookie: Some(st.cookie.clone()),
                        ttl: Some(duration(st.ttl)),
                        // The signing secret is not shown.
                        secret: None,
                    }),
                    proxy_protocol: c.proxy_protocol.map(|p| {
                        match p {
                            ProxyProtocol::V1 => "v1",
                            ProxyProtocol::V2 => "v2",
                        }
                        .to_owned()
                    }),
                    tls: c.tls.as_ref().map(|t| FileUpstreamTls {
                        ca: t.ca.clone(),
                        sni: t.sni.clone(),
                        cert: t.client_cert.as_ref().map(|k| k.cert.clone()),
                        key: t.client_cert.as_ref().map(|k| k.key.clone()),
                        verify: Some(t.verify),
                    }),
                };
                (name.clone(), file)
            })
            .collect(),
    }
}

/// One L7 route in file shape.
fn route_to_file(r: &RouteConfig) -> FileRoute {
    let value_matches = |list: &[(String, ValueMatch)]| {
        (!list.is_empty()).then(|| {
            list.iter()
                .map(|(name, m)| {
                    let mut f = FileValueMatch::default();
                    match m {
                        ValueMatch::Present => f.present = Some(true),
                        ValueMatch::Absent => f.present = Some(false),
                        ValueMatch::Exact(v) => f.exact = Some(v.clone()),
                        ValueMatch::Regex(v) => f.regex = Some(v.clone()),
                    }
                    (name.clone(), f)
                })
                .collect()
        })
    };
    let rewrite = |h: &HeaderRewrite| {
        (!h.is_empty()).then(|| FileHeaderRewrite {
            set: (!h.set.is_empty()).then(|| h.set.iter().cloned().collect()),
            add: (!h.add.is_empty()).then(|| h.add.iter().cloned().collect()),
            remove: (!h.remove.is_empty()).then(|| h.remove.clone()),
        })
    };
    FileRoute {
        host: r.host.as_ref().map(host_match),
        path_prefix: r.path_prefix.clone(),
        path: r.path.clone(),
        path_regex: r.path_regex.clone(),
        methods: (!r.methods.is_empty()).then(|| r.methods.clone()),
        headers: value_matches(&r.headers),
        query: value_matches(&r.query),
        cluster: (!r.cluster.is_empty()).then(|| r.cluster.clone()),
        sni: None,
        priority: r.priority.clone(),
        max_body_bytes: r.max_body_bytes,
        allow: (!r.allow.is_empty()).then(|| r.allow.iter().map(|n| n.to_string()).collect()),
        deny: (!r.deny.is_empty()).then(|| r.deny.iter().map(|n| n.to_string()).collect()),
        clusters: (!r.split.is_empty()).then(|| {
            r.split
                .iter()
                .map(|w| FileWeightedCluster {
                    cluster: Some(w.cluster.clone()),
                    weight: Some(w.weight),
                })
                .collect()
        }),
        request_headers: rewrite(&r.request_headers),
        response_headers: rewrite(&r.response_headers),
        rewrite_prefix: r.rewrite_prefix.clone(),
        redirect: r.redirect.as_ref().map(|d| FileRedirect {
            scheme: d.scheme.clone(),
            host: d.host.clone(),
            path: d.path.clone(),
            status: Some(d.status),
        }),
        rate_limit: r.rate_limit.as_ref().map(|l| FileRateLimit {
            rate: Some(l.rate),
            per: Some(duration(l.per)),
            burst: Some(l.burst),
            key: Some(l.key.to_string()),
            redis: l.redis.clone(),
        }),
    }
}

/// The file spelling of a host match (`a.example.com`, `*.example.com`).
fn host_match(h: &HostMatch) -> String {
    match h {
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Suffix(s) => format!("*{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_config_parses_back_to_the_same_model() {
        let text = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
cluster = "app"
[[listener.route]]
host = "*.example.com"
path_prefix = "/v1"
cluster = "app"

[cluster.app]
algorithm = "least-conn"
slow_start = "1500ms"
backends = [ { address = "127.0.0.1:9001", weight = 2, state = "draining" } ]
[cluster.app.health]
type = "http"
path = "/up"

[cluster.kv]
backends = [ { address = "127.0.0.1:9002" } ]
[cluster.kv.health]
type = "tcp"
send = "PING\r\n"
expect = "+PONG"

[cluster.rpc]
http2 = true
backends = [ { address = "127.0.0.1:9003" } ]
[cluster.rpc.health]
type = "grpc"
service = "shop.Cart"
host = "rpc.internal"
"#;
        let config = fulcrum_config::parse(text, None).unwrap();
        let file = to_file(&config);
        let back = toml::to_string(&file).unwrap();
        let again = fulcrum_config::parse(&back, None).unwrap();
        assert_eq!(config, again, "{back}");
    }
}
