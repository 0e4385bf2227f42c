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
//! `render_table`, `write_report`.

pub mod baseline;
pub mod csv;
pub mod outdir;
pub mod outputs;
pub mod plots;
pub mod prompts;
pub mod report;
pub mod runner;
pub mod schema;
pub mod stats;
pub mod table;
pub mod time;

pub use baseline::{load_baseline, Baseline, BaselineConfig, BaselineRun};
pub use csv::render_csv;
pub use outdir::{prepare_out_dir, OVERWRITE_FLAG};
pub use outputs::render_outputs_md;
pub use prompts::{parse_prompts, read_prompt_file, seed_prompts, SEED_PROMPTS};
pub use report::{read_report, write_report};
pub use runner::{measure_config, parse_quant_list, run_matrix, BenchPlan, BenchTarget, ConfigSpec, Generation};
pub use schema::{
    BenchReport, ConfigResult, DeviceInfo, GenerationLimit, QualityResult, RunRecord, Summary, SCHEMA,
};
pub use stats::Stat;
pub use table::render_table;
