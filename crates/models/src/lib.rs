//! Falcon models: configuration resolution (every variant, new and old names), checkpoint
//! loading (safetensors, sharded, memory-mapped, validated tensor by tensor), parameter
//! sources (checkpoint or synthetic), hub download, and the Falcon forward pass written
//! once against the `Backend` trait.

// `x % n == 0` stays: `is_multiple_of` needs Rust 1.87 and the workspace supports 1.85.
#![allow(clippy::manual_is_multiple_of, unknown_lints)]

pub mod checkpoint;
pub mod config;
pub mod falcon;
pub mod hub;
pub mod params;
pub mod presets;

pub use checkpoint::Checkpoint;
pub use config::{BlockKind, FalconConfig, PositionKind};
pub use falcon::{Falcon, LogitRows, Workspace};
pub use params::{linear_format_bytes, model_format_bytes, CheckpointSource, ParamSource, RandomSource, Role, VectorKind};

use std::path::Path;

use peregrine_core::{Backend, QuantKind, Result};

/// Load the checkpoint in `dir` on `backend`, quantizing block linears to `kind`;
/// `progress` is called with each parameter's name as it is loaded.
pub fn load_checkpoint<B: Backend>(
    backend: &B,
    dir: &Path,
    kind: QuantKind,
    opts: peregrine_quant::QuantOptions,
    progress: impl FnMut(&str),
) -> Result<Falcon<B>> {
    let config = FalconConfig::from_dir(dir)?;
    let ckpt = Checkpoint::open(dir)?;
    let mut source = CheckpointSource::new(&ckpt, kind, opts).with_progress(progress);
    if config.tie_word_embeddings {
        source.ignore("lm_head.weight");
    }
    Falcon::load(backend, config, &mut source)
}
