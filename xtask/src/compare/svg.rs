//! `compare.svg`: the suite's chart, written by hand (no crates).
//!
//! Three panels, top to bottom: (a) median time per configuration as bars
//! grouped by configuration, each allocator's bar its ratio to the best
//! peer (the 1.0 line and gomalloc's goal marked); (b) peak RSS likewise;
//! (c) throughput (ops/s) against thread count for each scaling workload,
//! one line per allocator. Each allocator keeps its colour of
//! [`ALLOCATORS`](super::allocators::ALLOCATORS) in every chart. Every bar
//! is relative to the best peer, gomalloc-hardened's too (whose table
//! ratio is to gomalloc's).

use std::fmt::Write as _;

use super::allocators::SUBJECT;
use super::report::{Figure, Suite, fmt_rate, fmt_rss, fmt_time};
use super::results::{Cell, Row, Source};

/// Chart width.
const WIDTH: f64 = 1000.0;
/// Left margin (room for the y-axis labels).
const LEFT: f64 = 80.0;
/// Right margin (room for the labels of the reference lines).
const RIGHT: f64 = 95.0;
/// Height of a bar panel's plot area.
const BAR_PLOT: f64 = 240.0;
/// Height of a throughput plot area.
const LINE_PLOT: f64 = 200.0;
/// Ratios above this are drawn clipped, with their value written above.
const RATIO_CAP: f64 = 3.0;
/// Colour of failure marks.
const FAIL_COLOUR: &str = "#D55E00";

/// The whole chart as an SVG document.
pub fn chart(suite: &Suite, caption: &str) -> String {
    let mut body = String::new();
    let mut y = 0.0;
    let title = format!(
        "gomalloc against its peers: medians of {} runs ({} mode)",
        suite.rounds, suite.mode
    );
    text(&mut body, WIDTH / 2.0, 28.0, &title, "middle", 18.0, "bold");
    text(
        &mut body,
        WIDTH / 2.0,
        48.0,
        caption,
        "middle",
        12.0,
        "normal",
    );
    y += 76.0;
    legend(&mut body, suite, y);
    y += 20.0;
    y = bar_panel(
        &mut body,
        suite,
        Figure::Time,
        y,
        "(a) Time relative to the best peer (lower is better)",
    );
    y = bar_panel(
        &mut body,
        suite,
        Figure::Rss,
        y,
        "(b) Peak RSS relative to the best peer (lower is better)",
    );
    y = throughput_panel(&mut body, suite, y);
    let height = y + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

/// `s` with XML's special characters escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn text(out: &mut String, x: f64, y: f64, s: &str, anchor: &str, size: f64, weight: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}" font-weight="{weight}">{}</text>"#,
        escape(s)
    );
}

fn line(out: &mut String, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
    let _ = writeln!(
        out,
        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
    );
}

fn legend(out: &mut String, suite: &Suite, y: f64) {
    let step = 140.0;
    let total = step * suite.allocs.len() as f64;
    let mut x = (WIDTH - total) / 2.0;
    for a in suite.allocs {
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="14" height="14" fill="{}"/>"#,
            y - 12.0,
            a.colour
        );
        text(out, x + 20.0, y, a.name, "start", 13.0, "normal");
        x += step;
    }
}

/// A step of 1, 2 or 5 times a power of ten giving about `ticks` ticks up
/// to `max`.
pub fn nice_step(max: f64, ticks: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / ticks;
    let pow = 10f64.powf(raw.log10().floor());
    let m = raw / pow;
    let m = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * pow
}

/// A tick of a scale from 0 to `top` stepping by `step`: `0`, `2.5 M`,
/// `40 k` (one unit for the whole scale, the top's), with as few decimals
/// as the step needs.
pub fn tick_label(v: f64, step: f64, top: f64) -> String {
    let (unit, suffix) = if top >= 1e9 {
        (1e9, " G")
    } else if top >= 1e6 {
        (1e6, " M")
    } else if top >= 1e3 {
        (1e3, " k")
    } else {
        (1.0, "")
    };
    if v == 0.0 {
        return "0".to_string();
    }
    let scaled = step / unit;
    let decimals = if (scaled - scaled.round()).abs() < 1e-9 {
        0
    } else if (scaled * 10.0 - (scaled * 10.0).round()).abs() < 1e-9 {
        1
    } else {
        2
    };
    format!("{:.*}{suffix}", decimals, v / unit)
}

