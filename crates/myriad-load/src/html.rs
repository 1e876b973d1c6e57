//! `--html FILE`: one self-contained page (no scripts, no fonts, no network)
//! with the summary table and three hand-drawn inline SVG charts: messages
//! per second over time, the latency percentile curve (HdrHistogram style,
//! log scale of 1/(1-q)), and open connections over time.

use std::fmt::Write as _;

use crate::report::Final;

const W: f64 = 760.0;
const H: f64 = 300.0;
const ML: f64 = 78.0;
const MR: f64 = 20.0;
const MT: f64 = 34.0;
const MB: f64 = 46.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step for about `n` ticks over `0..max`.
fn nice_step(max: f64, n: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.3}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
    .replace(".000", "")
}

/// A line chart. `xticks`: positions and labels (None: numeric ticks).
fn chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    pts: &[(f64, f64)],
    xticks: Option<Vec<(f64, String)>>,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{t}">"##,
        t = esc(title)
    );
    let _ = write!(
        s,
        r##"<rect width="{W}" height="{H}" fill="#fff"/><text x="{x}" y="20" font-size="15" font-weight="bold" text-anchor="middle">{t}</text>"##,
        x = W / 2.0,
        t = esc(title)
    );
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let xmin = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let xmax = pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let ymax = pts.iter().map(|p| p.1).fold(0.0, f64::max);
    let (xmin, xmax) = if pts.is_empty() || xmax <= xmin {
        (0.0, xmin.max(0.0) + 1.0)
    } else {
        (xmin, xmax)
    };
    let ystep = nice_step(ymax, 5.0);
    let ytop = if ymax > 0.0 {
        (ymax / ystep).ceil() * ystep
    } else {
        ystep
    };
    let px = |x: f64| ML + (x - xmin) / (xmax - xmin) * pw;
    let py = |y: f64| MT + ph - y / ytop * ph;
    // Axes and grid.
    let mut y = 0.0;
    let mut guard = 0;
    while y <= ytop + ystep * 0.01 && guard < 50 {
        let _ = write!(
            s,
            r##"<line x1="{ML}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end">{l}</text>"##,
            x2 = ML + pw,
            yy = py(y),
            tx = ML - 6.0,
            ty = py(y) + 4.0,
            l = fmt_num(y)
        );
        y += ystep;
        guard += 1;
    }
    let xt = xticks.unwrap_or_else(|| {
        let step = nice_step(xmax - xmin, 8.0);
        let mut v = Vec::new();
        let mut x = (xmin / step).ceil() * step;
        while x <= xmax + step * 0.01 && v.len() < 50 {
            v.push((x, fmt_num(x)));
            x += step;
        }
        v
    });
    for (x, l) in xt {
        if x < xmin - 1e-9 || x > xmax + 1e-9 {
            continue;
        }
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{MT}" y2="{y2}" stroke="#eee"/><text x="{xx:.1}" y="{ty}" font-size="11" text-anchor="middle">{l}</text>"##,
            xx = px(x),
            y2 = MT + ph,
            ty = MT + ph + 16.0,
            l = esc(&l)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#888"/><text x="{cx}" y="{by}" font-size="12" text-anchor="middle">{xl}</text><text x="16" y="{cy}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {cy})">{yl}</text>"##,
        cx = ML + pw / 2.0,
        by = H - 8.0,
        cy = MT + ph / 2.0,
        xl = esc(xlabel),
        yl = esc(ylabel)
    );
    if pts.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{x}" y="{y}" font-size="13" text-anchor="middle" fill="#888">no data</text>"##,
            x = ML + pw / 2.0,
            y = MT + ph / 2.0
        );
    } else {
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="#1f6fb2" stroke-width="2" points="{}"/>"##,
            path.join(" ")
        );
    }
    s.push_str("</svg>");
    s
}

