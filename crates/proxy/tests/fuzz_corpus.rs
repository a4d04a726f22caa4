//! Runs every seed in `fuzz/corpus/<target>/` through the same harness the
//! cargo-fuzz targets use, plus seeded mutations of each seed, so CI
//! exercises every edge parser on stable Rust without cargo-fuzz.

#![allow(dead_code)]

include!("../../../fuzz/harness.rs");

use std::path::PathBuf;

/// Mutations tried per seed: a few thousand inputs in total, well under a
/// second in a debug build.
const MUTATIONS_PER_SEED: usize = 200;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Flips, inserts, deletes and duplicates bytes, seeded so failures repeat.
fn mutate(seed: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(..=v.len());
        match rng.u8(..4) {
            0 if at < v.len() => v[at] ^= 1 << rng.u8(..8),
            1 => v.insert(at, rng.u8(..)),
            2 if at < v.len() => {
                v.remove(at);
            }
            _ => {
                let end = (at + rng.usize(..16)).min(v.len());
                let piece = v[at..end].to_vec();
                v.splice(at..at, piece);
            }
        }
    }
    v
}

fn run(target: &str, f: fn(&[u8])) {
    let mut rng = fastrand::Rng::with_seed(0xf00d_5eed);
    for seed in seeds(target) {
        f(&seed);
        for _ in 0..MUTATIONS_PER_SEED {
            f(&mutate(&seed, &mut rng));
        }
    }
}

#[test]
fn fuzz_corpus_config_never_panics() {
    run("config", config);
}

#[test]
fn fuzz_corpus_route_match_never_panics() {
    run("route_match", route_match);
}

#[test]
fn fuzz_corpus_proxy_protocol_never_panics() {
    run("proxy_protocol", proxy_protocol);
}

#[test]
fn fuzz_corpus_sni_never_panics() {
    run("sni", sni);
}

#[test]
fn fuzz_corpus_orca_never_panics() {
    run("orca", orca);
}

#[test]
fn fuzz_corpus_upstream_h1_never_panics() {
    run("upstream_h1", upstream_h1);
}

#[test]
fn fuzz_corpus_server_h1_never_panics() {
    run("server_h1", server_h1);
}

#[test]
fn fuzz_corpus_seeds_are_meaningful() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let minimal = std::fs::read_to_string(dir.join("config/minimal")).unwrap();
    fulcrum_config::parse(&minimal, None).expect("the minimal config seed is valid");
    let limits = std::fs::read_to_string(dir.join("config/limits")).unwrap();
    fulcrum_config::parse(&limits, None).expect("the limits config seed is valid");
    let hello = std::fs::read(dir.join("sni/client_hello")).unwrap();
    assert!(
        fulcrum_proxy::sni::parse(&hello).is_ok(),
        "the ClientHello seed parses"
    );
    for seed in ["v1", "v2_ipv4", "v2_local"] {
        let data = std::fs::read(dir.join("proxy_protocol").join(seed)).unwrap();
        assert!(
            fulcrum_proxy::proxy_protocol::parse(&data).is_ok(),
            "{seed}"
        );
    }
    let text = std::fs::read_to_string(dir.join("orca/text")).unwrap();
    assert!(fulcrum_balance::orca::parse(&text).is_ok());
    let answer = |seed: &str| {
        let data = std::fs::read(dir.join("upstream_h1").join(seed)).unwrap();
        read_h1_answer(&data[1..], data[0] & 1 == 1, data.len(), false)
    };
    assert!(matches!(
        answer("chunked_trailers").chunked,
        Some((body, ChunkedEnding::Trailers(_))) if body == b"abc"
    ));
    let informational = answer("informational_then_final");
    assert_eq!(informational.informational, 2);
    assert!(matches!(
        informational.chunked,
        Some((_, ChunkedEnding::End))
    ));
    assert_eq!(
        answer("head_request").head.unwrap().framing,
        fulcrum_proxy::upstream::h1::Framing::Empty
    );
    assert!(matches!(
        answer("chunk_missing_crlf").chunked,
        Some((_, ChunkedEnding::Invalid(_)))
    ));
    assert!(answer("length_conflict").head.is_err());
    let requests = |seed: &str| {
        let data = std::fs::read(dir.join("server_h1").join(seed)).unwrap();
        let settings = if data[0] & 0x80 == 0 {
            FUZZ_SMALL_LIMITS
        } else {
            FUZZ_LARGE_LIMITS
        };
        read_h1_requests(&data[1..], &settings, data.len())
    };
    let between_requests = H1End::NeedMore {
        in_body: false,
        buffered: Vec::new(),
    };
    let pipelined = requests("pipelined_gets");
    assert_eq!(pipelined.requests.len(), 3);
    assert_eq!(pipelined.end, between_requests);
    let post = requests("post_length");
    assert_eq!(post.requests.len(), 2);
    assert_eq!(post.requests[0].body, b"hello");
    let trailers = requests("chunked_trailers");
    assert_eq!(trailers.requests[0].body, b"abc");
    assert_eq!(
        trailers.requests[0].trailers.as_ref().map(|t| t.len()),
        Some(2)
    );
    assert_eq!(trailers.end, between_requests);
    let extensions = requests("chunked_extensions");
    assert_eq!(extensions.requests.len(), 2);
    assert_eq!(extensions.requests[0].body, b"abcdefgh");
    assert_eq!(requests("http10_keep_alive").requests.len(), 3);
    assert_eq!(requests("large_limits").requests[0].fields, 141);
    assert_eq!(
        requests("absolute_form").requests[0].target,
        "http://example.com:8080/p/q?r=s"
    );
    assert!(matches!(
        requests("truncated_body").end,
        H1End::NeedMore { in_body: true, .. }
    ));
    assert!(matches!(
        requests("bad_chunk_size").end,
        H1End::InvalidBody(_)
    ));
    for (seed, status) in [
        ("bad_version", http::StatusCode::HTTP_VERSION_NOT_SUPPORTED),
        ("space_before_colon", http::StatusCode::BAD_REQUEST),
        ("no_host", http::StatusCode::BAD_REQUEST),
        ("cl_and_te", http::StatusCode::BAD_REQUEST),
        ("te_not_last", http::StatusCode::BAD_REQUEST),
        (
            "head_too_large",
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
        (
            "too_many_headers",
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
    ] {
        let reading = requests(seed);
        assert!(reading.requests.is_empty(), "{seed}");
        assert_eq!(reading.end, H1End::Refused(status), "{seed}");
    }
}
