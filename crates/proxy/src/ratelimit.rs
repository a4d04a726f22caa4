//! Per-route rate limits: token buckets per client IP or header value,
//! optionally shared by many instances through Redis.
//!
//! # Local token buckets
//!
//! Each key (a client IP, or a header's value) owns a bucket of `burst`
//! tokens that refills at `rate` per `per`; a request takes one token or is
//! answered `429 Too Many Requests`. Over a long run a key gets
//! `rate × time + burst` requests through, the classic token bucket
//! (NGINX `limit_req` with `burst`, Envoy's local rate limit filter).
//!
//! The buckets live in [`SHARDS`] independently locked shards picked by
//! the key's hash, so concurrent requests of different clients rarely meet
//! on a lock, and a lock is held for a few arithmetic operations only. Keys
//! are 64-bit keyed hashes, so checking a request allocates nothing.
//! Memory is bounded: a shard holds at most [`MAX_KEYS_PER_SHARD`] keys;
//! when full it first forgets every idle key (a bucket that has refilled
//! is the same as no bucket), then the longest-unseen one.
//!
//! # Shared limits through Redis
//!
//! With `redis = "redis://host:port"` the instances sharing that Redis
//! count requests in fixed windows of `per` (aligned to the Unix clock):
//! `INCR` of `fulcrum:rl:{scope}:{key hash}:{window}` plus `EXPIRE`, one
//! round trip per request; the request passes while the count is at most
//! `rate` (`burst` does not apply to fixed windows). When Redis cannot be
//! reached or answers slowly the limit *fails open*: the request passes
//! and a warning is logged (at most every [`WARN_EVERY`]), because a
//! limiter outage must not become a site outage.
//!
//! # Headers
//!
//! Answers carry `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (seconds) as in the IETF draft
//! `draft-ietf-httpapi-ratelimit-headers`; a 429 also carries
//! `Retry-After` (seconds).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fulcrum_balance::Nanos;
use fulcrum_config::{RateLimitConfig, RateLimitKey};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;
use crate::clock;

