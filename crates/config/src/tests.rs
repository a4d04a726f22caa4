use super::*;

const GOOD: &str = r#"
[admin]
bind = "127.0.0.1:9090"

[[listener]]
name = "web"
bind = "127.0.0.1:8080"
protocol = "http"
cluster = "app"

[[listener.route]]
host = "api.example.com"
path_prefix = "/v1"
cluster = "api"

[cluster.app]
algorithm = "round-robin"
backends = [
  { address = "127.0.0.1:9001", weight = 1 },
  { address = "127.0.0.1:9002", weight = 2 },
]

[cluster.app.health]
type = "http"
path = "/healthz"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2

[cluster.api]
backends = [{ address = "localhost:9003" }]
"#;

fn problems(text: &str) -> Vec<Problem> {
    parse(text, Some("f.toml")).unwrap_err().problems
}

#[test]
fn parse_accepts_the_documented_example() {
    let c = parse(GOOD, None).expect("valid");
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].routes[0].cluster, "api");
    assert_eq!(c.clusters["app"].backends[1].weight, 2);
    assert_eq!(c.clusters["api"].backends[0].weight, 1);
    let h = c.clusters["app"].health.as_ref().unwrap();
    assert_eq!(h.timeout, std::time::Duration::from_millis(500));
}

#[test]
fn parse_names_a_typo_key_its_line_and_suggestion() {
    let text = GOOD.replace("algorithm = \"round-robin\"", "algoritm = \"round-robin\"");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "cluster.app.algoritm");
    assert!(
        p[0].message.contains("did you mean `algorithm`"),
        "{}",
        p[0].message
    );
    assert_eq!(p[0].line, Some(17));
    let shown = parse(&text, Some("f.toml")).unwrap_err().to_string();
    assert!(
        shown.starts_with("error: f.toml:17: `cluster.app.algoritm`"),
        "{shown}"
    );
}

#[test]
fn parse_rejects_unknown_algorithm_listing_the_known_ones() {
    let text = GOOD.replace("\"round-robin\"", "\"round-robbin\"");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "cluster.app.algorithm");
    assert!(p[0].message.contains("unknown algorithm `round-robbin`"));
    assert!(p[0].message.contains("did you mean `round-robin`"));
}

#[test]
fn parse_rejects_a_cluster_without_backends() {
    let text = GOOD.replace(
        "backends = [{ address = \"localhost:9003\" }]",
        "backends = []",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "cluster.api.backends");
    assert!(p[0].message.contains("no backends"));
}

#[test]
fn parse_reports_every_problem_at_once() {
    let text = GOOD
        .replace(
            "algorithm = \"round-robin\"",
            "algorithm = \"nope\"\ncolour = 1",
        )
        .replace("bind = \"127.0.0.1:8080\"", "bind = \"localhost\"")
        .replace("interval = \"1s\"", "interval = \"soon\"");
    let p = problems(&text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "listener[0].bind",
            "cluster.app.algorithm",
            "cluster.app.colour",
            "cluster.app.health.interval"
        ]
    );
    assert!(p.iter().all(|p| p.line.is_some()), "{p:?}");
}

#[test]
fn parse_reports_type_errors_with_a_line() {
    let text = GOOD.replace("weight = 2", "weight = \"two\"");
    let p = problems(&text);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, Some(20));
    assert!(p[0].message.contains("invalid type"), "{}", p[0].message);
}

#[test]
fn parse_requires_a_token_for_a_public_admin() {
    let text = GOOD.replace("bind = \"127.0.0.1:9090\"", "bind = \"0.0.0.0:9090\"");
    let p = problems(&text);
    assert_eq!(p[0].key, "admin.token_file");
}

#[test]
fn parse_rejects_unknown_cluster_references() {
    let text = GOOD.replace("cluster = \"api\"", "cluster = \"apu\"");
    let p = problems(&text);
    assert_eq!(p[0].key, "listener[0].route[0].cluster");
    assert!(p[0].message.contains("did you mean `api`"));
}

