// int8.cu: LLM.int8 weights as bitsandbytes stores them: cb (N, K) int8 row-major, scb (N,) f32
// per-row absmax; weight = (cb * scb) * (1/127) in f32 (bitsandbytes' int8_vectorwise_dequant).
// Kernels:
//   dequant_int8_bf16(cb, scb, K, row_ids, row0, nrows, out (nrows, K)): out = bf16((cb * scb) / 127),
//     thread per element, grid-stride (prefill chunks and embeddings).
//   dequant_int8w_bf16(same arguments): K % 16 == 0, thread per 8 weights, 16-byte stores.
//   (The weight-only GEMV for T <= 8, no threshold, is gemv_int8w_bf16_t* in gemv8.cu.)
//   gemv_int8_mixed_bf16_t{1,2,4,8}(xq, sca, cb, scb, x, cols, count, N, K, T, bias, out): LLM.int8
//     for T <= 8: a warp owns 4 weight rows (8 warps per block); lane l streams 16-byte words
//     l, l+32, .. of them, 2 words per row in flight; dp4a on the words, then the outlier columns
//     split over the lanes, then the int8_mm epilogue below.
//   The LLM.int8 mixed-precision decomposition (threshold > 0), as bitsandbytes' MatMul8bitLt:
//   (x is first rounded to f16 and compared with the f16 threshold, as bitsandbytes casts to f16.)
//   int8_outlier_flags(x (T, K), T, K, threshold, flags (K)): flags[k] = any_t |x[t,k]| >= threshold.
//   int8_compact_cols(flags (K), K, cols (K), count (1)): one block; the flagged column indices
//     in increasing order (deterministic) and their number.
//   int8_quant_rows(x (T, K), K, threshold, flags, xq (T, K), sca (T)): one block per row;
//     sca[t] = max |x[t,k]| over |x| < threshold; xq = rint(x * __fdividef(127, sca)), 0 in flagged columns.
//   int8_mm_bf16_bm{16,64}(xq, sca, cb, scb, x, cols, count, T, N, K, bias, out (T, N)):
//     tiled int8 GEMM with dp4a: block tile BM rows x 64 features, 256 threads (16 x 16), K in
//     steps of 32 bytes through shared memory (rows padded to 9 words). Epilogue per output:
//     bf16(fp16(acc * sca[t] * scb[n] * 6.200012e-5 + bias)) + sum over outlier columns c of
//     x[t,c] * bf16(dequant(cb[n,c])), in f32, one final bf16 rounding (bitsandbytes'
//     int8_mm_dequant writes fp16, then addmm adds the outlier product to the bf16 output).
// Assumptions: K % 16 == 0 (gemv), K % 4 == 0 (int8 GEMM), T <= 8 (gemv); checked on the host.
#include "prelude.cuh"

// bitsandbytes' constants: int8_vectorwise_dequant's 1/127 and kdequant_mm_int32_fp16's ~1/127^2.
#define INV_127 7.874015718698502e-3f
#define MM_DEQUANT_CONST 6.200012e-5f

/// int8_vectorwise_dequant for one value: (cb * scb) * (1/127), each product rounded.
__device__ __forceinline__ float dequant_int8(i8 cb, float scb) { return __fmul_rn(__fmul_rn((float)cb, scb), INV_127); }
/// What `.to(torch.float16)` makes of a value.
__device__ __forceinline__ float round_f16(float x) { return __half2float(__float2half_rn(x)); }

extern "C" __global__ void dequant_int8_bf16(const i8* __restrict__ cb, const float* __restrict__ scb, int K,
                                             const u32* __restrict__ row_ids, i64 row0, i64 nrows,
                                             bf16* __restrict__ out) {
    const i64 total = nrows * K;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const i64 i = idx / K;
        const int k = (int)(idx % K);
        const i64 r = row_ids ? (i64)row_ids[i] : row0 + i;
        out[idx] = f2bf(dequant_int8(cb[r * K + k], scb[r]));
    }
}

