//! The one result schema of `peregrine bench`: every writer (terminal table, JSON, CSV,
//! outputs.md, plots) reads a `BenchReport` and nothing else.
//!
//! Design choice: per-run records are the source of truth and are always kept (warm-up
//! runs included, flagged); summaries are derived from them by `Summary::of_runs`, so a
//! reader of results.json can recompute or re-slice every figure. Units are in the field
//! names (`_s`, `_bytes`, `_gbps`, `_tok_s`); GB means 10^9 bytes, as torch reports it.

use serde::{Deserialize, Serialize};

use peregrine_core::{Error, QuantKind, Result};

use crate::baseline::Baseline;
use crate::clocks::ClockSummary;
use crate::stats::{percentile, Stat};

/// Tag stored in every results.json; how `prepare_out_dir` recognises our own reports.
pub const SCHEMA: &str = "peregrine-bench/1";

/// Bytes per GB in every figure we print (decimal, like torch's `/1e9`).
pub const BYTES_PER_GB: f64 = 1e9;

/// How long each generation runs: the seed's `generate(max_length=100)` counts the prompt,
/// `max_new_tokens` does not. Serialised as `{"max_length": 100}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationLimit {
    MaxLength(usize),
    MaxNewTokens(usize),
}

impl GenerationLimit {
    /// New tokens to generate after a prompt of `prompt_tokens` tokens.
    pub fn new_tokens(self, prompt_tokens: usize) -> usize {
        match self {
            GenerationLimit::MaxLength(n) => n.saturating_sub(prompt_tokens),
            GenerationLimit::MaxNewTokens(n) => n,
        }
    }
}

impl std::fmt::Display for GenerationLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenerationLimit::MaxLength(n) => write!(f, "max_length={n}"),
            GenerationLimit::MaxNewTokens(n) => write!(f, "max_new_tokens={n}"),
        }
    }
}

/// The device the benchmark ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// e.g. "cuda:0 NVIDIA H200".
    pub name: String,
    /// Memory bandwidth in GB/s, the ceiling for `achieved_gbps` (spec sheet via
    /// `spec_bandwidth_gbps`, or measured); `None` if unknown.
    pub memory_bandwidth_gbps: Option<f64>,
    /// Device memory in bytes; `None` if unknown.
    pub total_memory_bytes: Option<u64>,
}

/// One generation of one prompt under one configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Index into `BenchReport::prompts`.
    pub prompt_index: usize,
    /// 0-based; warm-up runs and measured runs are numbered separately.
    pub run_index: usize,
    /// Warm-up runs are recorded but left out of every summary and plot.
    pub warmup: bool,
    pub prompt: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Wall time of the whole generate call (tokenize + prefill + decode).
    pub total_s: f64,
    /// Time to first token: from the start of the call until the first new token is on the host.
    pub ttft_s: f64,
    /// (generated_tokens - 1) / (total_s - ttft_s); `None` with fewer than two new tokens.
    pub decode_tok_s: Option<f64>,
    /// Allocator high-water mark during this run (reset before it).
    pub peak_memory_bytes: u64,
    /// Resident weight bytes: what one decode step reads.
    pub weight_bytes: u64,
    /// weight_bytes x decode_tok_s / 1e9: the weight traffic decode sustained.
    pub achieved_gbps: Option<f64>,
    pub output_text: String,
}

/// The figures of a configuration, mean ± stddev over its measured (non-warm-up) runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Measured runs that went in.
    pub runs: usize,
    pub total_s: Option<Stat>,
    pub ttft_s: Option<Stat>,
    pub decode_tok_s: Option<Stat>,
    /// generated_tokens / total_s: comparable with tools that time only the whole call.
    pub e2e_tok_s: Option<Stat>,
    pub peak_memory_gb: Option<Stat>,
    pub achieved_gbps: Option<Stat>,
    pub prompt_tokens: Option<Stat>,
    pub generated_tokens: Option<Stat>,
}

/// The figures of one run, as the summary needs them (shared by our runs and the baseline's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub total_s: f64,
    pub ttft_s: Option<f64>,
    pub decode_tok_s: Option<f64>,
    pub peak_memory_gb: f64,
    pub achieved_gbps: Option<f64>,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
}