#[test]
fn key_lists_match_the_file_shapes() {
    // Serialising fully populated shapes yields exactly the documented keys,
    // so the suggestion lists cannot drift from the structs.
    fn keys<T: serde::Serialize>(v: &T) -> Vec<String> {
        let t = toml::Value::try_from(v).unwrap();
        let mut k: Vec<String> = t.as_table().unwrap().keys().cloned().collect();
        k.sort();
        k
    }
    fn sorted(k: &[&str]) -> Vec<String> {
        let mut k: Vec<String> = k.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    }
    let s = || Some(String::from("x"));
    let listener = file::FileListener {
        name: s(),
        bind: s(),
        protocol: s(),
        cluster: s(),
        header_timeout: s(),
        idle_timeout: s(),
        max_header_bytes: Some(1),
        max_headers: Some(1),
        max_connections: Some(1),
        max_uri_bytes: Some(1),
        max_body_bytes: Some(1),
        max_requests_per_connection: Some(1),
        body_timeout: s(),
        min_body_rate: Some(1),
        max_concurrent_streams: Some(1),
        max_connections_per_ip: Some(1),
        debug_from: Some(vec![]),
        priority_from: Some(vec![]),
        location_from: Some(vec![]),
        geoip_db: s(),
        route: vec![],
        tls: Some(file::FileTls::default()),
        accept_proxy_protocol: Some(true),
        proxy_protocol_from: Some(vec![]),
        max_flows: Some(1),
        allow: Some(vec![]),
        deny: Some(vec![]),
        trusted_proxies: Some(vec![]),
        defer_accept: Some(true),
        access_log: s(),
        access_log_format: s(),
        request_id: Some(true),
    };
    assert_eq!(keys(&listener), sorted(file::FileListener::KEYS));
    let value_match = file::FileValueMatch {
        present: Some(true),
        exact: s(),
        regex: s(),
    };
    assert_eq!(keys(&value_match), sorted(file::FileValueMatch::KEYS));
    let one = |v: file::FileValueMatch| Some([("x".to_owned(), v)].into_iter().collect());
    let weighted = file::FileWeightedCluster {
        cluster: s(),
        weight: Some(1),
    };
    assert_eq!(keys(&weighted), sorted(file::FileWeightedCluster::KEYS));
    let rewrite = file::FileHeaderRewrite {
        set: Some(Default::default()),
        add: Some(Default::default()),
        remove: Some(vec![]),
    };
    assert_eq!(keys(&rewrite), sorted(file::FileHeaderRewrite::KEYS));
    let redirect = file::FileRedirect {
        scheme: s(),
        host: s(),
        path: s(),
        status: Some(301),
    };
    assert_eq!(keys(&redirect), sorted(file::FileRedirect::KEYS));
    let rate_limit = file::FileRateLimit {
        rate: Some(1),
        per: s(),
        burst: Some(1),
        key: s(),
        redis: s(),
    };
    assert_eq!(keys(&rate_limit), sorted(file::FileRateLimit::KEYS));
    let sticky = file::FileSticky {
        cookie: s(),
        ttl: s(),
        secret: s(),
    };
    assert_eq!(keys(&sticky), sorted(file::FileSticky::KEYS));
    let route = file::FileRoute {
        host: s(),
        path_prefix: s(),
        path: s(),
        path_regex: s(),
        methods: Some(vec![]),
        headers: one(value_match.clone()),
        query: one(value_match),
        cluster: s(),
        sni: s(),
        clusters: Some(vec![weighted]),
        request_headers: Some(rewrite.clone()),
        response_headers: Some(rewrite),
        rewrite_prefix: s(),
        redirect: Some(redirect),
        rate_limit: Some(rate_limit),
        priority: s(),
        max_body_bytes: Some(1),
        allow: Some(vec![]),
        deny: Some(vec![]),
    };
    assert_eq!(keys(&route), sorted(file::FileRoute::KEYS));
    let certificate = file::FileCertificate {
        cert: s(),
        key: s(),
    };
    assert_eq!(keys(&certificate), sorted(file::FileCertificate::KEYS));
    let tls = file::FileTls {
        cert: s(),
        key: s(),
        certificates: Some(vec![certificate]),
        session_tickets: Some(true),
        client_ca: s(),
        client_auth: s(),
        client_crl: s(),
    };
    assert_eq!(keys(&tls), sorted(file::FileTls::KEYS));
    let health = file::FileHealth {
        kind: s(),
        path: s(),
        interval: s(),
        timeout: s(),
        rise: Some(1),
        fall: Some(1),
        method: s(),
        host: s(),
        expect_status: s(),
        body_contains: s(),
        jitter: s(),
        unhealthy_interval: s(),
        send: s(),
        expect: s(),
        service: s(),
    };
    let outlier = file::FileOutlier {
        consecutive_failures: Some(1),
        base_ejection: s(),
        max_ejection: s(),
        max_ejection_percent: Some(1),
    };
    assert_eq!(keys(&outlier), sorted(file::FileOutlier::KEYS));
    let cluster = file::FileCluster {
        algorithm: s(),
        backends: Some(vec![]),
        connect_timeout: s(),
        response_timeout: s(),
        pool_idle_timeout: s(),
        pool_max_idle: Some(1),
        ewma_decay: s(),
        slow_start: s(),
        hash_key: s(),
        balance_factor: Some(1.5),
        load_reports: Some(true),
        http2: Some(true),
        health: Some(health.clone()),
        outlier: Some(outlier),
        retries: Some(1),
        retry_budget: Some(0.2),
        retry_budget_min: Some(1),
        try_timeout: s(),
        panic_threshold: Some(1),
        proxy_protocol: s(),
        sticky: Some(sticky),
        geo_max_in_flight: Some(1),
        admission: Some(file::FileAdmission::default()),
        tls: Some(file::FileUpstreamTls::default()),
    };
    assert_eq!(keys(&cluster), sorted(file::FileCluster::KEYS));
    let upstream_tls = file::FileUpstreamTls {
        ca: s(),
        sni: s(),
        cert: s(),
        key: s(),
        verify: Some(true),
    };
    assert_eq!(keys(&upstream_tls), sorted(file::FileUpstreamTls::KEYS));
    let admission = file::FileAdmission {
        limit: Some(1),
        adaptive: Some(true),
        min_limit: Some(1),
        max_limit: Some(1),
        queue_timeout: s(),
        max_queue: Some(1),
        classes: Some(vec![]),
        default_class: s(),
    };
    assert_eq!(keys(&admission), sorted(file::FileAdmission::KEYS));
    assert_eq!(keys(&health), sorted(file::FileHealth::KEYS));
    let backend = file::FileBackend {
        address: s(),
        weight: Some(1),
        state: s(),
        zone: s(),
        region: s(),
        lat: Some(1.0),
        lon: Some(1.0),
        tls_sni: s(),
    };
    assert_eq!(keys(&backend), sorted(file::FileBackend::KEYS));
    let admin = file::FileAdmin {
        bind: s(),
        token_file: s(),
    };
    assert_eq!(keys(&admin), sorted(file::FileAdmin::KEYS));
}

