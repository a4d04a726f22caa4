//! End-to-end: the `geo` selector with three zones — clients land in their
//! zone, spill to the next nearest when it is full, fail over when it dies.
//!
//! Clients are placed by the trusted `x-client-location` header (GeoIP
//! database lookups are not built yet).

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
location_from = ["127.0.0.0/8"]

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
        list.join("\n")
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
