//! Route matching: the first route (in file order) whose every matcher
//! holds decides where a request goes.
//!
//! A route may match on host (exact or `*.suffix`), path (exact, prefix or
//! regular expression), method, headers (present, absent, exact, regex)
//! and query parameters (present, absent, exact, regex). It sends to one
//! cluster, splits across weighted clusters (canary), or answers with a
//! redirect; it may rewrite headers and the path prefix, and rate-limit.
//!
//! Everything is compiled once when the snapshot is built
//! ([`RouteTable::new`]): regexes, header names, methods, cumulative split
//! weights. Matching a request allocates nothing, except the lowercase copy
//! of a Host header written in capitals.

use std::sync::Arc;

use fulcrum_config::{HostMatch, IpNet, RouteConfig, ValueMatch};
use http::header::HeaderName;
use http::{HeaderMap, Method};
use regex::Regex;

use crate::ratelimit::RateLimiter;
use crate::rewrite::{HeaderEdits, PrefixRewrite, RedirectRule};

/// How a header or query parameter must look, compiled.
#[derive(Clone, Debug)]
enum Matcher {
    Present,
    Absent,
    Exact(String),
    Regex(Regex),
}

impl Matcher {
    fn compile(m: &ValueMatch) -> Self {
        match m {
            ValueMatch::Present => Matcher::Present,
            ValueMatch::Absent => Matcher::Absent,
            ValueMatch::Exact(v) => Matcher::Exact(v.clone()),
            // Validated with the same crate; a failure here is a bug, and a
            // route that never matches is the safe outcome.
            ValueMatch::Regex(r) => Matcher::Regex(Regex::new(r).unwrap_or_else(|_| never())),
        }
    }

    /// Whether the values found (possibly none) satisfy the matcher: one
    /// value satisfying it is enough.
    fn holds<'v>(&self, mut values: impl Iterator<Item = &'v [u8]>) -> bool {
        match self {
            Matcher::Present => values.next().is_some(),
            Matcher::Absent => values.next().is_none(),
            Matcher::Exact(want) => values.any(|v| v == want.as_bytes()),
            Matcher::Regex(re) => {
                values.any(|v| std::str::from_utf8(v).is_ok_and(|s| re.is_match(s)))
            }
        }
    }

    /// Like [`holds`](Self::holds) for query values, which are compared
    /// percent-decoded (`a%20b` and `a+b` equal `"a b"`).
    fn holds_query<'v>(&self, mut values: impl Iterator<Item = &'v str>) -> bool {
        match self {
            Matcher::Present => values.next().is_some(),
            Matcher::Absent => values.next().is_none(),
            Matcher::Exact(want) => values.any(|v| decoded_eq(v, want)),
            Matcher::Regex(re) => values.any(|v| {
                if v.bytes().any(|b| b == b'%' || b == b'+') {
                    re.is_match(&decode(v))
                } else {
                    re.is_match(v)
                }
            }),
        }
    }
}

/// The access rule of listeners and routes: a client in `deny` is refused;
/// otherwise an empty `allow` admits everyone and a non-empty one only its
/// members. `ip` is the connection's peer address, the one address a client
/// cannot forge (a trusted proxy's `X-Forwarded-For` is relayed, never used
/// to grant access).
#[inline]
pub fn admits(allow: &[IpNet], deny: &[IpNet], ip: std::net::IpAddr) -> bool {
    !deny.iter().any(|n| n.contains(ip))
        && (allow.is_empty() || allow.iter().any(|n| n.contains(ip)))
}

/// A regex that matches nothing.
fn never() -> Regex {
    Regex::new(r"[^\s\S]").expect("valid")
}

/// Where a matched route sends its requests.
#[derive(Clone, Debug)]
enum Target {
    Cluster(String),
    /// Clusters with cumulative weights; the last is the total.
    Split(Vec<(String, u32)>),
    Redirect,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    host: Option<HostMatch>,
    path_prefix: Option<String>,
    path: Option<String>,
    path_regex: Option<Regex>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Matcher)>,
    query: Vec<(String, Matcher)>,
    target: Target,
    request_headers: HeaderEdits,
    response_headers: HeaderEdits,
    rewrite: Option<PrefixRewrite>,
    redirect: Option<RedirectRule>,
    rate_limit: Option<Arc<RateLimiter>>,
    config: RouteConfig,
}

impl Route {
    /// The priority class this route gives its requests, if it sets one.
    pub fn priority(&self) -> Option<&str> {
        self.config.priority.as_deref()
    }

