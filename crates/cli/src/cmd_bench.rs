//! `peregrine bench`: the seed's experiment in one command. For each `--quant` entry, load
//! the model, run warm-up + N rounds of `generate(max_length=100)` over the prompts, and
//! write the table, results.json/csv, the seed's charts and outputs.md. Without `--model`
//! it benchmarks synthetic Falcon-40B weights on a GPU that holds them, else the largest
//! preset that fits, so it runs on a fresh machine with no download. With
//! `--prefill-tokens N` each configuration also gets a warm prefill measurement (one
//! warm-up, then at least 3 timed forwards of N synthetic ids, median and TFLOPS). On a CUDA
//! GPU the SM clock and board power are read through NVML over each configuration's measured
//! runs (the H200 decodes at its power limit, so the clock a board holds there matters).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use peregrine_bench::{
    check_prefill_tokens, prepare_out_dir, read_prompt_file, render_table, run_matrix, seed_prompts, write_report,
    BenchPlan, BenchReport, BenchTarget, ClockProbe, ConfigSpec, Generation, GenerationLimit, ModelShape, PrefillBody,
};
use peregrine_core::{Backend, Error, Result, SamplingParams};
use peregrine_engine::{GenerateRequest, Session, SessionState, Tokenizer};
use peregrine_models::{presets, Falcon, FalconConfig};

use crate::args::{DeviceArg, FormatArgs};
use crate::device::{dispatch, OnBackend};
use crate::load::{load_model, required_bytes, FormatSpec};

/// Flags of `peregrine bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model directory, hub id, or with --dummy-weights a preset name. Default: synthetic
    /// falcon-40b weights on a GPU that holds them, else the largest preset that fits.
    #[arg(long)]
    pub model: Option<String>,
    /// Comma-separated configurations to compare.
    #[arg(long, default_value = "bf16,int8,nf4,fp4")]
    pub quant: String,
    /// A file of prompts, one per line (default: the seed's five prompts).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Measured runs of each prompt per configuration.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Warm-up generations per configuration (recorded, not summarised).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Prompt plus new tokens per generation, as the seed's generate(max_length=100). Default 100.
    #[arg(long, conflicts_with = "max_new_tokens")]
    pub max_length: Option<usize>,
    /// New tokens per generation instead of --max-length.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Output directory (default: bench-<UTC date and time>); must be new or empty.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Allow replacing a previous peregrine report in --out.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also report perplexity and KL divergence per configuration over this text.
    #[arg(long, value_name = "TEXT")]
    pub ppl_file: Option<PathBuf>,
    /// Window length for --ppl-file.
    #[arg(long, default_value_t = 256)]
    pub ppl_ctx: usize,
    /// Only the first N windows of --ppl-file.
    #[arg(long)]
    pub ppl_chunks: Option<usize>,
    /// A baseline results file (from scripts/hf_baseline.py) shown side by side.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// A tokenizer.json for models without one (synthetic weights).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// cpu, cuda or auto.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Random weights in the model's shape (implied when --model is absent).
    #[arg(long)]
    pub dummy_weights: bool,
    /// Run every decode op eagerly instead of replaying the decode step as a CUDA graph.
    #[arg(long)]
    pub no_graph: bool,
    /// Also measure a warm prefill of N tokens per configuration, after its generation runs:
    /// one warm-up, then max(--runs, 3) timed forwards of N synthetic ids from position 0
    /// (logits of the last row only, device synchronized), reported as the median seconds,
    /// tokens/s and TFLOPS. N must be at most the model's context. Default: off.
    #[arg(long, value_name = "N")]
    pub prefill_tokens: Option<usize>,
    #[command(flatten)]
    pub format: FormatArgs,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let specs = peregrine_bench::parse_quant_list(&args.quant)?;
    for s in &specs {
        FormatSpec::from_args(s.quant.as_str(), &args.format)?;
    }
    let prompts = match &args.prompts {
        Some(p) => read_prompt_file(p)?,
        None => seed_prompts(),
    };
    let limit = match (args.max_length, args.max_new_tokens) {
        (_, Some(n)) => GenerationLimit::MaxNewTokens(n),
        (l, None) => GenerationLimit::MaxLength(l.unwrap_or(100)),
    };
    let mut plan = BenchPlan::new(prompts, args.runs, args.warmup, limit)?;
    plan.prefill_tokens = args.prefill_tokens;
    plan.validate()?;
    let out = args.out.clone().unwrap_or_else(default_out_dir);
    prepare_out_dir(&out, args.force)?;
    let baseline = args.baseline.as_deref().map(peregrine_bench::load_baseline).transpose()?;
    let (device, json) = (args.device, args.json);
    let mut report = dispatch(device, Job { args, specs, plan })?;
    report.baseline = baseline;
    write_report(&out, &report)?;
    match json {
        true => println!("{}", report.to_json()),
        false => println!("{}", render_table(&report)),
    }
    eprintln!("peregrine: report written to {}", out.display());
    Ok(())
}

