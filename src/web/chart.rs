//! Time-series charts as SVG, drawn on the server with plotters: a time
//! axis in local time with ticks suited to the span, a value axis in the
//! series' unit, dashed threshold lines for alert thresholds, one colour
//! per series (the legend is HTML, beside the chart), and gaps where data
//! is missing instead of lines drawn across them. Axis and text colours are
//! `currentColor`, so the page's CSS picks them for light and dark mode.

use std::fmt::Write as _;

use chrono::{Local, TimeZone};
use plotters::prelude::*;

use crate::model::Timestamp;

/// What the values measure, for axis labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Plain,
    /// 0–100.
    Percent,
    Bytes,
    BytesPerSecond,
    Seconds,
}

impl Unit {
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Plain => short(v),
            Unit::Percent => format!("{}%", short(v)),
            Unit::Bytes => bytes(v),
            Unit::BytesPerSecond => format!("{}/s", bytes(v)),
            Unit::Seconds => seconds(v),
        }
    }
}

fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn bytes(v: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut i = 0;
    while v.abs() >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{} {}", short(v), units[i])
}

fn seconds(v: f64) -> String {
    let a = v.abs();
    if a >= 3600.0 {
        format!("{}h", short(v / 3600.0))
    } else if a >= 60.0 {
        format!("{}m", short(v / 60.0))
    } else if a >= 1.0 || v == 0.0 {
        format!("{}s", short(v))
    } else {
        format!("{}ms", short(v * 1000.0))
    }
}

/// A horizontal line at an alert threshold.
#[derive(Debug, Clone)]
pub struct Threshold {
    pub value: f64,
    /// "warning" or "critical": picks the colour.
    pub level: &'static str,
}

/// Named series of `(time, value)` points.
pub type SeriesSet = Vec<(String, Vec<(Timestamp, f64)>)>;

/// A chart to draw.
#[derive(Debug, Clone)]
pub struct Chart {
    pub unit: Unit,
    /// `(name, points)`; NaN values are gaps.
    pub series: SeriesSet,
    pub start_ms: Timestamp,
    pub end_ms: Timestamp,
    /// Points further apart than twice this are not joined.
    pub step_ms: i64,
    pub thresholds: Vec<Threshold>,
    /// Fixed value range (e.g. 0–100 for percentages); else from the data.
    pub y_range: Option<(f64, f64)>,
    /// Mark each point (for sparse data such as runs).
    pub points: bool,
}

/// The series colours, readable on light and dark backgrounds.
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
    (188, 189, 34),
    (127, 127, 127),
];

pub fn color_hex(i: usize) -> String {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Stands for `currentColor` while plotters draws.
const INK: RGBColor = RGBColor(1, 2, 3);
/// Threshold lines; drawn solid, made dashed afterwards (colours no series
/// uses).
const WARNING: RGBColor = RGBColor(230, 160, 1);
const CRITICAL: RGBColor = RGBColor(214, 39, 41);

/// Draws `chart` as an SVG document `width` × `height` user units wide
/// (it scales to its container).
pub fn render(chart: &Chart, width: u32, height: u32) -> String {
    let mut svg = String::new();
    if let Err(e) = draw(chart, width, height, &mut svg) {
        svg.clear();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"><text x="10" y="20" fill="currentColor">chart error: {}</text></svg>"#,
            maud::html! { (e.to_string()) }.into_string()
        );
        return svg;
    }
    // plotters writes colours as attributes; the ink becomes CSS's colour.
    let svg = svg
        .replace("\"#010203\"", "\"currentColor\"")
        .replace(
            "stroke=\"#E6A001\"",
            "stroke=\"#e6a000\" stroke-dasharray=\"6 4\"",
        )
        .replace(
            "stroke=\"#D62729\"",
            "stroke=\"#d62728\" stroke-dasharray=\"6 4\"",
        );
    svg.replacen(
        "<svg ",
        r#"<svg role="img" preserveAspectRatio="xMidYMid meet" class="chart" "#,
        1,
    )
}