impl Summary {
    /// Summarise the non-warm-up runs of `runs`.
    pub fn of_runs(runs: &[RunRecord]) -> Summary {
        let samples: Vec<Sample> = runs.iter().filter(|r| !r.warmup).map(RunRecord::sample).collect();
        Summary::of_samples(&samples)
    }

    pub(crate) fn of_samples(s: &[Sample]) -> Summary {
        let e2e = |x: &Sample| (x.total_s > 0.0).then(|| x.generated_tokens as f64 / x.total_s);
        Summary {
            runs: s.len(),
            total_s: Stat::of_present(s.iter().map(|x| Some(x.total_s))),
            ttft_s: Stat::of_present(s.iter().map(|x| x.ttft_s)),
            decode_tok_s: Stat::of_present(s.iter().map(|x| x.decode_tok_s)),
            e2e_tok_s: Stat::of_present(s.iter().map(e2e)),
            peak_memory_gb: Stat::of_present(s.iter().map(|x| Some(x.peak_memory_gb))),
            achieved_gbps: Stat::of_present(s.iter().map(|x| x.achieved_gbps)),
            prompt_tokens: Stat::of_present(s.iter().map(|x| Some(x.prompt_tokens as f64))),
            generated_tokens: Stat::of_present(s.iter().map(|x| Some(x.generated_tokens as f64))),
        }
    }
}

impl RunRecord {
    fn sample(&self) -> Sample {
        Sample {
            total_s: self.total_s,
            ttft_s: Some(self.ttft_s),
            decode_tok_s: self.decode_tok_s,
            peak_memory_gb: self.peak_memory_bytes as f64 / BYTES_PER_GB,
            achieved_gbps: self.achieved_gbps,
            prompt_tokens: self.prompt_tokens,
            generated_tokens: self.generated_tokens,
        }
    }
}

/// Decode throughput from a run's timings: the tokens after the first over the time after it.
pub fn decode_tok_s(generated_tokens: usize, total_s: f64, ttft_s: f64) -> Option<f64> {
    let decode_s = total_s - ttft_s;
    (generated_tokens >= 2 && decode_s > 0.0).then(|| (generated_tokens - 1) as f64 / decode_s)
}

/// Weight traffic in GB/s that `tok_s` decode steps per second sustain.
pub fn achieved_gbps(weight_bytes: u64, tok_s: Option<f64>) -> Option<f64> {
    tok_s.map(|t| weight_bytes as f64 * t / BYTES_PER_GB)
}

/// Perplexity and divergence from the reference configuration over a text (`--ppl-file`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityResult {
    /// Label of the configuration the KL and top-1 figures compare against (e.g. "bf16").
    pub reference: Option<String>,
    /// Tokens scored.
    pub tokens: usize,
    /// exp(mean negative log-likelihood).
    pub perplexity: f64,
    /// Mean KL(reference || this) per token, in nats; `None` without a reference.
    pub kl_mean: Option<f64>,
    /// 99th percentile of the per-token KL.
    pub kl_p99: Option<f64>,
    /// Fraction of tokens (0..1) whose most likely next token equals the reference's.
    pub top1_agree: Option<f64>,
}

impl QualityResult {
    /// Build from per-token figures: `nll` (natural log), and against `reference` the per-token
    /// KL divergences and whether the top-1 token agreed (both of `nll`'s length).
    pub fn from_tokens(nll: &[f64], reference: Option<(&str, &[f64], &[bool])>) -> Result<QualityResult> {
        if nll.is_empty() {
            return Err(Error::input("perplexity: no tokens were scored"));
        }
        if let Some((_, kl, top1)) = reference {
            if kl.len() != nll.len() || top1.len() != nll.len() {
                return Err(Error::msg(format!(
                    "perplexity: {} scored tokens but {} KL values and {} top-1 flags",
                    nll.len(),
                    kl.len(),
                    top1.len()
                )));
            }
        }
        let all = nll.iter().chain(reference.map_or(&[][..], |(_, kl, _)| kl));
        if let Some(bad) = all.clone().position(|v| !v.is_finite()) {
            return Err(Error::msg(format!("perplexity: a non-finite log-likelihood or KL value (#{bad})")));
        }
        let mean_nll = nll.iter().sum::<f64>() / nll.len() as f64;
        Ok(QualityResult {
            reference: reference.map(|(label, _, _)| label.to_string()),
            tokens: nll.len(),
            perplexity: mean_nll.exp(),
            kl_mean: reference.map(|(_, kl, _)| kl.iter().sum::<f64>() / kl.len() as f64),
            kl_p99: reference.and_then(|(_, kl, _)| percentile(kl, 99.0)),
            top1_agree: reference.map(|(_, _, t)| t.iter().filter(|&&b| b).count() as f64 / t.len() as f64),
        })
    }
}

