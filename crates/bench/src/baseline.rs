//! The transformers + bitsandbytes baseline, read from a file and shown beside our figures.
//!
//! Input format (`--baseline FILE`), JSON, one object:
//! ```json
//! { "source": "transformers 5.17 + bitsandbytes 0.50.2", "device": "NVIDIA H200",
//!   "configs": [ { "label": "nf4", "kind": "nf4_bfloat16",
//!                  "runs": [ { "prompt_tokens": 20, "generated_tokens": 80, "total_s": 5.2,
//!                              "peak_memory_gb": 22.8, "ttft_s": 0.09, "warmup": false } ] } ] }
//! ```
//! `label` matches one of our configuration labels to pair them; `kind`, `device`, `ttft_s`
//! and `warmup` may be left out. Without `ttft_s` only end-to-end tok/s is known.
//!
//! Design choice: the same loader also accepts the log of ../shared/anchors/hf_bnb_baseline.py
//! as it is (its `RESULT {"nf4_bfloat16": [{"run", "prompt", "new", "s", "tok_s", "peak_gb"}]}`
//! lines, several logs concatenated), so the anchor script needs no change; there the first
//! run of each kind counts as the warm-up, as the anchors README reads it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use peregrine_core::{Error, Result};

use crate::schema::{decode_tok_s, Sample, Summary};

/// Figures from another stack, per configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// What produced them, e.g. "transformers 5.17 + bitsandbytes 0.50.2".
    pub source: String,
    #[serde(default)]
    pub device: Option<String>,
    pub configs: Vec<BaselineConfig>,
}

/// One configuration of the baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineConfig {
    /// Our label it pairs with ("bf16", "int8", "nf4", "fp4").
    pub label: String,
    /// The baseline's own name for it ("nf4_bfloat16").
    #[serde(default)]
    pub kind: Option<String>,
    pub runs: Vec<BaselineRun>,
    /// Derived from `runs` on load (non-warm-up only).
    #[serde(default)]
    pub summary: Summary,
}

/// One generate call of the baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineRun {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub total_s: f64,
    /// torch.cuda.max_memory_allocated() / 1e9.
    pub peak_memory_gb: f64,
    #[serde(default)]
    pub ttft_s: Option<f64>,
    #[serde(default)]
    pub warmup: bool,
}

impl BaselineRun {
    fn sample(&self) -> Sample {
        Sample {
            total_s: self.total_s,
            ttft_s: self.ttft_s,
            decode_tok_s: self.ttft_s.and_then(|t| decode_tok_s(self.generated_tokens, self.total_s, t)),
            peak_memory_gb: self.peak_memory_gb,
            achieved_gbps: None,
            prompt_tokens: self.prompt_tokens,
            generated_tokens: self.generated_tokens,
        }
    }
}

impl Baseline {
    /// The configuration paired with our `label`.
    pub fn config(&self, label: &str) -> Option<&BaselineConfig> {
        self.configs.iter().find(|c| c.label == label)
    }

    /// Recompute every configuration's summary from its runs.
    pub fn resummarize(&mut self) {
        for c in &mut self.configs {
            let samples: Vec<Sample> = c.runs.iter().filter(|r| !r.warmup).map(BaselineRun::sample).collect();
            c.summary = Summary::of_samples(&samples);
        }
    }
}

/// Read a baseline file: our JSON format, or a log of hf_bnb_baseline.py with `RESULT` lines.
pub fn load_baseline(path: &Path) -> Result<Baseline> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut baseline = if text.trim_start().starts_with('{') {
        serde_json::from_str::<Baseline>(&text).map_err(|e| Error::file(path, format!("baseline JSON: {e}")))?
    } else {
        parse_anchor_log(&text, path)?
    };
    if baseline.configs.iter().all(|c| c.runs.is_empty()) {
        return Err(Error::file(path, "baseline holds no runs"));
    }
    if let Some(bad) = baseline.configs.iter().flat_map(|c| &c.runs).find(|r| !valid_run(r)) {
        return Err(Error::file(path, format!("baseline run has a negative or non-finite figure: {bad:?}")));
    }
    baseline.resummarize();
    Ok(baseline)
}

fn valid_run(r: &BaselineRun) -> bool {
    let ok = |x: f64| x.is_finite() && x >= 0.0;
    ok(r.total_s) && ok(r.peak_memory_gb) && r.ttft_s.is_none_or(ok)
}

/// One row of hf_bnb_baseline.py's RESULT line.
#[derive(Deserialize)]
struct AnchorRow {
    run: usize,
    prompt: usize,
    new: usize,
    s: f64,
    peak_gb: f64,
}