// Fast dequantization for K % 16 == 0: thread per 8 weights, one 8-byte load, one 16-byte store (a
// warp's stores cover 512 contiguous bytes).
extern "C" __global__ void dequant_int8w_bf16(const i8* __restrict__ cb, const float* __restrict__ scb, int K,
                                              const u32* __restrict__ row_ids, i64 row0, i64 nrows,
                                              bf16* __restrict__ out) {
    const int per_row = K / 8;
    const i64 total = nrows * per_row;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const i64 i = idx / per_row;
        const int w = (int)(idx % per_row);
        const i64 r = row_ids ? (i64)row_ids[i] : row0 + i;
        const uint2 q = __ldg(reinterpret_cast<const uint2*>(cb + r * K + (i64)w * 8));
        const float s = scb[r];
        const u32 qw[2] = {q.x, q.y};
        __nv_bfloat162 h[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const u32 word = qw[e / 2];
            h[e].x = f2bf(dequant_int8((i8)((word >> (16 * (e % 2))) & 0xFF), s));
            h[e].y = f2bf(dequant_int8((i8)((word >> (16 * (e % 2) + 8)) & 0xFF), s));
        }
        *reinterpret_cast<uint4*>(out + i * K + (i64)w * 8) = *reinterpret_cast<uint4*>(h);
    }
}

// The LLM.int8 GEMV for T <= 8 (same scheme as gemv4 in quant4.cu): a warp owns GEMV_ROWS
// consecutive weight rows, lane l streams 16-byte words l, l+32, .. of them (16 weights a word),
// GEMV_UNROLL words per row in flight, activations loaded once per word and reused for the rows.
#define GEMV_ROWS 4
#define GEMV_WARPS 8
#define GEMV_UNROLL 2

// LLM.int8 for T <= 8: dp4a of the int8 activations (int8_quant_rows) with cb, then the outlier
// columns in f32, with the epilogue of int8_mm below.
template <int MAXT>
__device__ __forceinline__ void gemv_int8_mixed_body(const i8* __restrict__ xq, const float* __restrict__ sca,
                                                     const i8* __restrict__ cb, const float* __restrict__ scb,
                                                     const bf16* __restrict__ x, const int* __restrict__ cols,
                                                     const int* __restrict__ count, int N, int K, int T,
                                                     const bf16* __restrict__ bias, int epi, bf16* __restrict__ out) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_ROWS;
    if (n0 >= N) return;
    const int words = K / 16;
    int acc[GEMV_ROWS][MAXT];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int t = 0; t < MAXT; t++) acc[r][t] = 0;
    for (int w0 = lane; w0 < words; w0 += 32 * GEMV_UNROLL) {
        uint4 q[GEMV_UNROLL][GEMV_ROWS];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++)
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) {
                const int w = w0 + 32 * u, n = n0 + r;
                q[u][r] = (w < words && n < N) ? __ldg(reinterpret_cast<const uint4*>(cb + (i64)n * K + (i64)w * 16))
                                               : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int w = w0 + 32 * u;
            if (w >= words) break;
            uint4 xw[MAXT];
#pragma unroll
            for (int t = 0; t < MAXT; t++)
                if (t < T) xw[t] = *reinterpret_cast<const uint4*>(xq + (i64)t * K + (i64)w * 16);
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
                for (int t = 0; t < MAXT; t++)
                    if (t < T) {
                        int v = acc[r][t];
                        v = __dp4a((int)q[u][r].x, (int)xw[t].x, v);
                        v = __dp4a((int)q[u][r].y, (int)xw[t].y, v);
                        v = __dp4a((int)q[u][r].z, (int)xw[t].z, v);
                        acc[r][t] = __dp4a((int)q[u][r].w, (int)xw[t].w, v);
                    }
        }
    }
    float accf[GEMV_ROWS][MAXT];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int t = 0; t < MAXT; t++) accf[r][t] = 0.f;
    const int n_out = *count;
    for (int i = lane; i < n_out; i += 32) {
        const int c = cols[i];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            const int n = n0 + r;
            if (n >= N) continue;
            const float w = round_bf16(dequant_int8(cb[(i64)n * K + c], scb[n]));
#pragma unroll
            for (int t = 0; t < MAXT; t++)
                if (t < T) accf[r][t] += bf2f(x[(i64)t * K + c]) * w;
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int n = n0 + r;
#pragma unroll
        for (int t = 0; t < MAXT; t++) {
            if (t < T) {
                const int ai = warp_sum_int(acc[r][t]);
                const float o = warp_sum(accf[r][t]);
                if (lane == 0 && n < N) {
                    float v = __fmul_rn((float)ai * sca[t] * scb[n], MM_DEQUANT_CONST);
                    if (bias) v += bf2f(bias[n]);
                    v = bf2f(f2bf(round_f16(v)));
                    store_epilogue(out, (i64)t * N + n, v + o, epi);
                }
            }
        }
    }
}

