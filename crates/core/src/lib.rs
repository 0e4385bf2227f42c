//! Peregrine's shared vocabulary: errors, dtypes, host tensors, the stored formats of
//! (quantized) weights, the sampler, and the `Backend` trait that every compute backend
//! implements.
//!
//! Design choice: backends write into buffers they are given instead of returning fresh
//! tensors, so a decode step can be captured once as a CUDA graph and replayed without
//! allocation (see ../shared/DESIGN-NOTES.md).

pub mod backend;
pub mod clocks;
pub mod dtype;
pub mod error;
pub mod sampling;
pub mod scoring;
pub mod tensor;
pub mod weights;

pub use backend::{AttentionParams, Backend, Epilogue, KvCache, LayerKv, LinearInput, MemoryStats, PairNorms, PairSide, QkvLayout, RotaryParams, SyntheticFormat};
pub use clocks::{ClockProbe, ClockSample};
pub use dtype::DType;
pub use error::{Error, Result};
pub use tensor::HostTensor;
pub use sampling::SamplingParams;
pub use weights::{Absmax, FourBitFormat, FourBitWeight, Int8Weight, LinearWeight, QuantKind};