#[test]
fn commands_edit_the_model_or_leave_it_unchanged() {
    let mut c = parse(GOOD, None).unwrap();
    let before = c.clone();
    let add = |address: &str| Command::AddBackend {
        cluster: "app".into(),
        backend: BackendConfig {
            address: address.into(),
            weight: 3,
            state: Default::default(),
            location: None,
        },
    };
    c.apply(add("127.0.0.1:9005")).unwrap();
    assert_eq!(c.clusters["app"].backends.len(), 3);
    assert!(matches!(
        c.apply(add("127.0.0.1:9005")),
        Err(CommandError::DuplicateBackend { .. })
    ));
    assert!(matches!(
        c.apply(add("nonsense")),
        Err(CommandError::Invalid {
            field: "address",
            ..
        })
    ));
    c.apply(Command::UpdateBackend {
        cluster: "app".into(),
        address: "127.0.0.1:9005".into(),
        weight: Some(7),
        state: Some(fulcrum_balance::AdminState::Draining),
    })
    .unwrap();
    assert_eq!(c.clusters["app"].backends[2].weight, 7);
    c.apply(Command::RemoveBackend {
        cluster: "app".into(),
        address: "127.0.0.1:9005".into(),
    })
    .unwrap();
    assert_eq!(c, before);
    assert!(c
        .apply(Command::RemoveBackend {
            cluster: "nope".into(),
            address: "x:1".into()
        })
        .is_err());
}

#[test]
fn ipnet_contains_matches_prefixes() {
    let n = IpNet::parse("127.0.0.0/8").unwrap();
    assert!(n.contains("127.1.2.3".parse().unwrap()));
    assert!(!n.contains("10.0.0.1".parse().unwrap()));
    assert!(IpNet::parse("::1")
        .unwrap()
        .contains("::1".parse().unwrap()));
    assert!(IpNet::parse("1.2.3.4/33").is_none());
    assert!(IpNet::parse("0.0.0.0/0")
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
}

#[test]
fn parse_accepts_health_outlier_and_retry_keys() {
    let text = GOOD.replace(
        "rise = 2\nfall = 2\n",
        "rise = 2\nfall = 2\nmethod = \"HEAD\"\nhost = \"app.internal\"\nexpect_status = \"200-299, 404\"\nbody_contains = \"ok\"\njitter = \"50ms\"\nunhealthy_interval = \"250ms\"\n",
    ) + "retries = 1\nretry_budget = 0.1\nretry_budget_min = 3\ntry_timeout = \"2s\"\npanic_threshold = 30\n\n[cluster.api.outlier]\nconsecutive_failures = 7\nbase_ejection = \"10s\"\nmax_ejection = \"1m\"\nmax_ejection_percent = 25\n";
    let c = parse(&text, None).expect("valid");
    let h = c.clusters["app"].health.as_ref().unwrap();
    assert_eq!(h.method, "HEAD");
    assert_eq!(h.host.as_deref(), Some("app.internal"));
    assert_eq!(h.expect_status, vec![(200, 299), (404, 404)]);
    assert!(h.accepts_status(404) && !h.accepts_status(500));
    assert_eq!(h.jitter, std::time::Duration::from_millis(50));
    assert_eq!(h.unhealthy_interval, std::time::Duration::from_millis(250));
    let api = &c.clusters["api"];
    assert_eq!(api.retries, 1);
    assert_eq!(api.retry_budget, 0.1);
    assert_eq!(api.retry_budget_min, 3);
    assert_eq!(api.try_timeout, Some(std::time::Duration::from_secs(2)));
    assert_eq!(api.panic_threshold, 30);
    assert_eq!(api.outlier.consecutive_failures, 7);
    assert_eq!(api.outlier.max_ejection_percent, 25);
    // Defaults follow the interval.
    let d = &parse(GOOD, None).unwrap().clusters["app"];
    let h = d.health.as_ref().unwrap();
    assert_eq!(h.unhealthy_interval, std::time::Duration::from_millis(500));
    assert_eq!(h.expect_status, vec![(200, 399)]);
    assert_eq!(d.retries, 2);
    assert_eq!(d.panic_threshold, 50);
}

#[test]
fn parse_rejects_bad_health_and_retry_values_naming_the_key() {
    let text = GOOD.replace(
        "rise = 2\n",
        "rise = 2\nexpect_status = \"200-99\"\nmethod = \"get\"\n",
    ) + "retries = 9\nretry_budget = 1.5\ntry_timeout = \"1m\"\npanic_threshold = 120\n\n[cluster.api.outlier]\nmax_ejection_percent = 101\nbase_ejection = \"10s\"\nmax_ejection = \"1s\"\nconsecutive_failurs = 3\n";
    let p = problems(&text);
    let mut keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cluster.api.outlier.consecutive_failurs",
            "cluster.api.outlier.max_ejection",
            "cluster.api.outlier.max_ejection_percent",
            "cluster.api.panic_threshold",
            "cluster.api.retries",
            "cluster.api.retry_budget",
            "cluster.api.try_timeout",
            "cluster.app.health.expect_status",
            "cluster.app.health.method",
        ],
        "{p:?}"
    );
    let typo = p
        .iter()
        .find(|p| p.key.ends_with("consecutive_failurs"))
        .unwrap();
    assert!(
        typo.message.contains("did you mean `consecutive_failures`"),
        "{}",
        typo.message
    );
}

