//! Raw command-line flags, parsed by clap. Subcommands only parse and dispatch: each flag
//! struct is resolved into validated settings in the command's own module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Peregrine: fast, lean inference for the Falcon family of language models.
#[derive(Parser, Debug)]
#[command(name = "peregrine", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a prompt, streamed to stdout as it is produced.
    Generate(GenerateArgs),
    /// Print the token ids of a text as JSON: {"ids": [...]}.
    Tokenize(TokenizeArgs),
    /// Print the text of comma-separated token ids.
    Detokenize(DetokenizeArgs),
    /// Print the logits of every input position from one forward pass (a verification tool).
    Logits(LogitsArgs),
    /// Perplexity and KL divergence of quantized configurations over a text file.
    Ppl(PplArgs),
    /// Quantize a checkpoint and write it in the bitsandbytes layout transformers loads.
    Quantize(QuantizeArgs),
    /// Repeat the seed's experiment: time generate(max_length=100) on prompts per quantization.
    Bench(crate::cmd_bench::BenchArgs),
}

/// Where to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    /// CUDA when a GPU is there, else the CPU (and it says so).
    Auto,
}

/// How to find and load a model.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A local model directory, a hub id (tiiuae/falcon-40b-instruct), or with --dummy-weights a
    /// preset name (falcon-rw-1b, falcon-7b, falcon2-11b, falcon-40b, falcon-180b).
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Device and weight-format flags shared by every command that loads a model.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// cpu, cuda or auto.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Weight format, applied tensor by tensor while loading: auto, bf16, f16, f32, int8, nf4, fp4
    /// (auto: a pre-quantized checkpoint keeps its format, others load as bf16).
    #[arg(long, default_value = "auto")]
    pub quant: String,
    #[command(flatten)]
    pub format: FormatArgs,
    /// Random weights in the model's shape instead of a checkpoint (benchmarks without a download).
    #[arg(long)]
    pub dummy_weights: bool,
}

/// How the quantized formats are made (shared by every command that quantizes on load).
#[derive(Args, Debug, Clone)]
pub struct FormatArgs {
    /// int8 only: activation columns with any |x| >= T take the higher-precision path
    /// (bitsandbytes' LLM.int8 uses 6.0). Default: weight-only int8.
    #[arg(long, value_name = "T")]
    pub int8_threshold: Option<f32>,
    /// nf4/fp4 only: elements per absmax block.
    #[arg(long, default_value_t = 64)]
    pub blocksize: usize,
    /// nf4/fp4 only: keep the block scales in f32 instead of double-quantizing them.
    #[arg(long)]
    pub no_double_quant: bool,
}

/// Sampling and stopping flags.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// transformers' repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// New tokens at most.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Prompt plus new tokens at most (transformers' max_length). Default without either: 100.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Stop when the text contains this string (repeatable); it is not printed.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Do not stop at the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
    pub prompt: Option<String>,
    /// Comma-separated prompt token ids (for checkpoints without a tokenizer).
    #[arg(long, value_name = "IDS")]
    pub prompt_ids: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Run every decode op eagerly instead of replaying the decode step as a CUDA graph.
    #[arg(long)]
    pub no_graph: bool,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Model directory (or hub id) holding tokenizer.json.
    #[arg(long)]
    pub model: String,
    /// The text to encode.
    pub text: String,
}

#[derive(Args, Debug)]
pub struct DetokenizeArgs {
    /// Model directory (or hub id) holding tokenizer.json.
    #[arg(long)]
    pub model: String,
    /// Comma-separated token ids.
    pub ids: String,
    /// Print {"text": ...} instead of the raw text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated input token ids.
    #[arg(long, value_name = "IDS", required_unless_present = "prompt")]
    pub prompt_ids: Option<String>,
    /// Input text (tokenized with the model's tokenizer) instead of ids.
    #[arg(long, conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,
}

#[derive(Args, Debug)]
pub struct PplArgs {
    /// Model directory or hub id.
    #[arg(long)]
    pub model: String,
    /// The text file to score.
    #[arg(long)]
    pub file: PathBuf,
    /// Window length in tokens.
    #[arg(long, default_value_t = 256)]
    pub ctx: usize,
    /// Window step (default: ctx, non-overlapping windows).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Only the first N windows (as llama.cpp's --chunks).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Comma-separated configurations; the first is the reference for KL divergence.
    #[arg(long, default_value = "bf16,int8,nf4,fp4")]
    pub quant: String,
    /// cpu, cuda or auto.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub format: FormatArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Source model directory or hub id.
    #[arg(long)]
    pub model: String,
    /// int8, nf4 or fp4.
    #[arg(long)]
    pub quant: String,
    /// Output directory (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// int8 outlier threshold recorded in the config (bitsandbytes' default 6.0).
    #[arg(long, value_name = "T", default_value_t = 6.0)]
    pub int8_threshold: f32,
    /// nf4/fp4 block size.
    #[arg(long, default_value_t = 64)]
    pub blocksize: usize,
    /// nf4/fp4: no double quantization.
    #[arg(long)]
    pub no_double_quant: bool,
}
