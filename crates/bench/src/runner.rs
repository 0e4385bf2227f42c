//! The benchmark driver: for each configuration, load it, run warm-up + N rounds over the
//! prompts, and record every run; the model-specific part is behind `BenchTarget`.
//!
//! Design choice: the runner, not the target, takes the measurements. A target only
//! generates and reports each new token through a callback; the runner resets the peak
//! memory, times the call and the first token, and reads the high-water mark, so every
//! backend is timed the same way. Configurations are loaded one at a time and dropped
//! before the next loads (a 40B model in bf16 and int8 do not fit side by side), and one
//! configuration failing (e.g. out of memory) is recorded and does not stop the others.
//! With `prefill_tokens` set, each configuration's generation runs are followed by the warm
//! prefill measurement of module `prefill`.

use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use peregrine_core::{Error, QuantKind, Result};

use crate::clocks::{ClockProbe, ClockSampler};
use crate::prefill::{measure_prefill, prefill_runs, ModelShape};
use crate::schema::{achieved_gbps, decode_tok_s, ConfigResult, GenerationLimit, RunRecord, Summary};

/// What one generate call produced (the runner measures time and memory itself).
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// The new text only, without the prompt.
    pub text: String,
}

/// A loaded model the benchmark can drive. Implemented by the engine for real models and
/// by tests for fakes.
/// What `BenchTarget::with_prefill` calls: it receives a closure that runs one prefill.
pub type PrefillBody<'a> = dyn FnMut(&mut dyn FnMut() -> Result<()>) -> Result<()> + 'a;

pub trait BenchTarget {
    /// Resident weight bytes: what one decode step reads from memory.
    fn weight_bytes(&self) -> u64;
    /// Start a new allocator high-water mark at the current use (torch's `reset_peak_memory_stats`).
    fn reset_peak_memory(&mut self);
    /// The allocator high-water mark since the last reset (torch's `max_memory_allocated`).
    fn peak_memory_bytes(&self) -> u64;
    /// Generate greedily for `prompt` up to `limit`, calling `on_token(id)` as soon as each
    /// new token is known on the host (the first call marks the time to first token).
    fn generate(&mut self, prompt: &str, limit: GenerationLimit, on_token: &mut dyn FnMut(u32)) -> Result<Generation>;
    /// The model's dimensions, for `--prefill-tokens` (ids, context check, FLOPs); `None`
    /// (the default) when the target cannot measure prefill.
    fn model_shape(&self) -> Option<ModelShape> {
        None
    }
    /// Allocate what a prefill of `ids` (T) needs, then call `body` once with a closure
    /// that runs one prefill per call: a forward of `ids` from position 0 with logits of the
    /// last row only, returning when the device has finished (the runner times each call).
    fn with_prefill(
        &mut self,
        ids: &[u32],
        body: &mut PrefillBody<'_>,
    ) -> Result<()> {
        let _ = (ids, body);
        Err(Error::msg("this bench target cannot measure prefill"))
    }
    /// A reader of the device's clock and power, sampled over the measured runs; `None` (the
    /// default) where the backend has none.
    fn clock_probe(&self) -> Option<Arc<dyn ClockProbe>> {
        None
    }
}

impl<T: BenchTarget + ?Sized> BenchTarget for Box<T> {
    fn weight_bytes(&self) -> u64 {
        (**self).weight_bytes()
    }
    fn reset_peak_memory(&mut self) {
        (**self).reset_peak_memory()
    }
    fn peak_memory_bytes(&self) -> u64 {
        (**self).peak_memory_bytes()
    }
    fn generate(&mut self, prompt: &str, limit: GenerationLimit, on_token: &mut dyn FnMut(u32)) -> Result<Generation> {
        (**self).generate(prompt, limit, on_token)
    }
    fn model_shape(&self) -> Option<ModelShape> {
        (**self).model_shape()
    }
    fn with_prefill(
        &mut self,
        ids: &[u32],
        body: &mut PrefillBody<'_>,
    ) -> Result<()> {
        (**self).with_prefill(ids, body)
    }
    fn clock_probe(&self) -> Option<Arc<dyn ClockProbe>> {
        (**self).clock_probe()
    }
}

/// One configuration to benchmark: a `--quant` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSpec {
    /// What reports call it (the flag spelling, e.g. "nf4").
    pub label: String,
    pub quant: QuantKind,
}

