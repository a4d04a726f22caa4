//! Latency CDFs per algorithm, drawn to SVG.
//!
//! The x axis is latency in milliseconds on a log scale; the y axis is the
//! percentile on a "nines" scale (`-log10(1 - p)`: 90% at 1, 99% at 2,
//! 99.9% at 3), so the tail — where algorithms differ — gets as much room as
//! the body.

use std::path::Path;

use plotters::prelude::*;

use crate::Comparison;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw plot {path}: {message}")]
pub struct PlotError {
    /// The output file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn nines(p: f64) -> f64 {
    -(1.0 - p).max(1e-9).log10()
}

fn percentile_label(y: f64) -> String {
    let p = (1.0 - 10f64.powf(-y)) * 100.0;
    if y < 1.5 {
        format!("{p:.0}%")
    } else {
        let digits = (y.ceil() as usize).saturating_sub(2);
        format!("{p:.digits$}%")
    }
}

/// Draws one CDF line per algorithm of `c` into the SVG file `path`.
pub fn latency_cdf_svg(c: &Comparison, path: &Path) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let series: Vec<(&str, Vec<(f64, f64)>)> = c
        .results
        .iter()
        .map(|r| {
            let points = r
                .metrics
                .cdf
                .iter()
                .map(|&(p, ms)| (ms.max(1e-3), nines(p)))
                .collect();
            (r.algorithm.as_str(), points)
        })
        .filter(|(_, pts): &(&str, Vec<(f64, f64)>)| !pts.is_empty())
        .collect();
    if series.is_empty() {
        return Err(err(&"no latencies to plot"));
    }
    let x_min = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(f64::INFINITY, f64::min);
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(0.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(0.0, f64::max)
        .ceil()
        .max(1.0);

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("latency CDF: {}", c.scenario), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min * 0.9..x_max * 1.1).log_scale(), 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("percentile")
        .y_labels(y_max as usize + 1)
        .y_label_formatter(&|y| percentile_label(*y))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_read_as_nines() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn svg_names_every_algorithm() {
        use crate::{AlgorithmResult, Metrics};
        let result = |name: &str, scale: f64| AlgorithmResult {
            algorithm: name.into(),
            seeds: 1,
            metrics: Metrics {
                cdf: vec![(0.0, 0.1 * scale), (0.9, 1.0 * scale), (0.99, 5.0 * scale)],
                ..Metrics::default()
            },
        };
        let c = Comparison {
            scenario: "demo".into(),
            results: vec![result("round-robin", 2.0), result("least-conn", 1.0)],
        };
        let path =
            std::env::temp_dir().join(format!("fulcrum-sim-plot-{}.svg", std::process::id()));
        latency_cdf_svg(&c, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("round-robin") && svg.contains("least-conn"));
        assert!(svg.contains("99%"));
    }
}