/// The warm prefill figures of one configuration (`--prefill-tokens N`): one warm-up and
/// then `runs_s.len()` timed forwards of N synthetic ids from position 0, logits of the last
/// row only, each ended by a device synchronize and timed on the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrefillResult {
    /// N, the prompt length of every prefill.
    pub tokens: usize,
    /// The warm-up prefill (first calls for new shapes): recorded, not summarised.
    pub warmup_s: f64,
    /// Every timed prefill, in order.
    pub runs_s: Vec<f64>,
    /// Median of `runs_s`.
    pub median_s: f64,
    /// tokens / median_s.
    pub tokens_per_s: f64,
    /// FLOPs of one prefill, `ModelShape::prefill_flops` (2 x block linear parameters x N
    /// + causal attention 4 x N^2/2 x H x Hd x L + the last row's head 2 x D x V).
    pub flops: f64,
    /// flops / median_s / 1e12.
    pub tflops: f64,
}

impl PrefillResult {
    /// Summarise timed prefills of `tokens` ids that each took `flops`; at least one run,
    /// every time finite and positive.
    pub fn from_runs(tokens: usize, warmup_s: f64, runs_s: Vec<f64>, flops: f64) -> Result<PrefillResult> {
        if runs_s.is_empty() {
            return Err(Error::msg("prefill: no timed runs"));
        }
        if let Some(bad) = runs_s.iter().chain([&warmup_s]).find(|t| !(t.is_finite() && **t > 0.0)) {
            return Err(Error::msg(format!("prefill: a run took {bad} s; expected a positive time")));
        }
        let median_s = percentile(&runs_s, 50.0).unwrap_or(f64::NAN);
        Ok(PrefillResult {
            tokens,
            warmup_s,
            median_s,
            tokens_per_s: tokens as f64 / median_s,
            flops,
            tflops: flops / median_s / 1e12,
            runs_s,
        })
    }

    /// Summary of the timed runs (mean, stddev, min, max).
    pub fn stat(&self) -> Option<Stat> {
        Stat::of(&self.runs_s)
    }
}

/// Everything measured for one configuration (one `--quant` entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigResult {
    /// What reports call it, e.g. "nf4".
    pub label: String,
    pub quant: QuantKind,
    /// Resident weight bytes of the loaded model.
    pub weight_bytes: u64,
    /// Seconds to load (and quantize) the model; `None` if not measured.
    pub load_s: Option<f64>,
    /// Every run, warm-up runs included, in the order they ran.
    pub runs: Vec<RunRecord>,
    /// Derived from `runs` (non-warm-up only).
    pub summary: Summary,
    pub ppl: Option<QualityResult>,
    /// Warm prefill figures, with `--prefill-tokens` (absent in reports written before it).
    #[serde(default)]
    pub prefill: Option<PrefillResult>,
    /// Why this configuration stopped early (load failure, out of memory); its finished runs are kept.
    pub error: Option<String>,
    /// The device's SM clock and power over the measured runs, where the backend can read them
    /// (absent in reports written before it).
    #[serde(default)]
    pub clocks: Option<ClockSummary>,
}

impl ConfigResult {
    /// Recompute `summary` from `runs`.
    pub fn resummarize(&mut self) {
        self.summary = Summary::of_runs(&self.runs);
    }

    /// The measured (non-warm-up) runs, in order.
    pub fn measured_runs(&self) -> impl Iterator<Item = &RunRecord> {
        self.runs.iter().filter(|r| !r.warmup)
    }
}