const L4: &str = r#"
[[listener]]
name = "tcp"
bind = "127.0.0.1:7000"
protocol = "tcp"
cluster = "app"
accept_proxy_protocol = true
proxy_protocol_from = ["10.0.0.0/8"]

[[listener.route]]
sni = "*.example.com"
cluster = "app"

[[listener]]
name = "dns"
bind = "127.0.0.1:5353"
protocol = "udp"
cluster = "app"
max_flows = 100

[cluster.app]
algorithm = "maglev"
proxy_protocol = "v2"
backends = [{ address = "127.0.0.1:9001" }]
"#;

#[test]
fn parse_accepts_tcp_and_udp_listeners_with_l4_keys() {
    let c = parse(L4, None).expect("valid");
    let tcp = &c.listeners[0];
    assert_eq!(tcp.protocol, Protocol::Tcp);
    assert!(tcp.accept_proxy_protocol);
    assert_eq!(tcp.proxy_protocol_from[0].prefix, 8);
    assert_eq!(
        tcp.sni_routes[0].sni,
        HostMatch::Suffix(".example.com".into())
    );
    assert!(tcp.routes.is_empty());
    assert_eq!(c.listeners[1].max_flows, 100);
    assert_eq!(c.clusters["app"].proxy_protocol, Some(ProxyProtocol::V2));
}

#[test]
fn defer_accept_defaults_on_where_clients_speak_first_and_is_refused_on_udp() {
    let http = parse(GOOD, None).expect("valid");
    assert!(http.listeners[0].defer_accept);
    let off = GOOD.replace(
        "protocol = \"http\"",
        "protocol = \"http\"\ndefer_accept = false",
    );
    assert!(!parse(&off, None).expect("valid").listeners[0].defer_accept);
    // The example's tcp listener reads a PROXY header and routes by SNI:
    // its clients speak first.
    let l4 = parse(L4, None).expect("valid");
    assert!(l4.listeners[0].defer_accept);
    let plain = L4
        .replace("accept_proxy_protocol = true\n", "")
        .replace("proxy_protocol_from = [\"10.0.0.0/8\"]\n", "")
        .replace(
            "[[listener.route]]\nsni = \"*.example.com\"\ncluster = \"app\"\n",
            "",
        );
    let plain = parse(&plain, None).expect("valid");
    let tcp = &plain.listeners[0];
    assert!(tcp.sni_routes.is_empty() && !tcp.accept_proxy_protocol);
    assert!(
        !tcp.defer_accept,
        "a plain tcp listener may carry a server-first protocol"
    );
    let off = L4.replace(
        "protocol = \"tcp\"",
        "protocol = \"tcp\"\ndefer_accept = false",
    );
    assert!(!parse(&off, None).expect("valid").listeners[0].defer_accept);
    let udp = L4.replace("max_flows = 100", "max_flows = 100\ndefer_accept = true");
    let found = problems(&udp);
    assert!(
        found
            .iter()
            .any(|p| p.key == "listener[1].defer_accept" && p.message.contains("udp")),
        "{found:?}"
    );
}