#define GEMV_INT8_KERNELS(MAXT)                                                                                   \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_int8_mixed_bf16_t##MAXT(                    \
        const i8* xq, const float* sca, const i8* cb, const float* scb, const bf16* x, const int* cols,           \
        const int* count, int N, int K, int T, const bf16* bias, int epi, bf16* out) {                                     \
        gemv_int8_mixed_body<MAXT>(xq, sca, cb, scb, x, cols, count, N, K, T, bias, epi, out);                         \
    }

GEMV_INT8_KERNELS(1)
GEMV_INT8_KERNELS(2)
GEMV_INT8_KERNELS(4)
GEMV_INT8_KERNELS(8)

extern "C" __global__ void int8_outlier_flags(const bf16* __restrict__ x, int T, int K, float threshold,
                                              u8* __restrict__ flags) {
    const float thr = round_f16(threshold);
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < K; k += gridDim.x * blockDim.x) {
        u8 f = 0;
        for (int t = 0; t < T; t++) f |= (fabsf(round_f16(bf2f(x[(i64)t * K + k]))) >= thr) ? 1 : 0;
        flags[k] = f;
    }
}

#define COMPACT_THREADS 1024

extern "C" __global__ void __launch_bounds__(COMPACT_THREADS)
    int8_compact_cols(const u8* __restrict__ flags, int K, int* __restrict__ cols, int* __restrict__ count) {
    __shared__ int sums[COMPACT_THREADS];
    const int per = (K + COMPACT_THREADS - 1) / COMPACT_THREADS;
    const int begin = min(K, threadIdx.x * per), end = min(K, begin + per);
    int mine = 0;
    for (int k = begin; k < end; k++) mine += flags[k];
    sums[threadIdx.x] = mine;
    __syncthreads();
    // Hillis-Steele inclusive scan over the per-thread counts.
    for (int off = 1; off < COMPACT_THREADS; off <<= 1) {
        const int v = (threadIdx.x >= off) ? sums[threadIdx.x - off] : 0;
        __syncthreads();
        sums[threadIdx.x] += v;
        __syncthreads();
    }
    int at = sums[threadIdx.x] - mine;
    for (int k = begin; k < end; k++)
        if (flags[k]) cols[at++] = k;
    if (threadIdx.x == COMPACT_THREADS - 1) *count = sums[threadIdx.x];
}

extern "C" __global__ void int8_quant_rows(const bf16* __restrict__ x, int K, float threshold,
                                           const u8* __restrict__ flags, i8* __restrict__ xq,
                                           float* __restrict__ sca) {
    __shared__ float scratch[32];
    const bf16* xr = x + (i64)blockIdx.x * K;
    i8* qr = xq + (i64)blockIdx.x * K;
    const float thr = round_f16(threshold);
    float m = 0.f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        const float a = fabsf(round_f16(bf2f(xr[k])));
        if (threshold <= 0.f || a < thr) m = fmaxf(m, a);
    }
    const float absmax = block_max(m, scratch);
    const float s = __fdividef(127.0f, absmax);
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        const float v = round_f16(bf2f(xr[k]));
        int q = 0;
        if (!flags[k] && absmax > 0.f) q = __float2int_rn(v * s);
        qr[k] = (i8)max(-128, min(127, q));
    }
    if (threadIdx.x == 0) sca[blockIdx.x] = absmax;
}

