//! End-to-end: access logs (`access_log`, `access_log_format`): a line per
//! request with what the client asked and what it got, JSON or NGINX's
//! combined format, a new file after a reload, and answers the client
//! left before their end marked incomplete.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The file's lines, once it has at least `n` (waits up to 5 s).
async fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > until {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(bs: &[RunningBackend], log: &str) -> String {
    format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n{log}\n\n{}",
        cluster_block("app", "round-robin", &[(bs[0].addr, 1)])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_a_line_with_what_was_asked_and_answered() {
    let bs = backends(&["0ms"]).await;
    let dir = TempDir::new("access-log");
    let json = dir.0.join("access.json");
    let proxy = Proxy::run(&config(
        &bs,
        &format!("access_log = \"{}\"", json.display()),
    ));
    let web = proxy.addr("web");
    let h1 = client();
    let a = send(
        &h1,
        http::Request::get(format!("http://{web}/hello?x=1"))
            .header("user-agent", "test-agent/1")
            .header("referer", "http://example.com/")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    let b = get(&h1, web, "/status/503").await;
    assert_eq!(b.status, 503);
    let c = get(&h2c_client(), web, "/over-h2").await;
    assert_eq!(c.status, 200);
    let logged = lines(&json, 3).await;
    assert_eq!(logged.len(), 3, "{logged:?}");
    // Lines go out as answers end, which for answers on different
    // connections need not be the order the requests were sent in.
    let entry = |logged: &[String], target: &str| -> serde_json::Value {
        logged
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
            })
            .find(|v| v["target"] == target)
            .unwrap_or_else(|| panic!("no line for {target}: {logged:?}"))
    };
    let first = entry(&logged, "/hello?x=1");
    assert_eq!(first["listener"], "web", "{logged:?}");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["host"], web.to_string());
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], a.body.len());
    assert_eq!(first["cluster"], "app");
    assert_eq!(first["backend"], bs[0].addr.to_string());
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["user_agent"], "test-agent/1");
    assert_eq!(first["referer"], "http://example.com/");
    assert_eq!(first["complete"], true);
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    // The backend's 503 went through the retries (one backend: none left).
    assert_eq!(entry(&logged, "/status/503")["status"], 503, "{logged:?}");
    let h2 = entry(&logged, "/over-h2");
    assert_eq!(h2["protocol"], "HTTP/2.0");
    assert_eq!(h2["bytes"], c.body.len());
    assert_eq!(h2["complete"], true, "{logged:?}");

    // A client that leaves before the end of a long answer.
    let mut raw = tokio::net::TcpStream::connect(web).await.unwrap();
    raw.write_all(b"GET /bytes/50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0);
    drop(raw);
    let logged = lines(&json, 4).await;
    let cut = entry(&logged, "/bytes/50000000");
    assert_eq!(cut["target"], "/bytes/50000000");
    assert_eq!(cut["status"], 200);
    assert_eq!(cut["complete"], false, "{cut}");
    assert!(cut["bytes"].as_u64().unwrap() < 50_000_000, "{cut}");

    // A reload moves the log to another file, in the combined format.
    let combined = dir.0.join("access.log");
    std::fs::write(
        &proxy.config_path,
        format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
            config(
                &bs,
                &format!(
                    "access_log = \"{}\"\naccess_log_format = \"combined\"",
                    combined.display()
                )
            )
        ),
    )
    .unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &proxy.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    // Requests finishing while the reload opens the new file may still go
    // to the old one: ask until one lands in the new file. The client's
    // connection from before the reload is kept: the new log applies to
    // it too.
    let until = Instant::now() + Duration::from_secs(10);
    let (line, d) = loop {
        assert!(Instant::now() < until, "the reload did not move the log");
        let d = send(
            &h1,
            http::Request::get(format!("http://{web}/after"))
                .header("user-agent", "agent \"quoted\"")
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(d.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = std::fs::read_to_string(&combined).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break (line.to_owned(), d);
        }
    };
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(&format!(
            "] \"GET /after HTTP/1.1\" 200 {} \"-\" \"agent \\x22quoted\\x22\" ",
            d.body.len()
        )),
        "{line}"
    );
    assert!(line.ends_with(&format!(" {}", bs[0].addr)), "{line}");
    let before = lines(&json, 0).await.len();
    assert_eq!(get(&client(), web, "/last").await.status, 200);
    assert_eq!(lines(&combined, 2).await.len(), 2);
    assert_eq!(
        lines(&json, 0).await.len(),
        before,
        "the old file no longer grows"
    );
}

#[test]
fn check_names_a_bad_access_log() {
    let dir = TempDir::new("access-log-check");
    let file = dir.write(
        "f.toml",
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\
         access_log = \"/nonexistent/dir/access.log\"\naccess_log_format = \"clf\"\n\n\
         [cluster.app]\nbackends = [{ address = \"127.0.0.1:9001\" }]\n",
    );
    let out = Command::new(fulcrum_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("listener[0].access_log"), "{text}");
    assert!(text.contains("listener[0].access_log_format"), "{text}");
    assert!(text.contains("unknown format `clf`"), "{text}");
}

/// `request_id`: every request gets an `X-Request-Id` that the backend,
/// the client and the access log all see; one sent by a client is
/// replaced unless the client is a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_reach_the_backend_the_client_and_the_log() {
    let bs = backends(&["0ms"]).await;
    let dir = TempDir::new("request-id");
    let log = dir.0.join("access.json");
    let config = format!(
        "[[listener]]\nname = \"edge\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\
         request_id = true\naccess_log = \"{}\"\n\n\
         [[listener]]\nname = \"inner\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\
         request_id = true\ntrusted_proxies = [\"127.0.0.1\"]\n\n{}",
        log.display(),
        cluster_block("app", "round-robin", &[(bs[0].addr, 1)])
    );
    let proxy = Proxy::run(&config);
    let with_id = |addr, id: &str| {
        http::Request::get(format!("http://{addr}/echo-headers"))
            .header("x-request-id", id)
            .body(Default::default())
            .unwrap()
    };
    let seen = |a: &Answer| {
        String::from_utf8_lossy(&a.body)
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: ").map(str::to_owned))
    };
    let forged = send(&client(), with_id(proxy.addr("edge"), "forged")).await;
    let id = forged.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(
        seen(&forged).as_deref(),
        Some(id.as_str()),
        "the backend saw it"
    );
    let fresh = get(&client(), proxy.addr("edge"), "/echo-headers").await;
    let other = fresh.headers["x-request-id"].to_str().unwrap();
    assert_ne!(other, id, "one per request");
    assert_eq!(seen(&fresh).as_deref(), Some(other));
    let logged = lines(&log, 2).await;
    // Lines follow the order answers end in, not requests.
    assert!(
        logged
            .iter()
            .any(|l| l.contains(&format!("\"request_id\":\"{id}\""))),
        "{logged:?}"
    );
    // A trusted proxy's id is kept.
    let kept = send(&client(), with_id(proxy.addr("inner"), "keep-me")).await;
    assert_eq!(kept.headers["x-request-id"], "keep-me");
    assert_eq!(seen(&kept).as_deref(), Some("keep-me"));
}
