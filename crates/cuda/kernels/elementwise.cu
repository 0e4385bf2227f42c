// elementwise.cu: one-pass kernels over bf16 activations.
// Kernels:
//   embedding_bf16(table (V, D), ids (T), out (T, D))   grid (T), threads stride over D.
//   gelu_bf16(x, n)                                      exact erf GELU in f32, in place.
//   add_bf16(dst, src, n)                                dst = bf16(dst + src) in f32.
//   add_bias_bf16(out (R, N), bias (N), R, N)            out[r, j] = bf16(out[r, j] + bias[j]).
//   lab_read_weights(a, na, b, nb, sink)                 lab only (PEREGRINE_LAB_READ): reads na + nb
//                                                        16-byte words once (a product's weights and
//                                                        scales), writes nothing: a GEMV's read ceiling
//                                                        in place, inside the decode's graph and PDL chain.
// Thread mapping: grid-stride loops, one element per thread per step (these ops move a few MB
// per decode step; they are launch-bound, not bandwidth-bound), except gelu_bf16, which reads and
// writes 16-byte words (in a 2,048-token prefill it moves 268 MB per layer). Assumptions: ids were checked
// against V on the host.
#include "prelude.cuh"

extern "C" __global__ void embedding_bf16(const bf16* __restrict__ table, const u32* __restrict__ ids,
                                          bf16* __restrict__ out, int dim) {
    PDL_ENTER();
    const int t = blockIdx.x;
    const bf16* src = table + (i64)ids[t] * dim;
    bf16* dst = out + (i64)t * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

__device__ __forceinline__ float gelu_erf(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f)); }

// Eight values per 16-byte word where x is 16-byte aligned (the prefill's (T, F) MLP buffer), then
// the tail one by one.
extern "C" __global__ void gelu_bf16(bf16* __restrict__ x, i64 n) {
    PDL_ENTER();
    const i64 first = blockIdx.x * (i64)blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
    const i64 words = (reinterpret_cast<u64>(x) % 16 == 0) ? n / 8 : 0;
    uint4* xw = reinterpret_cast<uint4*>(x);
    for (i64 i = first; i < words; i += stride) {
        float f[8];
        unpack8_bf16(xw[i], f);
        __nv_bfloat162 h[4];
#pragma unroll
        for (int e = 0; e < 4; e++) h[e] = __floats2bfloat162_rn(gelu_erf(f[2 * e]), gelu_erf(f[2 * e + 1]));
        xw[i] = *reinterpret_cast<uint4*>(h);
    }
    for (i64 i = words * 8 + first; i < n; i += stride) x[i] = f2bf(gelu_erf(bf2f(x[i])));
}

extern "C" __global__ void add_bf16(bf16* __restrict__ dst, const bf16* __restrict__ src, i64 n) {
    PDL_ENTER();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        dst[i] = f2bf(bf2f(dst[i]) + bf2f(src[i]));
    }
}

extern "C" __global__ void add_bias_bf16(bf16* __restrict__ out, const bf16* __restrict__ bias, i64 rows, int n) {
    PDL_ENTER();
    const i64 total = rows * n;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        out[i] = f2bf(bf2f(out[i]) + bf2f(bias[i % n]));
    }
}

// The read a decode GEMV cannot beat: the same bytes streamed once, 4 loads in flight a thread, the
// first ones issued before the PDL wait (as the GEMVs issue their first weights). One wave of
// blocks. sink is written only if the XOR of every word is a magic value (keeps the loads alive).
__device__ __forceinline__ uint4 lab_read_word(const uint4* a, i64 na, const uint4* b, i64 i) {
    uint4 v;
    const uint4* p = i < na ? a + i : b + (i - na);
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

extern "C" __global__ void __launch_bounds__(256) lab_read_weights(const uint4* __restrict__ a, i64 na, const uint4* __restrict__ b,
                                                                   i64 nb, u32* __restrict__ sink) {
    const i64 n = na + nb, stride = (i64)gridDim.x * blockDim.x;
    u32 acc = 0;
    bool entered = false;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += 4 * stride) {
        uint4 v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) v[u] = i + u * stride < n ? lab_read_word(a, na, b, i + u * stride) : make_uint4(0, 0, 0, 0);
        if (!entered) {
            PDL_ENTER();
            entered = true;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    if (!entered) PDL_ENTER();
    if (acc == 0x9E3779B9u) sink[0] = acc;
}
