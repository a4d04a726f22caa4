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
        debug_from: Some(vec![]),
        priority_from: Some(vec![]),
        location_from: Some(vec![]),
        geoip_db: s(),
        route: vec![],
    };
    assert_eq!(keys(&listener), sorted(file::FileListener::KEYS));
    let route = file::FileRoute {
        host: s(),
        path_prefix: s(),
        cluster: s(),
        priority: s(),
    };
    assert_eq!(keys(&route), sorted(file::FileRoute::KEYS));
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
        health: Some(health.clone()),
        outlier: Some(outlier),
        retries: Some(1),
        retry_budget: Some(0.2),
        retry_budget_min: Some(1),
        try_timeout: s(),
        panic_threshold: Some(1),
        geo_max_in_flight: Some(1),
        admission: Some(file::FileAdmission::default()),
    };
    assert_eq!(keys(&cluster), sorted(file::FileCluster::KEYS));
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
