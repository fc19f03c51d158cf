//! `cairn plots show`: metric series of one or more runs as a self-contained HTML file with
//! one SVG chart per metric (no scripts, no network), and a summary on the terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cairn_app::Workspace;
use cairn_meta::{Metric, Run};

use crate::failure::Failure;
use crate::output::out;

/// Line colours, one per run (colour-blind-safe palette).
const COLOURS: [&str; 8] =
    ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_TOP: f64 = 16.0;
const MARGIN_BOTTOM: f64 = 40.0;

/// One run's series of one metric.
struct Series<'r> {
    run: &'r Run,
    points: Vec<Metric>,
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// About five round tick values covering `[low, high]`.
fn ticks(low: f64, high: f64) -> Vec<f64> {
    if high.partial_cmp(&low) != Some(std::cmp::Ordering::Greater) {
        return vec![low];
    }
    let raw = (high - low) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw);
    let mut out = Vec::new();
    let mut value = (low / step).ceil() * step;
    while value <= high + step * 1e-9 {
        out.push(if value.abs() < step * 1e-9 { 0.0 } else { value });
        value += step;
    }
    out
}

fn label(value: f64) -> String {
    if value != 0.0 && (value.abs() >= 1e5 || value.abs() < 1e-3) {
        format!("{value:.2e}")
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// An SVG line chart of one metric over steps, one line per run.
fn chart(metric: &str, series: &[Series], colour_of: &dyn Fn(&str) -> &'static str) -> String {
    let finite = |m: &&Metric| m.value.is_finite();
    let steps = series.iter().flat_map(|s| s.points.iter().filter(finite).map(|m| m.step as f64));
    let values = series.iter().flat_map(|s| s.points.iter().filter(finite).map(|m| m.value));
    let (mut x0, mut x1) = steps.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (mut y0, mut y1) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.1 };
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x = |step: f64| MARGIN_LEFT + (step - x0) / (x1 - x0) * plot_w;
    let y = |value: f64| MARGIN_TOP + (1.0 - (value - y0) / (y1 - y0)) * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"#,
        escape(metric)
    );
    let _ = write!(
        svg,
        r##"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#ccc"/>"##
    );
    for t in ticks(y0, y1) {
        let ty = y(t);
        let _ = write!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" x2="{}" y1="{ty:.1}" y2="{ty:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            WIDTH - MARGIN_RIGHT,
            MARGIN_LEFT - 6.0,
            ty + 4.0,
            label(t)
        );
    }
    for t in ticks(x0, x1) {
        let tx = x(t);
        let _ = write!(
            svg,
            r##"<line x1="{tx:.1}" x2="{tx:.1}" y1="{MARGIN_TOP}" y2="{}" stroke="#eee"/><text x="{tx:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
            HEIGHT - MARGIN_BOTTOM,
            HEIGHT - MARGIN_BOTTOM + 16.0,
            label(t)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">step</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 6.0
    );
    for s in series {
        let colour = colour_of(&s.run.info.run_id);
        let points: Vec<String> = s
            .points
            .iter()
            .filter(finite)
            .map(|m| format!("{:.2},{:.2}", x(m.step as f64), y(m.value)))
            .collect();
        let title = escape(&format!("{} {}", &s.run.info.run_id[..8], s.run.info.name));
        if points.len() == 1 {
            let (px, py) = points[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                svg,
                r#"<circle cx="{px}" cy="{py}" r="3" fill="{colour}"><title>{title}</title></circle>"#
            );
        } else {
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{}"><title>{title}</title></polyline>"#,
                points.join(" ")
            );
        }
    }
    svg.push_str("</svg>");
    svg
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
        let _ = writeln!(
            html,
            "<figure><figcaption>{}</figcaption>{}</figure>",
            escape(metric),
            chart(metric, lines, colour_of)
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
    fn ticks_are_round_and_cover_the_range() {
        let labels = |low, high| ticks(low, high).into_iter().map(label).collect::<Vec<_>>();
        assert_eq!(labels(0.0, 1.0), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(labels(0.0, 100.0), ["0", "20", "40", "60", "80", "100"]);
        assert_eq!(labels(0.13, 0.92), ["0.2", "0.4", "0.6", "0.8"]);
        assert_eq!(ticks(3.0, 3.0), vec![3.0]);
    }

    #[test]
    fn sparklines_rise_with_the_values() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 8), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[f64::NAN], 8), "");
    }
}
