//! The terminal table: one aligned markdown table of every configuration (and the
//! baseline's, when given), each figure as mean ± stddev over the measured runs.
//!
//! Design choice: rows are built as plain strings first, then a generic markdown renderer
//! pads columns to width, so the same table reads well in a terminal and pastes into a
//! README; optional columns (bandwidth share, perplexity) appear only when some row has them.
//! The warm prefill figures (`--prefill-tokens`) are a second, small table below the first,
//! present only when some configuration has them.

use crate::schema::{BenchReport, ConfigResult, Summary, BYTES_PER_GB};
use crate::stats::Stat;

/// A number with precision that suits its size: 1234, 123.4, 12.34, 1.234.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// "mean ± stddev" of `stat` times `scale` (the stddev with the mean's decimals), or "-".
pub fn stat_cell(stat: Option<Stat>, scale: f64) -> String {
    match stat {
        Some(s) if s.n > 1 => {
            let mean = num(s.mean * scale);
            let decimals = mean.split('.').nth(1).map_or(0, str::len);
            format!("{mean} ± {:.decimals$}", s.stddev * scale)
        }
        Some(s) => num(s.mean * scale),
        None => "-".to_string(),
    }
}

/// A small divergence keeps five decimals (KL of a good 4-bit model is ~0.01 nats or less).
fn kl(x: f64) -> String {
    if x.abs() < 0.1 {
        format!("{x:.5}")
    } else {
        num(x)
    }
}

/// Render `rows` under `header` as a markdown table; `right[i]` right-aligns column i.
pub fn markdown_table(header: &[String], right: &[bool], rows: &[Vec<String>]) -> String {
    let width =
        |i: usize| rows.iter().map(|r| r[i].chars().count()).chain([header[i].chars().count(), 3]).max().unwrap_or(3);
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if right[i] { format!("{c:>w$}", w = widths[i]) } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        format!("| {} |", padded.join(" | "))
    };
    let rule: Vec<String> = widths
        .iter()
        .zip(right)
        .map(|(&w, &r)| if r { format!("{}:", "-".repeat(w - 1)) } else { "-".repeat(w) })
        .collect();
    let mut out = vec![line(header), format!("| {} |", rule.join(" | "))];
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n") + "\n"
}

/// Which optional columns the report needs.
struct Columns {
    bandwidth: Option<f64>,
    quality: bool,
}

/// The whole terminal report: a header of what ran, the table, and any failures.
pub fn render_table(report: &BenchReport) -> String {
    let cols = Columns {
        bandwidth: report.device.memory_bandwidth_gbps,
        quality: report.configs.iter().any(|c| c.ppl.is_some()),
    };
    let mut rows: Vec<Vec<String>> = report.configs.iter().map(|c| config_row(c, &cols)).collect();
    if let Some(b) = &report.baseline {
        rows.extend(b.configs.iter().map(|c| baseline_row(&format!("{} (baseline)", c.label), &c.summary, &cols)));
    }
    let (header, right) = header(&cols);
    let mut out = header_lines(report);
    out.push_str(&markdown_table(&header, &right, &rows));
    out.push_str(&prefill_table(report));
    out.push_str(&clocks_table(report));
    out.push_str(&footnotes(report));
    out
}

/// The device's clock and power over each configuration's measured runs; empty when no
/// configuration has readings.
pub fn clocks_table(report: &BenchReport) -> String {
    let rows: Vec<Vec<String>> = report
        .configs
        .iter()
        .filter_map(|c| c.clocks.as_ref().map(|k| (c, k)))
        .map(|(c, k)| {
            vec![
                c.label.clone(),
                num(k.sm_mhz_median),
                num(k.sm_mhz_min),
                num(k.sm_mhz_max),
                num(k.power_w_median),
                num(k.power_w_max),
                k.power_limit_w.map(num).unwrap_or_else(|| "-".into()),
                format!("{:.0}%", 100.0 * k.power_capped_share),
                k.samples.to_string(),
            ]
        })
        .collect();
    let columns = ["config", "SM MHz", "min MHz", "max MHz", "power W", "max W", "limit W", "power-capped", "readings"];
    side_table(&columns, &rows)
}

