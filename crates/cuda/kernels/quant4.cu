// quant4.cu: bitsandbytes NF4 / FP4 weights (the row-major flattened (N, K) weight in blocks of
// `blocksize` elements, two codes per byte, first element in the high nibble, one scale per block:
// plain f32 or double-quantized, see absmax_at in prelude.cuh). Weight = code[nibble] * scale in
// f32, rounded to bf16 where it is stored (as bitsandbytes' dequantize_4bit does).
// Kernels:
//   dequant4_bf16(packed, absmax.., code (16), blocksize, K, row_ids, row0, nrows, out (nrows, K))
//     out row i = weight row (row_ids ? row_ids[i] : row0 + i). Thread per packed byte (2 outputs),
//     grid-stride. Used for prefill (dequantize a chunk of rows, then cuBLAS) and for embeddings.
//   dequant4w_bf16(same arguments): the same for K % 32 == 0 and blocksize % 32 == 0: thread per
//     16-byte word (32 weights, one scale), four 16-byte stores.
//   gemv4_bf16_t{1,2,4,8}(x (T, K), packed, absmax.., code, blocksize, N, K, T, bias, out (T, N))
//     Fused dequantize-and-multiply for T <= 1/2/4/8 rows. A warp owns 4 consecutive weight rows
//     (8 warps, 32 rows per block); lane l streams 16-byte words l, l+32, .. of those rows, two
//     words per row in flight (32 weights a word, one scale a word since blocksize >= 32),
//     decodes in registers and multiplies by 16-byte loads of x reused for the 4 rows.
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

// Fast dequantization when every row starts on a 16-byte word: thread per word (32 weights, one
// scale), 16-byte load, four 16-byte stores.
extern "C" __global__ void dequant4w_bf16(const u8* __restrict__ packed, const float* __restrict__ absmax,
                                          const u8* __restrict__ absmax_q, const float* __restrict__ absmax_code,
                                          const float* __restrict__ nested, int nested_blocksize, float offset,
                                          const float* __restrict__ code, int blocksize, int K,
                                          const u32* __restrict__ row_ids, i64 row0, i64 nrows, bf16* __restrict__ out) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
    const int wpr = K / 32;  // words per row
    const i64 total = nrows * wpr;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const i64 i = idx / wpr;
        const int w = (int)(idx % wpr);
        const i64 src_row = row_ids ? (i64)row_ids[i] : row0 + i;
        const i64 f = src_row * K + (i64)w * 32;
        const uint4 q = __ldg(reinterpret_cast<const uint4*>(packed + (f >> 1)));
        const float a = absmax_at(absmax, absmax_q, absmax_code, nested, nested_blocksize, offset, f / blocksize);
        const u32 qw[4] = {q.x, q.y, q.z, q.w};
        uint4* dst = reinterpret_cast<uint4*>(out + i * K + (i64)w * 32);
#pragma unroll
        for (int part = 0; part < 4; part++) {
            __nv_bfloat162 h[4];
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const u32 byte = (qw[part] >> (8 * b)) & 0xFF;
                h[b].x = f2bf(lut[byte >> 4] * a);
                h[b].y = f2bf(lut[byte & 15] * a);
            }
            dst[part] = *reinterpret_cast<uint4*>(h);
        }
    }
}

// GEMV: each warp owns GEMV_ROWS consecutive weight rows and streams them together, so the
// activation words it loads are reused GEMV_ROWS times from registers; each lane keeps
// GEMV_UNROLL words per row (16 bytes each) in flight. (Measured on an H200: a variant decoding
// bytes through a 256-entry shared table of code pairs, 4 words in flight, ran 1.4x slower at
// T=1, likely from bank conflicts on the 8-byte table and 127 registers; see NOTES.md.) The double-quant code book sits in shared
// memory so a scale costs one byte load plus an L1-resident nested absmax.
#define GEMV_ROWS 4
#define GEMV_WARPS 8
#define GEMV_UNROLL 2

__device__ __forceinline__ float absmax_lut(const float* plain, const u8* q, const float* lut2, const float* nested,
                                            int nested_blocksize, float offset, i64 i) {
    if (plain != nullptr) return __ldg(plain + i);
    return __fadd_rn(__fmul_rn(lut2[__ldg(q + i)], __ldg(nested + i / nested_blocksize)), offset);
}