fn default_out_dir() -> PathBuf {
    let stamp = peregrine_bench::time::utc_now_iso().replace([':', '-'], "");
    PathBuf::from(format!("bench-{stamp}"))
}

struct Job {
    args: BenchArgs,
    specs: Vec<ConfigSpec>,
    plan: BenchPlan,
}

impl OnBackend for Job {
    type Output = BenchReport;
    fn run<B: Backend>(self, backend: &B) -> Result<BenchReport> {
        let a = &self.args;
        let (model_spec, dummy) = match &a.model {
            Some(m) => (m.clone(), a.dummy_weights),
            None => (default_preset(backend, &self.specs)?, true),
        };
        if let Some(tokens) = a.prefill_tokens {
            check_prefill_tokens(tokens, &shape_of(&model_config(&model_spec, dummy)?))?;
        }
        let tokenizer = find_tokenizer(a, &model_spec, dummy)?;
        let device = peregrine_bench::DeviceInfo {
            name: backend.name(),
            memory_bandwidth_gbps: peregrine_bench::spec_bandwidth_gbps(&backend.name()),
            total_memory_bytes: backend.device_memory().map(|m| m.1),
        };
        let mut report = BenchReport::new(&model_spec, device, &self.plan);
        report.commit = Some(env!("PEREGRINE_GIT_COMMIT").to_string()).filter(|c| !c.is_empty());
        report.synthetic_weights = dummy;
        report.configs = run_matrix(&self.plan, &self.specs, |spec| {
            let fmt = FormatSpec::from_args(spec.quant.as_str(), &a.format)?;
            let loaded = load_model(backend, &model_spec, &fmt, dummy)?;
            Ok(EngineTarget { backend, model: loaded.model, tokenizer: tokenizer.as_ref(), synthetic: dummy, graphs: !a.no_graph, state: None })
        })?;
        if let Some(file) = &a.ppl_file {
            add_quality(backend, a, &model_spec, &mut report, file, tokenizer.as_ref())?;
        }
        report.ppl_file = a.ppl_file.as_ref().map(|p| p.display().to_string());
        Ok(report)
    }
}

/// The model a bench without --model runs: falcon-40b if it fits, else the largest preset that does.
fn default_preset<B: Backend>(backend: &B, specs: &[ConfigSpec]) -> Result<String> {
    // Synthetic weights are made on the device by a GPU backend; a host backend makes them
    // tensor by tensor in host memory beside everything else, so it keeps half in reserve.
    let free = backend.device_memory().map_or(0, |m| m.0);
    let available = if backend.name().starts_with("cpu") { free / 2 } else { free };
    let opts = peregrine_quant::QuantOptions::default();
    for name in ["falcon-40b", "falcon2-11b", "falcon-7b", "falcon-rw-1b"] {
        let config = presets::preset(name).expect("built-in preset")?;
        let need = specs.iter().map(|s| required_bytes(&config, s.quant, &opts)).max().unwrap_or(0);
        if need < available {
            eprintln!(
                "peregrine: benchmarking synthetic {name} weights (about {:.1} GB of {:.1} GB available); answers are meaningless text",
                need as f64 / 1e9,
                available as f64 / 1e9
            );
            return Ok(name.to_string());
        }
    }
    Err(Error::input(format!(
        "no Falcon preset fits in the {:.1} GB available on {}; give --model",
        available as f64 / 1e9,
        backend.name()
    )))
}