/// The whole page.
pub fn render(f: &Final) -> String {
    let r = &f.raw;
    let rate: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .filter(|p| p.dt > 0.0)
        .map(|p| (p.t, p.messages as f64 / p.dt))
        .collect();
    let open: Vec<(f64, f64)> = r.timeline.iter().map(|p| (p.t, p.open as f64)).collect();
    // Percentile curve: x = log10(1 / (1 - q)), up to 99.999 %.
    let mut curve = Vec::new();
    if !f.latency.is_empty() {
        for k in 0..=50 {
            let x = k as f64 / 10.0;
            let q = 1.0 - 10f64.powf(-x);
            curve.push((x, f.latency.value_at_quantile(q) as f64));
        }
    }
    let qticks = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64, l.to_string()))
        .collect();
    let json = serde_json::to_string_pretty(&f.to_json()).unwrap_or_default();
    let mut rows = String::new();
    let mut row = |k: &str, v: String| {
        let _ = write!(rows, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    row("target", r.target.clone());
    row("mode", r.mode.clone());
    row(
        "processes × threads",
        format!("{} × {} ({})", r.processes, r.threads, r.backend),
    );
    row(
        "connections",
        format!(
            "{} of {} in {:.2} s ({:.0}/s)",
            r.connections_established, r.connections_target, r.connect_secs, r.connections_per_sec
        ),
    );
    row(
        "messages",
        format!(
            "{} in {:.2} s: {:.0} msg/s, {:.2} MB/s",
            r.messages,
            r.window_secs,
            r.messages_per_sec,
            r.bytes_per_sec / 1e6
        ),
    );
    for (name, h) in [("latency", &f.latency), ("connect time", &f.connect)] {
        row(
            name,
            format!(
                "p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} samples)",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                h.len()
            ),
        );
    }
    let errs: Vec<String> = r
        .errors
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    row(
        "errors",
        if errs.is_empty() {
            "none".into()
        } else {
            errs.join(", ")
        },
    );
    row(
        "client cost",
        format!(
            "{:.3} µs CPU per message, {:.0} B per connection",
            f.cpu_us_per_message(),
            f.bytes_per_connection()
        ),
    );
    let samples: String = r
        .error_samples
        .iter()
        .chain(r.notes.iter())
        .map(|e| format!("<li>{}</li>", esc(e)))
        .collect();
    format!(
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>myriad-load report: {title}</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}th,td{{text-align:left;padding:4px 12px;border-bottom:1px solid #eee}}th{{color:#555;font-weight:normal}}svg{{display:block;margin:18px 0}}pre{{background:#f6f6f6;padding:12px}}</style>
</head><body>
<h1>myriad-load report</h1>
<table>{rows}</table>
<ul>{samples}</ul>
{c1}
{c2}
{c3}
<details><summary>JSON</summary><pre>{json}</pre></details>
</body></html>
"##,
        title = esc(&r.target),
        c1 = chart("Messages per second", "time (s)", "msg/s", &rate, None),
        c2 = chart(
            "Latency by percentile",
            "percentile",
            "latency (µs)",
            &curve,
            Some(qticks)
        ),
        c3 = chart("Open connections", "time (s)", "connections", &open, None),
        json = esc(&json),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Point, RawReport};

    #[test]
    fn page_is_self_contained_with_three_charts() {
        let mut raw = RawReport {
            target: "tcp://127.0.0.1:1".into(),
            ..RawReport::default()
        };
        raw.timeline = (1..10)
            .map(|i| Point {
                t: i as f64 * 0.5,
                open: 10,
                established: 10,
                messages: 100 * i,
                dt: 0.5,
                errors: 0,
            })
            .collect();
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for v in 1..1000 {
            h.record(v).unwrap();
        }
        let f = Final {
            raw,
            latency: h.clone(),
            connect: h,
        };
        let page = render(&f);
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(page.contains("<polyline"));
        assert!(!page.contains("http://") || page.matches("http://").count() == 3);
        assert!(!page.contains("<script"));
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
    }
}
