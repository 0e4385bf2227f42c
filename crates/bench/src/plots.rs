//! PNG charts: per configuration the seed's chart (peak GPU memory and execution time per
//! run on two y-axes), and one comparison of all configurations (memory, time per prompt,
//! decode tok/s, with ±1 stddev error bars and the baseline beside ours when given).
//!
//! Design choice: plotters' bitmap backend with an embedded DejaVu Sans registered through
//! its `ab_glyph` feature, so plots render the same on any machine without system fonts
//! or fontconfig. The drawing code returns `Box<dyn Error>` internally (plotters' error
//! types differ per call) and is turned into one `peregrine_core::Error` naming the file.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use peregrine_core::{Error, Result};

use crate::schema::{BenchReport, ConfigResult, BYTES_PER_GB};
use crate::stats::Stat;
use crate::table::num;

/// DejaVu Sans (Bitstream Vera licence, see assets/DejaVuSans-LICENSE.txt).
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FONT: &str = "sans-serif";

const SEED_SIZE: (u32, u32) = (1100, 650);
const COMPARISON_SIZE: (u32, u32) = (1650, 650);

const OURS: RGBColor = RGBColor(31, 119, 180);
const BASE: RGBColor = RGBColor(255, 127, 14);
const TIME: RGBColor = RGBColor(214, 39, 40);
const WEIGHTS: RGBColor = RGBColor(90, 90, 90);

/// How far above the tallest bar a bandwidth ceiling may be and still set the y scale.
const CEILING_SPAN: f64 = 3.0;

/// Fraction of the tallest value added above it, so legends and value labels fit.
const HEADROOM: f64 = 1.45;

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Register the embedded font once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok());
    ok.then_some(()).ok_or_else(|| Error::msg("the embedded DejaVu Sans font could not be parsed"))
}

fn plot_error(path: &Path, e: Box<dyn std::error::Error>) -> Error {
    Error::file(path, format!("drawing the plot failed: {e}"))
}

/// "peak GPU memory", or "peak memory" when the benchmark ran on the CPU.
fn memory_name(report: &BenchReport) -> &'static str {
    if report.device.name.to_ascii_lowercase().starts_with("cpu") {
        "peak memory"
    } else {
        "peak GPU memory"
    }
}

/// "1 run", "2 runs".
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The last component of a model path or hub id, for titles.
fn short_model(model: &str) -> &str {
    model.trim_end_matches('/').rsplit('/').next().unwrap_or(model)
}

/// The seed's chart for one configuration: x = measured run, bars = peak memory (GB, left
/// axis), line = execution time (s, right axis), dashed = resident weights.
pub fn plot_seed_chart(report: &BenchReport, config: &ConfigResult, path: &Path) -> Result<()> {
    ensure_font()?;
    draw_seed_chart(report, config, path).map_err(|e| plot_error(path, e))
}

fn draw_seed_chart(report: &BenchReport, config: &ConfigResult, path: &Path) -> DrawResult {
    let mem: Vec<f64> = config.measured_runs().map(|r| r.peak_memory_bytes as f64 / BYTES_PER_GB).collect();
    let time: Vec<f64> = config.measured_runs().map(|r| r.total_s).collect();
    let n = mem.len().max(1) as f64;
    let weights_gb = config.weight_bytes as f64 / BYTES_PER_GB;
    let mem_top = top_of(mem.iter().copied().chain([weights_gb]));
    let time_top = top_of(time.iter().copied());

    let root = BitMapBackend::new(path, SEED_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let synthetic = if report.synthetic_weights { " (synthetic weights)" } else { "" };
    let mem_name = memory_name(report);
    let title =
        format!("{} {}{synthetic}: {mem_name} and execution time per run", short_model(&report.model), config.label);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(20)
        .x_label_area_size(65)
        .y_label_area_size(85)
        .right_y_label_area_size(85)
        .build_cartesian_2d(0.5..n + 0.5, 0.0..mem_top)?
        .set_secondary_coord(0.5..n + 0.5, 0.0..time_top);
    let int_label =
        |x: &f64| if (x - x.round()).abs() < 1e-6 { format!("{}", x.round() as i64) } else { String::new() };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels((n as usize).min(25) + 2)
        .x_label_formatter(&int_label)
        .y_label_formatter(&|y| tick(*y))
        .x_desc(format!("run ({} in turn, {}; warm-up excluded)", plural(report.prompts.len(), "prompt"), report.limit))
        .y_desc(format!("{mem_name} (GB)"))
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 20))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_label_formatter(&|y| tick(*y))
        .y_desc("execution time (s)")
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 20))
        .draw()?;

    chart
        .draw_series(mem.iter().enumerate().map(|(i, &gb)| {
            let x = i as f64 + 1.0;
            Rectangle::new([(x - 0.3, 0.0), (x + 0.3, gb)], OURS.mix(0.85).filled())
        }))?
        .label(format!("{mem_name} (GB, left axis)"))
        .legend(|(x, y)| Rectangle::new([(x, y - 7), (x + 18, y + 7)], OURS.filled()));
    chart
        .draw_series(DashedLineSeries::new([(0.5, weights_gb), (n + 0.5, weights_gb)], 12, 8, WEIGHTS.stroke_width(2)))?
        .label(format!("resident weights: {} GB (left axis)", num(weights_gb)))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], WEIGHTS.stroke_width(2)));
    let points: Vec<(f64, f64)> = time.iter().enumerate().map(|(i, &s)| (i as f64 + 1.0, s)).collect();
    chart
        .draw_secondary_series(LineSeries::new(points.clone(), TIME.stroke_width(3)))?
        .label("execution time (s, right axis)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], TIME.stroke_width(3)));
    chart.draw_secondary_series(points.iter().map(|&p| Circle::new(p, 5, TIME.filled())))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 18))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// An axis tick: at most three decimals, trailing zeros dropped ("30", "2.5", "0.125").
