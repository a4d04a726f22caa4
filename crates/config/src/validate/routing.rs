//! Validation of the traffic-management keys: route matchers, weighted
//! splits, header rewrites, path rewrites, redirects, rate limits, and a
//! cluster's sticky sessions.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Validator;
use crate::file::*;
use crate::model::*;

/// One second: `rate = 100` reads as "100 requests per second" unless told.
const DEFAULT_RATE_PERIOD: Duration = Duration::from_secs(1);

impl Validator {
    /// Everything of a route beyond `host`, `path_prefix` and `cluster`.
    pub(super) fn route_rules(
        &mut self,
        key: &str,
        file: &FileRoute,
        clusters: &BTreeMap<String, ClusterConfig>,
        route: &mut RouteConfig,
    ) {
        let k = |name: &str| format!("{key}.{name}");
        if let Some(p) = &file.path {
            if !p.starts_with('/') {
                self.problem(k("path"), format!("`{p}` must start with `/`"));
            }
            route.path = Some(p.clone());
        }
        if let Some(re) = &file.path_regex {
            self.regex(&k("path_regex"), re);
            route.path_regex = Some(re.clone());
        }
        if let Some(methods) = &file.methods {
            if methods.is_empty() {
                self.problem(
                    k("methods"),
                    "is empty; list methods such as [\"GET\", \"HEAD\"], or remove it to accept any",
                );
            }
            for (i, m) in methods.iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    self.problem(
                        format!("{key}.methods[{i}]"),
                        format!("`{m}` is not an HTTP method; write it in capitals, e.g. \"GET\""),
                    );
                } else if !route.methods.contains(m) {
                    route.methods.push(m.clone());
                }
            }
        }
        for (name, m) in file.headers.iter().flatten() {
            let hkey = format!("{key}.headers.{name}");
            if !is_token(name) {
                self.problem(
                    &hkey,
                    format!("`{name}` is not a header name; use letters, digits and `-`"),
                );
            }
            if let Some(m) = self.value_match(&hkey, m) {
                route.headers.push((name.to_ascii_lowercase(), m));
            }
        }
        for (name, m) in file.query.iter().flatten() {
            let qkey = format!("{key}.query.{name}");
            if name.is_empty() {
                self.problem(&qkey, "a query parameter needs a name");
            }
            if let Some(m) = self.value_match(&qkey, m) {
                route.query.push((name.clone(), m));
            }
        }
        self.split(key, file, clusters, route);
        if let Some(r) = &file.request_headers {
            route.request_headers = self.header_rewrite(&k("request_headers"), r);
        }
        if let Some(r) = &file.response_headers {
            route.response_headers = self.header_rewrite(&k("response_headers"), r);
        }
        if let Some(p) = &file.rewrite_prefix {
            if file.path_prefix.is_none() {
                self.problem(
                    k("rewrite_prefix"),
                    "replaces the matched path_prefix, so the route needs one; add path_prefix = \"/old\"",
                );
            }
            if !p.starts_with('/') {
                self.problem(k("rewrite_prefix"), format!("`{p}` must start with `/`"));
            }
            route.rewrite_prefix = Some(p.clone());
        }
        if let Some(r) = &file.redirect {
            route.redirect = Some(self.redirect(&k("redirect"), r));
            if file.cluster.is_some() || file.clusters.is_some() {
                self.problem(
                    k("redirect"),
                    "a redirecting route sends to no cluster; remove `cluster`/`clusters` or the redirect",
                );
            }
        }
        if let Some(r) = &file.rate_limit {
            route.rate_limit = Some(self.rate_limit(&k("rate_limit"), r));
        }
        route.max_body_bytes = file.max_body_bytes;
        route.allow = self.networks(&k("allow"), file.allow.as_deref());
        route.deny = self.networks(&k("deny"), file.deny.as_deref());
        if file.redirect.is_some() && file.max_body_bytes.is_some() {
            self.problem(
                k("max_body_bytes"),
                "a redirecting route reads no body; remove `max_body_bytes` or the redirect",
            );
        }
    }

    /// `clusters = [{ cluster = "v1", weight = 90 }, ...]`.
    fn split(
        &mut self,
        key: &str,
        file: &FileRoute,
        clusters: &BTreeMap<String, ClusterConfig>,
        route: &mut RouteConfig,
    ) {
        let Some(list) = &file.clusters else { return };
        let skey = format!("{key}.clusters");
        if file.cluster.is_some() {
            self.problem(
                &skey,
                "a route sends either to one `cluster` or splits across `clusters`; remove one of them",
            );
        }
        if list.is_empty() {
            self.problem(
                &skey,
                "is empty; write e.g. [{ cluster = \"v1\", weight = 90 }, { cluster = \"v2\", weight = 10 }]",
            );
            return;
        }
        let mut total = 0u64;
        for (i, w) in list.iter().enumerate() {
            let wkey = format!("{skey}[{i}]");
            let Some(name) = &w.cluster else {
                self.problem(
                    format!("{wkey}.cluster"),
                    "missing; each entry names a cluster: { cluster = \"v1\", weight = 90 }",
                );
                continue;
            };
            self.cluster_ref(&format!("{wkey}.cluster"), name, clusters);
            let weight = w.weight.unwrap_or(1);
            if weight > MAX_WEIGHT {
                self.problem(
                    format!("{wkey}.weight"),
                    format!("{weight} is above the maximum {MAX_WEIGHT}"),
                );
            }
            total += u64::from(weight);
            route.split.push(WeightedCluster {
                cluster: name.clone(),
                weight: weight.min(MAX_WEIGHT),
            });
        }
        if total == 0 {
            self.problem(
                &skey,
                "every weight is 0, so no request could be sent; give at least one cluster a weight",
            );
        }
    }

    /// `{ present = true }`, `{ exact = "v" }` or `{ regex = "..." }`.
    fn value_match(&mut self, key: &str, file: &FileValueMatch) -> Option<ValueMatch> {
        let set = [
            file.present.is_some(),
            file.exact.is_some(),
            file.regex.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            self.problem(
                key,
                "write exactly one of { present = true }, { exact = \"value\" } or { regex = \"...\" }",
            );
            return None;
        }
        if let Some(p) = file.present {
            return Some(if p {
                ValueMatch::Present
            } else {
                ValueMatch::Absent
            });
        }
        if let Some(v) = &file.exact {
            if !is_header_value(v) {
                self.problem(
                    format!("{key}.exact"),
                    "contains control characters; write printable text",
                );
            }
            return Some(ValueMatch::Exact(v.clone()));
        }
        let re = file.regex.as_ref()?;
        self.regex(&format!("{key}.regex"), re);
        Some(ValueMatch::Regex(re.clone()))
    }

    fn regex(&mut self, key: &str, re: &str) {
        if let Err(e) = regex::Regex::new(re) {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or("invalid").trim();
            self.problem(
                key,
                format!("`{re}` is not a valid regular expression ({last})"),
            );
        }
    }

    fn header_rewrite(&mut self, key: &str, file: &FileHeaderRewrite) -> HeaderRewrite {
        let mut r = HeaderRewrite::default();
        for (op, map, out) in [
            ("set", &file.set, &mut r.set),
            ("add", &file.add, &mut r.add),
        ] {
            for (name, value) in map.iter().flatten() {
                let hkey = format!("{key}.{op}.{name}");
                if !is_token(name) {
                    self.problem(
                        &hkey,
                        format!("`{name}` is not a header name; use letters, digits and `-`"),
                    );
                } else if !is_header_value(value) {
                    self.problem(&hkey, "contains control characters; write printable text");
                } else {
                    out.push((name.to_ascii_lowercase(), value.clone()));
                }
            }
        }
        for (i, name) in file.remove.iter().flatten().enumerate() {
            if is_token(name) {
                r.remove.push(name.to_ascii_lowercase());
            } else {
                self.problem(
                    format!("{key}.remove[{i}]"),
                    format!("`{name}` is not a header name; use letters, digits and `-`"),
                );
            }
        }
        r
    }

    fn redirect(&mut self, key: &str, file: &FileRedirect) -> Redirect {
        if let Some(s) = &file.scheme {
            if s != "http" && s != "https" {
                self.problem(
                    format!("{key}.scheme"),
                    format!("`{s}` is not a scheme; write \"http\" or \"https\""),
                );
            }
        }
        if let Some(h) = &file.host {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
                self.problem(
                    format!("{key}.host"),
                    format!("`{h}` is not a host; write e.g. \"www.example.com\" or \"example.com:8443\""),
                );
            }
        }
        if let Some(p) = &file.path {
            if !p.starts_with('/') || !p.bytes().all(|b| b.is_ascii_graphic()) {
                self.problem(
                    format!("{key}.path"),
                    format!("`{p}` must start with `/` and have no spaces"),
                );
            }
        }
        let status = file.status.unwrap_or(DEFAULT_REDIRECT_STATUS);
        if !matches!(status, 301 | 302 | 307 | 308) {
            self.problem(
                format!("{key}.status"),
                format!("{status} is not a redirect status; write 301, 302, 307 or 308"),
            );
        }
        Redirect {
            scheme: file.scheme.clone(),
            host: file.host.clone(),
            path: file.path.clone(),
            status,
        }
    }

    fn rate_limit(&mut self, key: &str, file: &FileRateLimit) -> RateLimitConfig {
        let rate = match file.rate {
            Some(0) => {
                self.problem(
                    format!("{key}.rate"),
                    "must be at least 1; remove rate_limit to turn limiting off",
                );
                1
            }
            Some(r) => r,
            None => {
                self.problem(
                    format!("{key}.rate"),
                    "missing; write the requests allowed per `per`, e.g. rate = 100",
                );
                1
            }
        };
        let per = self
            .duration(&format!("{key}.per"), file.per.as_deref())
            .unwrap_or(DEFAULT_RATE_PERIOD);
        let burst = match file.burst {
            Some(0) => {
                self.problem(
                    format!("{key}.burst"),
                    "must be at least 1 (a bucket that holds nothing lets nothing through)",
                );
                1
            }
            Some(b) => b,
            None => rate,
        };
        let limit_key = match file.key.as_deref() {
            None | Some("client-ip") => RateLimitKey::ClientIp,
            Some(k) => {
                match k.split_once(':') {
                    Some(("header", name)) if is_token(name) => {
                        RateLimitKey::Header(name.to_ascii_lowercase())
                    }
                    _ => {
                        self.problem(
                        format!("{key}.key"),
                        format!("`{k}` is not a rate-limit key; write \"client-ip\" or \"header:NAME\""),
                    );
                        RateLimitKey::ClientIp
                    }
                }
            }
        };
        if let Some(url) = &file.redis {
            let rest = url.strip_prefix("redis://").unwrap_or("");
            if rest.is_empty() || rest.bytes().any(|b| b.is_ascii_whitespace()) {
                self.problem(
                    format!("{key}.redis"),
                    format!("`{url}` is not a Redis URL; write e.g. \"redis://127.0.0.1:6379\""),
                );
            }
        }
        RateLimitConfig {
            rate,
            per,
            burst,
            key: limit_key,
            redis: file.redis.clone(),
        }
    }

    pub(super) fn sticky(&mut self, key: &str, file: &FileSticky) -> StickyConfig {
        let cookie = file
            .cookie
            .clone()
            .unwrap_or_else(|| DEFAULT_STICKY_COOKIE.to_owned());
        if !is_token(&cookie) {
            self.problem(
                format!("{key}.cookie"),
                format!("`{cookie}` is not a cookie name; use letters, digits, `-` and `_`"),
            );
        }
        let ttl = self
            .duration(&format!("{key}.ttl"), file.ttl.as_deref())
            .unwrap_or(DEFAULT_STICKY_TTL);
        StickyConfig {
            cookie,
            ttl,
            secret: file.secret.clone().unwrap_or_default(),
        }
    }
}

/// An HTTP token (RFC 9110 §5.6.2): header, cookie and method names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value without control characters (tab allowed).
fn is_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}