/// Parse `--quant bf16,int8,nf4,fp4`: unknown, empty or repeated entries are errors.
pub fn parse_quant_list(list: &str) -> Result<Vec<ConfigSpec>> {
    let mut specs: Vec<ConfigSpec> = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(Error::input(format!(
                "--quant `{list}`: empty entry; give a comma-separated list like bf16,nf4"
            )));
        }
        let quant: QuantKind = item.parse()?;
        if specs.iter().any(|s| s.quant == quant) {
            return Err(Error::input(format!("--quant `{list}`: `{quant}` is given twice")));
        }
        specs.push(ConfigSpec { label: quant.to_string(), quant });
    }
    Ok(specs)
}

/// What to run for every configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchPlan {
    pub prompts: Vec<String>,
    /// Measured runs per prompt (`--runs`), at least 1.
    pub runs: usize,
    /// Warm-up runs per configuration (`--warmup`), cycling through the prompts; recorded, not summarised.
    pub warmup: usize,
    pub limit: GenerationLimit,
    /// Show progress bars on stderr (they hide themselves when stderr is not a terminal).
    pub progress: bool,
    /// `--prefill-tokens N`: after the generation runs, one warm-up and
    /// `prefill_runs(runs)` timed prefills of N ids per configuration; `None` = off.
    pub prefill_tokens: Option<usize>,
}

impl BenchPlan {
    /// A validated plan with progress bars on.
    pub fn new(prompts: Vec<String>, runs: usize, warmup: usize, limit: GenerationLimit) -> Result<BenchPlan> {
        let plan = BenchPlan { prompts, runs, warmup, limit, progress: true, prefill_tokens: None };
        plan.validate()?;
        Ok(plan)
    }

    /// One clear line for each way a plan can be unusable.
    pub fn validate(&self) -> Result<()> {
        if self.runs == 0 {
            return Err(Error::input("--runs must be at least 1"));
        }
        if self.prompts.is_empty() {
            return Err(Error::input("no prompts to run"));
        }
        match self.limit {
            GenerationLimit::MaxLength(0) => Err(Error::input("--max-length must be at least 1")),
            GenerationLimit::MaxNewTokens(0) => Err(Error::input("--max-new-tokens must be at least 1")),
            _ if self.prefill_tokens == Some(0) => Err(Error::input("--prefill-tokens must be at least 1")),
            _ => Ok(()),
        }
    }

    /// Generate calls per configuration, plus the prefill measurement as one step.
    pub fn calls_per_config(&self) -> usize {
        self.warmup + self.runs * self.prompts.len() + self.prefill_tokens.is_some() as usize
    }

    /// (prompt index, run index, warm-up) of every call, in the order they run: the
    /// warm-ups, then round after round over all prompts (so drift spreads over prompts).
    pub fn schedule(&self) -> Vec<(usize, usize, bool)> {
        let n = self.prompts.len();
        let warm = (0..self.warmup).map(|w| (w % n, w, true));
        let measured = (0..self.runs).flat_map(|r| (0..n).map(move |p| (p, r, false)));
        warm.chain(measured).collect()
    }
}

/// Benchmark every configuration: `load` builds each target in turn (timed as `load_s`),
/// which is dropped before the next loads. A configuration that fails to load or run
/// keeps its finished runs and its error, and the matrix goes on.
pub fn run_matrix<T, L>(plan: &BenchPlan, specs: &[ConfigSpec], mut load: L) -> Result<Vec<ConfigResult>>
where
    T: BenchTarget,
    L: FnMut(&ConfigSpec) -> Result<T>,
{
    plan.validate()?;
    let results = specs.iter().map(|spec| load_and_measure(plan, spec, &mut load)).collect();
    Ok(results)
}

/// Benchmark one already-loaded target (for callers that load targets themselves).
pub fn measure_config<T: BenchTarget + ?Sized>(
    target: &mut T,
    spec: &ConfigSpec,
    plan: &BenchPlan,
    load_s: Option<f64>,
) -> ConfigResult {
    let bar = progress_bar(plan, spec);
    measure_with_bar(target, spec, plan, load_s, &bar)
}

fn load_and_measure<T: BenchTarget, L: FnMut(&ConfigSpec) -> Result<T>>(
    plan: &BenchPlan,
    spec: &ConfigSpec,
    load: &mut L,
) -> ConfigResult {
    let bar = progress_bar(plan, spec);
    bar.set_message("loading");
    let start = Instant::now();
    match load(spec) {
        Ok(mut target) => measure_with_bar(&mut target, spec, plan, Some(start.elapsed().as_secs_f64()), &bar),
        Err(e) => {
            bar.abandon_with_message(format!("failed to load: {e}"));
            failed_to_load(spec, &e)
        }
    }
}

