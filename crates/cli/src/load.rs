//! Loading a model for a command: resolve `--model` (directory, hub id or preset), read
//! and resolve its config, then fill the parameters from the checkpoint (quantizing on
//! load) or with synthetic values, with a progress bar on stderr.

use std::path::PathBuf;

use peregrine_core::{Backend, Error, QuantKind, Result};
use peregrine_models::{presets, Falcon, FalconConfig, RandomSource};
use peregrine_quant::QuantOptions;

use crate::args::{FormatArgs, LoadArgs};

/// What was loaded, with where it came from.
pub struct Loaded<B: Backend> {
    pub model: Falcon<B>,
    /// The model directory (None for a preset with synthetic weights).
    pub dir: Option<PathBuf>,
    pub quant: QuantKind,
    pub opts: QuantOptions,
}

impl<B: Backend> Loaded<B> {
    /// Resident weight bytes beside the format's own byte count (whole model and the
    /// quantized block linears), for `--json` outputs.
    pub fn weights_json(&self, backend: &B) -> serde_json::Value {
        let (blocks, dense) = peregrine_models::model_format_bytes(&self.model.config, self.quant, &self.opts);
        let resident = self.model.weight_bytes();
        let block_resident = self.model.block_weight_bytes(backend);
        serde_json::json!({
            "quant": self.quant,
            "resident_bytes": resident,
            "format_bytes": blocks + dense,
            "block_linears": { "resident_bytes": block_resident, "format_bytes": blocks },
        })
    }
}

/// Resolved weight-format settings. `quant: None` is `auto`: a pre-quantized checkpoint
/// keeps its own format, anything else loads as bf16.
#[derive(Clone, Debug)]
pub struct FormatSpec {
    pub quant: Option<QuantKind>,
    pub opts: QuantOptions,
}

impl FormatSpec {
    /// Validate the format flags.
    pub fn from_args(quant: &str, format: &FormatArgs) -> Result<Self> {
        let (threshold, blocksize) = (format.int8_threshold, format.blocksize);
        let quant: Option<QuantKind> = match quant.trim() {
            "auto" => None,
            q => Some(q.parse()?),
        };
        if ![64, 128, 256, 512, 1024, 2048, 4096].contains(&blocksize) {
            return Err(Error::input(format!("--blocksize {blocksize}: expected one of 64, 128, 256, ..., 4096")));
        }
        if let Some(t) = threshold {
            if !(t > 0.0 && t.is_finite()) {
                return Err(Error::input(format!("--int8-threshold must be > 0, got {t}")));
            }
        }
        let opts = QuantOptions {
            blocksize,
            double_quant: !format.no_double_quant,
            int8_threshold: threshold,
            ..QuantOptions::default()
        };
        Ok(FormatSpec { quant, opts })
    }

    pub fn from_load_args(a: &LoadArgs) -> Result<Self> {
        Self::from_args(&a.quant, &a.format)
    }

    /// The concrete format for a model with `config`: `auto` follows its quantization_config.
    fn resolve(&self, config: &FalconConfig, config_path: &std::path::Path) -> Result<(QuantKind, QuantOptions)> {
        if let Some(q) = self.quant {
            return Ok((q, self.opts));
        }
        match &config.quantization_config {
            None => Ok((QuantKind::Bf16, self.opts)),
            Some(v) => {
                let bnb = peregrine_quant::BnbConfig::parse(v, config_path)?;
                // Peregrine's int8 is weight-only unless --int8-threshold asks otherwise,
                // whatever threshold the checkpoint's config records.
                let mut opts = bnb.options();
                opts.int8_threshold = self.opts.int8_threshold;
                Ok((bnb.kind, opts))
            }
        }
    }
}

/// The model directory of `spec` (a local path or a downloaded hub id).
pub fn model_dir(spec: &str) -> Result<PathBuf> {
    peregrine_models::hub::resolve_model(spec)
}