#[test]
fn parse_refuses_misplaced_l4_keys_naming_them() {
    let text = L4
        .replace("proxy_protocol = \"v2\"", "proxy_protocol = \"v3\"")
        .replace("sni = \"*.example.com\"", "host = \"a.example.com\"")
        .replace(
            "max_flows = 100",
            "max_flows = 100\naccept_proxy_protocol = true",
        );
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    for k in [
        "cluster.app.proxy_protocol",
        "listener[0].route[0].host",
        "listener[0].route[0].sni",
        "listener[1].accept_proxy_protocol",
        "listener[1].proxy_protocol_from",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
    }
}

#[test]
fn parse_refuses_tls_with_missing_files() {
    let text = GOOD.replace(
        "protocol = \"http\"",
        "protocol = \"http\"\ntls = { cert = \"/nonexistent/a.crt\", client_ca = \"/nonexistent/clients.pem\" }",
    );
    let p = problems(&text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"listener[0].tls.cert"), "{p:?}");
    assert!(keys.contains(&"listener[0].tls.key"), "{p:?}");
    let ca = p
        .iter()
        .find(|p| p.key == "listener[0].tls.client_ca")
        .unwrap_or_else(|| panic!("no client_ca problem in {p:?}"));
    assert!(
        ca.message
            .contains("cannot read `/nonexistent/clients.pem`"),
        "{ca:?}"
    );
}

const ROUTING: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:8080"

[[listener.route]]
path = "/exact"
methods = ["GET", "HEAD"]
headers = { x-canary = { present = true }, x-user = { exact = "alice" }, x-agent = { regex = "^curl/" } }
query = { debug = { exact = "1" }, beta = { present = true } }
cluster = "app"

[[listener.route]]
path_regex = "^/items/[0-9]+$"
clusters = [{ cluster = "app", weight = 90 }, { cluster = "api", weight = 10 }]
request_headers = { set = { x-env = "prod" }, add = { x-tag = "a" }, remove = ["x-debug"] }
response_headers = { set = { Cache-Control = "no-store" } }
rate_limit = { rate = 100, per = "1s", burst = 20, key = "header:X-Api-Key" }

[[listener.route]]
path_prefix = "/old/"
rewrite_prefix = "/new/"
redirect = { scheme = "https", status = 308 }

[cluster.app]
backends = [{ address = "127.0.0.1:9001" }]
sticky = { cookie = "sid", ttl = "30m" }

[cluster.api]
backends = [{ address = "127.0.0.1:9002" }]
"#;

#[test]
fn parse_accepts_every_route_matcher_and_action() {
    let c = parse(ROUTING, None).expect("valid");
    let r = &c.listeners[0].routes;
    assert_eq!(r[0].path.as_deref(), Some("/exact"));
    assert_eq!(r[0].methods, ["GET", "HEAD"]);
    assert!(r[0]
        .headers
        .contains(&("x-user".into(), ValueMatch::Exact("alice".into()))));
    assert!(r[0]
        .headers
        .contains(&("x-canary".into(), ValueMatch::Present)));
    assert!(r[0].query.contains(&("beta".into(), ValueMatch::Present)));
    assert_eq!(r[0].cluster, "app");
    assert_eq!(r[1].cluster, "");
    assert_eq!(r[1].split[1].cluster, "api");
    assert_eq!(r[1].split[1].weight, 10);
    assert_eq!(r[1].request_headers.remove, ["x-debug"]);
    assert_eq!(
        r[1].response_headers.set,
        [("cache-control".to_owned(), "no-store".to_owned())]
    );
    let rl = r[1].rate_limit.as_ref().unwrap();
    assert_eq!((rl.rate, rl.burst), (100, 20));
    assert_eq!(rl.key, RateLimitKey::Header("x-api-key".into()));
    let redirect = r[2].redirect.as_ref().unwrap();
    assert_eq!(redirect.status, 308);
    assert_eq!(r[2].rewrite_prefix.as_deref(), Some("/new/"));
    let sticky = c.clusters["app"].sticky.as_ref().unwrap();
    assert_eq!(sticky.cookie, "sid");
    assert_eq!(sticky.ttl, std::time::Duration::from_secs(1800));
    assert_eq!(c.clusters["api"].sticky, None);
}

#[test]
fn parse_rejects_bad_route_keys_naming_each() {
    let text = ROUTING
        .replace("\"^/items/[0-9]+$\"", "\"^/items/[0-9+$\"")
        .replace("[\"GET\", \"HEAD\"]", "[\"get\"]")
        .replace(
            "{ present = true }, x-user",
            "{ present = true, exact = \"1\" }, x-user",
        )
        .replace("weight = 10 }", "weight = 10, wieght = 1 }")
        .replace("status = 308", "status = 200")
        .replace("key = \"header:X-Api-Key\"", "key = \"cookie:x\"")
        .replace("rate = 100,", "rate = 0,")
        .replace("ttl = \"30m\"", "ttl = \"soon\"")
        .replace("path_prefix = \"/old/\"\n", "");
    let p = problems(&text);
    let mut keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cluster.app.sticky.ttl",
            "listener[0].route[0].headers.x-canary",
            "listener[0].route[0].methods[0]",
            "listener[0].route[1].clusters[1].wieght",
            "listener[0].route[1].path_regex",
            "listener[0].route[1].rate_limit.key",
            "listener[0].route[1].rate_limit.rate",
            "listener[0].route[2].redirect.status",
            "listener[0].route[2].rewrite_prefix",
        ],
        "{p:?}"
    );
    let typo = p.iter().find(|p| p.key.ends_with("wieght")).unwrap();
    assert!(typo.message.contains("did you mean `weight`"), "{typo:?}");
}