fn failed_to_load(spec: &ConfigSpec, e: &Error) -> ConfigResult {
    ConfigResult { error: Some(format!("load failed: {e}")), ..empty_result(spec, 0, None) }
}

/// A result with no runs yet.
fn empty_result(spec: &ConfigSpec, weight_bytes: u64, load_s: Option<f64>) -> ConfigResult {
    ConfigResult {
        label: spec.label.clone(),
        quant: spec.quant,
        weight_bytes,
        load_s,
        runs: Vec::new(),
        summary: Summary::default(),
        ppl: None,
        prefill: None,
        error: None,
        clocks: None,
    }
}

fn measure_with_bar<T: BenchTarget + ?Sized>(
    target: &mut T,
    spec: &ConfigSpec,
    plan: &BenchPlan,
    load_s: Option<f64>,
    bar: &ProgressBar,
) -> ConfigResult {
    let mut result = empty_result(spec, target.weight_bytes(), load_s);
    let probe = target.clock_probe();
    let mut sampler: Option<ClockSampler> = None;
    for (prompt_index, run_index, warmup) in plan.schedule() {
        if !warmup && sampler.is_none() {
            sampler = probe.clone().map(ClockSampler::start);  // from the first measured run on
        }
        let label = call_label(plan, prompt_index, run_index, warmup);
        bar.set_message(label.clone());
        match measure_once(target, plan, (prompt_index, run_index, warmup), &label, bar) {
            Ok(record) => result.runs.push(record),
            Err(e) => {
                result.error = Some(e.to_string());
                break;
            }
        }
        bar.inc(1);
    }
    result.resummarize();
    result.clocks = sampler.and_then(ClockSampler::finish);
    if let (Some(tokens), None) = (plan.prefill_tokens, &result.error) {
        bar.set_message(format!("prefill of {tokens} tokens"));
        match measure_prefill(target, tokens, prefill_runs(plan.runs)) {
            Ok(p) => result.prefill = Some(p),
            Err(e) => result.error = Some(format!("prefill of {tokens} tokens: {e}")),
        }
        bar.inc(1);
    }
    finish_bar(bar, &result);
    result
}

/// One generate call, measured the seed's way: reset the peak, time the call, read the peak.
fn measure_once<T: BenchTarget + ?Sized>(
    target: &mut T,
    plan: &BenchPlan,
    (prompt_index, run_index, warmup): (usize, usize, bool),
    label: &str,
    bar: &ProgressBar,
) -> Result<RunRecord> {
    let prompt = &plan.prompts[prompt_index];
    target.reset_peak_memory();
    let start = Instant::now();
    let mut first_token_s: Option<f64> = None;
    let mut streamed = 0usize;
    let generation = target.generate(prompt, plan.limit, &mut |_token| {
        first_token_s.get_or_insert_with(|| start.elapsed().as_secs_f64());
        streamed += 1;
        if !bar.is_hidden() {
            bar.set_message(format!("{label}: {streamed} tokens"));
        }
    })?;
    let total_s = start.elapsed().as_secs_f64();
    let peak_memory_bytes = target.peak_memory_bytes();
    if generation.generated_tokens > 0 && first_token_s.is_none() {
        return Err(Error::msg(format!(
            "bench target generated {} tokens but never called on_token; time to first token is unknown",
            generation.generated_tokens
        )));
    }
    let ttft_s = first_token_s.unwrap_or(total_s);
    let tok_s = decode_tok_s(generation.generated_tokens, total_s, ttft_s);
    let weight_bytes = target.weight_bytes();
    Ok(RunRecord {
        prompt_index,
        run_index,
        warmup,
        prompt: prompt.clone(),
        prompt_tokens: generation.prompt_tokens,
        generated_tokens: generation.generated_tokens,
        total_s,
        ttft_s,
        decode_tok_s: tok_s,
        peak_memory_bytes,
        weight_bytes,
        achieved_gbps: achieved_gbps(weight_bytes, tok_s),
        output_text: generation.text,
    })
}

