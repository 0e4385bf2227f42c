//! The CUDA backend: cudarc, NVRTC-compiled kernels, cuBLAS.