#[test]
fn parse_rejects_routes_with_two_targets_or_none() {
    let text = ROUTING.replace("clusters = [", "cluster = \"app\"\nclusters = [");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "listener[0].route[1].clusters");
    let text = ROUTING.replace("redirect = { scheme = \"https\", status = 308 }", "");
    let p = problems(&text);
    assert_eq!(p[0].key, "listener[0].route[2].cluster");
    let text = ROUTING
        .replace("weight = 90", "weight = 0")
        .replace("weight = 10", "weight = 0");
    let p = problems(&text);
    assert_eq!(p[0].key, "listener[0].route[1].clusters");
    assert!(p[0].message.contains("every weight is 0"), "{p:?}");
}

const PRIORITIES: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:8080"
cluster = "app"
priority_from = ["10.0.0.0/8"]
location_from = ["10.1.0.0/16"]

[[listener.route]]
path_prefix = "/batch"
cluster = "app"
priority = "bulk"

[cluster.app]
algorithm = "geo"
geo_max_in_flight = 8
backends = [
  { address = "127.0.0.1:9001", zone = "eu-west", region = "eu", lat = 53.3, lon = -6.3 },
  { address = "127.0.0.1:9002" },
]

[cluster.app.admission]
limit = 50
queue_timeout = "250ms"
max_queue = 100
"#;

#[test]
fn parse_accepts_admission_priority_and_geo_keys() {
    let c = parse(PRIORITIES, None).expect("valid");
    let l = &c.listeners[0];
    assert_eq!(l.priority_from[0].to_string(), "10.0.0.0/8");
    assert_eq!(l.location_from.len(), 1);
    assert_eq!(l.routes[0].priority.as_deref(), Some("bulk"));
    let app = &c.clusters["app"];
    assert_eq!(app.geo_max_in_flight, 8);
    let a = app.admission.as_ref().unwrap();
    assert_eq!((a.limit, a.adaptive, a.max_queue), (50, false, 100));
    assert_eq!(a.queue_timeout, std::time::Duration::from_millis(250));
    assert_eq!(a.classes, ["critical", "normal", "bulk"]);
    assert_eq!((a.default_rank, a.rank("bulk")), (1, Some(2)));
    let loc = app.backends[0].location.as_ref().unwrap();
    assert_eq!(loc.zone.as_deref(), Some("eu-west"));
    assert_eq!(loc.point.unwrap().lat, 53.3);
    assert!(app.backends[1].location.is_none());
}

#[test]
fn parse_rejects_bad_admission_and_geo_values_naming_the_key() {
    let text = PRIORITIES
        .replace("priority = \"bulk\"", "priority = \"urgent\"")
        .replace("lon = -6.3", "lon = -196.3")
        .replace("limit = 50", "classes = [\"gold\", \"gold\"]");
    let p = problems(&text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"listener[0].route[0].priority"), "{p:?}");
    assert!(keys.contains(&"cluster.app.backends[0].lat"), "{p:?}");
    assert!(keys.contains(&"cluster.app.admission.limit"), "{p:?}");
    assert!(keys.contains(&"cluster.app.admission.classes"), "{p:?}");
}

