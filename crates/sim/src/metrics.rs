//! What a run measures, and how runs over several seeds are summarised.
//!
//! Latency percentiles cover every measured request that got an answer from
//! its backend or gave up at the timeout (a timed-out request counts at the
//! timeout value, so a tail that hits the timeout shows as p99 = timeout and
//! a non-zero `timeout_rate`). Fast error answers (fail-fast backends, no
//! backend available) are left out of the percentiles — they would make a
//! sinkhole look fast — and counted in `error_rate` instead.

use serde::ser::{Serialize, SerializeMap, Serializer};

/// Named fractions (per backend or per group), serialised as a JSON object
/// in backend order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shares(pub Vec<(String, f64)>);

impl Shares {
    /// The share of `name`, if present.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

impl Serialize for Shares {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The metrics of one run (one algorithm, one seed), or the per-field median
/// over several runs.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Metrics {
    /// Measured requests (arrived after warm-up).
    pub requests: u64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency in milliseconds.
    pub p99_ms: f64,
    /// 99.9th-percentile latency in milliseconds.
    pub p999_ms: f64,
    /// Mean latency in milliseconds.
    pub mean_ms: f64,
    /// Fraction of measured requests that timed out.
    pub timeout_rate: f64,
    /// Fraction of measured requests answered with an error (fail-fast, no backend).
    pub error_rate: f64,
    /// Fraction of measured requests sent to each backend.
    pub backend_share: Shares,
    /// Fraction of measured requests sent to each backend group.
    pub group_share: Shares,
    /// Coefficient of variation of the per-backend request counts.
    pub share_cov: f64,
    /// Time average of max/avg in-flight over backends (all proxies summed).
    pub max_avg_inflight: f64,
    /// Largest max/avg in-flight ratio seen in any sample.
    pub max_avg_inflight_peak: f64,
    /// Time average of the lowest max/avg any assignment could have had in
    /// the same samples: with `t` requests in flight over `n` backends some
    /// backend holds at least `ceil(t / n)`. When backends hold fewer than
    /// one request on average this floor is well above 1.
    pub max_avg_inflight_floor: f64,
    /// 99th percentile of requests held by a server (RIF), over samples.
    pub rif_p99: f64,
    /// Cache hit rate, when backends have caches.
    pub hit_rate: Option<f64>,
    /// With `[[clients]]`: the fraction of requests served in the client's
    /// home zone (the nearest), over requests arriving while every backend
    /// of that zone was up (outside failure windows).
    pub in_zone_share: Option<f64>,
    /// With `[[clients]]`: the fraction of requests sent to a zone farther
    /// than another zone that had headroom (a serving backend with an idle
    /// worker) when they were sent.
    pub farther_while_headroom: Option<f64>,
    /// Measured requests neither answered nor timed out when the run ended
    /// (only possible without a timeout, e.g. a server stopped for good).
    pub unfinished: u64,
    /// Requests held by each server when arrivals stopped: a backlog growing
    /// with the run's length means an unstable (overloaded) server.
    #[serde(skip)]
    pub final_backlog: Vec<u64>,
    /// Latency CDF: `(probability, latency in ms)` points on a grid that is
    /// even in "nines" (for plotting).
    #[serde(skip)]
    pub cdf: Vec<(f64, f64)>,
}

/// Percentile `q` (0..=1) of sorted values (nearest rank).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of values (mean of the middle pair for an even count); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Step of the CDF grid in nines (0.025 nines: 40 points per decade of tail).
const CDF_STEP: f64 = 0.025;

/// CDF points `(p, latency ms)` for sorted latencies in nanoseconds, from
/// p = 0 to the deepest tail the sample supports (at least 10 requests
/// beyond the point).
pub fn cdf_points(sorted: &[u64]) -> Vec<(f64, f64)> {
    let n = sorted.len() as f64;
    let mut out = Vec::new();
    if sorted.is_empty() {
        return out;
    }
    let mut k = 0u32;
    loop {
        let nines = k as f64 * CDF_STEP;
        let p = 1.0 - 10f64.powf(-nines);
        if k > 0 && n * (1.0 - p) < 10.0 {
            break;
        }
        out.push((p, percentile(sorted, p.max(1.0 / n)) as f64 / 1e6));
        k += 1;
    }
    out
}

impl Metrics {
    /// Field-by-field median over runs (shares and CDF points by position).
    pub fn median_of(runs: &[Metrics]) -> Metrics {
        let Some(first) = runs.first() else {
            return Metrics::default();
        };
        let f =
            |get: &dyn Fn(&Metrics) -> f64| median(&mut runs.iter().map(get).collect::<Vec<_>>());
        let shares = |get: &dyn Fn(&Metrics) -> &Shares| {
            Shares(
                get(first)
                    .0
                    .iter()
                    .enumerate()
                    .map(|(i, (name, _))| {
                        (
                            name.clone(),
                            f(&|m: &Metrics| get(m).0.get(i).map_or(0.0, |x| x.1)),
                        )
                    })
                    .collect(),
            )
        };
        let cdf_len = runs.iter().map(|m| m.cdf.len()).min().unwrap_or(0);
        let cdf = (0..cdf_len)
            .map(|i| (first.cdf[i].0, f(&|m: &Metrics| m.cdf[i].1)))
            .collect();
        let backlog_len = first.final_backlog.len();
        Metrics {
            requests: f(&|m| m.requests as f64) as u64,
            p50_ms: f(&|m| m.p50_ms),
            p99_ms: f(&|m| m.p99_ms),
            p999_ms: f(&|m| m.p999_ms),
            mean_ms: f(&|m| m.mean_ms),
            timeout_rate: f(&|m| m.timeout_rate),
            error_rate: f(&|m| m.error_rate),
            backend_share: shares(&|m| &m.backend_share),
            group_share: shares(&|m| &m.group_share),
            share_cov: f(&|m| m.share_cov),
            max_avg_inflight: f(&|m| m.max_avg_inflight),
            max_avg_inflight_peak: f(&|m| m.max_avg_inflight_peak),
            max_avg_inflight_floor: f(&|m| m.max_avg_inflight_floor),
            rif_p99: f(&|m| m.rif_p99),
            hit_rate: first.hit_rate.map(|_| f(&|m| m.hit_rate.unwrap_or(0.0))),
            in_zone_share: first
                .in_zone_share
                .map(|_| f(&|m| m.in_zone_share.unwrap_or(0.0))),
            farther_while_headroom: first
                .farther_while_headroom
                .map(|_| f(&|m| m.farther_while_headroom.unwrap_or(0.0))),
            unfinished: f(&|m| m.unfinished as f64) as u64,
            final_backlog: (0..backlog_len)
                .map(|i| f(&|m| m.final_backlog.get(i).copied().unwrap_or(0) as f64) as u64)
                .collect(),
            cdf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 0.999), 100);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn median_of_runs_takes_each_field_separately() {
        let run = |p99: f64, share: f64| Metrics {
            p99_ms: p99,
            backend_share: Shares(vec![("a".into(), share)]),
            ..Metrics::default()
        };
        let m = Metrics::median_of(&[run(1.0, 0.2), run(9.0, 0.4), run(3.0, 0.3)]);
        assert_eq!(m.p99_ms, 3.0);
        assert_eq!(m.backend_share.get("a"), Some(0.3));
    }

    #[test]
    fn cdf_stops_where_the_sample_runs_out() {
        let v: Vec<u64> = (1..=1000).map(|x| x * 1_000_000).collect();
        let cdf = cdf_points(&v);
        assert_eq!(cdf[0].0, 0.0);
        let last = cdf.last().unwrap();
        assert!(last.0 <= 0.99 + 1e-9 && last.0 > 0.98, "{last:?}");
        assert!(cdf.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