fn tick(y: f64) -> String {
    let s = format!("{y:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A y-axis top leaving room above the tallest value (1 when there is none).
fn top_of(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 {
        max * HEADROOM
    } else {
        1.0
    }
}

/// One category of a comparison panel: our figure, the baseline's, and a ceiling line.
struct Group {
    ours: Option<Stat>,
    base: Option<Stat>,
    ceiling: Option<f64>,
}

/// One panel of the comparison chart.
struct Panel {
    title: String,
    y_desc: &'static str,
    groups: Vec<Group>,
}

/// Bars per configuration for peak memory, mean time per prompt and decode tok/s, with
/// ±1 stddev error bars; the baseline's bars beside ours; the bandwidth ceiling dashed.
pub fn plot_comparison(report: &BenchReport, path: &Path) -> Result<()> {
    ensure_font()?;
    draw_comparison(report, path).map_err(|e| plot_error(path, e))
}

fn draw_comparison(report: &BenchReport, path: &Path) -> DrawResult {
    let labels: Vec<String> = report
        .configs
        .iter()
        .map(|c| if c.summary.runs == 0 { format!("{} (failed)", c.label) } else { c.label.clone() })
        .collect();
    let panels = comparison_panels(report);
    let root = BitMapBackend::new(path, COMPARISON_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(100);
    draw_header(&top, report)?;
    for (area, panel) in body.split_evenly((1, 3)).iter().zip(&panels) {
        draw_panel(area, panel, &labels)?;
    }
    root.present()?;
    Ok(())
}

fn comparison_panels(report: &BenchReport) -> Vec<Panel> {
    let base = |label: &str| report.baseline.as_ref().and_then(|b| b.config(label)).map(|c| &c.summary);
    let bw = report.device.memory_bandwidth_gbps;
    let memory = report.configs.iter().map(|c| Group {
        ours: c.summary.peak_memory_gb,
        base: base(&c.label).and_then(|b| b.peak_memory_gb),
        ceiling: None,
    });
    let time = report.configs.iter().map(|c| Group {
        ours: c.summary.total_s,
        base: base(&c.label).and_then(|b| b.total_s),
        ceiling: None,
    });
    // The baseline's decode rate when it timed the first token, else its end-to-end rate.
    let tok = report.configs.iter().map(|c| Group {
        ours: c.summary.decode_tok_s,
        base: base(&c.label).and_then(|b| b.decode_tok_s.or(b.e2e_tok_s)),
        ceiling: bw.filter(|_| c.weight_bytes > 0).map(|g| g * BYTES_PER_GB / c.weight_bytes as f64),
    });
    vec![
        Panel { title: capitalize(memory_name(report)), y_desc: "peak memory (GB)", groups: memory.collect() },
        Panel { title: "Execution time per prompt".into(), y_desc: "time per prompt (s)", groups: time.collect() },
        Panel { title: "Decode throughput".into(), y_desc: "decode throughput (tok/s)", groups: tok.collect() },
    ]
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// Title line and a legend row across the top of the comparison chart.
fn draw_header(area: &DrawingArea<BitMapBackend<'_>, Shift>, report: &BenchReport) -> DrawResult {
    let synthetic = if report.synthetic_weights { ", synthetic weights" } else { "" };
    let title = format!(
        "{} on {}: {}, {} x {}{synthetic}",
        short_model(&report.model),
        report.device.name,
        report.limit,
        plural(report.prompts.len(), "prompt"),
        plural(report.runs_per_prompt, "run")
    );
    let title_style = TextStyle::from((FONT, 26).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(title, (COMPARISON_SIZE.0 as i32 / 2, 12), title_style))?;

    let mut entries: Vec<(String, RGBColor, bool)> = vec![("peregrine".into(), OURS, false)];
    if let Some(b) = &report.baseline {
        let e2e = b.configs.iter().any(|c| c.summary.decode_tok_s.is_none());
        let note = if e2e { " (tok/s end to end)" } else { "" };
        entries.push((format!("{}{note}", b.source), BASE, false));
    }
    if report.device.memory_bandwidth_gbps.is_some() {
        entries.push(("bandwidth ceiling (bandwidth / weight bytes)".into(), WEIGHTS, true));
    }
    entries.push(("error bars: ±1 stddev".into(), BLACK, true));
    draw_legend_row(area, &entries, 62)
}

/// Legend entries side by side, centred, at pixel row `y`: a swatch (or a line) and its text.
fn draw_legend_row(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    entries: &[(String, RGBColor, bool)],
    y: i32,
) -> DrawResult {
    let style = TextStyle::from((FONT, 18).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let widths: Vec<i32> = entries
        .iter()
        .map(|(t, _, _)| area.estimate_text_size(t, &style).map(|(w, _)| w as i32 + 60))
        .collect::<std::result::Result<_, _>>()?;
    let mut x = (COMPARISON_SIZE.0 as i32 - widths.iter().sum::<i32>()) / 2;
    for ((text, color, line), w) in entries.iter().zip(widths) {
        if *line {
            area.draw(&PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3)))?;
        } else {
            area.draw(&Rectangle::new([(x, y - 9), (x + 22, y + 9)], color.filled()))?;
        }
        area.draw(&Text::new(text.clone(), (x + 30, y), style.clone()))?;
        x += w;
    }
    Ok(())
}

/// One bar chart of the comparison: categories on x, bars with error bars and value labels.
fn draw_panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, panel: &Panel, labels: &[String]) -> DrawResult {
    let k = panel.groups.len().max(1) as f64;
    let with_base = panel.groups.iter().any(|g| g.base.is_some());
    let bar_top = |s: &Option<Stat>| s.map(|s| s.mean + s.stddev);
    let tallest = panel.groups.iter().flat_map(|g| [bar_top(&g.ours), bar_top(&g.base)]).flatten().fold(0.0, f64::max);
    // A ceiling far above the bars (a tiny model is launch-bound) would flatten them: it is
    // drawn only when within CEILING_SPAN x the tallest bar, and written as text otherwise.
    let ceiling_on_scale = |c: f64| tallest == 0.0 || c <= CEILING_SPAN * tallest;
    let shown_ceiling =
        panel.groups.iter().filter_map(|g| g.ceiling).filter(|&c| ceiling_on_scale(c)).fold(0.0, f64::max);
    let y_top = top_of([tallest, shown_ceiling / HEADROOM * 1.15].into_iter());

    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(85)
        .build_cartesian_2d(-0.5..k - 0.5, 0.0..y_top)?;
    let category = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(labels.len() * 2 + 1)
        .x_label_formatter(&category)
        .y_label_formatter(&|y| tick(*y))
        .y_desc(panel.y_desc)
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 19))
        .draw()?;

    let (width, offset) = if with_base { (0.34, 0.19) } else { (0.55, 0.0) };
    for (i, g) in panel.groups.iter().enumerate() {
        let x = i as f64;
        draw_bar(&mut chart, x - offset, width, g.ours, OURS)?;
        if with_base {
            draw_bar(&mut chart, x + offset, width, g.base, BASE)?;
        }
        if let Some(c) = g.ceiling {
            draw_ceiling(&mut chart, x, c, ceiling_on_scale(c), y_top)?;
        }
    }
    Ok(())
}

