//! `cairn plots show`: metric series of one or more runs as a self-contained HTML file with
//! one SVG chart per metric (no scripts, no network), and a summary on the terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cairn_app::Workspace;
use cairn_meta::{Metric, Run};
use cairn_ui::render::{COLOURS, Line, escape, label, line_chart};

use crate::failure::Failure;
use crate::output::out;

/// One run's series of one metric.
struct Series<'r> {
    run: &'r Run,
    points: Vec<Metric>,
}

/// `▁▂▃▄▅▆▇█` over the values (at most `width` characters, resampled).
pub(crate) fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return String::new();
    }
    let (low, high) =
        finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let n = finite.len().min(width);
    (0..n)
        .map(|i| {
            let v = finite[i * finite.len() / n];
            let level = if high > low { ((v - low) / (high - low) * 7.0).round() as usize } else { 3 };
            BARS[level.min(7)]
        })
        .collect()
}

pub struct PlotRequest {
    pub runs: Vec<String>,
    pub metrics: Vec<String>,
    pub output: Option<PathBuf>,
}

/// `cairn plots show`.
pub fn show(ws: &Workspace, request: &PlotRequest) -> Result<(), Failure> {
    let plot = cairn_app::runs::plot(ws, &request.runs, &request.metrics)?;
    let runs = &plot.runs;
    let series: BTreeMap<String, Vec<Series>> = plot
        .metrics
        .iter()
        .map(|(metric, lines)| {
            let lines = lines
                .iter()
                .filter_map(|l| {
                    let run = runs.iter().find(|r| r.info.run_id == l.run_id)?;
                    Some(Series { run, points: l.points.clone() })
                })
                .collect();
            (metric.clone(), lines)
        })
        .collect();
    let colour_of = |id: &str| -> &'static str {
        let index = runs.iter().position(|r| r.info.run_id == id).unwrap_or(0);
        COLOURS[index % COLOURS.len()]
    };
    let path = request.output.clone().unwrap_or_else(|| ws.repo().root().join(".cairn/plots/index.html"));
    write_html(&path, runs, &series, &colour_of)?;
    // The terminal summary: per metric and run, the series at a glance.
    for (metric, lines) in &series {
        out(metric)?;
        for s in lines {
            let values: Vec<f64> = s.points.iter().map(|m| m.value).collect();
            let (first, last) =
                (values.first().copied().unwrap_or(f64::NAN), values.last().copied().unwrap_or(f64::NAN));
            let finite = values.iter().copied().filter(|v| v.is_finite());
            let (low, high) =
                finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
            out(format!(
                "  {}  {:>5} pts  {} → {}  (min {}, max {})  {}",
                &s.run.info.run_id[..8],
                values.len(),
                label(first),
                label(last),
                label(low),
                label(high),
                sparkline(&values, 40)
            ))?;
        }
    }
    out(format!("wrote {}", path.display()))
}

fn write_html(
    path: &Path,
    runs: &[Run],
    series: &BTreeMap<String, Vec<Series>>,
    colour_of: &dyn Fn(&str) -> &'static str,
) -> Result<(), Failure> {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>cairn plots</title>\n<style>\
         body{font-family:system-ui,sans-serif;margin:24px;color:#222}\
         .charts{display:flex;flex-wrap:wrap;gap:24px}figure{margin:0}\
         figcaption{font-weight:600;margin-bottom:4px}\
         .legend span{display:inline-block;margin-right:16px}\
         .swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}\
         </style></head><body>\n<h1>Metrics</h1>\n<p class=\"legend\">",
    );
    for run in runs {
        let _ = write!(
            html,
            "<span><i class=\"swatch\" style=\"background:{}\"></i>{} {} ({})</span>",
            colour_of(&run.info.run_id),
            &run.info.run_id[..8],
            escape(&run.info.name),
            escape(run.info.status.as_str())
        );
    }
    html.push_str("</p>\n<div class=\"charts\">\n");
    for (metric, lines) in series {
        let lines: Vec<Line> = lines
            .iter()
            .map(|s| Line {
                label: format!("{} {}", &s.run.info.run_id[..8], s.run.info.name),
                colour: colour_of(&s.run.info.run_id),
                points: s.points.iter().map(|m| (m.step as f64, m.value)).collect(),
            })
            .collect();
        let _ = writeln!(
            html,
            "<figure><figcaption>{}</figcaption>{}</figure>",
            escape(metric),
            line_chart(metric, "step", &lines)
        );
    }
    html.push_str("</div>\n</body></html>\n");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Failure::user(format!("cannot create `{}`: {e}", parent.display()), None))?;
    }
    cairn_fs::write(path, html.as_bytes())
        .map_err(|e| Failure::user(format!("cannot write `{}`: {e}", path.display()), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_rise_with_the_values() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 8), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[f64::NAN], 8), "");
    }
}