/// The config of `spec` for synthetic weights: a preset name or a directory's config.json.
fn synthetic_config(spec: &str) -> Result<(FalconConfig, Option<PathBuf>)> {
    if let Some(c) = presets::preset(spec) {
        return Ok((c?, None));
    }
    let dir = PathBuf::from(spec);
    if dir.is_dir() {
        return Ok((FalconConfig::from_dir(&dir)?, Some(dir)));
    }
    Err(Error::input(format!(
        "--dummy-weights --model {spec}: not a preset ({}) nor a directory with a config.json",
        presets::PRESETS.join(", ")
    )))
}

/// Load `spec` on `backend` in the format `fmt`.
pub fn load_model<B: Backend>(backend: &B, spec: &str, fmt: &FormatSpec, dummy: bool) -> Result<Loaded<B>> {
    if dummy {
        let (config, dir) = synthetic_config(spec)?;
        let quant = fmt.quant.unwrap_or(QuantKind::Bf16);
        preflight(backend, &config, quant, &fmt.opts, spec)?;
        let mut source = RandomSource::new(quant, fmt.opts, 0x5eed, 0.02);
        let bar = progress(&config);
        let model = Falcon::load(backend, config, &mut source)?;
        backend.synchronize()?; // device-side generation is asynchronous: finish it inside the load time
        bar.finish_and_clear();
        return Ok(Loaded { model, dir, quant, opts: fmt.opts });
    }
    let dir = model_dir(spec)?;
    let config = FalconConfig::from_dir(&dir)?;
    let (quant, opts) = fmt.resolve(&config, &dir.join("config.json"))?;
    preflight(backend, &config, quant, &opts, spec)?;
    let bar = progress(&config);
    let model = peregrine_models::load_checkpoint(backend, &dir, quant, opts, |name| {
        bar.set_message(name.to_string());
        bar.inc(1);
    })?;
    backend.synchronize()?;
    bar.finish_and_clear();
    Ok(Loaded { model, dir: Some(dir), quant, opts })
}

/// Working space beyond the weights: activations, a KV cache, library workspaces.
const WORKING_SPACE_BYTES: u64 = 1 << 30;

/// Bytes a model needs in `quant`: its weights in that format plus working space.
pub fn required_bytes(config: &FalconConfig, quant: QuantKind, opts: &QuantOptions) -> u64 {
    let (blocks, dense) = peregrine_models::model_format_bytes(config, quant, opts);
    blocks + dense + WORKING_SPACE_BYTES
}

/// Refuse, in one line, a model whose weights will not fit in the backend's free memory.
fn preflight<B: Backend>(backend: &B, config: &FalconConfig, quant: QuantKind, opts: &QuantOptions, spec: &str) -> Result<()> {
    let Some((free, _total)) = backend.device_memory() else { return Ok(()) };
    let need = required_bytes(config, quant, opts);
    if need > free {
        return Err(Error::device(format!(
            "{spec} in {quant} needs about {:.1} GB ({:.1} GB of weights + working space) but {:.1} GB are free on {}",
            need as f64 / 1e9,
            (need - WORKING_SPACE_BYTES) as f64 / 1e9,
            free as f64 / 1e9,
            backend.name()
        )));
    }
    Ok(())
}

/// A load progress bar on stderr, one tick per parameter tensor (hidden when not a terminal).
fn progress(config: &FalconConfig) -> indicatif::ProgressBar {
    let per_block = 4 * (1 + config.bias as u64) + 4;
    let total = config.n_layer as u64 * per_block + 4;
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("loading {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Parse "1,2,3" into ids, naming the bad item.
pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    let ids = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|_| Error::input(format!("`{s}` is not a token id (expected e.g. 1,2,3)"))))
        .collect::<Result<Vec<u32>>>()?;
    if ids.is_empty() {
        return Err(Error::input("no token ids given (expected e.g. 1,2,3)"));
    }
    Ok(ids)
}

/// Fail naming the first id outside `vocab`.
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(bad) => Err(Error::input(format!("token id {bad} is outside the vocabulary (size {vocab})"))),
        None => Ok(()),
    }
}