    fn compile(config: &RouteConfig, scope: &str) -> Self {
        let target = if config.redirect.is_some() {
            Target::Redirect
        } else if !config.split.is_empty() {
            let mut total = 0u32;
            Target::Split(
                config
                    .split
                    .iter()
                    .map(|w| {
                        total = total.saturating_add(w.weight);
                        (w.cluster.clone(), total)
                    })
                    .collect(),
            )
        } else {
            Target::Cluster(config.cluster.clone())
        };
        Route {
            host: config.host.clone(),
            path_prefix: config.path_prefix.clone(),
            path: config.path.clone(),
            path_regex: config
                .path_regex
                .as_deref()
                .map(|r| Regex::new(r).unwrap_or_else(|_| never())),
            methods: config
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            headers: config
                .headers
                .iter()
                .filter_map(|(n, m)| {
                    Some((
                        HeaderName::from_bytes(n.as_bytes()).ok()?,
                        Matcher::compile(m),
                    ))
                })
                .collect(),
            query: config
                .query
                .iter()
                .map(|(n, m)| (n.clone(), Matcher::compile(m)))
                .collect(),
            target,
            request_headers: HeaderEdits::compile(&config.request_headers),
            response_headers: HeaderEdits::compile(&config.response_headers),
            rewrite: match (&config.path_prefix, &config.rewrite_prefix) {
                (Some(from), Some(to)) => Some(PrefixRewrite::new(from, to)),
                _ => None,
            },
            redirect: config.redirect.as_ref().map(RedirectRule::new),
            rate_limit: config
                .rate_limit
                .as_ref()
                .map(|r| Arc::new(RateLimiter::new(r, scope))),
            config: config.clone(),
        }
    }

    fn matches(&self, req: &RequestHead<'_>) -> bool {
        if let Some(m) = &self.host {
            match req.host {
                Some(h) if m.matches(h) => {}
                _ => return false,
            }
        }
        if let Some(p) = &self.path {
            if req.path != p {
                return false;
            }
        }
        if let Some(p) = &self.path_prefix {
            if !req.path.starts_with(p.as_str()) {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        for (name, m) in &self.headers {
            if !m.holds(req.headers.get_all(name).iter().map(|v| v.as_bytes())) {
                return false;
            }
        }
        for (name, m) in &self.query {
            if !m.holds_query(query_values(req.query, name)) {
                return false;
            }
        }
        if let Some(re) = &self.path_regex {
            if !re.is_match(req.path) {
                return false;
            }
        }
        true
    }

    /// Edits of the request headers sent upstream.
    pub fn request_headers(&self) -> &HeaderEdits {
        &self.request_headers
    }

    /// Edits of the response headers sent to the client.
    pub fn response_headers(&self) -> &HeaderEdits {
        &self.response_headers
    }

    /// The path prefix rewrite, if any.
    pub fn rewrite(&self) -> Option<&PrefixRewrite> {
        self.rewrite.as_ref()
    }

    /// The redirect this route answers with, if any.
    pub fn redirect(&self) -> Option<&RedirectRule> {
        self.redirect.as_ref()
    }

    /// The route's rate limiter, if any.
    pub fn rate_limit(&self) -> Option<&RateLimiter> {
        self.rate_limit.as_deref()
    }

    /// The route's own body limit, overriding the listener's, if it sets one.
    pub fn max_body_bytes(&self) -> Option<u64> {
        self.config.max_body_bytes
    }

    /// Whether the route's `allow`/`deny` lists admit client `ip` (the same
    /// rule as the listener's: `deny` first, then `allow` when not empty).
    /// A route without lists admits everyone at the cost of two length checks.
    #[inline]
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        admits(&self.config.allow, &self.config.deny, ip)
    }
}

/// What a route looks at in a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The authority, lowercase without port.
    pub host: Option<&'a str>,
    /// The method.
    pub method: &'a Method,
    /// The path, without query.
    pub path: &'a str,
    /// The raw query, without `?`.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// The outcome of matching: a route (or the listener's default), and the
/// cluster to send to (`None` for a redirect).
#[derive(Clone, Copy, Debug)]
pub struct Matched<'a> {
    /// The matched route; `None` when the default cluster took the request.
    pub route: Option<&'a Route>,
    /// The cluster chosen (after a weighted split); `None` for redirects.
    pub cluster: Option<&'a str>,
}

/// A listener's routes plus its default cluster.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    default: Option<String>,
}

impl RouteTable {
    /// Compiles routes in order.
    pub fn new(routes: &[RouteConfig], default: Option<&str>) -> Self {
        Self::scoped(routes, default, "")
    }

    /// Compiles routes; `scope` (the listener's name) names the routes'
    /// shared rate-limit counters, so instances with the same configuration
    /// share them.
    pub fn scoped(routes: &[RouteConfig], default: Option<&str>, scope: &str) -> Self {
        Self {
            routes: routes
                .iter()
                .enumerate()
                .map(|(i, r)| Route::compile(r, &format!("{scope}:{i}")))
                .collect(),
            default: default.map(str::to_owned),
        }
    }