/// A table after the main one (a blank line, then `columns` over `rows`, numbers right-aligned
/// after the first column), or nothing when there are no rows.
fn side_table(columns: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let header: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let right: Vec<bool> = (0..header.len()).map(|i| i > 0).collect();
    format!("\n{}", markdown_table(&header, &right, rows))
}

/// The warm prefill table: one row per configuration that has prefill figures; empty
/// when none has.
pub fn prefill_table(report: &BenchReport) -> String {
    let rows: Vec<Vec<String>> = report
        .configs
        .iter()
        .filter_map(|c| c.prefill.as_ref().map(|p| (c, p)))
        .map(|(c, p)| {
            let stat = p.stat();
            vec![
                c.label.clone(),
                p.tokens.to_string(),
                num(p.median_s),
                stat.map(|s| num(s.min)).unwrap_or_else(|| "-".into()),
                stat.map(|s| num(s.max)).unwrap_or_else(|| "-".into()),
                p.runs_s.len().to_string(),
                num(p.tokens_per_s),
                num(p.tflops),
                num(p.warmup_s),
            ]
        })
        .collect();
    let columns = ["config", "prefill tokens", "median s", "min s", "max s", "runs", "tok/s", "TFLOPS", "warm-up s"];
    side_table(&columns, &rows)
}

fn header(cols: &Columns) -> (Vec<String>, Vec<bool>) {
    let mut h = vec![
        "config",
        "weights GB",
        "load s",
        "peak mem GB",
        "time/prompt s",
        "TTFT ms",
        "decode tok/s",
        "e2e tok/s",
        "weights GB/s",
    ];
    if cols.bandwidth.is_some() {
        h.push("% of BW");
    }
    if cols.quality {
        h.extend(["PPL", "KL mean", "KL p99", "top-1 %"]);
    }
    let right = (0..h.len()).map(|i| i > 0).collect();
    (h.into_iter().map(String::from).collect(), right)
}

fn config_row(c: &ConfigResult, cols: &Columns) -> Vec<String> {
    let label = if c.error.is_some() { format!("{} (failed)", c.label) } else { c.label.clone() };
    let mut row = summary_row(&label, Some(c.weight_bytes), c.load_s, &c.summary, cols);
    if cols.quality {
        let q = c.ppl.as_ref();
        let opt = |x: Option<f64>, scale: f64| x.map(|v| num(v * scale)).unwrap_or_else(|| "-".into());
        row.push(opt(q.map(|q| q.perplexity), 1.0));
        row.push(q.and_then(|q| q.kl_mean).map(kl).unwrap_or_else(|| "-".into()));
        row.push(q.and_then(|q| q.kl_p99).map(kl).unwrap_or_else(|| "-".into()));
        row.push(opt(q.and_then(|q| q.top1_agree), 100.0));
    }
    row
}

fn summary_row(
    label: &str,
    weight_bytes: Option<u64>,
    load_s: Option<f64>,
    s: &Summary,
    cols: &Columns,
) -> Vec<String> {
    let weights = weight_bytes.filter(|&w| w > 0).map(|w| num(w as f64 / BYTES_PER_GB)).unwrap_or_else(|| "-".into());
    let mut row = vec![
        label.to_string(),
        weights,
        load_s.map(num).unwrap_or_else(|| "-".into()),
        stat_cell(s.peak_memory_gb, 1.0),
        stat_cell(s.total_s, 1.0),
        stat_cell(s.ttft_s, 1000.0),
        stat_cell(s.decode_tok_s, 1.0),
        stat_cell(s.e2e_tok_s, 1.0),
        stat_cell(s.achieved_gbps, 1.0),
    ];
    if let Some(bw) = cols.bandwidth {
        row.push(s.achieved_gbps.map(|g| format!("{:.1}", 100.0 * g.mean / bw)).unwrap_or_else(|| "-".into()));
    }
    row
}

