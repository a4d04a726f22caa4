//! End-to-end: the `geo` selector with three zones — clients land in their
//! zone, spill to the next nearest when it is full, fail over when it dies.
//!
//! Clients are placed by the trusted `x-client-location` header, or by
//! their address in the listener's `geoip_db` (a database the test writes).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

/// Zone name, backend name, position.
const ZONES: [(&str, &str, f64, f64); 3] = [
    ("eu-west", "dublin", 53.35, -6.26),
    ("eu-central", "frankfurt", 50.11, 8.68),
    ("us-east", "virginia", 38.9, -77.4),
];

fn config(bs: &[RunningBackend]) -> String {
    with_listener_keys(bs, "location_from = [\"127.0.0.0/8\"]")
}

fn with_listener_keys(bs: &[RunningBackend], keys: &str) -> String {
    let list: Vec<String> = bs
        .iter()
        .zip(ZONES)
        .map(|(b, (zone, _, lat, lon))| {
            format!(
                "  {{ address = \"{}\", zone = \"{zone}\", lat = {lat}, lon = {lon} }},",
                b.addr
            )
        })
        .collect();
    format!(
        r#"[[listener]]
name = "web"
bind = "127.0.0.1:0"
cluster = "app"
{keys}

[cluster.app]
algorithm = "geo"
geo_max_in_flight = 2
retries = 2
backends = [
{}
]

[cluster.app.health]
interval = "200ms"
timeout = "100ms"
fall = 1
"#,
        list.join("\n"),
    )
}

async fn get_from(client: &HttpClient, addr: std::net::SocketAddr, location: &str) -> Answer {
    send(
        client,
        http::Request::get(format!("http://{addr}/"))
            .header("x-client-location", location)
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await
}

async fn zone_backends(latency: &str) -> Vec<RunningBackend> {
    let mut out = Vec::new();
    for (_, name, _, _) in ZONES {
        let mut opts = BackendOptions::new(name);
        opts.latency = latency.parse().unwrap();
        out.push(spawn_backend(opts).await.unwrap());
    }
    out
}

#[tokio::test]
async fn geo_clients_land_in_their_zone() {
    let bs = zone_backends("0ms").await;
    let proxy = Proxy::run(&config(&bs));
    let client = client();
    // A client near each zone's city (and one naming its zone).
    for (location, expected) in [
        ("53.0,-6.5", "dublin"),
        ("48.85,2.35", "frankfurt"),
        ("40.7,-74.0", "virginia"),
        ("us-east", "virginia"),
    ] {
        let mut answers = Vec::new();
        for _ in 0..30 {
            answers.push(get_from(&client, proxy.addr("web"), location).await);
        }
        let counts = tally(&answers);
        assert_eq!(counts.get(expected), Some(&30), "{location}: {counts:?}");
    }
}

#[tokio::test]
async fn geo_spills_to_the_next_nearest_zone_when_full() {
    let bs = zone_backends("100ms").await;
    let proxy = Proxy::run(&config(&bs));
    let client = client();
    // 12 concurrent clients in Ireland against a per-backend threshold of 2.
    let answers = futures_util::future::join_all(
        (0..12).map(|_| get_from(&client, proxy.addr("web"), "53.0,-6.5")),
    )
    .await;
    let counts = tally(&answers);
    assert!(answers.iter().all(|a| a.status == 200), "{counts:?}");
    assert!(
        counts.get("dublin").copied().unwrap_or(0) >= 2,
        "{counts:?}"
    );
    assert!(
        counts.get("frankfurt").copied().unwrap_or(0) >= 1,
        "spill: {counts:?}"
    );
    // Frankfurt (1 100 km) fills before Virginia (5 500 km) is used.
    assert!(
        counts.get("virginia").copied().unwrap_or(0) <= counts["frankfurt"],
        "{counts:?}"
    );
    // Once the burst is over, traffic returns home.
    let after = get_from(&client, proxy.addr("web"), "53.0,-6.5").await;
    assert_eq!(after.backend(), Some("dublin"));
}

#[tokio::test]
async fn geo_fails_over_without_errors_when_the_zone_dies() {
    let mut bs = zone_backends("1ms").await;
    let proxy = Proxy::run(&config(&bs));
    let client = client();
    let home = get_from(&client, proxy.addr("web"), "53.0,-6.5").await;
    assert_eq!(home.backend(), Some("dublin"));
    bs.remove(0).shutdown().await;
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        answers.push(get_from(&client, proxy.addr("web"), "53.0,-6.5").await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let counts = tally(&answers);
    assert!(
        answers.iter().all(|a| a.status == 200),
        "errors after the zone died: {counts:?}"
    );
    assert_eq!(
        counts.get("frankfurt").copied(),
        Some(answers.len()),
        "{counts:?}"
    );
}

/// A GET from a socket bound to `source` (any 127/8 address is local on
/// Linux), with optional extra header lines; returns the `x-backend` answer.
async fn get_from_source(
    proxy: std::net::SocketAddr,
    source: std::net::Ipv4Addr,
    extra: &str,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nhost: geo.test\r\n{extra}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answer within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-backend")
            .then(|| value.trim().to_owned())
    })
}