    /// Keeps the learned state (rate-limit buckets) of `previous` for every
    /// route whose configuration is unchanged, so a reload or an admin
    /// change does not hand every client a fresh bucket.
    pub fn carry_over(&mut self, previous: &RouteTable) {
        for (new, old) in self.routes.iter_mut().zip(&previous.routes) {
            if new.config == old.config {
                new.rate_limit.clone_from(&old.rate_limit);
            }
        }
    }

    /// The route and cluster for a request, or `None` (404) when nothing
    /// matches and there is no default. `host` may carry a port and any case.
    pub fn select<'t>(
        &'t self,
        host: Option<&str>,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Option<Matched<'t>> {
        let host = host.map(normalise_host);
        let head = RequestHead {
            host: host.as_deref(),
            method,
            path: uri.path(),
            query: uri.query(),
            headers,
        };
        self.select_head(&head)
    }

    /// [`select`](Self::select) on a prepared [`RequestHead`] (host
    /// already normalised).
    pub fn select_head<'t>(&'t self, req: &RequestHead<'_>) -> Option<Matched<'t>> {
        for r in &self.routes {
            if !r.matches(req) {
                continue;
            }
            let cluster = match &r.target {
                Target::Cluster(c) => Some(c.as_str()),
                Target::Split(list) => {
                    let total = list.last().map_or(0, |(_, t)| *t);
                    let roll = fastrand::u32(0..total.max(1));
                    list.iter()
                        .find(|(_, t)| roll < *t)
                        .map(|(c, _)| c.as_str())
                }
                Target::Redirect => None,
            };
            return Some(Matched {
                route: Some(r),
                cluster,
            });
        }
        self.default.as_deref().map(|c| Matched {
            route: None,
            cluster: Some(c),
        })
    }

    /// The cluster for a request with this host and path (method GET, no
    /// headers, no query), or `None` when nothing matches and there is no
    /// default, or the route redirects.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&str> {
        let host = host.map(normalise_host);
        let headers = HeaderMap::new();
        let head = RequestHead {
            host: host.as_deref(),
            method: &Method::GET,
            path,
            query: None,
            headers: &headers,
        };
        self.select_head(&head)?.cluster
    }
}

/// Lowercases and strips the port (`Example.COM:8080` → `example.com`,
/// `[::1]:80` → `[::1]`).
pub fn normalise_host(host: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if without_port.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(without_port.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(without_port)
    }
}

/// The raw values of query parameter `name` (`a=1&b&a=2` gives `1`, `2`
/// for `a` and `` for `b`).
fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = &'q str> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            decoded_eq(k, name).then_some(v)
        })
}

/// The value of one `%XX` or `+` escape starting at `bytes[i]`, and its length.
fn decode_at(bytes: &[u8], i: usize) -> (u8, usize) {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    match bytes[i] {
        b'+' => (b' ', 1),
        b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
            (Some(h), Some(l)) => (h * 16 + l, 3),
            _ => (b'%', 1),
        },
        b => (b, 1),
    }
}

/// Whether percent-encoded `raw` decodes to `want`, without allocating.
fn decoded_eq(raw: &str, want: &str) -> bool {
    let raw = raw.as_bytes();
    let want = want.as_bytes();
    let (mut i, mut j) = (0, 0);
    while i < raw.len() {
        let (b, n) = decode_at(raw, i);
        if want.get(j) != Some(&b) {
            return false;
        }
        i += n;
        j += 1;
    }
    j == want.len()
}

