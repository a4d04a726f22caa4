//! End-to-end: `fulcrum check` and `fulcrum demo` as a user runs them.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const GOOD: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:8080"
cluster = "app"

[cluster.app]
algorithm = "round-robin"
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002", weight = 2 }]
"#;

fn check(text: &str) -> (i32, String) {
    let dir = TempDir::new("check");
    let path = dir.write("fulcrum.toml", text);
    let out = Command::new(fulcrum_bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_accepts_a_good_config() {
    let (code, out) = check(GOOD);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn check_names_a_typo_key() {
    let (code, out) = check(&GOOD.replace("algorithm =", "algoritm ="));
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("fulcrum.toml:8:"),
        "names file and line: {out}"
    );
    assert!(
        out.contains("`cluster.app.algoritm`"),
        "names the key: {out}"
    );
    assert!(
        out.contains("did you mean `algorithm`"),
        "suggests the fix: {out}"
    );
}

#[test]
fn check_names_an_unknown_algorithm() {
    let (code, out) = check(&GOOD.replace("\"round-robin\"", "\"fastest\""));
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{out}"
    );
    assert!(
        out.contains(
            "`cluster.app.algorithm`: unknown algorithm `fastest`, expected one of: round-robin"
        ),
        "{out}"
    );
}

#[test]
fn check_names_a_cluster_without_backends() {
    let text = GOOD.replace(
        "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9002\", weight = 2 }]",
        "backends = []",
    );
    let (code, out) = check(&text);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("`cluster.app.backends`: cluster `app` has no backends"),
        "{out}"
    );
}

#[test]
fn check_reports_an_unreadable_file() {
    let out = Command::new(fulcrum_bin())
        .args(["check", "-c", "/nonexistent/fulcrum.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the file"));
}

#[test]
fn run_refuses_a_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = TempDir::new("inuse");
    let path = dir.write("f.toml", &GOOD.replace("127.0.0.1:8080", &addr.to_string()));
    let out = Command::new(fulcrum_bin())
        .args(["run", "-c"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("listener `web`: cannot bind {addr}")),
        "{err}"
    );
}

/// `fulcrum demo`: 300 sequential curl requests all answer 200 and every backend serves some.
#[test]
fn demo_serves_curl_from_every_backend() {
    let mut child = Command::new(fulcrum_bin())
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("FULCRUM_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = pipe_lines(child.stdout.take().unwrap());
    let mut url = None;
    let mut names = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) else {
            break;
        };
        if let Some(rest) = line.strip_prefix("Fulcrum demo: proxy on ") {
            url = Some(rest.split(',').next().unwrap().to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("backend ") {
            names.push(rest.split_whitespace().next().unwrap().to_owned());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let url = url.expect("demo prints its proxy URL");
    assert_eq!(names.len(), 3, "{names:?}");
    let mut counts = std::collections::HashMap::new();
    for _ in 0..300 {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                &url,
            ])
            .output()
            .expect("curl is installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.trim().rsplit_once('\n').expect("body and code");
        assert_eq!(code, "200", "{text}");
        *counts.entry(body.trim().to_owned()).or_insert(0) += 1;
    }
    for n in &names {
        assert!(
            counts.get(n).copied().unwrap_or(0) > 0,
            "{n} served nothing: {counts:?}"
        );
    }
    // Ctrl-C stops everything cleanly.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "demo exits 0 on Ctrl-C: {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    // Examples name certificate files relative to the working directory
    // (`certs/NAME.crt`); run the checks where such files exist.
    let work = TempDir::new("examples");
    std::fs::create_dir_all(work.0.join("certs")).unwrap();
    let certs = TempDir(work.0.join("certs"));
    let ca = TestCa::new();
    for name in ["default", "api.example.com", "wildcard.example.com"] {
        ca.write_leaf(&certs, name, name, &[name]);
    }
    std::mem::forget(certs); // removed with `work`
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(fulcrum_bin())
                .args(["check", "-c"])
                .arg(&path)
                .current_dir(&work.0)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 3);
}