/// Every `RESULT {kind: [rows]}` line of the anchor script's output, merged by kind.
fn parse_anchor_log(text: &str, path: &Path) -> Result<Baseline> {
    let mut configs: Vec<BaselineConfig> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(json) = line.trim().strip_prefix("RESULT ") else { continue };
        let kinds: std::collections::BTreeMap<String, Vec<AnchorRow>> = serde_json::from_str(json)
            .map_err(|e| Error::file(path, format!("line {}: RESULT is not {{kind: [rows]}}: {e}", n + 1)))?;
        for (kind, rows) in kinds {
            configs.retain(|c| c.kind.as_deref() != Some(kind.as_str()));
            configs.push(anchor_config(kind, rows));
        }
    }
    if configs.is_empty() {
        return Err(Error::file(
            path,
            "neither baseline JSON nor a log with `RESULT {...}` lines of hf_bnb_baseline.py",
        ));
    }
    Ok(Baseline { source: "transformers + bitsandbytes (hf_bnb_baseline.py)".into(), device: None, configs })
}

fn anchor_config(kind: String, rows: Vec<AnchorRow>) -> BaselineConfig {
    let runs = rows
        .into_iter()
        .map(|r| BaselineRun {
            prompt_tokens: r.prompt,
            generated_tokens: r.new,
            total_s: r.s,
            peak_memory_gb: r.peak_gb,
            ttft_s: None,
            warmup: r.run == 0,
        })
        .collect();
    BaselineConfig { label: label_of_anchor_kind(&kind), kind: Some(kind), runs, summary: Summary::default() }
}

/// "nf4_bfloat16" -> "nf4", "fp4_float32" -> "fp4", "int8" -> "int8".
fn label_of_anchor_kind(kind: &str) -> String {
    kind.split('_').next().unwrap_or(kind).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs are two-decimal values; sums of a few stay well inside this.
    const TOL: f64 = 1e-9;

    #[test]
    fn reads_the_anchor_script_log() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("nf4.log");
        let log = "nf4_bfloat16 quantize s 3.1 resident GB 22.1\n\
            nf4_bfloat16 {'run': 0, ...}\n\
            RESULT {\"nf4_bfloat16\": [{\"run\": 0, \"prompt\": 20, \"new\": 80, \"s\": 9.0, \"tok_s\": 8.9, \"peak_gb\": 22.8}, \
            {\"run\": 1, \"prompt\": 15, \"new\": 85, \"s\": 5.0, \"tok_s\": 17.0, \"peak_gb\": 22.7}, \
            {\"run\": 2, \"prompt\": 17, \"new\": 83, \"s\": 5.5, \"tok_s\": 15.1, \"peak_gb\": 22.9}]}\n\
            RESULT {\"int8\": [{\"run\": 0, \"prompt\": 20, \"new\": 80, \"s\": 12.0, \"tok_s\": 6.7, \"peak_gb\": 42.1}]}\n";
        std::fs::write(&path, log).unwrap();
        let b = load_baseline(&path).unwrap();
        let nf4 = b.config("nf4").unwrap();
        assert_eq!(nf4.kind.as_deref(), Some("nf4_bfloat16"));
        assert_eq!((nf4.runs.len(), nf4.summary.runs), (3, 2));
        assert!((nf4.summary.total_s.unwrap().mean - 5.25).abs() < TOL);
        assert!((nf4.summary.e2e_tok_s.unwrap().mean - (85.0 / 5.0 + 83.0 / 5.5) / 2.0).abs() < TOL);
        assert!(nf4.summary.decode_tok_s.is_none()); // no ttft in the log
                                                     // int8 has only its warm-up run: nothing to summarise, but it is kept.
        assert_eq!(b.config("int8").unwrap().summary.runs, 0);
    }

    #[test]
    fn reads_our_json_format_and_rejects_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("b.json");
        let json = r#"{"source": "hf", "configs": [{"label": "bf16", "runs": [
            {"prompt_tokens": 10, "generated_tokens": 91, "total_s": 5.0, "ttft_s": 0.5, "peak_memory_gb": 82.9}]}]}"#;
        std::fs::write(&path, json).unwrap();
        let b = load_baseline(&path).unwrap();
        let s = &b.config("bf16").unwrap().summary;
        assert!((s.decode_tok_s.unwrap().mean - 20.0).abs() < TOL);
        std::fs::write(&path, "hello\n").unwrap();
        let e = load_baseline(&path).unwrap_err().to_string();
        assert!(e.contains("b.json") && e.contains("RESULT"), "{e}");
        std::fs::write(&path, r#"{"source": "hf", "configs": [{"label": "x", "runs": []}]}"#).unwrap();
        assert!(load_baseline(&path).unwrap_err().to_string().contains("no runs"));
    }
}