fn y_bounds(chart: &Chart) -> (f64, f64) {
    if let Some(r) = chart.y_range {
        let max_seen = chart
            .series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.1))
            .filter(|v| v.is_finite())
            .fold(r.1, f64::max);
        return (r.0, max_seen);
    }
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for (_, pts) in &chart.series {
        for &(_, v) in pts {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    for t in &chart.thresholds {
        lo = lo.min(t.value);
        hi = hi.max(t.value);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if lo > 0.0 && lo < hi * 0.5 {
        lo = 0.0;
    }
    if hi == lo {
        let pad = if hi == 0.0 { 1.0 } else { hi.abs() * 0.1 };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.08;
    (if lo == 0.0 { 0.0 } else { lo - pad }, hi + pad)
}

/// Tick times on round local-time boundaries (every 1, 5, 10, 15, 30
/// minutes, 1, 2, 3, 6, 12 hours, 1, 2 or 7 days: the first giving at most
/// `max` ticks), with the label format that suits them.
fn time_ticks(start: Timestamp, end: Timestamp, max: i64) -> (Vec<Timestamp>, &'static str) {
    const STEPS: [i64; 13] = [
        60_000,
        300_000,
        600_000,
        900_000,
        1_800_000,
        3_600_000,
        7_200_000,
        10_800_000,
        21_600_000,
        43_200_000,
        86_400_000,
        172_800_000,
        604_800_000,
    ];
    let span = (end - start).max(1);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s <= max)
        .unwrap_or(span / max.max(1));
    // Align to local time: shift by the zone's offset at the start.
    let offset = Local
        .timestamp_millis_opt(start)
        .single()
        .map_or(0, |d| i64::from(d.offset().local_minus_utc()) * 1000);
    let first = (start + offset).div_euclid(step) * step - offset;
    let ticks: Vec<Timestamp> = (0..)
        .map(|i| first + i * step)
        .skip_while(|t| *t < start)
        .take_while(|t| *t <= end)
        .collect();
    let format = if step >= 86_400_000 {
        "%b %d"
    } else if span > 86_400_000 {
        "%a %H:%M"
    } else {
        "%H:%M"
    };
    (ticks, format)
}

fn draw(chart: &Chart, width: u32, height: u32, out: &mut String) -> Result<(), String> {
    let root = SVGBackend::with_string(out, (width, height)).into_drawing_area();
    let (y0, y1) = y_bounds(chart);
    let (x0, x1) = (chart.start_ms, chart.end_ms.max(chart.start_ms + 1));
    let (ticks, fmt) = time_ticks(x0, x1, (i64::from(width) / 110).max(2));
    let mut c = ChartBuilder::on(&root)
        .margin(8)
        .margin_right(16)
        .x_label_area_size(24)
        .y_label_area_size(58)
        .build_cartesian_2d((x0..x1).with_key_points(ticks), y0..y1)
        .map_err(|e| e.to_string())?;
    let font = ("sans-serif", 13).into_font().color(&INK);
    c.configure_mesh()
        .y_labels(5)
        .x_label_formatter(&|t| {
            Local
                .timestamp_millis_opt(*t)
                .single()
                .map(|d| d.format(fmt).to_string())
                .unwrap_or_default()
        })
        .y_label_formatter(&|v| chart.unit.format(*v))
        .label_style(font)
        .axis_style(INK.mix(0.5))
        .bold_line_style(INK.mix(0.12))
        .light_line_style(INK.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    for t in &chart.thresholds {
        let color = if t.level == "critical" {
            CRITICAL
        } else {
            WARNING
        };
        c.draw_series(LineSeries::new(
            [(x0, t.value), (x1, t.value)],
            color.stroke_width(1),
        ))
        .map_err(|e| e.to_string())?;
    }
    let gap = chart.step_ms.max(1) * 2;
    for (i, (_, pts)) in chart.series.iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let style = RGBColor(r, g, b).stroke_width(2);
        let mut segment: Vec<(i64, f64)> = Vec::new();
        let mut segments = Vec::new();
        for &(t, v) in pts {
            let broken = !v.is_finite() || segment.last().is_some_and(|l| t - l.0 > gap);
            if broken && !segment.is_empty() {
                segments.push(std::mem::take(&mut segment));
            }
            if v.is_finite() {
                segment.push((t, v));
            }
        }
        if !segment.is_empty() {
            segments.push(segment);
        }
        for s in segments {
            if s.len() == 1 || chart.points {
                c.draw_series(
                    s.iter()
                        .map(|&p| Circle::new(p, 3, RGBColor(r, g, b).filled())),
                )
                .map_err(|e| e.to_string())?;
            }
            if s.len() > 1 {
                c.draw_series(LineSeries::new(s, style))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_round_times() {
        let h = 3_600_000;
        let (ticks, fmt) = time_ticks(1_800_000_000_000 + 1234, 1_800_000_000_000 + 6 * h, 6);
        assert_eq!(fmt, "%H:%M");
        assert!(ticks.len() >= 3 && ticks.len() <= 7, "{ticks:?}");
        let step = ticks[1] - ticks[0];
        assert!(step == h || step == 2 * h, "{step}");
        // On the hour in local time.
        let d = Local.timestamp_millis_opt(ticks[0]).single().unwrap();
        assert_eq!(d.format("%M:%S").to_string(), "00:00");
        let (_, fmt) = time_ticks(0, 7 * 86_400_000, 6);
        assert_eq!(fmt, "%b %d");
    }

    #[test]
    fn gaps_thresholds_and_units() {
        let pts: Vec<(i64, f64)> = (0..10)
            .map(|i| (i * 60_000, if i == 5 { f64::NAN } else { 50.0 + i as f64 }))
            .collect();
        let chart = Chart {
            unit: Unit::Percent,
            series: vec![("cpu".into(), pts)],
            start_ms: 0,
            end_ms: 9 * 60_000,
            step_ms: 60_000,
            thresholds: vec![Threshold {
                value: 80.0,
                level: "warning",
            }],
            y_range: Some((0.0, 100.0)),
            points: false,
        };
        let svg = render(&chart, 600, 240);
        assert!(svg.starts_with("<svg role=\"img\""), "{svg}");
        // Two segments either side of the NaN: two lines of the series.
        assert_eq!(svg.matches("stroke=\"#1F77B4\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("stroke-dasharray").count(), 1, "{svg}");
        assert!(svg.contains("100%"));
        assert!(svg.contains("currentColor"));
        assert!(!svg.contains("#010203"));
        assert_eq!(Unit::Bytes.format(3.0 * 1024.0 * 1024.0), "3 MiB");
        assert_eq!(Unit::Seconds.format(0.25), "250ms");
    }
}
