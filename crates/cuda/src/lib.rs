//! The CUDA backend: cudarc, NVRTC-compiled kernels, cuBLAS.
pub mod libs;
pub mod nvrtc;