type PanelChart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A bar at `x` of `width` for `stat`'s mean, a ±stddev error bar, and the mean written above.
fn draw_bar(chart: &mut PanelChart<'_, '_>, x: f64, width: f64, stat: Option<Stat>, color: RGBColor) -> DrawResult {
    let Some(s) = stat else { return Ok(()) };
    let half = width / 2.0;
    chart.draw_series([Rectangle::new([(x - half, 0.0), (x + half, s.mean)], color.mix(0.85).filled())])?;
    if s.n > 1 && s.stddev > 0.0 {
        let (lo, hi, cap) = ((s.mean - s.stddev).max(0.0), s.mean + s.stddev, half * 0.35);
        let err = BLACK.stroke_width(2);
        chart.draw_series([
            PathElement::new(vec![(x, lo), (x, hi)], err),
            PathElement::new(vec![(x - cap, hi), (x + cap, hi)], err),
            PathElement::new(vec![(x - cap, lo), (x + cap, lo)], err),
        ])?;
    }
    let style = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series([Text::new(num(s.mean), (x, s.mean + s.stddev), style)])?;
    Ok(())
}

/// The bandwidth ceiling over category `x`: a dashed line, or a note when off the scale.
fn draw_ceiling(chart: &mut PanelChart<'_, '_>, x: f64, ceiling: f64, on_scale: bool, y_top: f64) -> DrawResult {
    let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)).color(&WEIGHTS);
    if on_scale {
        chart.draw_series(DashedLineSeries::new(
            [(x - 0.45, ceiling), (x + 0.45, ceiling)],
            8,
            5,
            WEIGHTS.stroke_width(3),
        ))?;
        chart.draw_series([Text::new(format!("ceiling {}", num(ceiling)), (x, ceiling), style)])?;
    } else {
        // Two short lines, so neighbouring categories' notes never overlap or run off the panel.
        let top = style.pos(Pos::new(HPos::Center, VPos::Top));
        chart.draw_series([
            Text::new(format!("ceiling {}", num(ceiling)), (x, y_top * 0.97), top.clone()),
            Text::new("(off scale)".to_string(), (x, y_top * 0.91), top),
        ])?;
    }
    Ok(())
}