template <int MAXT>
__device__ __forceinline__ void gemv4_body(const bf16* __restrict__ x, const u8* __restrict__ packed,
                                           const float* __restrict__ absmax, const u8* __restrict__ absmax_q,
                                           const float* __restrict__ absmax_code, const float* __restrict__ nested,
                                           int nested_blocksize, float offset, const float* __restrict__ code,
                                           int blocksize, int N, int K, int T, const bf16* __restrict__ bias,
                                           int epi, bf16* __restrict__ out) {
    __shared__ float lut[16];
    __shared__ float lut2[256];
    if (threadIdx.x < 16) lut[threadIdx.x] = code[threadIdx.x];
    if (absmax_code != nullptr)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) lut2[i] = absmax_code[i];
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_ROWS;
    if (n0 >= N) return;
    const int words = K / 32;
    float acc[GEMV_ROWS][MAXT];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int t = 0; t < MAXT; t++) acc[r][t] = 0.f;

    for (int w0 = lane; w0 < words; w0 += 32 * GEMV_UNROLL) {
        uint4 q[GEMV_UNROLL][GEMV_ROWS];
        float a[GEMV_UNROLL][GEMV_ROWS];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int w = w0 + 32 * u;
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) {
                const int n = n0 + r;
                const bool ok = (w < words) && (n < N);
                const i64 f = (i64)n * K + (i64)w * 32;
                q[u][r] = ok ? __ldg(reinterpret_cast<const uint4*>(packed + (f >> 1))) : make_uint4(0, 0, 0, 0);
                a[u][r] = ok ? absmax_lut(absmax, absmax_q, lut2, nested, nested_blocksize, offset, f / blocksize) : 0.f;
            }
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int w = w0 + 32 * u;
            if (w >= words) break;
#pragma unroll
            for (int part = 0; part < 4; part++) {
                const int k = w * 32 + part * 8;
                float xf[MAXT][8];
#pragma unroll
                for (int t = 0; t < MAXT; t++)
                    if (t < T) unpack8_bf16(__ldg(reinterpret_cast<const uint4*>(x + (i64)t * K + k)), xf[t]);
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; r++) {
                    const u32 word = part == 0 ? q[u][r].x : part == 1 ? q[u][r].y : part == 2 ? q[u][r].z : q[u][r].w;
                    float wv[8];
#pragma unroll
                    for (int b = 0; b < 4; b++) {
                        const u32 byte = (word >> (8 * b)) & 0xFF;
                        wv[2 * b] = lut[byte >> 4] * a[u][r];
                        wv[2 * b + 1] = lut[byte & 15] * a[u][r];
                    }
#pragma unroll
                    for (int t = 0; t < MAXT; t++)
                        if (t < T)
#pragma unroll
                            for (int e = 0; e < 8; e++) acc[r][t] += wv[e] * xf[t][e];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int n = n0 + r;
        const float bv = (bias != nullptr && n < N) ? bf2f(bias[n]) : 0.f;
#pragma unroll
        for (int t = 0; t < MAXT; t++) {
            if (t < T) {
                const float s = warp_sum(acc[r][t]);
                if (lane == 0 && n < N) store_epilogue(out, (i64)t * N + n, s + bv, epi);
            }
        }
    }
}

#define GEMV4_KERNEL(MAXT)                                                                                     \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32) gemv4_bf16_t##MAXT(                           \
        const bf16* x, const u8* packed, const float* absmax, const u8* absmax_q, const float* absmax_code,    \
        const float* nested, int nested_blocksize, float offset, const float* code, int blocksize, int N, int K, \
        int T, const bf16* bias, int epi, bf16* out) {                                                                \
        gemv4_body<MAXT>(x, packed, absmax, absmax_q, absmax_code, nested, nested_blocksize, offset, code,     \
                         blocksize, N, K, T, bias, epi, out);                                                       \
    }

GEMV4_KERNEL(1)
GEMV4_KERNEL(2)
GEMV4_KERNEL(4)
GEMV4_KERNEL(8)