/// A whole `peregrine bench` invocation: what ran, where, and every measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Always `SCHEMA`.
    pub schema: String,
    /// Peregrine's version.
    pub tool_version: String,
    /// `git describe` of the build, if known.
    pub commit: Option<String>,
    /// UTC, ISO 8601 (`2026-11-29T14:57:03Z`).
    pub date: String,
    /// The model as given (`--model`): a path or a hub id.
    pub model: String,
    pub device: DeviceInfo,
    /// True when the weights were random: the answers are then meaningless text.
    pub synthetic_weights: bool,
    pub limit: GenerationLimit,
    pub runs_per_prompt: usize,
    pub warmup_runs: usize,
    pub prompts: Vec<String>,
    /// The text `--ppl-file` scored, if any.
    pub ppl_file: Option<String>,
    pub configs: Vec<ConfigResult>,
    /// The transformers + bitsandbytes figures to show side by side, if given.
    pub baseline: Option<Baseline>,
}

impl BenchReport {
    /// A report with the schema tag, this crate's version and the current UTC date filled in.
    pub fn new(model: impl Into<String>, device: DeviceInfo, plan: &crate::runner::BenchPlan) -> BenchReport {
        BenchReport {
            schema: SCHEMA.to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            commit: None,
            date: crate::time::utc_now_iso(),
            model: model.into(),
            device,
            synthetic_weights: false,
            limit: plan.limit,
            runs_per_prompt: plan.runs,
            warmup_runs: plan.warmup,
            prompts: plan.prompts.clone(),
            ppl_file: None,
            configs: Vec::new(),
            baseline: None,
        }
    }

    /// The configuration labelled `label`.
    pub fn config(&self, label: &str) -> Option<&ConfigResult> {
        self.configs.iter().find(|c| c.label == label)
    }