/// 16 shards: with 2–64 cores, two requests contend only when their keys
/// fall in the same shard at the same instant.
pub const SHARDS: usize = 16;
/// 4 096 keys per shard, 65 536 per route: about 2 MiB of buckets at most,
/// more distinct clients than one instance sees within one refill period.
pub const MAX_KEYS_PER_SHARD: usize = 4096;
/// A full shard with no idle key forgets the 1/8 of its keys seen longest ago.
const EVICT_FRACTION: usize = 8;
/// A Redis round trip on a LAN takes well under a millisecond; 100 ms means
/// Redis is in trouble, and requests must not wait on it.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// After a failed connect, wait this long before the next try.
pub const REDIS_RECONNECT: Duration = Duration::from_secs(1);
/// Fail-open warnings are logged at most this often per route.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// `RateLimit-Limit`.
pub static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`.
pub static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// One key's bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Nanos,
}

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may pass.
    pub allowed: bool,
    /// The limit (`burst` for buckets, `rate` for windows).
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the quota is whole again.
    pub reset: u64,
    /// Seconds until a request would pass (0 when allowed).
    pub retry_after: u64,
}

impl Verdict {
    /// A pass that says nothing (fail open, no limit known).
    fn open(limit: u32) -> Self {
        Verdict {
            allowed: true,
            limit,
            remaining: limit,
            reset: 0,
            retry_after: 0,
        }
    }

    /// Adds the `RateLimit-*` headers (and `Retry-After` when refused).
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(self.limit));
        headers.insert(
            RATELIMIT_REMAINING.clone(),
            HeaderValue::from(self.remaining),
        );
        headers.insert(RATELIMIT_RESET.clone(), HeaderValue::from(self.reset));
        if !self.allowed {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        }
    }

    /// The `429 Too Many Requests` answer.
    pub fn too_many_requests(&self) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::local(Bytes::from_static(
            b"429 too many requests: this route's rate limit is reached\n",
        )));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        self.add_headers(response.headers_mut());
        response
    }
}

/// A route's rate limiter.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    /// Tokens per nanosecond.
    refill: f64,
    shards: Box<[Mutex<HashMap<u64, Bucket>>]>,
    hasher: std::collections::hash_map::RandomState,
    redis: Option<SharedWindow>,
}

impl RateLimiter {
    /// A limiter for `config`; `scope` names its shared Redis counters.
    pub fn new(config: &RateLimitConfig, scope: &str) -> Self {
        let per = config.per.as_nanos().max(1) as f64;
        Self {
            config: config.clone(),
            refill: f64::from(config.rate) / per,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            redis: config
                .redis
                .as_deref()
                .map(|url| SharedWindow::new(url, scope)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Checks (and counts) one request.
    pub async fn check(&self, client: IpAddr, headers: &HeaderMap) -> Verdict {
        match &self.redis {
            Some(shared) => {
                let key = stable_key(&self.config.key, client, headers);
                shared.check(key, self.config.rate, self.config.per).await
            }
            None => self.check_local(client, headers, clock::now()),
        }
    }

    /// The local token-bucket check at `now`.
    pub fn check_local(&self, client: IpAddr, headers: &HeaderMap, now: Nanos) -> Verdict {
        let mut h = self.hasher.build_hasher();
        hash_key(&self.config.key, client, headers, &mut h);
        self.take(h.finish(), now)
    }

    fn take(&self, key: u64, now: Nanos) -> Verdict {
        let burst = f64::from(self.config.burst);
        let shard = &self.shards[(key >> 56) as usize % self.shards.len()];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&key) && map.len() >= MAX_KEYS_PER_SHARD {
            self.evict(&mut map, now);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_sub(b.last) as f64;
        b.tokens = (b.tokens + elapsed * self.refill).min(burst);
        b.last = now.max(b.last);
        let allowed = b.tokens >= 1.0;
        if allowed {
            b.tokens -= 1.0;
        }
        let tokens = b.tokens;
        drop(map);
        let per_second = self.refill * 1e9;
        let secs = |t: f64| (t / per_second).ceil().max(0.0) as u64;
        Verdict {
            allowed,
            limit: self.config.burst,
            remaining: tokens.floor() as u32,
            reset: secs(burst - tokens),
            retry_after: if allowed {
                0
            } else {
                secs(1.0 - tokens).max(1)
            },
        }
    }

    /// Makes room in a full shard: drops idle keys (refilled buckets), and
    /// if too few were idle, the eighth of the keys not seen for longest —
    /// a batch, so a flood of new keys costs O(1) amortised per key, not a
    /// scan each.
    fn evict(&self, map: &mut HashMap<u64, Bucket>, now: Nanos) {
        let burst = f64::from(self.config.burst);
        let refill = self.refill;
        map.retain(|_, b| b.tokens + now.saturating_sub(b.last) as f64 * refill < burst);
        if map.len() >= MAX_KEYS_PER_SHARD * 7 / 8 {
            let mut seen: Vec<Nanos> = map.values().map(|b| b.last).collect();
            let cut = seen.len() / EVICT_FRACTION;
            let (_, threshold, _) = seen.select_nth_unstable(cut);
            let threshold = *threshold;
            map.retain(|_, b| b.last > threshold);
        }
    }

    /// Keys currently tracked (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Feeds the request's limit key into `h`. Requests without the header
/// share one bucket (keyed by its absence).
fn hash_key(key: &RateLimitKey, client: IpAddr, headers: &HeaderMap, h: &mut impl Hasher) {
    match key {
        RateLimitKey::ClientIp => client.hash(h),
        RateLimitKey::Header(name) => headers
            .get(name.as_str())
            .map(HeaderValue::as_bytes)
            .hash(h),
    }
}

/// The key's hash with fixed SipHash keys, the same in every instance, for
/// shared counters.
fn stable_key(key: &RateLimitKey, client: IpAddr, headers: &HeaderMap) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    hash_key(key, client, headers, &mut h);
    h.finish()
}

/// The connection to Redis, (re)established off the request path.
enum Connection {
    Idle { retry_at: Nanos },
    Connecting,
    Ready(redis::aio::ConnectionManager),
}

/// Fixed-window counters in Redis shared by every instance.
struct SharedWindow {
    url: String,
    scope: String,
    connection: Arc<Mutex<Connection>>,
    last_warning: AtomicU64,
}

impl std::fmt::Debug for SharedWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWindow")
            .field("url", &self.url)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl SharedWindow {
    fn new(url: &str, scope: &str) -> Self {
        let window = Self {
            url: url.to_owned(),
            scope: scope.to_owned(),
            connection: Arc::new(Mutex::new(Connection::Idle { retry_at: 0 })),
            last_warning: AtomicU64::new(0),
        };
        // Connect ahead of the first request when a runtime is there.
        if tokio::runtime::Handle::try_current().is_ok() {
            window.connection(clock::now());
        }
        window
    }

    /// The connection if ready; otherwise starts connecting (at most one
    /// attempt at a time, one per [`REDIS_RECONNECT`]) and returns `None`.
    fn connection(&self, now: Nanos) -> Option<redis::aio::ConnectionManager> {
        let mut state = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            Connection::Ready(c) => return Some(c.clone()),
            Connection::Connecting => return None,
            Connection::Idle { retry_at } if now < *retry_at => return None,
            Connection::Idle { .. } => {}
        }
        let client = match redis::Client::open(self.url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                *state = Connection::Idle {
                    retry_at: now + REDIS_RECONNECT.as_nanos() as u64,
                };
                self.warn(now, &e.to_string());
                return None;
            }
        };
        *state = Connection::Connecting;
        drop(state);
        let slot = Arc::clone(&self.connection);
        let url = self.url.clone();
        tokio::spawn(async move {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(REDIS_TIMEOUT * 5)
                .set_response_timeout(REDIS_TIMEOUT)
                .set_number_of_retries(1);
            let result = client.get_connection_manager_with_config(config).await;
            let mut state = slot.lock().unwrap_or_else(|e| e.into_inner());
            *state = match result {
                Ok(c) => {
                    tracing::info!(redis = %url, "rate limit: connected to redis");
                    Connection::Ready(c)
                }
                Err(e) => {
                    tracing::warn!(redis = %url, error = %e, "rate limit: cannot connect to redis; failing open");
                    Connection::Idle {
                        retry_at: clock::now() + REDIS_RECONNECT.as_nanos() as u64,
                    }
                }
            };
        });
        None
    }

    async fn check(&self, key: u64, rate: u32, per: Duration) -> Verdict {
        let now = clock::now();
        let Some(mut conn) = self.connection(now) else {
            return Verdict::open(rate);
        };
        let per_ms = per.as_millis().max(1) as u64;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let window = unix_ms / per_ms;
        let counter = format!("fulcrum:rl:{}:{key:016x}:{window}", self.scope);
        // The counter outlives its window by one more, for clock skew.
        let ttl = (2 * per_ms).div_ceil(1000).max(1) as i64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&counter, 1u64)
            .expire(&counter, ttl)
            .ignore();
        let result: Result<Result<(u64,), redis::RedisError>, _> =
            tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut conn)).await;
        let count = match result {
            Ok(Ok((count,))) => count,
            Ok(Err(e)) => {
                self.warn(now, &e.to_string());
                return Verdict::open(rate);
            }
            Err(_) => {
                self.warn(now, "no answer within 100ms");
                return Verdict::open(rate);
            }
        };
        let reset_ms = (window + 1) * per_ms - unix_ms;
        let reset = reset_ms.div_ceil(1000).max(1);
        let allowed = count <= u64::from(rate);
        Verdict {
            allowed,
            limit: rate,
            remaining: u64::from(rate).saturating_sub(count) as u32,
            reset,
            retry_after: if allowed { 0 } else { reset },
        }
    }

    fn warn(&self, now: Nanos, error: &str) {
        let last = self.last_warning.load(Ordering::Relaxed);
        let every = WARN_EVERY.as_nanos() as u64;
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .last_warning
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(redis = %self.url, error, "rate limit: redis unavailable; failing open");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32, key: RateLimitKey) -> RateLimiter {
        RateLimiter::new(
            &RateLimitConfig {
                rate,
                per: Duration::from_secs(1),
                burst,
                key,
                redis: None,
            },
            "test",
        )
    }

    const MS: Nanos = 1_000_000;

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let l = limiter(10, 5, RateLimitKey::ClientIp);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let h = HeaderMap::new();
        let t0 = 1_000 * MS;
        for i in 0..5 {
            let v = l.check_local(ip, &h, t0);
            assert!(v.allowed, "request {i} of the burst");
            assert_eq!(v.remaining, 4 - i);
        }
        let v = l.check_local(ip, &h, t0);
        assert!(!v.allowed);
        assert_eq!(v.retry_after, 1);
        assert_eq!(v.limit, 5);
        // 100 ms later one token (10/s) is back.
        assert!(l.check_local(ip, &h, t0 + 100 * MS).allowed);
        assert!(!l.check_local(ip, &h, t0 + 100 * MS).allowed);
        // Over 10 s at 1 request per ms, about rate × 10 pass.
        let passed = (0..10_000)
            .filter(|i| l.check_local(ip, &h, t0 + 200 * MS + i * MS).allowed)
            .count();
        assert!((99..=101).contains(&passed), "{passed}");
        // Another client has its own bucket.
        assert!(l.check_local("10.0.0.2".parse().unwrap(), &h, t0).allowed);
    }

    #[test]
    fn token_bucket_keys_by_header() {
        let l = limiter(1, 1, RateLimitKey::Header("x-api-key".into()));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut a = HeaderMap::new();
        a.insert("x-api-key", HeaderValue::from_static("a"));
        let mut b = HeaderMap::new();
        b.insert("x-api-key", HeaderValue::from_static("b"));
        assert!(l.check_local(ip, &a, MS).allowed);
        assert!(!l.check_local(ip, &a, MS).allowed);
        assert!(l.check_local(ip, &b, MS).allowed);
        assert!(l.check_local(ip, &HeaderMap::new(), MS).allowed);
        assert!(!l.check_local(ip, &HeaderMap::new(), MS).allowed);
    }

    #[test]
    fn token_bucket_memory_is_bounded() {
        let l = limiter(1, 1, RateLimitKey::ClientIp);
        let h = HeaderMap::new();
        for i in 0..(SHARDS * MAX_KEYS_PER_SHARD * 2) as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            l.check_local(ip, &h, MS + u64::from(i));
        }
        assert!(l.tracked_keys() <= SHARDS * MAX_KEYS_PER_SHARD);
    }

    #[test]
    fn verdict_headers_follow_the_draft() {
        let v = Verdict {
            allowed: false,
            limit: 20,
            remaining: 0,
            reset: 3,
            retry_after: 1,
        };
        let r = v.too_many_requests();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["ratelimit-limit"], "20");
        assert_eq!(r.headers()["ratelimit-remaining"], "0");
        assert_eq!(r.headers()["ratelimit-reset"], "3");
        assert_eq!(r.headers()["retry-after"], "1");
    }
}
