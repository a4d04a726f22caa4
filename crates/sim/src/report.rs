//! Rendering a [`Comparison`] as a terminal table, JSON or CSV.

use std::fmt::Write as _;

use crate::Comparison;

/// JSON: `{"scenario": NAME, "results": [{"algorithm": A, "p50_ms": …,
/// "p99_ms": …, "p999_ms": …, "timeout_rate": …, "error_rate": …,
/// "backend_share": {…}, …}]}`.
pub fn json(c: &Comparison) -> String {
    serde_json::to_string_pretty(c).expect("metrics serialise")
}

/// CSV with a header line; per-backend shares as `share:<backend>` columns.
pub fn csv(c: &Comparison) -> String {
    let mut out = String::from(
        "scenario,algorithm,seeds,requests,p50_ms,p99_ms,p999_ms,mean_ms,timeout_rate,error_rate,share_cov,max_avg_inflight,max_avg_inflight_peak,max_avg_inflight_floor,rif_p99,hit_rate,unfinished,in_zone_share,farther_while_headroom",
    );
    let backends: Vec<&str> = c
        .results
        .first()
        .map(|r| {
            r.metrics
                .backend_share
                .0
                .iter()
                .map(|(n, _)| n.as_str())
                .collect()
        })
        .unwrap_or_default();
    for b in &backends {
        let _ = write!(out, ",share:{b}");
    }
    out.push('\n');
    for r in &c.results {
        let m = &r.metrics;
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            c.scenario,
            r.algorithm,
            r.seeds,
            m.requests,
            m.p50_ms,
            m.p99_ms,
            m.p999_ms,
            m.mean_ms,
            m.timeout_rate,
            m.error_rate,
            m.share_cov,
            m.max_avg_inflight,
            m.max_avg_inflight_peak,
            m.max_avg_inflight_floor,
            m.rif_p99,
            m.hit_rate.map(|h| h.to_string()).unwrap_or_default(),
            m.unfinished,
            m.in_zone_share.map(|h| h.to_string()).unwrap_or_default(),
            m.farther_while_headroom
                .map(|h| h.to_string())
                .unwrap_or_default(),
        );
        for (_, share) in &m.backend_share.0 {
            let _ = write!(out, ",{share}");
        }
        out.push('\n');
    }
    out
}

fn percent(x: f64) -> String {
    if x == 0.0 {
        "0".to_owned()
    } else if x < 0.0001 {
        format!("{:.4}%", x * 100.0)
    } else {
        format!("{:.2}%", x * 100.0)
    }
}

/// A fixed-width table for terminals: one row per algorithm, latencies in
/// milliseconds, then the traffic share of each backend group.
pub fn table(c: &Comparison) -> String {
    let headers = [
        "algorithm",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "mean ms",
        "timeouts",
        "errors",
        "max/avg IF",
        "IF floor",
        "RIF p99",
        "hit rate",
        "in-zone",
        "farther",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in &c.results {
        let m = &r.metrics;
        rows.push(vec![
            r.algorithm.clone(),
            format!("{:.2}", m.p50_ms),
            format!("{:.2}", m.p99_ms),
            format!("{:.2}", m.p999_ms),
            format!("{:.2}", m.mean_ms),
            percent(m.timeout_rate),
            percent(m.error_rate),
            format!("{:.2}", m.max_avg_inflight),
            format!("{:.2}", m.max_avg_inflight_floor),
            format!("{:.0}", m.rif_p99),
            m.hit_rate.map(percent).unwrap_or_else(|| "-".to_owned()),
            m.in_zone_share
                .map(percent)
                .unwrap_or_else(|| "-".to_owned()),
            m.farther_while_headroom
                .map(percent)
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    // The geography columns only for scenarios with client sources.
    let geo = c.results.iter().any(|r| r.metrics.in_zone_share.is_some());
    let mut headers = headers.to_vec();
    if !geo {
        headers.truncate(headers.len() - 2);
        rows.iter_mut().for_each(|r| r.truncate(r.len() - 2));
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let seeds = c.results.first().map_or(0, |r| r.seeds);
    let mut out = format!(
        "scenario {} ({seeds} seeds, median of each metric)\n",
        c.scenario
    );
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(s, "{cell:<w$}");
            } else {
                let _ = write!(s, "  {cell:>w$}");
            }
        }
        s.push('\n');
        s
    };
    out.push_str(&line(headers.clone()));
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    let grouped = c.results.iter().any(|r| r.metrics.group_share.0.len() > 1);
    if grouped {
        out.push_str("\ntraffic share by backend group\n");
        let name_w = widths[0];
        for r in &c.results {
            let shares: Vec<String> = r
                .metrics
                .group_share
                .0
                .iter()
                .map(|(g, s)| format!("{g} {:.1}%", s * 100.0))
                .collect();
            let _ = writeln!(out, "{:<name_w$}  {}", r.algorithm, shares.join("  "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AlgorithmResult, Metrics, Shares};

    fn sample() -> Comparison {
        Comparison {
            scenario: "demo".into(),
            results: vec![AlgorithmResult {
                algorithm: "round-robin".into(),
                seeds: 3,
                metrics: Metrics {
                    requests: 10,
                    p50_ms: 1.5,
                    p99_ms: 9.0,
                    timeout_rate: 0.01,
                    backend_share: Shares(vec![("a-0".into(), 0.75), ("a-1".into(), 0.25)]),
                    group_share: Shares(vec![("a".into(), 1.0)]),
                    ..Metrics::default()
                },
            }],
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        assert_eq!(v["scenario"], "demo");
        let r = &v["results"][0];
        assert_eq!(r["algorithm"], "round-robin");
        for key in ["p50_ms", "p99_ms", "p999_ms", "timeout_rate", "error_rate"] {
            assert!(r[key].is_number(), "{key} missing in {r}");
        }
        assert_eq!(r["backend_share"]["a-0"], 0.75);
    }

    #[test]
    fn csv_has_one_row_per_algorithm_and_share_columns() {
        let text = csv(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with("share:a-0,share:a-1"));
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
    }

    #[test]
    fn table_lists_each_algorithm() {
        let text = table(&sample());
        assert!(text.contains("round-robin"));
        assert!(text.contains("9.00"));
        assert!(text.contains("1.00%"));
    }
}
