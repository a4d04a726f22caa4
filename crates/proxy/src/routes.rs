//! Route matching: host and path prefix to a cluster, first match wins.

use fulcrum_config::{HostMatch, RouteConfig};

/// One compiled route.
#[derive(Clone, Debug)]
struct Route {
    host: Option<HostMatch>,
    path_prefix: Option<String>,
    cluster: String,
    priority: Option<String>,
}

/// A listener's routes plus its default cluster.
#[derive(Clone, Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    default: Option<String>,
}

impl RouteTable {
    /// Compiles routes in order.
    pub fn new(routes: &[RouteConfig], default: Option<&str>) -> Self {
        Self {
            routes: routes
                .iter()
                .map(|r| Route {
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    cluster: r.cluster.clone(),
                    priority: r.priority.clone(),
                })
                .collect(),
            default: default.map(str::to_owned),
        }
    }

    /// The cluster for a request, or `None` (404) when nothing matches and
    /// there is no default. `host` may carry a port and any case.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&str> {
        self.find_with_priority(host, path)
            .map(|(cluster, _)| cluster)
    }

    /// Like [`find`](Self::find), with the matched route's priority class.
    pub fn find_with_priority(
        &self,
        host: Option<&str>,
        path: &str,
    ) -> Option<(&str, Option<&str>)> {
        let host = host.map(normalise_host);
        for r in &self.routes {
            if let Some(m) = &r.host {
                match &host {
                    Some(h) if m.matches(h) => {}
                    _ => continue,
                }
            }
            if let Some(p) = &r.path_prefix {
                if !path.starts_with(p.as_str()) {
                    continue;
                }
            }
            return Some((&r.cluster, r.priority.as_deref()));
        }
        self.default.as_deref().map(|c| (c, None))
    }
}

/// Lowercases and strips the port (`Example.COM:8080` → `example.com`,
/// `[::1]:80` → `[::1]`).
fn normalise_host(host: &str) -> std::borrow::Cow<'_, str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let r = |host: Option<HostMatch>, prefix: Option<&str>, cluster: &str| RouteConfig {
            host,
            path_prefix: prefix.map(str::to_owned),
            cluster: cluster.into(),
            priority: None,
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
}
