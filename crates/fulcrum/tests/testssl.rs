//! `testssl.sh` (Debian package `testssl.sh`) against a TLS listener: no
//! SSLv2/3, TLS 1.0/1.1, no NULL/anon/export/low/RC4/3DES suites, and the
//! server picks the cipher. Gates on protocol and cipher findings only: the
//! test certificate is self-signed on purpose. Skipped (with a note) when
//! `testssl` is not installed.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn testssl_finds_no_weak_protocols_or_ciphers() {
    if std::process::Command::new("testssl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("testssl is not installed (apt-get install testssl.sh): skipped");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bs = rt.block_on(backends(&["0ms"]));
    let certs = TempDir::new("testssl-certs");
    let ca = TestCa::new();
    let (cert, key) = ca.write_leaf(&certs, "site", "localhost", &["localhost"]);
    let proxy = Proxy::run(&format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\n[listener.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n{}",
        cluster_block("app", "round-robin", &[(bs[0].addr, 1)])
    ));
    let json = proxy.dir.0.join("testssl.json");
    let out = std::process::Command::new("testssl")
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--fast",
            "-p",
            "-s",
            "-P",
            "--jsonfile",
        ])
        .arg(&json)
        .arg(proxy.addr("web").to_string())
        .output()
        .expect("run testssl");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|_| {
        panic!(
            "testssl wrote no JSON: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let get = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .map(|f| {
                (
                    f["severity"].as_str().unwrap_or("").to_owned(),
                    f["finding"].as_str().unwrap_or("").to_owned(),
                )
            })
            .unwrap_or_else(|| panic!("testssl reported no `{id}`: {text}"))
    };
    let mut problems = Vec::new();
    for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        let (_, finding) = get(id);
        if !finding.contains("not offered") {
            problems.push(format!("{id}: {finding}"));
        }
    }
    for (id, finding) in [("TLS1_2", "offered"), ("TLS1_3", "offered")] {
        let (_, found) = get(id);
        if !found.starts_with(finding) {
            problems.push(format!("{id}: {found}"));
        }
    }
    for f in &findings {
        let id = f["id"].as_str().unwrap_or("");
        let severity = f["severity"].as_str().unwrap_or("");
        if id.starts_with("cipherlist_") && !matches!(severity, "OK" | "INFO") {
            problems.push(format!("{id}: {severity} {}", f["finding"]));
        }
    }
    let (severity, finding) = get("cipher_order");
    if !matches!(severity.as_str(), "OK" | "INFO") || finding.to_lowercase().contains("not") {
        problems.push(format!("cipher_order: {severity} {finding}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(proxy);
    std::thread::sleep(Duration::from_millis(10));
}
