//! The CUDA backend: cudarc (driver API, dynamically loaded), kernels compiled at run time by
//! NVRTC for the device's own architecture and cached on disk, cuBLAS for dense GEMMs.
//!
//! Layout: `libs` finds the shared libraries without letting cudarc panic; `nvrtc` compiles
//! `kernels/*.cu` (one module per op family, dtype-stamped kernel names) with a sha256-keyed
//! CUBIN cache; `device` owns the context, the created stream, cuBLAS and the launch helper;
//! `alloc` counts every device byte; `linear` holds dense / LLM.int8 / NF4 / FP4 weights and
//! their matmul paths; `synthetic` makes random weights on the device; `backend` implements
//! `peregrine_core::Backend`; `telemetry` reads the GPU's clock and power through NVML.
//!
//! Without a GPU everything still compiles; `driver_available()` says whether one can be used.

// `x % n == 0` stays: `is_multiple_of` needs Rust 1.87 and the workspace supports 1.85.
#![allow(clippy::manual_is_multiple_of, unknown_lints)]

pub mod alloc;
pub mod backend;
pub mod device;
pub mod libs;
pub mod linear;
pub mod nvrtc;
pub mod synthetic;
pub mod telemetry;

pub use alloc::{DeviceBuffer, MemTracker};
pub use backend::{CudaBackend, CudaBuf, PrefillAttention};
pub use device::driver_available;
pub use linear::{CudaLinear, DeviceAbsmax};
pub use synthetic::SyntheticOptions;