/// The config of `spec` without loading weights (for the --prefill-tokens check before any load).
fn model_config(spec: &str, dummy: bool) -> Result<FalconConfig> {
    if dummy {
        if let Some(preset) = presets::preset(spec) {
            return preset;
        }
        return FalconConfig::from_dir(std::path::Path::new(spec));
    }
    FalconConfig::from_dir(&crate::load::model_dir(spec)?)
}

/// The dimensions the bench's prefill ids, context check and FLOP count need.
fn shape_of(c: &FalconConfig) -> ModelShape {
    ModelShape {
        vocab: c.vocab_size,
        hidden: c.hidden_size,
        ffn: c.ffn_hidden_size,
        n_head: c.n_head,
        n_kv: c.n_kv,
        head_dim: c.head_dim,
        n_layer: c.n_layer,
        context: c.max_position_embeddings,
    }
}

fn find_tokenizer(a: &BenchArgs, model: &str, dummy: bool) -> Result<Option<Tokenizer>> {
    if let Some(path) = &a.tokenizer {
        return Tokenizer::from_file(path).map(Some);
    }
    let dir = if dummy { PathBuf::from(model) } else { crate::load::model_dir(model)? };
    match dir.join("tokenizer.json").exists() {
        true => Tokenizer::from_dir(&dir).map(Some),
        false if dummy => Ok(None),
        false => Err(Error::file(dir.join("tokenizer.json"), "not found; bench needs a tokenizer (give --tokenizer FILE)")),
    }
}

/// Perplexity and KL per configuration; all configurations are loaded at once (KL compares
/// them position by position).
fn add_quality<B: Backend>(
    backend: &B,
    a: &BenchArgs,
    model: &str,
    report: &mut BenchReport,
    file: &std::path::Path,
    tokenizer: Option<&Tokenizer>,
) -> Result<()> {
    let tok = tokenizer.ok_or_else(|| Error::input("--ppl-file needs a tokenizer (give --tokenizer FILE)"))?;
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let tokens = tok.encode(&text)?;
    let plan = peregrine_engine::WindowPlan { ctx: a.ppl_ctx, stride: a.ppl_ctx, chunks: a.ppl_chunks };
    let mut models = Vec::new();
    for c in &report.configs {
        let fmt = FormatSpec::from_args(c.quant.as_str(), &a.format)?;
        models.push((c.label.clone(), load_model(backend, model, &fmt, a.dummy_weights || a.model.is_none())?.model));
    }
    let refs: Vec<(String, &Falcon<B>)> = models.iter().map(|(l, m)| (l.clone(), m)).collect();
    let rows = peregrine_engine::quality_report(backend, &refs, &tokens, plan, |_, _| {})?;
    let reference = rows.first().map(|r| r.label.clone());
    for (config, row) in report.configs.iter_mut().zip(rows) {
        config.ppl = Some(peregrine_bench::schema::QualityResult {
            reference: reference.clone().filter(|r| *r != row.label),
            tokens: row.tokens,
            perplexity: row.perplexity,
            kl_mean: row.kl_mean,
            kl_p99: row.kl_p99,
            top1_agree: row.top1_agree,
        });
    }
    Ok(())
}

/// The engine behind the benchmark's `BenchTarget`.
struct EngineTarget<'a, B: Backend> {
    backend: &'a B,
    model: Falcon<B>,
    tokenizer: Option<&'a Tokenizer>,
    /// Random weights: generate the full length (as the baseline's min_length), ignoring EOS.
    synthetic: bool,
    /// Replay decode steps as graphs (Session::set_graphs).
    graphs: bool,
    /// The last request's cache, workspace and recorded decode step, reused by the next request
    /// that fits, so the step is recorded once per configuration (in the warm-up run), as a
    /// serving engine records its graphs at start-up, and every measured run replays it.
    state: Option<SessionState<B>>,
}