#[tokio::test]
async fn geo_clients_are_placed_by_the_geoip_db() {
    let bs = zone_backends("0ms").await;
    let dir = TempDir::new("geoip");
    // Three /24s of 127/8, one near each zone's city; 127.0.0.0/24 unknown.
    let mut db = fulcrum_testbed::mmdb::MmdbWriter::new();
    db.insert_v4([127, 0, 2, 0].into(), 24, "Cork", 51.9, -8.47);
    db.insert_v4([127, 0, 3, 0].into(), 24, "Munich", 48.14, 11.58);
    db.insert_v4([127, 0, 4, 0].into(), 24, "New York", 40.7, -74.0);
    let path = dir.0.join("city.mmdb");
    std::fs::write(&path, db.to_bytes()).unwrap();
    let keys = format!("geoip_db = {:?}", path.to_str().unwrap());
    let proxy = Proxy::run(&with_listener_keys(&bs, &keys));
    let addr = proxy.addr("web");
    for (source, expected) in [
        ([127, 0, 2, 10], "dublin"),
        ([127, 0, 3, 20], "frankfurt"),
        ([127, 0, 4, 30], "virginia"),
    ] {
        let source = std::net::Ipv4Addr::from(source);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..20 {
            let backend = get_from_source(addr, source, "").await;
            *counts.entry(backend).or_insert(0) += 1;
        }
        assert_eq!(
            counts.get(&Some(expected.to_owned())),
            Some(&20),
            "{source}: {counts:?}"
        );
    }
    // The header is not trusted here (no `location_from`): the address wins.
    let steered = get_from_source(
        addr,
        [127, 0, 4, 30].into(),
        "x-client-location: 53.0,-6.5\r\n",
    )
    .await;
    assert_eq!(steered.as_deref(), Some("virginia"));
}

#[test]
fn geo_missing_geoip_db_is_a_config_error_naming_the_key() {
    let dir = TempDir::new("geoip-missing");
    let config = dir.write(
        "fulcrum.toml",
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\ngeoip_db = \"/nonexistent/city.mmdb\"\n\n[cluster.app]\nalgorithm = \"geo\"\nbackends = [{ address = \"127.0.0.1:9\" }]\n",
    );
    let out = std::process::Command::new(fulcrum_bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("listener[0].geoip_db"), "{text}");
    // A file that is not a MaxMind database is refused as well.
    let bogus = dir.write("bogus.mmdb", "not a database");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("/nonexistent/city.mmdb", bogus.to_str().unwrap());
    dir.write("fulcrum.toml", &text);
    let out = std::process::Command::new(fulcrum_bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MaxMind")
            || String::from_utf8_lossy(&out.stdout).contains("MaxMind")
    );
}