#define MM_BN 64
#define MM_KB 32  // bytes of K per step
#define MM_LDW 9  // words per smem row (8 + 1 pad)

template <int BM>
__device__ __forceinline__ void int8_mm_body(const i8* __restrict__ xq, const float* __restrict__ sca,
                                             const i8* __restrict__ cb, const float* __restrict__ scb,
                                             const bf16* __restrict__ x, const int* __restrict__ cols,
                                             const int* __restrict__ count, int T, int N, int K,
                                             const bf16* __restrict__ bias, int epi, bf16* __restrict__ out) {
    constexpr int RM = BM / 16;  // rows per thread
    __shared__ int Xs[BM][MM_LDW];
    __shared__ int Ws[MM_BN][MM_LDW];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int t0 = blockIdx.y * BM, n0 = blockIdx.x * MM_BN;
    int acc[RM][4];
#pragma unroll
    for (int i = 0; i < RM; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0;

    const int kwords = K / 4;
    for (int kw0 = 0; kw0 < kwords; kw0 += MM_KB / 4) {
        __syncthreads();
        for (int e = tid; e < BM * 8; e += 256) {
            const int rr = e >> 3, w = e & 7, t = t0 + rr, kw = kw0 + w;
            Xs[rr][w] = (t < T && kw < kwords) ? *reinterpret_cast<const int*>(xq + (i64)t * K + 4 * kw) : 0;
        }
        for (int e = tid; e < MM_BN * 8; e += 256) {
            const int rr = e >> 3, w = e & 7, n = n0 + rr, kw = kw0 + w;
            Ws[rr][w] = (n < N && kw < kwords) ? __ldg(reinterpret_cast<const int*>(cb + (i64)n * K + 4 * kw)) : 0;
        }
        __syncthreads();
#pragma unroll
        for (int w = 0; w < 8; w++) {
            int a[RM], b[4];
#pragma unroll
            for (int i = 0; i < RM; i++) a[i] = Xs[ty + 16 * i][w];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = Ws[tx + 16 * j][w];
#pragma unroll
            for (int i = 0; i < RM; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = __dp4a(a[i], b[j], acc[i][j]);
        }
    }
    const int n_out = count ? *count : 0;
#pragma unroll
    for (int i = 0; i < RM; i++) {
        const int t = t0 + ty + 16 * i;
        if (t >= T) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = n0 + tx + 16 * j;
            if (n >= N) continue;
            float v = __fmul_rn((float)acc[i][j] * sca[t] * scb[n], MM_DEQUANT_CONST);
            if (bias) v += bf2f(bias[n]);
            v = bf2f(f2bf(__half2float(__float2half_rn(v))));
            float o = 0.f;
            for (int c = 0; c < n_out; c++) {
                const int k = cols[c];
                const float w = round_bf16(dequant_int8(cb[(i64)n * K + k], scb[n]));
                o += bf2f(x[(i64)t * K + k]) * w;
            }
            store_epilogue(out, (i64)t * N + n, v + o, epi);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    int8_mm_bf16_bm16(const i8* xq, const float* sca, const i8* cb, const float* scb, const bf16* x, const int* cols,
                      const int* count, int T, int N, int K, const bf16* bias, int epi, bf16* out) {
    int8_mm_body<16>(xq, sca, cb, scb, x, cols, count, T, N, K, bias, epi, out);
}

extern "C" __global__ void __launch_bounds__(256)
    int8_mm_bf16_bm64(const i8* xq, const float* sca, const i8* cb, const float* scb, const bf16* x, const int* cols,
                      const int* count, int T, int N, int K, const bf16* bias, int epi, bf16* out) {
    int8_mm_body<64>(xq, sca, cb, scb, x, cols, count, T, N, K, bias, epi, out);
}