/// The cell's figure over the best peer's in its row (for every allocator,
/// where [`Figure::of`] gives a variant's ratio to gomalloc's).
fn peer_ratio(fig: Figure, row: &Row, cell: &Cell) -> Option<f64> {
    match (fig.of(cell).0, fig.best(row)) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    }
}

/// Panel (a) or (b), its top at `y0`; returns the y below it.
fn bar_panel(out: &mut String, suite: &Suite, fig: Figure, y0: f64, title: &str) -> f64 {
    text(out, LEFT, y0 + 18.0, title, "start", 14.0, "bold");
    let top = y0 + 35.0;
    let bottom = top + BAR_PLOT;
    let width = WIDTH - LEFT - RIGHT;
    let max_ratio = suite
        .rows
        .iter()
        .flat_map(|r| r.cells.iter().map(move |c| (r, c)))
        .filter_map(|(r, c)| peer_ratio(fig, r, c))
        .fold(1.0f64, f64::max)
        .min(RATIO_CAP);
    let step = if max_ratio * 1.1 <= 2.0 { 0.25 } else { 0.5 };
    let ymax = ((max_ratio * 1.1 / step).ceil() * step).max(1.25);
    let yof = |r: f64| bottom - r.min(ymax) / ymax * BAR_PLOT;

    // Grid and y labels.
    let mut tick = 0.0;
    while tick <= ymax + 1e-9 {
        let y = yof(tick);
        line(
            out,
            (LEFT, y),
            (LEFT + width, y),
            r##"stroke="#E0E0E0" stroke-width="1""##,
        );
        text(
            out,
            LEFT - 6.0,
            y + 4.0,
            &format!("{tick:.2}"),
            "end",
            11.0,
            "normal",
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12" transform="rotate(-90 {:.1} {:.1})">ratio to the best peer</text>"#,
        LEFT - 50.0,
        (top + bottom) / 2.0,
        LEFT - 50.0,
        (top + bottom) / 2.0
    );

    // Bars.
    let n = suite.rows.len().max(1) as f64;
    let group = width / n;
    let na = suite.allocs.len().max(1) as f64;
    let bar = group * 0.8 / na;
    for (g, row) in suite.rows.iter().enumerate() {
        let label = suite.configs[row.config].label();
        let gx = LEFT + group * g as f64 + group * 0.1;
        for (i, (a, cell)) in suite.allocs.iter().zip(&row.cells).enumerate() {
            let x = gx + bar * i as f64;
            let (value, ratio) = (fig.of(cell).0, peer_ratio(fig, row, cell));
            if cell.failure.is_some() {
                let _ = writeln!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" font-weight="bold" fill="{FAIL_COLOUR}">✕<title>{} {}: FAIL</title></text>"#,
                    x + bar / 2.0,
                    bottom - 4.0,
                    escape(&label),
                    a.name
                );
                continue;
            }
            let (Some(value), Some(ratio)) = (value, ratio) else {
                continue;
            };
            let y = yof(ratio);
            let shown = match fig {
                Figure::Time => fmt_time(value),
                Figure::Rss => fmt_rss(value),
            };
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {shown} ({ratio:.2})</title></rect>"#,
                (bar - 1.0).max(1.0),
                bottom - y,
                a.colour,
                escape(&label),
                a.name
            );
            if ratio > ymax {
                text(
                    out,
                    x + bar / 2.0,
                    y - 3.0,
                    &format!("{ratio:.1}"),
                    "middle",
                    9.0,
                    "normal",
                );
            }
        }
        let cx = LEFT + group * (g as f64 + 0.5);
        let _ = writeln!(
            out,
            r#"<text x="{cx:.1}" y="{:.1}" text-anchor="end" font-size="11" transform="rotate(-35 {cx:.1} {:.1})">{}</text>"#,
            bottom + 14.0,
            bottom + 14.0,
            escape(&label)
        );
    }

    // Reference lines and axes.
    let subject = suite.allocs.iter().find(|a| a.name == SUBJECT);
    let y1 = yof(1.0);
    line(
        out,
        (LEFT, y1),
        (LEFT + width, y1),
        r##"stroke="#000000" stroke-width="1.2" stroke-dasharray="6 4""##,
    );
    text(
        out,
        LEFT + width + 5.0,
        y1 + 4.0,
        "best peer",
        "start",
        10.0,
        "normal",
    );
    if let Some(s) = subject {
        let yg = yof(fig.goal());
        line(
            out,
            (LEFT, yg),
            (LEFT + width, yg),
            &format!(
                r#"stroke="{}" stroke-width="1" stroke-dasharray="2 3""#,
                s.colour
            ),
        );
        // Below the 1.0 line's label when under it, above when over.
        let yt = if fig.goal() < 1.0 {
            yg + 10.0
        } else {
            yg - 2.0
        };
        text(
            out,
            LEFT + width + 5.0,
            yt,
            &format!("goal {:.1}", fig.goal()),
            "start",
            10.0,
            "normal",
        );
    }
    line(out, (LEFT, top), (LEFT, bottom), r##"stroke="#000000""##);
    line(
        out,
        (LEFT, bottom),
        (LEFT + width, bottom),
        r##"stroke="#000000""##,
    );
    bottom + 100.0
}

