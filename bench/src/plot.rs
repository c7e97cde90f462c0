//! Latency-percentile plot: delivery latency against percentile, one line
//! per run, on a log scale of 1/(1-q) so the tail is visible.

use std::path::Path;

use plotters::prelude::*;

use crate::run::RunResult;

pub fn percentiles_svg(path: &Path, runs: &[RunResult]) -> anyhow::Result<()> {
    let points = |r: &RunResult| -> Vec<(f64, f64)> {
        [
            (50.0, r.delivery.p50_ms),
            (90.0, r.delivery.p90_ms),
            (99.0, r.delivery.p99_ms),
            (99.9, r.delivery.p999_ms),
        ]
        .into_iter()
        .map(|(p, ms): (f64, f64)| ((1.0 / (1.0 - p / 100.0)).log10(), ms))
        .collect()
    };
    let max_ms = runs
        .iter()
        .map(|r| r.delivery.p999_ms)
        .fold(1.0_f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("send -> delivery latency by percentile", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.2f64..3.1f64, 0f64..max_ms)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_label_formatter(&|x| format!("p{:.1}", 100.0 * (1.0 - 10f64.powf(-x))))
        .draw()?;
    let palette = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, run) in runs.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(points(run), color.stroke_width(2)))?
            .label(format!("{} #{}", run.target, i + 1))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
