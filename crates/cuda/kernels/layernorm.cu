// layernorm.cu: LayerNorm over the last dimension of bf16 rows, statistics in f32.
// Kernels:
//   layernorm_bf16(x (R, D), weight (D), bias (D), out (R, D), D, eps)
// Thread mapping: one block per row (256 threads); pass 1 sums for the mean, pass 2 sums the
// squared deviations (two-pass, like PyTorch's f32 accumulation, no cancellation), pass 3 writes
// (x - mean) / sqrt(var + eps) * w + b rounded to bf16. The row is re-read from L1/L2.
// Assumptions: out may alias x (each element is read before it is written by the same thread).
#include "prelude.cuh"

extern "C" __global__ void layernorm_bf16(const bf16* __restrict__ x, const bf16* __restrict__ weight,
                                          const bf16* __restrict__ bias, bf16* out, int dim, float eps) {
    __shared__ float scratch[32];
    const bf16* xr = x + (i64)blockIdx.x * dim;
    bf16* orow = out + (i64)blockIdx.x * dim;
    float s = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += bf2f(xr[i]);
    const float mean = block_sum(s, scratch) / (float)dim;
    float v = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float d = bf2f(xr[i]) - mean;
        v += d * d;
    }
    const float var = block_sum(v, scratch) / (float)dim;
    const float rstd = 1.0f / sqrtf(var + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float y = (bf2f(xr[i]) - mean) * rstd;
        orow[i] = f2bf(y * bf2f(weight[i]) + bf2f(bias[i]));
    }
}
