// elementwise.cu: one-pass kernels over bf16 activations.
// Kernels:
//   embedding_bf16(table (V, D), ids (T), out (T, D))   grid (T), threads stride over D.
//   gelu_bf16(x, n)                                      exact erf GELU in f32, in place.
//   add_bf16(dst, src, n)                                dst = bf16(dst + src) in f32.
//   add_bias_bf16(out (R, N), bias (N), R, N)            out[r, j] = bf16(out[r, j] + bias[j]).
// Thread mapping: grid-stride loops, one element per thread per step (these ops move a few MB
// per forward; they are launch-bound, not bandwidth-bound). Assumptions: ids were checked
// against V on the host.
#include "prelude.cuh"

extern "C" __global__ void embedding_bf16(const bf16* __restrict__ table, const u32* __restrict__ ids,
                                          bf16* __restrict__ out, int dim) {
    PDL_WAIT();
    PDL_TRIGGER();
    const int t = blockIdx.x;
    const bf16* src = table + (i64)ids[t] * dim;
    bf16* dst = out + (i64)t * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

extern "C" __global__ void gelu_bf16(bf16* __restrict__ x, i64 n) {
    PDL_WAIT();
    PDL_TRIGGER();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const float v = bf2f(x[i]);
        x[i] = f2bf(0.5f * v * (1.0f + erff(v * 0.70710678118654752440f)));
    }
}

extern "C" __global__ void add_bf16(bf16* __restrict__ dst, const bf16* __restrict__ src, i64 n) {
    PDL_WAIT();
    PDL_TRIGGER();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        dst[i] = f2bf(bf2f(dst[i]) + bf2f(src[i]));
    }
}

extern "C" __global__ void add_bias_bf16(bf16* __restrict__ out, const bf16* __restrict__ bias, i64 rows, int n) {
    PDL_WAIT();
    PDL_TRIGGER();
    const i64 total = rows * n;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        out[i] = f2bf(bf2f(out[i]) + bf2f(bias[i % n]));
    }
}