#[test]
fn load_refuses_a_geoip_db_that_is_missing_or_not_a_maxmind_file() {
    let dir = std::env::temp_dir().join(format!("fulcrum-config-geoip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_at = |db: &std::path::Path| {
        let text = GOOD.replacen(
            "protocol = \"http\"\n",
            &format!(
                "protocol = \"http\"\ngeoip_db = {:?}\n",
                db.to_str().unwrap()
            ),
            1,
        );
        let path = dir.join("fulcrum.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    };
    let err = config_at(&dir.join("missing.mmdb")).unwrap_err();
    assert_eq!(err.problems[0].key, "listener[0].geoip_db", "{err}");
    assert!(err.problems[0].line.is_some(), "{err}");
    let bogus = dir.join("bogus.mmdb");
    std::fs::write(&bogus, "not a database").unwrap();
    let err = config_at(&bogus).unwrap_err();
    assert!(err.problems[0].message.contains("MaxMind"), "{err}");
    let good = dir.join("good.mmdb");
    std::fs::write(&good, b"...tree...\xAB\xCD\xEFMaxMind.com...metadata...").unwrap();
    assert!(config_at(&good).is_ok());
    // Parsing text alone reads no files.
    let text = GOOD.replacen(
        "protocol = \"http\"\n",
        "protocol = \"http\"\ngeoip_db = \"/nope.mmdb\"\n",
        1,
    );
    assert!(parse(&text, None).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn parse_accepts_upstream_tls_and_tcp_check_bytes() {
    let dir = std::env::temp_dir().join(format!("fulcrum-config-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let text = GOOD
        .replace(
            "{ address = \"127.0.0.1:9002\", weight = 2 },",
            "{ address = \"127.0.0.1:9002\", weight = 2, tls_sni = \"b.internal\" },",
        )
        .replace(
            "[cluster.app.health]",
            &format!(
                "tls = {{ ca = \"{}\", sni = \"app.internal\" }}\n[cluster.app.health]",
                ca.display()
            ),
        )
        .replace(
            "[cluster.api]\n",
            "[cluster.api]\nhealth = { type = \"tcp\", send = \"PING\\r\\n\", expect = \"+PONG\" }\n",
        );
    let c = parse(&text, None).unwrap();
    let tls = c.clusters["app"].tls.as_ref().unwrap();
    assert_eq!(tls.sni.as_deref(), Some("app.internal"));
    assert!(tls.verify);
    assert_eq!(tls.backend_sni["127.0.0.1:9002"], "b.internal");
    let h = c.clusters["api"].health.as_ref().unwrap();
    assert_eq!(h.send.as_deref(), Some("PING\r\n"));
    assert_eq!(h.expect.as_deref(), Some("+PONG"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn parse_refuses_bad_upstream_tls_naming_the_key() {
    let text = GOOD
        .replace(
            "{ address = \"localhost:9003\" }",
            "{ address = \"localhost:9003\", tls_sni = \"x\" }",
        )
        .replace(
            "[cluster.app.health]",
            "tls = { ca = \"/nonexistent/ca.pem\", cert = \"/nonexistent/c.crt\" }\n[cluster.app.health]\nsend = \"PING\"",
        );
    let p = problems(&text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "cluster.app.tls.ca",
        "cluster.app.tls.cert",
        "cluster.app.tls.key",
        "cluster.api.backends[0].tls_sni",
        "cluster.app.health.send",
    ] {
        assert!(keys.contains(&k), "{k} missing from {p:?}");
    }
    let ca = p.iter().find(|p| p.key == "cluster.app.tls.ca").unwrap();
    assert!(
        ca.message.contains("cannot read `/nonexistent/ca.pem`"),
        "{ca:?}"
    );

    // A tcp listener would forward in plain text: refused.
    let l4 = "[[listener]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"db\"\n\
              [cluster.db]\nbackends = [{ address = \"127.0.0.1:5432\" }]\ntls = { verify = false }\n";
    let keys: Vec<String> = problems(l4).into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["cluster.db.tls"]);
}

const BODY_AND_ACCESS: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
cluster = "app"
max_body_bytes = 1000
body_timeout = "5s"
min_body_rate = 200
max_concurrent_streams = 32

[[listener.route]]
path_prefix = "/upload"
cluster = "app"
max_body_bytes = 100000
allow = ["10.0.0.0/8", "::1"]
deny = ["10.9.0.0/16"]

[cluster.app]
backends = [{ address = "127.0.0.1:9001" }]
"#;

#[test]
fn parse_accepts_body_rate_stream_and_route_access_keys() {
    let c = parse(BODY_AND_ACCESS, None).expect("valid");
    let l = &c.listeners[0];
    assert_eq!(l.limits.body_timeout, std::time::Duration::from_secs(5));
    assert_eq!(l.limits.min_body_rate, 200);
    assert_eq!(l.limits.max_concurrent_streams, 32);
    let r = &l.routes[0];
    assert_eq!(r.max_body_bytes, Some(100_000));
    assert_eq!(
        r.allow,
        [
            IpNet::parse("10.0.0.0/8").unwrap(),
            IpNet::parse("::1").unwrap()
        ]
    );
    assert_eq!(r.deny, [IpNet::parse("10.9.0.0/16").unwrap()]);
    // Defaults: on, and documented.
    let d = &parse(GOOD, None).unwrap().listeners[0];
    assert_eq!(d.limits.body_timeout, DEFAULT_BODY_TIMEOUT);
    assert_eq!(d.limits.min_body_rate, DEFAULT_MIN_BODY_RATE);
    assert_eq!(
        d.limits.max_concurrent_streams,
        DEFAULT_MAX_CONCURRENT_STREAMS
    );
    assert_eq!(d.routes[0].max_body_bytes, None);
    assert!(d.routes[0].allow.is_empty() && d.routes[0].deny.is_empty());
}

#[test]
fn parse_rejects_bad_body_rate_stream_and_route_access_values_naming_the_key() {
    let text = BODY_AND_ACCESS
        .replace("body_timeout = \"5s\"", "body_timeout = \"0s\"")
        .replace("max_concurrent_streams = 32", "max_concurrent_streams = 0")
        .replace("\"::1\"]", "\"not-a-net\"]")
        .replace(
            "deny = [\"10.9.0.0/16\"]",
            "deny = [\"10.9.0.0/99\"]\nmax_body_byte = 5",
        );
    let p = problems(&text);
    let mut keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "listener[0].body_timeout",
            "listener[0].max_concurrent_streams",
            "listener[0].route[0].allow[1]",
            "listener[0].route[0].deny[0]",
            "listener[0].route[0].max_body_byte",
        ],
        "{p:?}"
    );
    let typo = p.iter().find(|p| p.key.ends_with("max_body_byte")).unwrap();
    assert!(typo.message.contains("`max_body_bytes`"), "{typo:?}");
    // Body and stream limits belong to http listeners; route limits to http routes.
    let tcp = "[[listener]]\nname = \"l4\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nmin_body_rate = 1\nmax_concurrent_streams = 4\n\n[[listener.route]]\nsni = \"a.example.com\"\ncluster = \"app\"\nallow = [\"10.0.0.0/8\"]\n\n[cluster.app]\nbackends = [{ address = \"127.0.0.1:9001\" }]\n";
    let p = problems(tcp);
    let mut keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "listener[0].max_concurrent_streams",
            "listener[0].min_body_rate",
            "listener[0].route[0].allow",
        ],
        "{p:?}"
    );
}

#[test]
fn grpc_checks_and_http2_parse_and_misplaced_keys_are_named() {
    let text = GOOD.replace(
        "[cluster.api]\n",
        "[cluster.api]\nhttp2 = true\nhealth = { type = \"grpc\", service = \"shop.Cart\", host = \"rpc.internal\" }\n",
    );
    let c = parse(&text, None).unwrap();
    let api = &c.clusters["api"];
    assert!(api.http2);
    assert!(!c.clusters["app"].http2, "HTTP/1.1 by default");
    let h = api.health.as_ref().unwrap();
    assert_eq!(
        h.kind,
        HealthKind::Grpc {
            service: "shop.Cart".into()
        }
    );
    assert_eq!(h.host.as_deref(), Some("rpc.internal"));

    let text = GOOD.replace(
        "[cluster.api]\n",
        "[cluster.api]\nhealth = { type = \"grpc\", path = \"/x\", method = \"GET\", expect_status = \"200\" }\n",
    );
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    for k in [
        "cluster.api.health.path",
        "cluster.api.health.method",
        "cluster.api.health.expect_status",
    ] {
        assert!(keys.contains(&k.to_owned()), "{k} missing from {keys:?}");
    }
    let text = GOOD.replace(
        "[cluster.api]\n",
        "[cluster.api]\nhealth = { type = \"http\", service = \"x\" }\n",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "cluster.api.health.service");
    assert!(p[0].message.contains("only grpc checks"), "{p:?}");
    let text = GOOD.replace(
        "[cluster.api]\n",
        "[cluster.api]\nhealth = { type = \"grcp\" }\n",
    );
    let p = problems(&text);
    assert!(p[0].message.contains("expected http, tcp or grpc"), "{p:?}");
}

#[test]
fn client_auth_needs_client_ca_and_a_known_mode() {
    let listener = |tls: &str| {
        format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\
             tls = {{ cert = \"/nonexistent/a.crt\", key = \"/nonexistent/a.key\", {tls} }}\n\
             [cluster.app]\nbackends = [{{ address = \"127.0.0.1:9001\" }}]\n"
        )
    };
    let keys = |tls: &str| -> Vec<(String, String)> {
        problems(&listener(tls))
            .into_iter()
            .filter(|p| p.key.ends_with("client_auth"))
            .map(|p| (p.key, p.message))
            .collect()
    };
    let p = keys("client_auth = \"optional\"");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "listener[0].tls.client_auth");
    assert!(p[0].1.contains("needs client_ca"), "{p:?}");
    let p = keys("client_ca = \"/nonexistent/ca.pem\", client_auth = \"sometimes\"");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].1.contains("\"required\" or \"optional\""), "{p:?}");
    assert!(keys("client_ca = \"/nonexistent/ca.pem\", client_auth = \"optional\"").is_empty());

    let crl = |tls: &str| -> Vec<String> {
        problems(&listener(tls))
            .into_iter()
            .filter(|p| p.key.ends_with("client_crl"))
            .map(|p| p.message)
            .collect()
    };
    let p = crl("client_crl = \"/nonexistent/c.crl\"");
    assert!(p.iter().any(|m| m.contains("needs client_ca")), "{p:?}");
    assert!(
        p.iter()
            .any(|m| m.contains("cannot read `/nonexistent/c.crl`")),
        "{p:?}"
    );
    let dir = std::env::temp_dir().join(format!("fulcrum-crl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_crl = dir.join("not.crl");
    std::fs::write(&not_crl, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let p = crl(&format!(
        "client_ca = \"/nonexistent/ca.pem\", client_crl = \"{}\"",
        not_crl.display()
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("holds no PEM revocation list"), "{p:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