/// Prompt tokens the bench's session workspace holds at least (every seed prompt fits, so one
/// session serves a configuration).
const SESSION_MIN_PROMPT: usize = 32;

impl<B: Backend> EngineTarget<'_, B> {
    fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        if let Some(tok) = self.tokenizer {
            return tok.encode(prompt);
        }
        let ids = seed_prompt_ids(prompt).ok_or_else(|| {
            Error::input("synthetic weights without a tokenizer can only run the seed's prompts; give --tokenizer FILE")
        })?;
        let v = self.model.config.vocab_size as u32;
        Ok(ids.iter().map(|&id| id % v).collect())
    }
}

impl<B: Backend> BenchTarget for EngineTarget<'_, B> {
    fn weight_bytes(&self) -> u64 {
        self.model.decode_read_bytes(self.backend)
    }

    fn reset_peak_memory(&mut self) {
        self.backend.reset_peak_memory();
    }

    fn peak_memory_bytes(&self) -> u64 {
        self.backend.memory().peak_bytes
    }

    fn generate(&mut self, prompt: &str, limit: GenerationLimit, on_token: &mut dyn FnMut(u32)) -> Result<Generation> {
        let ids = self.encode(prompt)?;
        let context = self.model.config.max_position_embeddings;
        let new = limit.new_tokens(ids.len()).min(context.saturating_sub(ids.len()));
        let req = GenerateRequest {
            max_new_tokens: new,
            sampling: SamplingParams::default(),
            stop_strings: vec![],
            eos_ids: if self.synthetic { vec![] } else { self.model.config.eos_token_ids.clone() },
            prompt_ids: ids.clone(),
        };
        let mut session = match self.state.take() {
            Some(state) if state.fits(ids.len(), new) => Session::resume(self.backend, &self.model, state),
            _ => Session::new(self.backend, &self.model, ids.len() + new, ids.len().next_power_of_two().max(SESSION_MIN_PROMPT))?,
        };
        session.set_graphs(self.graphs);
        let out = session.generate_with(&req, self.tokenizer, &mut |id, _| {
            if id != u32::MAX {
                on_token(id)
            }
        });
        self.state = Some(session.into_state());
        let out = out?;
        let text = match self.tokenizer {
            Some(_) => out.text,
            None => synthetic_text(&out.ids),
        };
        Ok(Generation { prompt_tokens: ids.len(), generated_tokens: out.ids.len(), text })
    }

    fn model_shape(&self) -> Option<ModelShape> {
        Some(shape_of(&self.model.config))
    }

    /// The backend's own (NVML on a CUDA GPU; none on the CPU).
    fn clock_probe(&self) -> Option<Arc<dyn ClockProbe>> {
        self.backend.clock_probe()
    }

    /// One session sized for `ids` (cache and workspace of T positions), reused by every
    /// prefill `body` runs; each prefill is `Session::prefill` then a device synchronize.
    fn with_prefill(
        &mut self,
        ids: &[u32],
        body: &mut PrefillBody<'_>,
    ) -> Result<()> {
        let backend = self.backend;
        let mut session = Session::new(backend, &self.model, ids.len(), ids.len())?;
        body(&mut || {
            session.prefill(ids)?;
            backend.synchronize()
        })
    }
}

/// The Falcon tokenizer's ids of the seed's five prompts (computed with tokenizers 0.22 on
/// tiiuae's tokenizer.json), so the built-in default runs the seed's exact prompt lengths on
/// a machine that has no tokenizer file.
const SEED_PROMPT_IDS: [&[u32]; 5] = [
    &[12081, 241, 1962, 544, 241, 13215, 2464, 325, 14465, 11659, 23, 480, 335, 28563, 9315, 25],
    &[54482, 402, 4748, 8818, 8444, 273, 1533, 334, 304, 402, 1246, 3078, 25],
    &[12081, 241, 42014, 6494, 312, 379, 1542, 248, 745, 275, 20333, 272, 26930, 25],
    &[780, 811, 241, 627, 8415, 275, 5481, 5433, 273, 7474, 701, 5446, 23, 5651, 23, 273, 2849, 13744, 25],
    &[1562, 362, 248, 4128, 271, 1500, 267, 317, 26, 45, 1318, 42],
];

