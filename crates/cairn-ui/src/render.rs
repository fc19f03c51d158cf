//! Charts and report sections rendered on the server, as SVG and HTML with every value
//! escaped: the one rendering behind `cairn plots show`, `cairn monitor --html` and the UI's
//! metric charts and drift panels (which the UI loads as images and fragments).

use std::fmt::Write as _;

use cairn_app::reports::{FeatureSummary, Histogram, MonitorReport};

/// Line colours, one per series (colour-blind-safe).
pub const COLOURS: [&str; 8] =
    ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_TOP: f64 = 16.0;
const MARGIN_BOTTOM: f64 = 40.0;

/// Text made safe for HTML and SVG (elements and quoted attributes).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// About five round tick values covering `[low, high]`.
pub fn ticks(low: f64, high: f64) -> Vec<f64> {
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

/// A number as an axis or a summary shows it.
pub fn label(value: f64) -> String {
    if value != 0.0 && (value.abs() >= 1e5 || value.abs() < 1e-3) {
        format!("{value:.2e}")
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// One line of a chart: `(x, y)` points, increasing `x`.
pub struct Line {
    pub label: String,
    pub colour: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// An SVG line chart (one line per series; a single point is a dot) with round ticks.
pub fn line_chart(title: &str, x_label: &str, lines: &[Line]) -> String {
    let finite = |p: &&(f64, f64)| p.1.is_finite();
    let xs = lines.iter().flat_map(|l| l.points.iter().filter(finite).map(|p| p.0));
    let ys = lines.iter().flat_map(|l| l.points.iter().filter(finite).map(|p| p.1));
    let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
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
    let x = |v: f64| MARGIN_LEFT + (v - x0) / (x1 - x0) * plot_w;
    let y = |v: f64| MARGIN_TOP + (1.0 - (v - y0) / (y1 - y0)) * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"#,
        escape(title)
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
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        escape(x_label)
    );
    for line in lines {
        let points: Vec<String> =
            line.points.iter().filter(finite).map(|p| format!("{:.2},{:.2}", x(p.0), y(p.1))).collect();
        let (title, colour) = (escape(&line.label), line.colour);
        if let [only] = points.as_slice() {
            let (px, py) = only.split_once(',').unwrap_or(("0", "0"));
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

/// Reference (grey) and current (blue) shares side by side over the same bins, as SVG.
pub fn histogram(hist: &Histogram) -> String {
    let share = |v: &[f64]| {
        let t: f64 = v.iter().sum();
        v.iter().map(|x| if t > 0.0 { x / t } else { 0.0 }).collect::<Vec<f64>>()
    };
    let (r, c) = (share(&hist.reference), share(&hist.current));
    let top = r.iter().chain(&c).fold(0.0f64, |a, &b| a.max(b)).max(1e-9);
    let (w, h, n) = (640.0, 180.0, hist.labels.len().max(1) as f64);
    let slot = w / n;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" viewBox="0 0 {w} {}" role="img" aria-label="reference and current histograms">"#,
        h + 40.0,
        h + 40.0
    );
    for (i, label) in hist.labels.iter().enumerate() {
        let x = i as f64 * slot;
        for (j, (values, colour, which)) in
            [(&r, "#999", "reference"), (&c, "#0072B2", "current")].iter().enumerate()
        {
            let v = values.get(i).copied().unwrap_or(0.0);
            let bh = v / top * h;
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{} ({which}): {:.1}%</title></rect>",
                x + 2.0 + j as f64 * (slot - 4.0) / 2.0,
                h - bh,
                (slot - 4.0) / 2.0,
                bh,
                escape(label),
                v * 100.0
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x + slot / 2.0,
            h + 14.0,
            escape(&label.chars().take(14).collect::<String>())
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One feature's summary in words: numeric statistics, or the top categories.
fn feature_summary(f: &FeatureSummary) -> String {
    match (f.mean, f.std, f.min, f.max, &f.top) {
        (Some(mean), Some(std), Some(min), Some(max), _) => {
            format!("mean {mean:.3} sd {std:.3} [{min:.3}, {max:.3}]")
        }
        (_, _, _, _, Some(top)) => {
            let valid = (f.count - f.missing - f.type_errors).max(1) as f64;
            let shares: Vec<String> =
                top.iter().take(3).map(|(k, c)| format!("{k} {:.0}%", 100.0 * *c as f64 / valid)).collect();
            format!("{} distinct: {}", f.distinct.unwrap_or(0), shares.join(" "))
        }
        _ => "-".into(),
    }
}

/// Each served version's drift verdict and, per feature, its summary, statistic and
/// histograms: the body of `monitor --html` and the UI's drift panels.
pub fn monitor_sections(model: &str, reports: &[MonitorReport]) -> String {
    let mut html = String::new();
    for report in reports {
        let _ = write!(
            html,
            "<section class=\"drift\" data-version=\"{}\"><h2>{}@{}: {} predictions</h2>",
            report.version,
            escape(model),
            report.version,
            report.predictions
        );
        if let Some(d) = &report.drift {
            let _ = write!(
                html,
                "<p>Dataset drift: {} of {} features ({:.0}%) — <b>{}</b></p>",
                d.drifted_features,
                d.features.iter().filter(|f| f.skipped.is_none()).count(),
                d.share * 100.0,
                if d.drifted { "drifted" } else { "not drifted" }
            );
        }
        for feature in &report.features {
            let drift =
                report.drift.as_ref().and_then(|d| d.features.iter().find(|f| f.feature == feature.feature));
            let verdict = match drift {
                Some(d) if d.skipped.is_none() => format!(
                    "{}: {:.4} (threshold {}) — <span class=\"{}\">{}</span>",
                    d.method.name(),
                    d.score,
                    d.threshold,
                    if d.drifted { "drifted" } else { "steady" },
                    if d.drifted { "drifted" } else { "no drift" }
                ),
                _ => "no reference".into(),
            };
            let _ = write!(
                html,
                "<figure data-feature=\"{}\"><figcaption><b>{}</b> · {} · {}</figcaption>{}</figure>",
                escape(&feature.feature),
                escape(&feature.feature),
                escape(&feature_summary(feature)),
                verdict,
                histogram(&feature.histogram)
            );
        }
        html.push_str("</section>");
    }
    html
}

/// A self-contained HTML page (no scripts, no network) around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}\
         .charts{{display:flex;flex-wrap:wrap;gap:24px}}figure{{margin:0 0 16px}}\
         figcaption{{margin-bottom:4px}}svg{{max-width:100%;height:auto}}\
         .legend span{{display:inline-block;margin-right:16px}}\
         .swatch{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}}\
         .drifted{{color:#D55E00;font-weight:bold}}\
         </style></head><body>\n<h1>{}</h1>\n{body}\n</body></html>\n",
        escape(title),
        escape(title)
    )
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
    fn a_chart_escapes_its_labels_and_draws_each_line() {
        let lines = [
            Line {
                label: "<script>a</script>".into(),
                colour: COLOURS[0],
                points: vec![(0.0, 1.0), (1.0, 0.5)],
            },
            Line { label: "b".into(), colour: COLOURS[1], points: vec![(0.0, 2.0)] },
        ];
        let svg = line_chart("loss & \"more\"", "step", &lines);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 1, "a single point is a dot");
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
        assert!(svg.contains("aria-label=\"loss &amp; &quot;more&quot;\""));
    }

    #[test]
    fn a_histogram_draws_both_distributions_per_bin() {
        let hist = Histogram {
            labels: vec!["a<b".into(), "c".into()],
            reference: vec![1.0, 3.0],
            current: vec![3.0, 1.0],
        };
        let svg = histogram(&hist);
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("a&lt;b (reference): 25.0%") && svg.contains("a&lt;b (current): 75.0%"));
    }
}
