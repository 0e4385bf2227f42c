//! peregrine-bench: the benchmark matrix of `peregrine bench` (the seed's experiment:
//! each quantization of a Falcon model generates on five prompts; peak memory and time
//! per run, plotted, answers compared) and everything that turns measurements into a report.
//!
//! Design choice: one result schema (`BenchReport`, module `schema`) is the only thing the
//! writers read, as in llama-bench: the terminal table, results.json, results.csv,
//! outputs.md and the PNG plots are views of it. The model-specific part is the small
//! `BenchTarget` trait (module `runner`), which the engine implements; the runner does
//! all timing and memory reading itself, so every backend is measured the same way.
//!
//! A CLI calls, in order: `parse_quant_list`, `read_prompt_file` or `seed_prompts`,
//! `BenchPlan::new`, `prepare_out_dir`, `run_matrix`, `BenchReport::new` (+ fields),
//! `render_table`, `write_report`. `--prefill-tokens N` sets `BenchPlan::prefill_tokens`;
//! each configuration then also gets a warm `PrefillResult` (module `prefill`). A target that
//! offers a `ClockProbe` also gets the device's SM clock and power over its measured runs
//! (module `clocks`).
//!
//! The engine's side, sketched:
//! ```ignore
//! impl BenchTarget for EngineTarget {
//!     fn weight_bytes(&self) -> u64 { self.model.weight_bytes() }
//!     fn reset_peak_memory(&mut self) { self.backend.reset_peak_memory() }
//!     fn peak_memory_bytes(&self) -> u64 { self.backend.memory().peak_bytes }
//!     fn generate(&mut self, prompt: &str, limit: GenerationLimit, on_token: &mut dyn FnMut(u32)) -> Result<Generation> {
//!         let out = self.engine.generate_greedy(prompt, limit.new_tokens(n_prompt), |tok| on_token(tok))?;
//!         Ok(Generation { prompt_tokens: out.prompt_tokens, generated_tokens: out.tokens.len(), text: out.text })
//!     }
//!     fn model_shape(&self) -> Option<ModelShape> { Some(shape_of(&self.model.config)) }
//!     fn with_prefill(&mut self, ids: &[u32], body: &mut peregrine_bench::PrefillBody<'_>) -> Result<()> {
//!         let mut session = Session::new(self.backend, &self.model, ids.len(), ids.len())?;
//!         body(&mut || { session.prefill(ids)?; self.backend.synchronize() })
//!     }
//! }
//! let results = run_matrix(&plan, &specs, |spec| EngineTarget::load(&model, spec.quant))?;
//! ```

pub mod baseline;
pub mod clocks;
pub mod csv;
pub mod device;
pub mod outdir;
pub mod outputs;
pub mod plots;
pub mod prefill;
pub mod prompts;
pub mod report;
pub mod runner;
pub mod schema;
pub mod stats;
pub mod table;
pub mod time;

pub use baseline::{load_baseline, Baseline, BaselineConfig, BaselineRun};
pub use clocks::{ClockProbe, ClockSample, ClockSampler, ClockSummary};
pub use csv::render_csv;
pub use device::spec_bandwidth_gbps;
pub use outdir::{prepare_out_dir, OVERWRITE_FLAG};
pub use outputs::render_outputs_md;
pub use prefill::{check_prefill_tokens, measure_prefill, prefill_ids, prefill_runs, ModelShape};
pub use prompts::{parse_prompts, read_prompt_file, seed_prompts, SEED_PROMPTS};
pub use report::{read_report, write_report};
pub use runner::{measure_config, parse_quant_list, run_matrix, BenchPlan, BenchTarget, ConfigSpec, Generation, PrefillBody};
pub use schema::{
    BenchReport, ConfigResult, DeviceInfo, GenerationLimit, PrefillResult, QualityResult, RunRecord, Summary, SCHEMA,
};
pub use stats::Stat;
pub use table::render_table;
