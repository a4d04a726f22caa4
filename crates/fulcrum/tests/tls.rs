//! End-to-end: TLS termination in front of the HTTP path, checked with the
//! tools a user has (curl, openssl s_client).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// An http listener with a default certificate and two named ones.
struct Site {
    ca_pem: String,
    proxy: Proxy,
    _backends: Vec<RunningBackend>,
    _dir: TempDir,
}

async fn site(key_mode: u32) -> Site {
    let bs = backends(&["0ms"]).await;
    let dir = TempDir::new("tls");
    let ca = TestCa::new();
    let ca_pem = dir.write("ca.pem", &ca.pem()).display().to_string();
    let (dc, dk) = ca.write_leaf(&dir, "default", "default-cert", &["default.example.com"]);
    let (ac, ak) = ca.write_leaf(&dir, "a", "a-cert", &["a.example.com"]);
    let (bc, bk) = ca.write_leaf(&dir, "b", "b-cert", &["*.b.example.com"]);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dk, std::fs::Permissions::from_mode(key_mode)).unwrap();
    }
    let config = format!(
        r#"
[[listener]]
name = "https"
bind = "127.0.0.1:0"
cluster = "app"

[listener.tls]
cert = "{dc}"
key = "{dk}"

[[listener.tls.certificates]]
cert = "{ac}"
key = "{ak}"

[[listener.tls.certificates]]
cert = "{bc}"
key = "{bk}"

{}"#,
        cluster_block("app", "round-robin", &[(bs[0].addr, 1)])
    );
    let proxy = Proxy::run(&config);
    Site {
        ca_pem,
        proxy,
        _backends: bs,
        _dir: dir,
    }
}

/// `curl` through the proxy as `host`; returns stdout.
fn curl(site: &Site, host: &str, args: &[&str], path: &str) -> String {
    try_curl(site, host, args, path).unwrap_or_else(|e| panic!("curl failed: {e}"))
}

