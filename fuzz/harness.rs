// The fuzz harnesses, one function per parser at the edge. Shared by the
// cargo-fuzz targets in `fuzz_targets/` and by
// `crates/proxy/tests/fuzz_corpus.rs`, which runs every seed corpus file
// through them so CI exercises the targets without cargo-fuzz or nightly.
//
// Each function must never panic, whatever the bytes; a function returning
// is a pass.

/// The configuration parser: any text, as a file would hold it.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = fulcrum_config::parse(text, Some("fuzz.toml"));
    }
}

/// The route matcher: routes from a fixed configuration, request from the
/// input (`host\nmethod\ntarget\nheader: value...`).
pub fn route_match(data: &[u8]) {
    use std::sync::OnceLock;
    static TABLE: OnceLock<fulcrum_proxy::routes::RouteTable> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let config = fulcrum_config::parse(ROUTES, None).expect("fuzz route config is valid");
        let l = &config.listeners[0];
        fulcrum_proxy::routes::RouteTable::new(&l.routes, l.cluster.as_deref())
    });
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let host = lines.next().filter(|h| !h.is_empty());
    let method = lines
        .next()
        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(http::Method::GET);
    let Some(uri) = lines.next().and_then(|t| t.parse::<http::Uri>().ok()) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                http::header::HeaderName::from_bytes(n.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            ) {
                headers.append(n, v);
            }
        }
    }
    let _ = table.select(host, &method, &uri, &headers);
}

const ROUTES: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
cluster = "app"

[[listener.route]]
host = "*.example.com"
path_prefix = "/api"
cluster = "app"

[[listener.route]]
host = "exact.test"
path_regex = "^/v[0-9]+/items/[a-z]+$"
methods = ["GET", "POST"]
cluster = "app"

[[listener.route]]
path_prefix = "/h"
headers = { "x-env" = { exact = "canary" } }
query = { "debug" = { present = true } }
cluster = "app"

[cluster.app]
backends = [{ address = "127.0.0.1:9" }]
"#;

/// The PROXY protocol (v1 text, v2 binary) header parser.
pub fn proxy_protocol(data: &[u8]) {
    let _ = fulcrum_proxy::proxy_protocol::parse(data);
}

/// The TLS ClientHello peeker used for SNI routing.
pub fn sni(data: &[u8]) {
    let _ = fulcrum_proxy::sni::parse(data);
}

/// The ORCA `endpoint-load-metrics` header parser.
pub fn orca(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(report) = fulcrum_balance::orca::parse(text) {
            let _ = report.utilisation();
        }
    }
}

/// The HTTP/1 framing guard over a client byte stream. The first byte picks
/// the read size, so the same stream is also tried cut at odd places.
pub fn framing(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) + 1;
    let mut guard = fulcrum_proxy::framing::FramingGuard::new(8 * 1024, 100);
    for chunk in stream.chunks(step) {
        if let Err((keep, _)) = guard.feed(chunk) {
            assert!(keep <= chunk.len(), "kept more bytes than were fed");
            break;
        }
    }
}
