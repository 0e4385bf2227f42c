//! results.csv: one row per run (warm-ups included, flagged), one header line, for
//! spreadsheets and pandas; and prefill.csv (with `--prefill-tokens`): one row per prefill,
//! the warm-up included and flagged, kept apart so results.csv keeps its columns.
//!
//! Design choice: RFC 4180 by hand (quote a field only when it holds a comma, quote or
//! line break; double the quotes inside) rather than a CSV dependency; floats are written
//! with Rust's shortest round-trip form so a reader recovers the exact value, and a
//! missing figure is an empty cell.

use crate::schema::{BenchReport, ConfigResult, PrefillResult, RunRecord};

/// The header, in column order.
pub const CSV_COLUMNS: [&str; 17] = [
    "config",
    "quant",
    "model",
    "device",
    "prompt_index",
    "run_index",
    "warmup",
    "prompt_tokens",
    "generated_tokens",
    "total_s",
    "ttft_s",
    "decode_tok_s",
    "peak_memory_bytes",
    "weight_bytes",
    "achieved_gbps",
    "prompt",
    "output_text",
];

/// The whole CSV text.
pub fn render_csv(report: &BenchReport) -> String {
    let mut out = CSV_COLUMNS.join(",") + "\n";
    for config in &report.configs {
        for run in &config.runs {
            out.push_str(&csv_line(&row(report, config, run)));
        }
    }
    out
}

fn row(report: &BenchReport, c: &ConfigResult, r: &RunRecord) -> Vec<String> {
    let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    vec![
        c.label.clone(),
        c.quant.to_string(),
        report.model.clone(),
        report.device.name.clone(),
        r.prompt_index.to_string(),
        r.run_index.to_string(),
        r.warmup.to_string(),
        r.prompt_tokens.to_string(),
        r.generated_tokens.to_string(),
        r.total_s.to_string(),
        r.ttft_s.to_string(),
        opt(r.decode_tok_s),
        r.peak_memory_bytes.to_string(),
        r.weight_bytes.to_string(),
        opt(r.achieved_gbps),
        r.prompt.clone(),
        r.output_text.clone(),
    ]
}

/// The header of prefill.csv, in column order.
pub const PREFILL_CSV_COLUMNS: [&str; 10] =
    ["config", "quant", "model", "device", "tokens", "run_index", "warmup", "prefill_s", "tokens_per_s", "tflops"];

/// The whole prefill.csv text: the warm-up then each timed run, per configuration that has
/// prefill figures (tflops per row = the prefill's FLOPs / that row's seconds / 1e12).
pub fn render_prefill_csv(report: &BenchReport) -> String {
    let mut out = PREFILL_CSV_COLUMNS.join(",") + "\n";
    for (c, p) in report.configs.iter().filter_map(|c| c.prefill.as_ref().map(|p| (c, p))) {
        let timed = p.runs_s.iter().enumerate().map(|(i, &t)| (i, false, t));
        for (run_index, warmup, seconds) in std::iter::once((0, true, p.warmup_s)).chain(timed) {
            out.push_str(&csv_line(&prefill_row(report, c, p, (run_index, warmup, seconds))));
        }
    }
    out
}

fn prefill_row(report: &BenchReport, c: &ConfigResult, p: &PrefillResult, run: (usize, bool, f64)) -> Vec<String> {
    let (run_index, warmup, seconds) = run;
    vec![
        c.label.clone(),
        c.quant.to_string(),
        report.model.clone(),
        report.device.name.clone(),
        p.tokens.to_string(),
        run_index.to_string(),
        warmup.to_string(),
        seconds.to_string(),
        (p.tokens as f64 / seconds).to_string(),
        (p.flops / seconds / 1e12).to_string(),
    ]
}

fn csv_line(fields: &[String]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    quoted.join(",") + "\n"
}

/// One field, quoted only when it must be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal RFC 4180 reader for the tests: records of fields, quotes honoured.
    pub(crate) fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => record.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                (false, c) => field.push(c),
            }
        }
        records
    }

    #[test]
    fn fields_with_commas_quotes_and_newlines_round_trip() {
        let nasty = ["plain", "a, b", "say \"hi\"", "two\nlines", "crlf\r\nend", ""];
        let line = csv_line(&nasty.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(parse_csv(&line), vec![nasty.iter().map(|s| s.to_string()).collect::<Vec<_>>()]);
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
