//! The live dashboard in a real browser: headless Chromium driven through
//! chromedriver's WebDriver HTTP API (a dozen calls, so a tiny client here).
//!
//! Skipped with a message when `chromium` or `chromedriver` is missing
//! (Debian packages `chromium` and `chromium-driver`; CI installs them).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use serde_json::{json, Value};

const TOKEN: &str = "dashboard-test-token";

fn find_program(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

/// A minimal WebDriver session.
struct Browser {
    client: HttpClient,
    base: String,
    session: String,
}

impl Browser {
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(if body.is_null() {
                Bytes::new()
            } else {
                Bytes::from(body.to_string())
            }))
            .unwrap();
        let answer = send(&self.client, req).await;
        let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        assert!(answer.status < 300, "webdriver {path}: {v}");
        v["value"].clone()
    }

    async fn open(base: String, chromium: &str) -> Browser {
        let mut b = Browser {
            client: client(),
            base,
            session: String::new(),
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }
        }}});
        let v = b.call("POST", "/session", caps).await;
        b.session = v["sessionId"].as_str().expect("session id").to_owned();
        b
    }

    async fn goto(&self, url: &str) {
        self.call(
            "POST",
            &format!("/session/{}/url", self.session),
            json!({ "url": url }),
        )
        .await;
    }

    async fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            json!({ "script": script, "args": args }),
        )
        .await
    }

    async fn screenshot(&self) -> Vec<u8> {
        let v = self
            .call(
                "GET",
                &format!("/session/{}/screenshot", self.session),
                Value::Null,
            )
            .await;
        base64_decode(v.as_str().expect("base64 png"))
    }

    async fn close(self) {
        let _ = self
            .call("DELETE", &format!("/session/{}", self.session), Value::Null)
            .await;
    }

    /// `[address, health, state]` of every backend row on the page.
    async fn rows(&self) -> Vec<(String, String, String)> {
        let v = self
            .script(
                "return Array.from(document.querySelectorAll('tr[data-address]')).map(r => [r.dataset.address, r.dataset.health, r.dataset.state]);",
                json!([]),
            )
            .await;
        v.as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        (
                            r[0].as_str().unwrap_or("").to_owned(),
                            r[1].as_str().unwrap_or("").to_owned(),
                            r[2].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A running `fulcrum demo` with its announced addresses.
struct Demo {
    child: std::process::Child,
    proxy: String,
    admin: SocketAddr,
    backends: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo() -> Demo {
    let mut child = Command::new(fulcrum_bin())
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("FULCRUM_LOG", "warn")
        .env("FULCRUM_ADMIN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = pipe_lines(child.stdout.take().unwrap());
    let err = pipe_lines(child.stderr.take().unwrap());
    let mut admin = None;
    while admin.is_none() {
        let line = err
            .recv_timeout(Duration::from_secs(20))
            .expect("demo announces its admin listener");
        if let Some(rest) = line.strip_prefix("fulcrum: admin on http://") {
            admin = Some(rest.trim().parse().unwrap());
        }
    }
    let (mut proxy, mut backends) = (None, Vec::new());
    loop {
        let line = out
            .recv_timeout(Duration::from_secs(20))
            .expect("demo output");
        if let Some(rest) = line.strip_prefix("Fulcrum demo: proxy on ") {
            proxy = Some(rest.split(',').next().unwrap().to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("backend ") {
            let url = rest.split_whitespace().nth(1).unwrap();
            backends.push(url.trim_start_matches("http://").to_owned());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    Demo {
        child,
        proxy: proxy.expect("proxy url"),
        admin: admin.unwrap(),
        backends,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_every_backend_and_a_drain_within_seconds() {
    let Some(chromium) = find_program(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]) else {
        eprintln!("SKIPPED dashboard browser test: chromium not found (apt-get install chromium chromium-driver)");
        return;
    };
    let Some(driver) = find_program(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
    else {
        eprintln!("SKIPPED dashboard browser test: chromedriver not found (apt-get install chromium-driver)");
        return;
    };
    let demo = start_demo();
    assert_eq!(demo.backends.len(), 3, "{:?}", demo.backends);

    // Traffic for the charts, bounded.
    let proxy_addr: SocketAddr = demo.proxy.trim_start_matches("http://").parse().unwrap();
    let mut opts = fulcrum_testbed::LoadOptions::new(proxy_addr);
    opts.concurrency = 4;
    opts.rate = Some(100.0);
    opts.duration = Some(Duration::from_secs(12));
    let load = tokio::spawn(fulcrum_testbed::run_load(opts));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut chromedriver = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let base = format!("http://127.0.0.1:{port}");
    let ready = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(10),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let browser = Browser::open(base, &chromium).await;
    browser.goto(&format!("http://{}/", demo.admin)).await;

    // Every backend appears, up and enabled.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rows = Vec::new();
    while Instant::now() < deadline {
        rows = browser.rows().await;
        if rows.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut listed: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    listed.sort();
    let mut expected = demo.backends.clone();
    expected.sort();
    assert_eq!(listed, expected, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.1 == "up" && r.2 == "enabled"),
        "{rows:?}"
    );

    // Take a backend out the way an operator does without health checks:
    // enter the token, press "drain" on its row. (Once active health checks
    // land, killing the backend process shows `down` through the same row.)
    let victim = demo.backends[2].clone();
    browser
        .script(
            "const t = document.getElementById('token'); t.value = arguments[0]; t.dispatchEvent(new Event('change'));",
            json!([TOKEN]),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    browser
        .script(
            "document.querySelector(`tr[data-address=\"${arguments[0]}\"] button[data-act]`).click();",
            json!([victim]),
        )
        .await;
    let started = Instant::now();
    let mut seen = None;
    while started.elapsed() < Duration::from_secs(5) {
        let rows = browser.rows().await;
        if rows.iter().any(|r| r.0 == victim && r.2 == "draining") {
            seen = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.unwrap_or_else(|| panic!("drain not shown within 5 s: {:?}", rows));
    eprintln!("dashboard showed the drain after {seen:?}");

    // A backend process added through the API shows up, and when it is
    // killed the page shows it down within a few seconds (health checks).
    let mut extra = Command::new(fulcrum_bin())
        .args([
            "testbed",
            "backend",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "delta",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let extra_out = pipe_lines(extra.stdout.take().unwrap());
    let extra_addr = loop {
        let line = extra_out
            .recv_timeout(Duration::from_secs(20))
            .expect("testbed backend announces its address");
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.trim().to_owned();
        }
    };
    let add = http::Request::post(format!(
        "http://{}/api/v1/clusters/app/backends",
        demo.admin
    ))
    .header("authorization", format!("Bearer {TOKEN}"))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from(
        json!({ "address": extra_addr, "weight": 1 }).to_string(),
    )))
    .unwrap();
    let added = send(&client(), add).await;
    assert!(added.status < 300, "{:?}", added.body);
    let wait_for = |health: &'static str| {
        let browser = &browser;
        let addr = extra_addr.clone();
        async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(8) {
                let rows = browser.rows().await;
                if rows.iter().any(|r| r.0 == addr && r.1 == health) {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }
    };
    wait_for("up").await.expect("the added backend is shown up");
    let _ = extra.kill();
    let _ = extra.wait();
    let down = wait_for("down")
        .await
        .unwrap_or_else(|| panic!("killed backend not shown down: {:?}", rows));
    eprintln!("dashboard showed the killed backend down after {down:?}");

    // Let the charts fill a little, then keep a screenshot as an artifact.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let _ = std::fs::create_dir_all(&target);
    let path = target.join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());
    browser.close().await;
    let _ = chromedriver.kill();
    let _ = chromedriver.wait();

    // The API agrees, and the drained backend's state is in the metrics too.
    let client = client();
    let (status, view) = {
        let a = get(&client, demo.admin, "/api/v1/clusters").await;
        (a.status, serde_json::from_slice::<Value>(&a.body).unwrap())
    };
    assert_eq!(status, 200);
    let state = view["clusters"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == victim.as_str())
        .map(|b| b["state"].clone());
    assert_eq!(state, Some(json!("draining")), "{view}");
    let report = load.await.unwrap();
    assert_eq!(report.errors, 0, "{report}");
}