fn call_label(plan: &BenchPlan, prompt_index: usize, run_index: usize, warmup: bool) -> String {
    let prompt = format!("prompt {}/{}", prompt_index + 1, plan.prompts.len());
    if warmup {
        format!("warm-up {}/{} ({prompt})", run_index + 1, plan.warmup)
    } else {
        format!("run {}/{}, {prompt}", run_index + 1, plan.runs)
    }
}

/// A bar of `calls_per_config` steps on stderr; hidden when `plan.progress` is off or
/// stderr is not a terminal (indicatif's stderr target checks that itself).
fn progress_bar(plan: &BenchPlan, spec: &ConfigSpec) -> ProgressBar {
    let target = if plan.progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(plan.calls_per_config() as u64), target);
    let style = ProgressStyle::with_template("{prefix:>6} [{bar:28}] {pos}/{len} {elapsed:>4} {wide_msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(spec.label.clone());
    bar
}

fn finish_bar(bar: &ProgressBar, result: &ConfigResult) {
    let s = &result.summary;
    let tok = s.decode_tok_s.map(|t| format!("{:.1} tok/s", t.mean)).unwrap_or_else(|| "- tok/s".into());
    let mem = s.peak_memory_gb.map(|m| format!("{:.2} GB peak", m.max)).unwrap_or_else(|| "- GB peak".into());
    let prefill = result.prefill.as_ref().map(|p| format!(", prefill {:.3} s", p.median_s)).unwrap_or_default();
    match &result.error {
        Some(e) => bar.abandon_with_message(format!("failed: {e}")),
        None => bar.finish_with_message(format!("{tok}, {mem}{prefill}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GB: u64 = 1_000_000_000;
    /// Prefill and per-token sleeps of the fake; measured times can only be longer.
    const PREFILL: Duration = Duration::from_millis(15);
    const PER_TOKEN: Duration = Duration::from_millis(2);
    /// The fake's prefill time per prompt id, and what its first (cold) prefill adds.
    const PREFILL_PER_TOKEN: Duration = Duration::from_micros(50);
    const COLD_EXTRA: Duration = Duration::from_millis(100);

    /// A fake model: sleeps for prefill and each token, and "allocates" 1 MB per prompt
    /// token on top of its weights, so each run's peak is known exactly.
    struct Fake {
        weights: u64,
        current: u64,
        peak: u64,
        calls: usize,
        fail_at_call: Option<usize>,
        probe: Option<Arc<CallProbe>>,
    }

    impl Fake {
        fn new(weights: u64) -> Fake {
            Fake { weights, current: weights, peak: weights, calls: 0, fail_at_call: None, probe: None }
        }
    }

    /// A clock probe whose "SM clock" is the number of generate calls begun so far.
    #[derive(Default)]
    struct CallProbe(std::sync::atomic::AtomicUsize);

    impl ClockProbe for CallProbe {
        fn sample(&self) -> Option<crate::clocks::ClockSample> {
            let calls = self.0.load(std::sync::atomic::Ordering::SeqCst) as f64;
            Some(crate::clocks::ClockSample { sm_mhz: calls, power_w: 700.0, power_capped: true })
        }
        fn power_limit_w(&self) -> Option<f64> {
            Some(700.0)
        }
    }

    impl BenchTarget for Fake {
        fn weight_bytes(&self) -> u64 {
            self.weights
        }
        fn reset_peak_memory(&mut self) {
            self.peak = self.current;
        }
        fn peak_memory_bytes(&self) -> u64 {
            self.peak
        }
        fn generate(
            &mut self,
            prompt: &str,
            limit: GenerationLimit,
            on_token: &mut dyn FnMut(u32),
        ) -> Result<Generation> {
            self.calls += 1;
            if let Some(p) = &self.probe {
                p.0.store(self.calls, std::sync::atomic::Ordering::SeqCst);
            }
            if self.fail_at_call == Some(self.calls) {
                return Err(Error::device("out of memory allocating 1 GB"));
            }
            let prompt_tokens = prompt.split_whitespace().count();
            self.peak = self.peak.max(self.current + prompt_tokens as u64 * 1_000_000);
            std::thread::sleep(PREFILL);
            let n = limit.new_tokens(prompt_tokens);
            for t in 0..n {
                if t > 0 {
                    std::thread::sleep(PER_TOKEN);
                }
                on_token(t as u32);
            }
            Ok(Generation { prompt_tokens, generated_tokens: n, text: format!("answer to {prompt}") })
        }
        fn model_shape(&self) -> Option<ModelShape> {
            Some(crate::prefill::tests::FALCON_40B)
        }
        fn clock_probe(&self) -> Option<Arc<dyn ClockProbe>> {
            self.probe.clone().map(|p| p as Arc<dyn ClockProbe>)
        }
        /// Sleeps PREFILL_PER_TOKEN per id, plus COLD_EXTRA on the first call (a cold start).
        fn with_prefill(
            &mut self,
            ids: &[u32],
            body: &mut PrefillBody<'_>,
        ) -> Result<()> {
            let mut calls = 0;
            let n = ids.len() as u32;
            body(&mut || {
                calls += 1;
                std::thread::sleep(PREFILL_PER_TOKEN * n + if calls == 1 { COLD_EXTRA } else { Duration::ZERO });
                Ok(())
            })
        }
    }

    fn plan() -> BenchPlan {
        let prompts = vec!["one two three".to_string(), "four five".to_string()];
        let mut p = BenchPlan::new(prompts, 2, 1, GenerationLimit::MaxLength(8)).unwrap();
        p.progress = false;
        p
    }

    #[test]
    fn matrix_records_every_run_with_measured_figures() {
        let specs = parse_quant_list("bf16, nf4").unwrap();
        let results =
            run_matrix(&plan(), &specs, |s| Ok(Fake::new(if s.quant == QuantKind::Nf4 { GB } else { 4 * GB })))
                .unwrap();
        assert_eq!(results.len(), 2);
        let nf4 = &results[1];
        assert_eq!((nf4.label.as_str(), nf4.weight_bytes, nf4.error.as_ref()), ("nf4", GB, None));
        // 1 warm-up + 2 runs x 2 prompts, in schedule order.
        let order: Vec<_> = nf4.runs.iter().map(|r| (r.prompt_index, r.run_index, r.warmup)).collect();
        assert_eq!(order, vec![(0, 0, true), (0, 0, false), (1, 0, false), (0, 1, false), (1, 1, false)]);
        let r = &nf4.runs[2];
        assert_eq!((r.prompt_tokens, r.generated_tokens), (2, 6)); // max_length 8 counts the prompt
        assert_eq!(r.peak_memory_bytes, GB + 2_000_000);
        assert!(r.ttft_s >= PREFILL.as_secs_f64(), "ttft {}", r.ttft_s);
        assert!(r.total_s >= PREFILL.as_secs_f64() + 5.0 * PER_TOKEN.as_secs_f64());
        let tok_s = r.decode_tok_s.unwrap();
        assert!(tok_s > 0.0 && tok_s <= 1.0 / PER_TOKEN.as_secs_f64(), "decode {tok_s}");
        assert!((r.achieved_gbps.unwrap() - tok_s).abs() < 1e-9); // 1 GB of weights
        assert_eq!(nf4.summary.runs, 4);
        assert!(nf4.load_s.is_some());
        assert_eq!(nf4.clocks, None, "a target without a probe has no clock readings");
    }

    #[test]
    fn clocks_are_read_over_the_measured_runs_only() {
        let probe = Arc::new(CallProbe::default());
        let results = run_matrix(&plan(), &parse_quant_list("int8").unwrap(), |_| {
            Ok(Fake { probe: Some(probe.clone()), ..Fake::new(GB) })
        })
        .unwrap();
        let c = results[0].clocks.as_ref().expect("a probe was offered");
        // The first reading comes as the first measured run (call 2) begins: the warm-up (call 1) is done.
        assert_eq!(c.sm_mhz_min, 1.0, "{c:?}");
        assert!(c.sm_mhz_max <= 5.0 && c.samples >= 1, "{c:?}");
        assert_eq!((c.power_w_median, c.power_limit_w, c.power_capped_share), (700.0, Some(700.0), 1.0));
    }

    #[test]
    fn a_failing_config_keeps_its_runs_and_the_matrix_goes_on() {
        let specs = parse_quant_list("int8,nf4,fp4").unwrap();
        let results = run_matrix(&plan(), &specs, |s| match s.quant {
            QuantKind::Int8 => Err(Error::device("out of memory loading int8")),
            QuantKind::Nf4 => Ok(Fake { fail_at_call: Some(3), ..Fake::new(GB) }),
            _ => Ok(Fake::new(GB)),
        })
        .unwrap();
        assert!(results[0].error.as_ref().unwrap().contains("out of memory loading int8"));
        assert!(results[0].runs.is_empty());
        assert_eq!(results[1].runs.len(), 2);
        assert!(results[1].error.as_ref().unwrap().contains("out of memory"));
        assert_eq!(results[2].runs.len(), 5);
        assert_eq!(results[2].error, None);
    }

    #[test]
    fn prefill_follows_the_generation_runs_warm() {
        let mut p = plan();
        p.prefill_tokens = Some(64);
        let results = run_matrix(&p, &parse_quant_list("bf16").unwrap(), |_| Ok(Fake::new(GB))).unwrap();
        let r = &results[0];
        assert_eq!((r.error.as_ref(), r.runs.len()), (None, 5));
        let pre = r.prefill.as_ref().unwrap();
        assert_eq!((pre.tokens, pre.runs_s.len()), (64, 3), "--runs 2 still times 3 prefills");
        let warm = (PREFILL_PER_TOKEN * 64).as_secs_f64();
        assert!(pre.warmup_s >= warm + COLD_EXTRA.as_secs_f64(), "the cold call is the warm-up: {}", pre.warmup_s);
        assert!(pre.runs_s.iter().all(|&t| t >= warm && t < warm + COLD_EXTRA.as_secs_f64()), "{:?}", pre.runs_s);
        assert_eq!(pre.flops, crate::prefill::tests::FALCON_40B.prefill_flops(64));
        assert!((pre.tflops - pre.flops / pre.median_s / 1e12).abs() < 1e-9);
        // Past the context (2048 for the fake's shape): the configuration says why, its runs stay.
        p.prefill_tokens = Some(4096);
        let r = &run_matrix(&p, &parse_quant_list("nf4").unwrap(), |_| Ok(Fake::new(GB))).unwrap()[0];
        assert!(r.error.as_ref().unwrap().contains("context of 2048"), "{:?}", r.error);
        assert_eq!((r.runs.len(), r.prefill.as_ref()), (5, None));
        p.prefill_tokens = Some(0);
        assert!(p.validate().is_err());
    }

    #[test]
    fn a_target_that_does_not_stream_is_an_error() {
        struct Silent;
        impl BenchTarget for Silent {
            fn weight_bytes(&self) -> u64 {
                1
            }
            fn reset_peak_memory(&mut self) {}
            fn peak_memory_bytes(&self) -> u64 {
                1
            }
            fn generate(&mut self, _: &str, _: GenerationLimit, _: &mut dyn FnMut(u32)) -> Result<Generation> {
                Ok(Generation { prompt_tokens: 1, generated_tokens: 3, text: String::new() })
            }
        }
        let mut boxed: Box<dyn BenchTarget> = Box::new(Silent);
        let spec = ConfigSpec { label: "bf16".into(), quant: QuantKind::Bf16 };
        let r = measure_config(&mut boxed, &spec, &plan(), None);
        assert!(r.error.unwrap().contains("on_token"));
        // Nor does it prefill: the default `model_shape` says so.
        let e = crate::prefill::measure_prefill(&mut boxed, 8, 3).unwrap_err().to_string();
        assert!(e.contains("cannot measure prefill"), "{e}");
    }

    #[test]
    fn bad_arguments_are_one_line_errors() {
        for bad in ["bf16,q3", "bf16,,nf4", "nf4,nf4", ""] {
            let e = parse_quant_list(bad).unwrap_err().to_string();
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        assert!(parse_quant_list("bf16,q3").unwrap_err().to_string().contains("q3"));
        let prompts = vec!["p".to_string()];
        assert!(BenchPlan::new(prompts.clone(), 0, 1, GenerationLimit::MaxLength(100)).is_err());
        assert!(BenchPlan::new(vec![], 1, 1, GenerationLimit::MaxLength(100)).is_err());
        assert!(BenchPlan::new(prompts, 1, 0, GenerationLimit::MaxNewTokens(0)).is_err());
    }

    /// Not run by default: shows the progress bars. Run it under a terminal:
    /// `script -qc "cargo test -p peregrine-bench progress_demo -- --ignored --nocapture" /dev/null`
    #[test]
    #[ignore]
    fn progress_demo() {
        let mut p = plan();
        p.progress = true;
        p.limit = GenerationLimit::MaxNewTokens(100);
        let specs = parse_quant_list("bf16,int8,nf4").unwrap();
        let results = run_matrix(&p, &specs, |s| match s.quant {
            QuantKind::Int8 => Err(Error::device("out of memory loading int8")),
            _ => Ok(Fake::new(GB)),
        })
        .unwrap();
        assert_eq!(results.len(), 3);
    }
}
