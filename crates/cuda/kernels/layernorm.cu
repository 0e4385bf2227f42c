// layernorm.cu: LayerNorm over the last dimension of bf16 rows, statistics in f32.
// Kernels:
//   layernorm_bf16(x (R, D), weight (D), bias (D), out (R, D), D, eps)
//   layernorm2_vec_bf16: rows held in registers, one or two outputs (see its comment).
// Thread mapping: one block per row (256 threads); pass 1 sums for the mean, pass 2 sums the
// squared deviations (two-pass, like PyTorch's f32 accumulation, no cancellation), pass 3 writes
// (x - mean) / sqrt(var + eps) * w + b rounded to bf16. The row is re-read from L1/L2.
// Assumptions: out may alias x (each element is read before it is written by the same thread).
#include "prelude.cuh"

extern "C" __global__ void layernorm_bf16(const bf16* __restrict__ x, const bf16* __restrict__ weight,
                                          const bf16* __restrict__ bias, bf16* out, int dim, float eps) {
    PDL_ENTER();
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

// layernorm2_vec_bf16(x (R, D), w1, b1, out1, w2, b2, out2 (may be null), D, eps): the same
// LayerNorm for rows that fit in registers (D % 8 == 0, D <= 8 * blockDim.x * LN_VPT): each
// thread loads its 16-byte words once, the statistics are two block sums over registers, and
// the normalised row is written with one or two (weight, bias) pairs: the two norms of a
// Falcon-40B block share x and its statistics. One block per row, blockDim.x a multiple of 32.
// Same arithmetic as layernorm_bf16 (two-pass mean then variance, f32), summed in another order.
#define LN_VPT 2
extern "C" __global__ void layernorm2_vec_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w1,
                                               const bf16* __restrict__ b1, bf16* out1,
                                               const bf16* __restrict__ w2, const bf16* __restrict__ b2,
                                               bf16* out2, int dim, float eps) {
    PDL_ENTER();
    __shared__ float scratch[32];
    const int words = dim / 8;
    const uint4* xr = reinterpret_cast<const uint4*>(x + (i64)blockIdx.x * dim);
    float v[LN_VPT][8];
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < LN_VPT; j++) {
        const int w = threadIdx.x + j * blockDim.x;
        if (w < words) {
            unpack8_bf16(xr[w], v[j]);
#pragma unroll
            for (int e = 0; e < 8; e++) s += v[j][e];
        }
    }
    const float mean = block_sum(s, scratch) / (float)dim;
    float q = 0.f;
#pragma unroll
    for (int j = 0; j < LN_VPT; j++) {
        const int w = threadIdx.x + j * blockDim.x;
        if (w < words)
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const float d = v[j][e] - mean;
                q += d * d;
            }
    }
    const float rstd = 1.0f / sqrtf(block_sum(q, scratch) / (float)dim + eps);
#pragma unroll
    for (int j = 0; j < LN_VPT; j++) {
        const int w = threadIdx.x + j * blockDim.x;
        if (w >= words) continue;
        float wf[8], bf[8];
        __nv_bfloat162 h[4];
        unpack8_bf16(reinterpret_cast<const uint4*>(w1)[w], wf);
        unpack8_bf16(reinterpret_cast<const uint4*>(b1)[w], bf);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            h[e].x = f2bf((v[j][2 * e] - mean) * rstd * wf[2 * e] + bf[2 * e]);
            h[e].y = f2bf((v[j][2 * e + 1] - mean) * rstd * wf[2 * e + 1] + bf[2 * e + 1]);
        }
        reinterpret_cast<uint4*>(out1 + (i64)blockIdx.x * dim)[w] = *reinterpret_cast<uint4*>(h);
        if (out2 == nullptr) continue;
        unpack8_bf16(reinterpret_cast<const uint4*>(w2)[w], wf);
        unpack8_bf16(reinterpret_cast<const uint4*>(b2)[w], bf);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            h[e].x = f2bf((v[j][2 * e] - mean) * rstd * wf[2 * e] + bf[2 * e]);
            h[e].y = f2bf((v[j][2 * e + 1] - mean) * rstd * wf[2 * e + 1] + bf[2 * e + 1]);
        }
        reinterpret_cast<uint4*>(out2 + (i64)blockIdx.x * dim)[w] = *reinterpret_cast<uint4*>(h);
    }
}
