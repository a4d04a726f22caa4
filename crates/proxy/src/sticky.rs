//! Sticky sessions by cookie: Fulcrum names the backend that served a
//! client in a cookie and sends the client's later requests there.
//!
//! The cookie value is opaque: 16 hex digits of a keyed SipHash of the
//! cluster's `secret`, the cluster name and the backend's address, so it
//! does not reveal the address (with a secret set, it cannot be guessed
//! either), and every instance with the same configuration computes the
//! same values — a client keeps its backend whichever instance it reaches.
//!
//! A request whose cookie names a backend that is still usable goes there,
//! bypassing the Selector; a *draining* backend keeps its sessions (as
//! HAProxy does), so a drain lets sessions end rather than cutting them.
//! When the backend is gone, disabled or unhealthy, the Selector picks a
//! new one and the answer re-issues the cookie. The table of values is
//! built once per snapshot; a lookup is a binary search.

use std::hash::{Hash, Hasher};

use fulcrum_balance::{AdminState, BackendId, BackendSet};
use fulcrum_config::StickyConfig;
use http::header::{self, HeaderValue};
use http::HeaderMap;

/// A cluster's sticky-session cookie values.
#[derive(Debug)]
pub struct StickyTable {
    cookie: String,
    /// `Set-Cookie` values by backend id.
    set_cookie: Vec<HeaderValue>,
    /// (cookie value, backend), sorted by value.
    by_value: Vec<(u64, BackendId)>,
}

impl StickyTable {
    /// The table for `set`, the backends of cluster `cluster`.
    pub fn new(config: &StickyConfig, cluster: &str, set: &BackendSet) -> Self {
        let mut by_value = Vec::with_capacity(set.len());
        let mut set_cookie = Vec::with_capacity(set.len());
        for (i, b) in set.backends().iter().enumerate() {
            let value = cookie_value(&config.secret, cluster, &b.address);
            by_value.push((value, BackendId(i as u32)));
            let text = format!(
                "{}={value:016x}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                config.cookie,
                config.ttl.as_secs().max(1)
            );
            set_cookie
                .push(HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("")));
        }
        by_value.sort_unstable();
        Self {
            cookie: config.cookie.clone(),
            set_cookie,
            by_value,
        }
    }

    /// The backend the request's cookie names, if it may still serve.
    pub fn lookup(&self, headers: &HeaderMap, set: &BackendSet) -> Option<BackendId> {
        let raw = find_cookie(headers, &self.cookie)?;
        let value = u64::from_str_radix(raw, 16)
            .ok()
            .filter(|_| raw.len() == 16)?;
        let i = self
            .by_value
            .binary_search_by_key(&value, |(v, _)| *v)
            .ok()?;
        let id = self.by_value[i].1;
        let b = set.get(id);
        let keeps_sessions = b.admin == AdminState::Draining && b.state.is_healthy();
        (set.is_usable(id) || keeps_sessions).then_some(id)
    }

    /// Adds `Set-Cookie` naming `id` unless the request already carried it
    /// (`pinned`).
    pub fn stick(&self, id: BackendId, pinned: Option<BackendId>, headers: &mut HeaderMap) {
        if pinned == Some(id) {
            return;
        }
        if let Some(v) = self.set_cookie.get(id.index()) {
            headers.append(header::SET_COOKIE, v.clone());
        }
    }
}

/// The opaque cookie value of a backend.
fn cookie_value(secret: &str, cluster: &str, address: &str) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x6675_6c63_7275_6d21, 0x7374_6963_6b79_2121);
    secret.hash(&mut h);
    cluster.hash(&mut h);
    address.hash(&mut h);
    h.finish()
}

/// The value of cookie `name` in the request, without allocating.
fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_balance::Backend;
    use std::time::Duration;

    fn config() -> StickyConfig {
        StickyConfig {
            cookie: "sid".into(),
            ttl: Duration::from_secs(60),
            secret: "s3cret".into(),
        }
    }

    fn request_with(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::try_from(format!("a=b; {pair}")).unwrap(),
        );
        h
    }

    #[test]
    fn sticky_cookie_names_the_backend_opaquely() {
        let set = BackendSet::new(vec![
            Backend::new("127.0.0.1:9001", 1),
            Backend::new("127.0.0.1:9002", 1),
        ]);
        let t = StickyTable::new(&config(), "app", &set);
        let mut out = HeaderMap::new();
        t.stick(BackendId(1), None, &mut out);
        let cookie = out[header::SET_COOKIE].clone();
        let text = cookie.to_str().unwrap();
        assert!(
            text.starts_with("sid=") && text.contains("Max-Age=60"),
            "{text}"
        );
        assert!(!text.contains("9002"), "{text}");
        let req = request_with(&cookie);
        assert_eq!(t.lookup(&req, &set), Some(BackendId(1)));
        // Already carried: not re-issued.
        let mut again = HeaderMap::new();
        t.stick(BackendId(1), Some(BackendId(1)), &mut again);
        assert!(again.is_empty());
        // Another cluster (or secret) gives other values.
        let other = StickyTable::new(&config(), "api", &set);
        assert_eq!(other.lookup(&req, &set), None);
    }

    #[test]
    fn sticky_lookup_skips_unusable_backends() {
        let mut backends = vec![
            Backend::new("127.0.0.1:9001", 1),
            Backend::new("127.0.0.1:9002", 1),
        ];
        backends[1].admin = AdminState::Disabled;
        backends[0].admin = AdminState::Draining;
        let set = BackendSet::new(backends);
        let t = StickyTable::new(&config(), "app", &set);
        let cookie = |id| {
            let mut h = HeaderMap::new();
            t.stick(BackendId(id), None, &mut h);
            request_with(&h[header::SET_COOKIE])
        };
        assert_eq!(
            t.lookup(&cookie(0), &set),
            Some(BackendId(0)),
            "draining keeps sessions"
        );
        assert_eq!(t.lookup(&cookie(1), &set), None, "disabled loses them");
        set.get(BackendId(0)).state.set_healthy(false);
        assert_eq!(t.lookup(&cookie(0), &set), None, "unhealthy loses them");
        let mut junk = HeaderMap::new();
        junk.insert(header::COOKIE, HeaderValue::from_static("sid=zz"));
        assert_eq!(t.lookup(&junk, &set), None);
    }
}