fn seed_prompt_ids(prompt: &str) -> Option<&'static [u32]> {
    seed_prompts().iter().position(|p| p == prompt).map(|i| SEED_PROMPT_IDS[i])
}

fn synthetic_text(ids: &[u32]) -> String {
    let shown: Vec<String> = ids.iter().take(24).map(u32::to_string).collect();
    format!("[{} token ids, no tokenizer: {}{}]", ids.len(), shown.join(" "), if ids.len() > 24 { " ..." } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn tiny() -> String {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/assets/models/peregrine-tiny-falcon");
        assert!(std::path::Path::new(p).join("config.json").exists(), "missing shared test model {p}/config.json");
        p.to_string()
    }

    fn bench_args(out: &std::path::Path, prompts: &std::path::Path, extra: &[&str]) -> BenchArgs {
        let base = ["bench", "--device", "cpu", "--model", &tiny(), "--quant", "bf16", "--max-new-tokens", "2"];
        let paths = ["--runs", "1", "--warmup", "0", "--prompts", prompts.to_str().unwrap(), "--out", out.to_str().unwrap()];
        Cli::parse_from(base.iter().chain(&paths).chain(extra)).bench
    }

    #[test]
    fn falcon_40b_preset_shape_gives_the_prefill_flops() {
        let shape = shape_of(&presets::preset("falcon-40b").unwrap().unwrap());
        assert_eq!(shape.block_linear_params(), 40_768_634_880);
        assert_eq!(shape.context, 2048);
        const TFLOP_TOL: f64 = 0.005;
        assert!((shape.prefill_flops(2048) / 1e12 - 171.1123).abs() < TFLOP_TOL);
    }

    #[test]
    fn tiny_model_bench_measures_a_warm_prefill_on_the_cpu() {
        let tmp = tempfile::tempdir().unwrap();
        let prompts = tmp.path().join("prompts.txt");
        std::fs::write(&prompts, "Once upon a time\n").unwrap();
        let out = tmp.path().join("report");
        run(bench_args(&out, &prompts, &["--prefill-tokens", "64"])).unwrap();
        let report = peregrine_bench::read_report(&out.join("results.json")).unwrap();
        let c = &report.configs[0];
        assert_eq!((c.error.as_deref(), c.runs.len()), (None, 1));
        let p = c.prefill.as_ref().expect("prefill figures");
        assert_eq!((p.tokens, p.runs_s.len()), (64, 3), "--runs 1 still times 3 prefills");
        let shape = shape_of(&FalconConfig::from_dir(std::path::Path::new(&tiny())).unwrap());
        assert_eq!(p.flops, shape.prefill_flops(64));
        assert!(p.median_s > 0.0 && p.runs_s.iter().all(|&t| t > 0.0));
        assert!((p.tflops - p.flops / p.median_s / 1e12).abs() < 1e-12);
        let csv = std::fs::read_to_string(out.join("prefill.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 4, "header, warm-up, 3 timed runs:\n{csv}");
    }

    #[test]
    fn prefill_beyond_the_context_is_one_line_before_any_load() {
        let tmp = tempfile::tempdir().unwrap();
        let prompts = tmp.path().join("prompts.txt");
        std::fs::write(&prompts, "Once upon a time\n").unwrap();
        let e = run(bench_args(&tmp.path().join("r"), &prompts, &["--prefill-tokens", "4096"])).unwrap_err().to_string();
        assert!(e.contains("--prefill-tokens 4096") && e.contains("context of 2048") && e.lines().count() == 1, "{e}");
        let e = run(bench_args(&tmp.path().join("r0"), &prompts, &["--prefill-tokens", "0"])).unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
    }
}