/// Percent-decodes `raw` (for regex matching of encoded values).
fn decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let (b, n) = decode_at(bytes, i);
        out.push(b);
        i += n;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_config::WeightedCluster;

    fn route(cluster: &str) -> RouteConfig {
        RouteConfig {
            cluster: cluster.into(),
            ..RouteConfig::default()
        }
    }

    fn table() -> RouteTable {
        let r = |host: Option<HostMatch>, prefix: Option<&str>, cluster: &str| RouteConfig {
            host,
            path_prefix: prefix.map(str::to_owned),
            ..route(cluster)
        };
        RouteTable::new(
            &[
                r(
                    Some(HostMatch::Exact("api.example.com".into())),
                    Some("/v1"),
                    "api",
                ),
                r(Some(HostMatch::Suffix(".example.com".into())), None, "wild"),
                r(None, Some("/static/"), "static"),
            ],
            Some("app"),
        )
    }

    fn select<'t>(
        t: &'t RouteTable,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Option<&'t str> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let uri: http::Uri = uri.parse().unwrap();
        t.select(
            Some("example.org"),
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &uri,
            &h,
        )
        .and_then(|m| m.cluster)
    }

    #[test]
    fn route_table_first_match_wins() {
        let t = table();
        assert_eq!(
            t.find(Some("API.example.com:8080"), "/v1/users"),
            Some("api")
        );
        assert_eq!(t.find(Some("api.example.com"), "/v2"), Some("wild"));
        assert_eq!(
            t.find(Some("www.example.com"), "/static/a.css"),
            Some("wild")
        );
        assert_eq!(t.find(Some("other.org"), "/static/a.css"), Some("static"));
        assert_eq!(t.find(Some("example.com"), "/"), Some("app"));
        assert_eq!(t.find(None, "/"), Some("app"));
    }

    #[test]
    fn route_table_without_default_finds_nothing() {
        let t = RouteTable::new(&[], None);
        assert_eq!(t.find(Some("x"), "/"), None);
    }

    #[test]
    fn route_matchers_all_must_hold() {
        let t = RouteTable::new(
            &[
                RouteConfig {
                    path: Some("/exact".into()),
                    ..route("exact")
                },
                RouteConfig {
                    path_regex: Some("^/items/[0-9]+$".into()),
                    methods: vec!["PUT".into()],
                    ..route("regex")
                },
                RouteConfig {
                    headers: vec![
                        ("x-canary".into(), ValueMatch::Present),
                        ("x-user".into(), ValueMatch::Exact("alice".into())),
                    ],
                    ..route("headers")
                },
                RouteConfig {
                    headers: vec![("user-agent".into(), ValueMatch::Regex("^curl/".into()))],
                    query: vec![("debug".into(), ValueMatch::Exact("a b".into()))],
                    ..route("query")
                },
                RouteConfig {
                    query: vec![
                        ("beta".into(), ValueMatch::Present),
                        ("legacy".into(), ValueMatch::Absent),
                    ],
                    ..route("beta")
                },
            ],
            None,
        );
        assert_eq!(select(&t, "GET", "/exact", &[]), Some("exact"));
        assert_eq!(select(&t, "GET", "/exact/", &[]), None);
        assert_eq!(select(&t, "PUT", "/items/42", &[]), Some("regex"));
        assert_eq!(select(&t, "GET", "/items/42", &[]), None);
        assert_eq!(select(&t, "PUT", "/items/42x", &[]), None);
        let both = [("x-canary", "1"), ("x-user", "alice")];
        assert_eq!(select(&t, "GET", "/", &both), Some("headers"));
        assert_eq!(select(&t, "GET", "/", &both[..1]), None);
        let curl = [("user-agent", "curl/8")];
        assert_eq!(select(&t, "GET", "/?debug=a%20b", &curl), Some("query"));
        assert_eq!(select(&t, "GET", "/?x=1&debug=a+b", &curl), Some("query"));
        assert_eq!(select(&t, "GET", "/?debug=ab", &curl), None);
        assert_eq!(select(&t, "GET", "/?debug=a+b", &[]), None);
        assert_eq!(select(&t, "GET", "/?beta", &[]), Some("beta"));
        assert_eq!(select(&t, "GET", "/?beta=1&legacy=1", &[]), None);
    }

    #[test]
    fn route_split_follows_weights() {
        let t = RouteTable::new(
            &[RouteConfig {
                split: vec![
                    WeightedCluster {
                        cluster: "v1".into(),
                        weight: 90,
                    },
                    WeightedCluster {
                        cluster: "off".into(),
                        weight: 0,
                    },
                    WeightedCluster {
                        cluster: "v2".into(),
                        weight: 10,
                    },
                ],
                ..RouteConfig::default()
            }],
            None,
        );
        let mut v2 = 0;
        for _ in 0..10_000 {
            match t.find(None, "/") {
                Some("v2") => v2 += 1,
                Some("v1") => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!((800..1200).contains(&v2), "v2 got {v2} of 10000");
    }

    #[test]
    fn decoded_eq_compares_percent_decoded() {
        assert!(decoded_eq("a%2Fb", "a/b"));
        assert!(decoded_eq("a+b", "a b"));
        assert!(decoded_eq("100%", "100%"));
        assert!(!decoded_eq("a%2", "a/"));
        assert!(!decoded_eq("ab", "abc"));
        assert_eq!(decode("x%41%zz+"), "xA%zz ");
    }

    #[test]
    fn admits_checks_deny_first_then_a_non_empty_allow() {
        let net = |s: &str| IpNet::parse(s).unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(admits(&[], &[], ip("192.0.2.1")));
        let allow = [net("10.0.0.0/8")];
        let deny = [net("10.9.0.0/16")];
        assert!(admits(&allow, &deny, ip("10.1.2.3")));
        assert!(!admits(&allow, &deny, ip("10.9.2.3")));
        assert!(!admits(&allow, &[], ip("192.0.2.1")));
        assert!(!admits(&[], &deny, ip("10.9.0.1")));
        // IPv4-mapped IPv6 peers are the same client.
        assert!(admits(&allow, &deny, ip("::ffff:10.1.2.3")));
    }
}