    /// Pretty JSON, as written to results.json and printed by `--json`.
    pub fn to_json(&self) -> String {
        // Serialising plain data with finite floats cannot fail; keep a message just in case.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Parse a results.json; `path` names the file in errors.
    pub fn from_json(text: &str, path: &std::path::Path) -> Result<BenchReport> {
        let report: BenchReport =
            serde_json::from_str(text).map_err(|e| Error::file(path, format!("not a peregrine bench report: {e}")))?;
        if report.schema != SCHEMA {
            return Err(Error::file(path, format!("schema `{}` is not `{SCHEMA}`", report.schema)));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values are exact binary fractions; only division rounding remains.
    const TOL: f64 = 1e-12;

    fn run(warmup: bool, total_s: f64, ttft_s: f64, generated: usize, peak: u64) -> RunRecord {
        let tok = decode_tok_s(generated, total_s, ttft_s);
        RunRecord {
            prompt_index: 0,
            run_index: 0,
            warmup,
            prompt: "p".into(),
            prompt_tokens: 10,
            generated_tokens: generated,
            total_s,
            ttft_s,
            decode_tok_s: tok,
            peak_memory_bytes: peak,
            weight_bytes: 2_000_000_000,
            achieved_gbps: achieved_gbps(2_000_000_000, tok),
            output_text: String::new(),
        }
    }

    #[test]
    fn decode_rate_excludes_the_first_token() {
        // 91 tokens: 90 after the first, in 4.5 s after a 0.5 s first token -> 20 tok/s.
        assert!((decode_tok_s(91, 5.0, 0.5).unwrap() - 20.0).abs() < TOL);
        assert_eq!(decode_tok_s(1, 5.0, 0.5), None);
        assert_eq!(decode_tok_s(10, 1.0, 1.0), None);
        // 2 GB of weights at 20 tok/s = 40 GB/s.
        assert!((achieved_gbps(2_000_000_000, Some(20.0)).unwrap() - 40.0).abs() < TOL);
    }

    #[test]
    fn summary_leaves_out_warmup_runs() {
        let runs = vec![
            run(true, 100.0, 50.0, 91, 9_000_000_000),
            run(false, 5.0, 0.5, 91, 3_000_000_000),
            run(false, 10.0, 1.0, 91, 5_000_000_000),
        ];
        let s = Summary::of_runs(&runs);
        assert_eq!(s.runs, 2);
        assert!((s.total_s.unwrap().mean - 7.5).abs() < TOL);
        assert!((s.peak_memory_gb.unwrap().mean - 4.0).abs() < TOL);
        assert!((s.peak_memory_gb.unwrap().max - 5.0).abs() < TOL);
        // decode: 90/4.5 = 20 and 90/9 = 10 -> mean 15.
        assert!((s.decode_tok_s.unwrap().mean - 15.0).abs() < TOL);
        assert!((s.e2e_tok_s.unwrap().mean - (91.0 / 5.0 + 91.0 / 10.0) / 2.0).abs() < TOL);
    }

    #[test]
    fn limit_counts_new_tokens_like_transformers() {
        assert_eq!(GenerationLimit::MaxLength(100).new_tokens(20), 80);
        assert_eq!(GenerationLimit::MaxLength(10).new_tokens(20), 0);
        assert_eq!(GenerationLimit::MaxNewTokens(64).new_tokens(20), 64);
        assert_eq!(serde_json::to_string(&GenerationLimit::MaxLength(100)).unwrap(), r#"{"max_length":100}"#);
    }

    #[test]
    fn prefill_summary_and_json_round_trip() {
        let p = PrefillResult::from_runs(2048, 0.39, vec![0.31, 0.29, 0.30, 0.35], 171.1e12).unwrap();
        assert!((p.median_s - 0.305).abs() < TOL, "median of four is the mean of the middle two");
        assert!((p.tokens_per_s - 2048.0 / 0.305).abs() < 1e-6);
        assert!((p.tflops - 171.1 / 0.305).abs() < 1e-6);
        let json = serde_json::to_string(&p).unwrap();
        for field in ["tokens", "warmup_s", "runs_s", "median_s", "tokens_per_s", "flops", "tflops"] {
            assert!(json.contains(&format!("\"{field}\":")), "{field} missing in {json}");
        }
        let back: PrefillResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert!(PrefillResult::from_runs(64, 0.1, vec![], 1.0).is_err());
        assert!(PrefillResult::from_runs(64, 0.1, vec![0.0], 1.0).is_err());
        assert!(PrefillResult::from_runs(64, f64::NAN, vec![0.1], 1.0).is_err());
    }

    #[test]
    fn a_report_without_prefill_still_reads() {
        let mut report = crate::report::tests::sample_report();
        report.configs[0].prefill = PrefillResult::from_runs(2048, 0.4, vec![0.3, 0.3, 0.3], 1e14).ok();
        let path = std::path::Path::new("results.json");
        assert_eq!(BenchReport::from_json(&report.to_json(), path).unwrap(), report);
        // Written before --prefill-tokens existed: no `prefill` key at all.
        let mut v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        v["configs"].as_array_mut().unwrap().iter_mut().for_each(|c| {
            c.as_object_mut().unwrap().remove("prefill");
        });
        let old = BenchReport::from_json(&v.to_string(), path).unwrap();
        assert!(old.configs.iter().all(|c| c.prefill.is_none()));
    }

    #[test]
    fn quality_from_tokens() {
        let nll = [1.0, 2.0, 3.0];
        let kl = [0.0, 0.5, 1.0];
        let top1 = [true, true, false];
        let q = QualityResult::from_tokens(&nll, Some(("bf16", &kl, &top1))).unwrap();
        assert!((q.perplexity - 2.0f64.exp()).abs() < 1e-9);
        assert!((q.kl_mean.unwrap() - 0.5).abs() < TOL);
        assert!((q.kl_p99.unwrap() - 0.99).abs() < TOL);
        assert!((q.top1_agree.unwrap() - 2.0 / 3.0).abs() < TOL);
        assert_eq!(q.reference.as_deref(), Some("bf16"));
        assert!(QualityResult::from_tokens(&[], None).is_err());
        assert!(QualityResult::from_tokens(&nll, Some(("bf16", &kl[..2], &top1))).is_err());
        assert!(QualityResult::from_tokens(&[1.0, f64::INFINITY], None).is_err());
    }
}
