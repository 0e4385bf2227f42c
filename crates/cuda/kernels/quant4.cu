// quant4.cu: bitsandbytes NF4 / FP4 weights (the row-major flattened (N, K) weight in blocks of
// `blocksize` elements, two codes per byte, first element in the high nibble, one scale per block:
// plain f32 or double-quantized, see absmax_at in prelude.cuh). Weight = code[nibble] * scale in
// f32, rounded to bf16 where it is stored (as bitsandbytes' dequantize_4bit does).
// Kernels:
//   dequant4_bf16(packed, absmax.., code (16), blocksize, K, row_ids, row0, nrows, out (nrows, K))
//     out row i = weight row (row_ids ? row_ids[i] : row0 + i). Thread per packed byte (2 outputs),
//     grid-stride. Used for prefill (dequantize a chunk of rows, then cuBLAS) and for embeddings.
//   gemv4_bf16(x (T, K), packed, absmax.., code, blocksize, N, K, T, bias, out (T, N))
//     Fused dequantize-and-multiply for T <= 8 rows. One warp per output feature n, 4 warps per
//     block; lane l streams 16-byte words l, l+32, .. of row n (32 weights each, one scale per
//     word since blocksize >= 32), decodes in registers, and multiplies by 16-byte loads of x.
//     f32 accumulation, warp-sum, bias added in f32, one bf16 rounding.
// Assumptions: K even (dequant4); K % 32 == 0, blocksize % 32 == 0, T <= 8 (gemv4, checked on the host).
#include "prelude.cuh"

extern "C" __global__ void dequant4_bf16(const u8* __restrict__ packed, const float* __restrict__ absmax,
                                         const u8* __restrict__ absmax_q, const float* __restrict__ absmax_code,
                                         const float* __restrict__ nested, int nested_blocksize, float offset,
                                         const float* __restrict__ code, int blocksize, int K,
                                         const u32* __restrict__ row_ids, i64 row0, i64 nrows, bf16* __restrict__ out) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
    const int half_k = K / 2;
    const i64 total = nrows * half_k;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const i64 i = idx / half_k;
        const int kp = (int)(idx % half_k);
        const i64 src_row = row_ids ? (i64)row_ids[i] : row0 + i;
        const i64 f = src_row * K + 2 * kp;  // flat index of the first element of the pair
        const u8 b = packed[f >> 1];
        const float a = absmax_at(absmax, absmax_q, absmax_code, nested, nested_blocksize, offset, f / blocksize);
        __nv_bfloat162 pair;
        pair.x = f2bf(lut[b >> 4] * a);
        pair.y = f2bf(lut[b & 15] * a);
        *reinterpret_cast<__nv_bfloat162*>(out + i * K + 2 * kp) = pair;
    }
}

#define GEMV_MAX_T 8
#define GEMV_WARPS 4

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv4_bf16(const bf16* __restrict__ x, const u8* __restrict__ packed, const float* __restrict__ absmax,
               const u8* __restrict__ absmax_q, const float* __restrict__ absmax_code,
               const float* __restrict__ nested, int nested_blocksize, float offset, const float* __restrict__ code,
               int blocksize, int N, int K, int T, const bf16* __restrict__ bias, bf16* __restrict__ out) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (n >= N) return;
    const int words = K / 32;  // 16-byte words per row
    const uint4* wrow = reinterpret_cast<const uint4*>(packed + (i64)n * (K / 2));
    float acc[GEMV_MAX_T];
#pragma unroll
    for (int t = 0; t < GEMV_MAX_T; t++) acc[t] = 0.f;

    for (int w = lane; w < words; w += 32) {
        const uint4 q = __ldg(wrow + w);
        const i64 f0 = (i64)n * K + (i64)w * 32;
        const float a = absmax_at(absmax, absmax_q, absmax_code, nested, nested_blocksize, offset, f0 / blocksize);
        const u32 qw[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int part = 0; part < 4; part++) {  // 4 bytes = 8 weights per part
            float wv[8];
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const u32 byte = (qw[part] >> (8 * b)) & 0xFF;  // little-endian: byte b of the word
                wv[2 * b] = lut[byte >> 4] * a;
                wv[2 * b + 1] = lut[byte & 15] * a;
            }
            const int k = w * 32 + part * 8;
#pragma unroll
            for (int t = 0; t < GEMV_MAX_T; t++) {
                if (t < T) {
                    const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + (i64)t * K + k));
                    float xf[8];
                    unpack8_bf16(xv, xf);
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[t] += wv[e] * xf[e];
                }
            }
        }
    }
    const float bv = bias ? bf2f(bias[n]) : 0.f;
#pragma unroll
    for (int t = 0; t < GEMV_MAX_T; t++) {
        if (t < T) {
            const float s = warp_sum(acc[t]);
            if (lane == 0) out[(i64)t * N + n] = f2bf(s + bv);
        }
    }
}
