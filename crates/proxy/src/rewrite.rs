//! Route actions that change a request or answer it: header edits, path
//! prefix rewrites and redirects, compiled once per snapshot.

use bytes::Bytes;
use fulcrum_config::{HeaderRewrite, Redirect};
use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};

use crate::body::ProxyBody;

/// Header edits, applied in the order remove, set, add (so `set` of a
/// removed name puts it back, and `add` appends after `set`).
#[derive(Clone, Debug, Default)]
pub struct HeaderEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// Compiles validated edits (invalid names or values, which validation
    /// refuses, are skipped).
    pub fn compile(r: &HeaderRewrite) -> Self {
        let pair = |(n, v): &(String, String)| {
            Some((
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        };
        Self {
            remove: r
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            set: r.set.iter().filter_map(pair).collect(),
            add: r.add.iter().filter_map(pair).collect(),
        }
    }

    /// Whether there is nothing to do.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the edits.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }
}

/// Replaces a matched path prefix (`/old/` → `/new/`).
#[derive(Clone, Debug)]
pub struct PrefixRewrite {
    from: String,
    to: String,
}

impl PrefixRewrite {
    /// Rewrites paths starting with `from` to start with `to`.
    pub fn new(from: &str, to: &str) -> Self {
        Self {
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    /// The rewritten path and query; unchanged if the path lacks the prefix.
    ///
    /// A doubled slash at the seam is avoided: `/api` → `/` turns
    /// `/api/users` into `/users`, not `//users`.
    pub fn apply(&self, pq: &PathAndQuery) -> PathAndQuery {
        let Some(rest) = pq.path().strip_prefix(self.from.as_str()) else {
            return pq.clone();
        };
        let mut s = String::with_capacity(self.to.len() + pq.as_str().len());
        s.push_str(&self.to);
        if s.ends_with('/') && rest.starts_with('/') {
            s.pop();
        }
        s.push_str(rest);
        if s.is_empty() {
            s.push('/');
        }
        if let Some(q) = pq.query() {
            s.push('?');
            s.push_str(q);
        }
        PathAndQuery::try_from(s).unwrap_or_else(|_| pq.clone())
    }
}

/// A redirect answered by the proxy.
#[derive(Clone, Debug)]
pub struct RedirectRule {
    scheme: Option<String>,
    host: Option<String>,
    path: Option<String>,
    status: StatusCode,
}

impl RedirectRule {
    /// Compiles a validated redirect.
    pub fn new(r: &Redirect) -> Self {
        Self {
            scheme: r.scheme.clone(),
            host: r.host.clone(),
            path: r.path.clone(),
            status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND),
        }
    }

    /// The `Location` for a request: the rule's scheme, host and path where
    /// set, the request's otherwise (its path after `rewrite`). The query is
    /// kept unless the rule's path brings its own.
    pub fn location(
        &self,
        tls: bool,
        host: Option<&str>,
        uri: &Uri,
        rewrite: Option<&PrefixRewrite>,
    ) -> String {
        let scheme = self
            .scheme
            .as_deref()
            .unwrap_or(if tls { "https" } else { "http" });
        let mut out = String::with_capacity(64);
        if let Some(host) = self.host.as_deref().or(host) {
            out.push_str(scheme);
            out.push_str("://");
            out.push_str(host);
        }
        let original = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match &self.path {
            Some(p) => {
                out.push_str(p);
                if let (false, Some(q)) = (p.contains('?'), original.query()) {
                    out.push('?');
                    out.push_str(q);
                }
            }
            None => {
                let pq = rewrite.map_or(original.clone(), |r| r.apply(&original));
                out.push_str(pq.as_str());
            }
        }
        out
    }

    /// The redirect response for a request.
    pub fn response(
        &self,
        tls: bool,
        host: Option<&str>,
        uri: &Uri,
        rewrite: Option<&PrefixRewrite>,
    ) -> Response<ProxyBody> {
        let location = self.location(tls, host, uri, rewrite);
        let body = format!("{} redirect: {location}\n", self.status.as_u16());
        let mut response = Response::new(ProxyBody::local(Bytes::from(body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::try_from(location) {
            headers.insert(header::LOCATION, v);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrite_keeps_rest_and_query() {
        let r = PrefixRewrite::new("/old/", "/new/");
        let pq = PathAndQuery::from_static("/old/a/b?x=1");
        assert_eq!(r.apply(&pq).as_str(), "/new/a/b?x=1");
        let r = PrefixRewrite::new("/api", "/");
        assert_eq!(
            r.apply(&PathAndQuery::from_static("/api/users")).as_str(),
            "/users"
        );
        assert_eq!(r.apply(&PathAndQuery::from_static("/api")).as_str(), "/");
        let r = PrefixRewrite::new("/api", "");
        assert_eq!(r.apply(&PathAndQuery::from_static("/api")).as_str(), "/");
    }

    #[test]
    fn header_edits_remove_then_set_then_add() {
        let edits = HeaderEdits::compile(&HeaderRewrite {
            set: vec![("x-a".into(), "set".into())],
            add: vec![("x-a".into(), "added".into())],
            remove: vec!["x-a".into(), "x-gone".into()],
        });
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("old"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        edits.apply(&mut h);
        let a: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(a, ["set", "added"]);
        assert!(!h.contains_key("x-gone"));
    }

    #[test]
    fn redirect_location_fills_in_from_the_request() {
        let uri: Uri = "/old/page?q=1".parse().unwrap();
        let rule = |scheme: Option<&str>, host: Option<&str>, path: Option<&str>| {
            RedirectRule::new(&Redirect {
                scheme: scheme.map(Into::into),
                host: host.map(Into::into),
                path: path.map(Into::into),
                status: 301,
            })
        };
        let rw = PrefixRewrite::new("/old/", "/new/");
        assert_eq!(
            rule(Some("https"), None, None).location(false, Some("a.test:80"), &uri, None),
            "https://a.test:80/old/page?q=1"
        );
        assert_eq!(
            rule(None, Some("b.test"), None).location(true, Some("a.test"), &uri, Some(&rw)),
            "https://b.test/new/page?q=1"
        );
        assert_eq!(
            rule(None, None, Some("/moved")).location(false, Some("a.test"), &uri, None),
            "http://a.test/moved?q=1"
        );
        assert_eq!(
            rule(None, None, Some("/x?y=2")).location(false, None, &uri, None),
            "/x?y=2"
        );
    }
}