/// A baseline row: its figures, and "-" where it has no counterpart (weights, quality).
fn baseline_row(label: &str, s: &Summary, cols: &Columns) -> Vec<String> {
    let mut row = summary_row(label, None, None, s, cols);
    if cols.quality {
        row.extend(std::iter::repeat_n("-".to_string(), 4));
    }
    row
}

fn header_lines(r: &BenchReport) -> String {
    let bw = r.device.memory_bandwidth_gbps.map(|b| format!(", {} GB/s", num(b))).unwrap_or_default();
    let commit = r.commit.as_deref().map(|c| format!(", commit {c}")).unwrap_or_default();
    let mut out = format!(
        "peregrine bench {}{commit}, {}\nmodel {} on {}{bw}\n{}, {} prompts x {} runs, {} warm-up\n",
        r.tool_version,
        r.date,
        r.model,
        r.device.name,
        r.limit,
        r.prompts.len(),
        r.runs_per_prompt,
        r.warmup_runs
    );
    if r.synthetic_weights {
        out.push_str("synthetic weights: the generated text is meaningless\n");
    }
    out.push('\n');
    out
}

fn footnotes(r: &BenchReport) -> String {
    let mut out =
        String::from("\nmean ± sample stddev over measured runs; GB = 1e9 bytes; TTFT = prefill + first token;\n");
    out.push_str("weights GB/s = resident weight bytes x decode tok/s\n");
    if r.configs.iter().any(|c| c.prefill.is_some()) {
        out.push_str(
            "prefill: after a warm-up, timed forwards of synthetic ids from position 0 (last-row logits, device \
             synchronized); TFLOPS = (2 x block linear params x N + 2 N^2 H Hd L + 2 D V) / median s\n",
        );
    }
    if r.configs.iter().any(|c| c.clocks.is_some()) {
        out.push_str(
            "clocks: the device's SM clock and board power every 100 ms over the measured runs (NVML; medians); \
             power-capped = share of readings in which the power limit held the clocks down\n",
        );
    }
    if let Some(b) = &r.baseline {
        let device = b.device.as_deref().map(|d| format!(" on {d}")).unwrap_or_default();
        out.push_str(&format!(
            "baseline: {}{device}; its tok/s is end to end when it did not time the first token\n",
            b.source
        ));
    }
    if let Some(f) = &r.ppl_file {
        out.push_str(&format!("PPL and KL (nats, vs the reference configuration) over {f}\n"));
    }
    for c in r.configs.iter().filter(|c| c.error.is_some()) {
        out.push_str(&format!("{} failed: {}\n", c.label, c.error.as_deref().unwrap_or_default()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_cells() {
        assert_eq!(num(1234.56), "1235");
        assert_eq!(num(123.456), "123.5");
        assert_eq!(num(12.3456), "12.35");
        assert_eq!(num(1.23456), "1.235");
        let s = Stat::of(&[10.0, 12.0]).unwrap();
        assert_eq!(stat_cell(Some(s), 1.0), "11.00 ± 1.41");
        assert_eq!(kl(0.0019687), "0.00197");
        assert_eq!(stat_cell(Stat::of(&[0.05]), 1000.0), "50.00");
        assert_eq!(stat_cell(None, 1.0), "-");
    }

    #[test]
    fn markdown_columns_line_up() {
        let header = vec!["a".to_string(), "number".to_string()];
        let rows = vec![vec!["long label".to_string(), "1".to_string()], vec!["x".to_string(), "12.5 ± 1".to_string()]];
        let t = markdown_table(&header, &[false, true], &rows);
        let widths: Vec<usize> = t.lines().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{t}");
        assert!(t.lines().nth(1).unwrap().ends_with(": |"));
    }
}