/// Panel (c), its top at `y0`; returns the y below it.
fn throughput_panel(out: &mut String, suite: &Suite, y0: f64) -> f64 {
    text(
        out,
        LEFT,
        y0 + 18.0,
        "(c) Throughput against threads, scaling workloads (higher is better)",
        "start",
        14.0,
        "bold",
    );
    let mut workloads: Vec<&str> = Vec::new();
    for c in suite.configs {
        if c.scaling && c.source == Source::Rust && !workloads.contains(&c.workload.as_str()) {
            workloads.push(&c.workload);
        }
    }
    let top = y0 + 45.0;
    if workloads.is_empty() {
        text(
            out,
            LEFT,
            top + 20.0,
            "no scaling workload in this run",
            "start",
            12.0,
            "normal",
        );
        return top + 40.0;
    }
    let bottom = top + LINE_PLOT;
    // Subplots side by side, each with 80 px for its y labels but the first
    // (which has the left margin), 30 px of right margin.
    let span = (WIDTH - LEFT - 30.0 + 80.0) / workloads.len() as f64;
    for (k, w) in workloads.iter().enumerate() {
        // The configurations of this workload, in thread order.
        let mut rows: Vec<(u32, &super::results::Row)> = suite
            .rows
            .iter()
            .filter_map(|r| {
                let c = &suite.configs[r.config];
                (c.workload == *w && c.source == Source::Rust)
                    .then_some((c.threads.unwrap_or(1), r))
            })
            .collect();
        rows.sort_by_key(|(t, _)| *t);
        let x0 = LEFT + span * k as f64;
        let x1 = x0 + span - 80.0;
        let lg = |t: u32| f64::from(t.max(1)).log2();
        let (lo, hi) = (
            rows.first().map_or(0.0, |(t, _)| lg(*t)),
            rows.last().map_or(0.0, |(t, _)| lg(*t)),
        );
        let xof = |t: u32| {
            if hi > lo {
                x0 + 15.0 + (lg(t) - lo) / (hi - lo) * (x1 - x0 - 30.0)
            } else {
                (x0 + x1) / 2.0
            }
        };
        let max = rows
            .iter()
            .flat_map(|(_, r)| r.cells.iter())
            .filter_map(|c| c.ops_per_s)
            .fold(0.0f64, f64::max);
        let step = nice_step(max * 1.1, 5.0);
        let ymax = ((max * 1.1 / step).ceil() * step).max(step);
        let yof = |v: f64| bottom - v / ymax * LINE_PLOT;
        let mut tick = 0.0;
        while tick <= ymax * (1.0 + 1e-9) {
            let y = yof(tick);
            line(
                out,
                (x0, y),
                (x1, y),
                r##"stroke="#E0E0E0" stroke-width="1""##,
            );
            text(
                out,
                x0 - 5.0,
                y + 4.0,
                &tick_label(tick, step, ymax),
                "end",
                10.0,
                "normal",
            );
            tick += step;
        }
        line(out, (x0, top), (x0, bottom), r##"stroke="#000000""##);
        line(out, (x0, bottom), (x1, bottom), r##"stroke="#000000""##);
        text(
            out,
            (x0 + x1) / 2.0,
            top - 8.0,
            &format!("{w} (ops/s)"),
            "middle",
            12.0,
            "bold",
        );
        for (t, _) in &rows {
            let x = xof(*t);
            line(out, (x, bottom), (x, bottom + 4.0), r##"stroke="#000000""##);
            text(
                out,
                x,
                bottom + 16.0,
                &t.to_string(),
                "middle",
                10.0,
                "normal",
            );
        }
        text(
            out,
            (x0 + x1) / 2.0,
            bottom + 32.0,
            "threads",
            "middle",
            11.0,
            "normal",
        );
        for (i, a) in suite.allocs.iter().enumerate() {
            let points: Vec<(u32, f64)> = rows
                .iter()
                .filter_map(|(t, r)| r.cells[i].ops_per_s.map(|v| (*t, v)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let coords: Vec<String> = points
                .iter()
                .map(|&(t, v)| format!("{:.1},{:.1}", xof(t), yof(v)))
                .collect();
            let width = if a.name == SUBJECT { 2.5 } else { 1.5 };
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{width}"/>"#,
                coords.join(" "),
                a.colour
            );
            for &(t, v) in &points {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{} t{t} {}: {}</title></circle>"#,
                    xof(t),
                    yof(v),
                    a.colour,
                    escape(w),
                    a.name,
                    fmt_rate(v)
                );
            }
        }
    }
    bottom + 45.0
}

#[cfg(test)]
mod tests {
    use super::super::report::tests::{sample, test_machine, test_suite};
    use super::super::results::{Config, Source, summarize};
    use super::*;

    /// Checks that every start tag has its end tag, in order; returns the
    /// number of elements.
    fn balanced(svg: &str) -> usize {
        let mut stack: Vec<String> = Vec::new();
        let mut count = 0;
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("unclosed <") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "`<` inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.trim()),
                    "mismatched </{name}>"
                );
            } else if !tag.starts_with('?') && !tag.starts_with('!') {
                count += 1;
                if !tag.ends_with('/') {
                    let name = tag.split_whitespace().next().unwrap();
                    stack.push(name.to_string());
                }
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        count
    }

    #[test]
    fn chart_is_well_formed_and_labelled() {
        let (mut configs, allocs, mut runs) = sample();
        // A second thread count of the scaling workload, for panel (c).
        configs.push(Config {
            workload: "larson".into(),
            threads: Some(8),
            size: 100,
            scaling: true,
            source: Source::Rust,
        });
        let extra: Vec<_> = runs
            .iter()
            .filter(|r| r.config == 0)
            .map(|r| super::super::results::Run {
                config: 2,
                elapsed_s: r.elapsed_s.map(|s| s / 3.0),
                ..r.clone()
            })
            .collect();
        runs.extend(extra);
        let rows = summarize(&configs, &allocs, &runs);
        let machine = test_machine("CPU <&> \"quoted\"");
        let suite = test_suite(&configs, &allocs, &rows, &runs, &machine, "quick");
        let svg = chart(&suite, &machine.line());
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(balanced(&svg) > 20);
        for c in &configs {
            assert!(
                svg.contains(&format!(">{}<", c.label())),
                "no label {}",
                c.label()
            );
        }
        for a in &allocs {
            assert!(
                svg.contains(&format!(">{}<", a.name)),
                "no legend {}",
                a.name
            );
            assert!(svg.contains(a.colour));
        }
        assert!(svg.contains("CPU &lt;&amp;&gt; &quot;quoted&quot;"));
        assert!(svg.contains(">best peer<"));
        assert!(svg.contains(">goal 0.9<"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("larson (ops/s)"));
        assert!(svg.contains("FAIL"));
    }

    #[test]
    fn a_variant_bar_is_relative_to_the_best_peer() {
        let (configs, allocs, runs) = super::super::report::tests::sample_with_memory();
        let rows = summarize(&configs, &allocs, &runs);
        let machine = test_machine("CPU");
        let suite = test_suite(&configs, &allocs, &rows, &runs, &machine, "full");
        let svg = chart(&suite, "caption");
        balanced(&svg);
        assert!(svg.contains(">gomalloc-hardened<"));
        // Peak RSS of idle-return: the variant's 1500 MiB over the best
        // peer's (system's) 1200 MiB, where its table ratio is 1500 / 1380
        // (gomalloc's).
        assert!(
            svg.contains("<title>idle-return gomalloc-hardened: 1.46 GiB (1.25)</title>"),
            "{svg}"
        );
        assert!(svg.contains("<title>idle-return gomalloc: 1.35 GiB (1.15)</title>"));
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 4.0), 5.0);
        assert_eq!(nice_step(7.0, 4.0), 2.0);
        assert_eq!(nice_step(1.2e7, 4.0), 5e6);
        assert_eq!(nice_step(0.0, 4.0), 1.0);
        assert_eq!(tick_label(0.0, 5e6, 2e7), "0");
        assert_eq!(tick_label(1e7, 5e6, 2e7), "10 M");
        assert_eq!(tick_label(5e5, 2.5e5, 7.5e5), "500 k");
        assert_eq!(tick_label(5e5, 5e5, 2.5e6), "0.5 M");
        assert_eq!(tick_label(2.5e6, 2.5e5, 2.5e6), "2.50 M");
        assert_eq!(tick_label(40.0, 20.0, 100.0), "40");
    }
}