/// `curl` through the proxy as `host`: stdout, or stderr if it failed.
fn try_curl(site: &Site, host: &str, args: &[&str], path: &str) -> Result<String, String> {
    let addr = site.proxy.addr("https");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", &site.ca_pem])
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", addr.port()))
        .args(args)
        .arg(format!("https://{host}:{}{path}", addr.port()))
        .stdin(Stdio::null())
        .output()
        .expect("curl runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `openssl s_client` against `addr`; returns (success, stdout + stderr).
fn s_client(addr: SocketAddr, servername: Option<&str>, extra: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()]);
    if let Some(name) = servername {
        cmd.args(["-servername", name]);
    } else {
        cmd.arg("-noservername");
    }
    let out = cmd
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Writes `config` over the site's configuration file and asks for a
/// reload (SIGHUP).
fn reload(site: &Site, config: &str) {
    std::fs::write(&site.proxy.config_path, config).unwrap();
    let pid = site.proxy.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
}

fn subject_cn(output: &str) -> Option<String> {
    let line = output.lines().find(|l| l.starts_with("subject="))?;
    let cn = line.split("CN").nth(1)?;
    Some(cn.trim_start_matches([' ', '=']).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_curl_gets_answers_over_http2_and_http11() {
    let site = site(0o600).await;
    let h2 = curl(
        &site,
        "a.example.com",
        &[
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ],
        "/",
    );
    assert_eq!(h2, "2 200", "ALPN did not negotiate h2");
    let h1 = curl(
        &site,
        "a.example.com",
        &[
            "--http1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ],
        "/",
    );
    assert_eq!(h1, "1.1 200");
    let headers = curl(&site, "a.example.com", &["--http1.1"], "/echo-headers").to_lowercase();
    assert!(
        headers.contains("x-forwarded-proto: https"),
        "backend did not see https: {headers}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_each_hostname_gets_its_certificate_and_unknown_gets_the_default() {
    let site = site(0o600).await;
    let addr = site.proxy.addr("https");
    for (name, cn) in [
        (Some("a.example.com"), "a-cert"),
        (Some("x.b.example.com"), "b-cert"),
        (Some("unknown.example.org"), "default-cert"),
        (None, "default-cert"),
    ] {
        let (_, out) = s_client(addr, name, &[]);
        assert_eq!(subject_cn(&out).as_deref(), Some(cn), "sni {name:?}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_negotiates_tls13_and_refuses_tls11() {
    let site = site(0o600).await;
    let addr = site.proxy.addr("https");
    let (ok, out) = s_client(addr, Some("a.example.com"), &[]);
    assert!(ok, "{out}");
    assert!(out.contains("TLSv1.3"), "not TLS 1.3: {out}");
    let (ok, out) = s_client(addr, Some("a.example.com"), &["-tls1_2"]);
    assert!(ok && out.contains("TLSv1.2"), "TLS 1.2 refused: {out}");
    // The server's order picks AES-128-GCM for a client that prefers AES-256.
    let (ok, out) = s_client(
        addr,
        Some("a.example.com"),
        &[
            "-ciphersuites",
            "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
        ],
    );
    assert!(
        ok && out.contains("Cipher is TLS_AES_128_GCM_SHA256"),
        "{out}"
    );
    let (ok, out) = s_client(
        addr,
        Some("a.example.com"),
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
        ],
    );
    assert!(
        ok && out.contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{out}"
    );
    let (ok, out) = s_client(
        addr,
        Some("a.example.com"),
        &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
    );
    if out.contains("unknown option") {
        eprintln!("skipped: this openssl cannot speak TLS 1.1");
        return;
    }
    // s_client may exit 0 after a failed handshake; what it saw tells.
    let refused = !ok || out.contains("no peer certificate available");
    assert!(refused, "TLS 1.1 handshake succeeded: {out}");
    // (it still prints the protocol it tried; the cipher shows nothing was agreed)
    assert!(out.contains("Cipher is (NONE)"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_loose_key_permissions_warn_and_reload_swaps_certificates() {
    let site = site(0o644).await;
    let warned = site
        .proxy
        .startup
        .iter()
        .any(|l| l.contains("private key file is accessible to group or others"));
    assert!(warned, "no warning for a 0644 private key");
    // Replace the default certificate's files and ask for a reload.
    let ca_dir = std::path::Path::new(&site.ca_pem).parent().unwrap();
    let config = std::fs::read_to_string(&site.proxy.config_path).unwrap();
    let new = TestCa::new();
    let (cert, key) = new.leaf("renewed-cert", &["default.example.com"]);
    std::fs::write(ca_dir.join("default.crt"), cert).unwrap();
    std::fs::write(ca_dir.join("default.key"), key).unwrap();
    reload(&site, &config);
    let addr = site.proxy.addr("https");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out) = s_client(addr, None, &[]);
        if subject_cn(&out).as_deref() == Some("renewed-cert") {
            break;
        }
        assert!(Instant::now() < deadline, "reload did not swap: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two `openssl s_client` connections to `addr`: the first asks for `/`
/// and saves the session it was given, the second offers it back.
/// Returns the second connection's output and the saved session's ticket.
fn resume(addr: SocketAddr, dir: &TempDir, extra: &[&str]) -> (String, Vec<u8>) {
    let session = save_session(addr, "a.example.com", dir, extra);
    let (ok, second) = s_client(
        addr,
        Some("a.example.com"),
        &[&["-sess_in", &session], extra].concat(),
    );
    assert!(ok, "{second}");
    let dump = Command::new("openssl")
        .args(["sess_id", "-noout", "-text", "-in", &session])
        .output()
        .expect("openssl runs");
    (second, ticket_bytes(&String::from_utf8_lossy(&dump.stdout)))
}

/// One `openssl s_client` connection to `addr` as `name` that asks for `/`
/// and saves the session it was given; returns the session file's path.
fn save_session(addr: SocketAddr, name: &str, dir: &TempDir, extra: &[&str]) -> String {
    use std::io::Write;
    // Named by the options, in characters a file name may hold.
    let tag: String = extra
        .concat()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let session = dir.0.join(format!("session{tag}.pem"));
    let _ = std::fs::remove_file(&session);
    let session = session.display().to_string();
    let mut first = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", name, "-ign_eof", "-sess_out", &session])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    // The request is answered and the connection closed, so s_client has
    // read the tickets that follow the handshake before it saves the session.
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    first
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let out = first.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HTTP/1.1 200"), "first connection: {text}");
    session
}

/// The ticket bytes of `openssl sess_id -text`'s hex dump
/// (`0000 - 8f 2c ... 7f-80 91 ...   ascii`).
fn ticket_bytes(dump: &str) -> Vec<u8> {
    let mut lines = dump
        .lines()
        .skip_while(|l| !l.contains("TLS session ticket:"));
    lines.next();
    let mut bytes = Vec::new();
    for line in lines {
        let Some((offset, rest)) = line.trim().split_once(" - ") else {
            break;
        };
        if offset.len() != 4 || !offset.bytes().all(|b| b.is_ascii_hexdigit()) {
            break;
        }
        let hex = rest.split("   ").next().unwrap_or("").replace('-', " ");
        bytes.extend(
            hex.split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).unwrap()),
        );
    }
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_sessions_resume_by_stateless_ticket_or_by_the_session_cache() {
    let site = site(0o600).await;
    let addr = site.proxy.addr("https");
    let dir = TempDir::new("tls-resume");
    for version in ["-tls1_3", "-tls1_2"] {
        let (second, ticket) = resume(addr, &dir, &[version]);
        assert!(
            second.contains("Reused,"),
            "{version}: not resumed: {second}"
        );
        // A stateless ticket carries the encrypted session; a cache's
        // ticket is only the 32-byte key of its entry.
        assert!(
            ticket.len() > 64,
            "{version}: ticket of {} bytes",
            ticket.len()
        );
    }
    // A reload turns tickets off: sessions still resume, from the cache.
    let config = std::fs::read_to_string(&site.proxy.config_path).unwrap();
    let config = config.replacen(
        "[listener.tls]\n",
        "[listener.tls]\nsession_tickets = false\n",
        1,
    );
    reload(&site, &config);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (second, ticket) = resume(addr, &dir, &["-tls1_3"]);
        if ticket.len() == 32 {
            assert!(second.contains("Reused, TLSv1.3"), "not resumed: {second}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tickets still stateless ({} bytes)",
            ticket.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (second, _) = resume(addr, &dir, &["-tls1_2"]);
    assert!(
        second.contains("Reused, TLSv1.2"),
        "TLS 1.2 not resumed: {second}"
    );
}

/// The files of a client-certificate test: the server's CA (`ca_pem`) and
/// its certificate for site.example.com (`cert`, `key`), and the clients'
/// CA (`client_ca_pem`).
struct MtlsFiles {
    dir: TempDir,
    server_ca: TestCa,
    ca_pem: String,
    cert: String,
    key: String,
    client_ca: TestCa,
    client_ca_pem: String,
}

impl MtlsFiles {
    fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let server_ca = TestCa::new();
        let ca_pem = dir.write("ca.pem", &server_ca.pem()).display().to_string();
        let (cert, key) = server_ca.write_leaf(&dir, "site", "site", &["site.example.com"]);
        let client_ca = TestCa::new();
        let client_ca_pem = dir
            .write("clients.pem", &client_ca.pem())
            .display()
            .to_string();
        MtlsFiles {
            dir,
            server_ca,
            ca_pem,
            cert,
            key,
            client_ca,
            client_ca_pem,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_client_ca_admits_only_clients_with_a_certificate_it_signed() {
    let bs = backends(&["0ms"]).await;
    let MtlsFiles {
        dir,
        server_ca,
        ca_pem,
        cert,
        key,
        client_ca,
        client_ca_pem,
    } = MtlsFiles::new("mtls");
    let (good_cert, good_key) = client_ca.write_leaf(&dir, "good", "good client", &["good"]);
    // Signed by the server's CA, not by the clients' one.
    let (other_cert, other_key) = server_ca.write_leaf(&dir, "other", "other client", &["other"]);
    let cluster = cluster_block("app", "round-robin", &[(bs[0].addr, 1)]);
    let config = |client_ca: &str| {
        format!(
            "[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\n\
             [listener.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n{client_ca}\n{cluster}"
        )
    };
    let site = Site {
        ca_pem,
        proxy: Proxy::run(&config("")),
        _backends: bs,
        _dir: dir,
    };
    let host = "site.example.com";
    let addr = site.proxy.addr("https");
    // Sessions of clients without certificates, from before `client_ca`.
    let sessions = TempDir::new("mtls-sessions");
    let versions = [&["-tls1_3"][..], &["-tls1_2"]];
    let saved = versions.map(|v| save_session(addr, host, &sessions, v));
    reload(&site, &config(&format!("client_ca = \"{client_ca_pem}\"")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_curl(&site, host, &[], "/").is_ok() {
        assert!(
            Instant::now() < deadline,
            "client_ca not applied by the reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // They must not resume: a resumed session skips the certificate.
    for (version, session) in versions.iter().zip(&saved) {
        let (_, out) = s_client(
            addr,
            Some(host),
            &[&["-sess_in", session], *version].concat(),
        );
        assert!(
            !out.contains("Reused,"),
            "{version:?}: resumed past client_ca: {out}"
        );
    }
    let good = ["--cert", good_cert.as_str(), "--key", good_key.as_str()];
    let other = ["--cert", other_cert.as_str(), "--key", other_key.as_str()];
    for version in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"]] {
        let answer = try_curl(&site, host, &[version, &good].concat(), "/");
        assert!(
            answer.is_ok(),
            "{version:?}, a certificate the CA signed: {answer:?}"
        );
        let none = try_curl(&site, host, version, "/");
        assert!(
            none.is_err(),
            "{version:?}, no client certificate: answered {none:?}"
        );
        let wrong = try_curl(&site, host, &[version, &other].concat(), "/");
        assert!(
            wrong.is_err(),
            "{version:?}, another CA's certificate: answered {wrong:?}"
        );
    }
    // A reload without `client_ca` lets clients without certificates in
    // again.
    reload(&site, &config(""));
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = try_curl(&site, host, &[], "/") {
        assert!(
            Instant::now() < deadline,
            "still refused after the reload: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `client_auth = "optional"` lets clients without a certificate in, still
/// refuses another CA's, and a client's certificate reaches the backend in
/// `X-Forwarded-Client-Cert`, which clients cannot forge. A session made
/// while a certificate was optional does not resume once it is required.
#[tokio::test(flavor = "multi_thread")]
async fn optional_client_certificates_reach_backends_in_x_forwarded_client_cert() {
    let bs = backends(&["0ms"]).await;
    let MtlsFiles {
        dir,
        server_ca,
        ca_pem,
        cert,
        key,
        client_ca,
        client_ca_pem,
    } = MtlsFiles::new("mtls-optional");
    let (good_cert, good_key) =
        client_ca.write_leaf(&dir, "good", "good client", &["good.internal"]);
    let (other_cert, other_key) = server_ca.write_leaf(&dir, "other", "other client", &["other"]);
    let cluster = cluster_block("app", "round-robin", &[(bs[0].addr, 1)]);
    let config = |mode: &str| {
        format!(
            "[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\n\
             [listener.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{client_ca_pem}\"\n\
             client_auth = \"{mode}\"\n{cluster}"
        )
    };
    let site = Site {
        ca_pem,
        proxy: Proxy::run(&config("optional")),
        _backends: bs,
        _dir: dir,
    };
    let host = "site.example.com";
    let good = ["--cert", good_cert.as_str(), "--key", good_key.as_str()];
    let other = ["--cert", other_cert.as_str(), "--key", other_key.as_str()];
    let forged = [
        "-H",
        "X-Forwarded-Client-Cert: Hash=forged;Subject=\"CN=admin\"",
    ];
    let xfcc = |echo: &str| {
        echo.lines()
            .find_map(|l| l.strip_prefix("x-forwarded-client-cert: "))
            .map(str::to_owned)
    };

    let echo = try_curl(&site, host, &[&good[..], &forged].concat(), "/echo-headers")
        .expect("a certificate the CA signed");
    let der = rustls_pki_types::pem::PemObject::from_pem_file(&good_cert)
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    let hash: String = <sha2::Sha256 as sha2::Digest>::digest(&der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        xfcc(&echo).as_deref(),
        Some(format!("Hash={hash};Subject=\"CN=good client\";DNS=good.internal").as_str()),
        "{echo}"
    );
    let echo = try_curl(&site, host, &forged, "/echo-headers").expect("no certificate: optional");
    assert_eq!(
        xfcc(&echo),
        None,
        "a client's own header is dropped: {echo}"
    );
    let wrong = try_curl(&site, host, &other, "/");
    assert!(
        wrong.is_err(),
        "another CA's certificate: answered {wrong:?}"
    );

    // A session made without a certificate while it was optional.
    let sessions = TempDir::new("mtls-optional-sessions");
    let session = save_session(site.proxy.addr("https"), host, &sessions, &["-tls1_3"]);
    reload(&site, &config("required"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_curl(&site, host, &[], "/").is_ok() {
        assert!(
            Instant::now() < deadline,
            "required not applied by the reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, out) = s_client(
        site.proxy.addr("https"),
        Some(host),
        &["-sess_in", &session, "-tls1_3"],
    );
    assert!(!out.contains("Reused,"), "resumed past client_auth: {out}");
    assert!(try_curl(&site, host, &good, "/").is_ok());
}

/// `client_crl`: a revoked client certificate is refused; a new list
/// applies on reload, and a session its certificate made before does not
/// resume past it.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_client_certificate_is_refused_and_a_new_list_applies_on_reload() {
    let bs = backends(&["0ms"]).await;
    let MtlsFiles {
        dir,
        ca_pem,
        cert,
        key,
        client_ca,
        client_ca_pem,
        ..
    } = MtlsFiles::new("mtls-crl");
    let (good_cert, good_key) =
        client_ca.write_leaf_numbered(&dir, "good", "good client", &["good"], Some(1001));
    let (bad_cert, bad_key) =
        client_ca.write_leaf_numbered(&dir, "bad", "bad client", &["bad"], Some(1002));
    let crl = dir
        .write("clients.crl", &client_ca.crl(&[1002]))
        .display()
        .to_string();
    let cluster = cluster_block("app", "round-robin", &[(bs[0].addr, 1)]);
    let config = format!(
        "[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\n\
         [listener.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{client_ca_pem}\"\n\
         client_crl = \"{crl}\"\n{cluster}"
    );
    let site = Site {
        ca_pem,
        proxy: Proxy::run(&config),
        _backends: bs,
        _dir: dir,
    };
    let host = "site.example.com";
    let good = ["--cert", good_cert.as_str(), "--key", good_key.as_str()];
    let bad = ["--cert", bad_cert.as_str(), "--key", bad_key.as_str()];
    assert!(try_curl(&site, host, &good, "/").is_ok());
    let revoked = try_curl(&site, host, &bad, "/");
    assert!(
        revoked.is_err(),
        "a revoked certificate: answered {revoked:?}"
    );

    let sessions = TempDir::new("mtls-crl-sessions");
    let session = save_session(
        site.proxy.addr("https"),
        host,
        &sessions,
        &["-tls1_3", "-cert", &good_cert, "-key", &good_key],
    );
    // The good client's certificate is revoked too.
    std::fs::write(&crl, client_ca.crl(&[1001, 1002])).unwrap();
    reload(&site, &config);
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_curl(&site, host, &good, "/").is_ok() {
        assert!(
            Instant::now() < deadline,
            "the new list not applied by the reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, out) = s_client(
        site.proxy.addr("https"),
        Some(host),
        &["-sess_in", &session, "-tls1_3"],
    );
    assert!(
        !out.contains("Reused,"),
        "resumed past the revocation: {out}"
    );
}
