// gemv8.cu: the decode GEMVs, out (T, N) = epi(x (T, K) @ W^T + bias) for T <= 8 activation rows,
// streaming the weight matrix once at the memory roofline, for two weight formats:
//   bf16 (Dense linears): w (N, K) bf16 row-major, 8 weights per 16-byte word.
//   LLM.int8 weight-only (no threshold): cb (N, K) int8 row-major + scb (N,) f32; weight =
//     cb * scb / 127 with the scale factored out of the sum: y = (acc * scb[n]) * (1/127), then + bias.
// Kernels (module "gemv8"; arguments x, w or cb, scb (null for bf16), N, K, T, bias, epi, out):
//   gemv_bf16_t1                      T = 1 (T >= 2 goes to cuBLAS: faster in the lab)
//   gemv_int8w_bf16_t1                T = 1
//   gemv_mma_int8w_bf16(_t16, _t32)   2 <= T <= 8 (16, 32), K % 64 == 0 (tensor cores, gemv_mma_body)
//   gemv_int8w_bf16_t{2,4,8}          T <= 2/4/8 when K % 64 != 0
//   gemv_{bf16,int8w_bf16}_t1_pair    two T = 1 products in one launch (both argument lists, blocks0)
//   gemv_{bf16,int8w_bf16}_t1_pair_ln the same from the row before its LayerNorms (see the macro)
//   gemv_{bf16,int8w_bf16}_t1_dual    out += x.W^T + x2.W2^T, T = 1, one pass (see Seg2)
// Thread mapping (gemv_body): one wave of blocks (the host launches at most GEMV8_BLOCKS_PER_SM
//   blocks per SM, all resident), block b owns the rows [N*b/G, N*(b+1)/G): an equal share to one
//   row, so no block waits on a second wave and every block ends at about the same time. The block
//   walks its rows R at a time; all its warps split K: lane l of warp j reads 16-byte words
//   j*32 + l + i*32*WARPS of the R rows (each warp load instruction covers 512 contiguous bytes of
//   a row), U words per row per step, the next step's words loaded before the current ones are
//   used (register double buffering, also across row groups). x is read through L1 (8 bf16 per
//   load, reused for the R rows); weights bypass L1 (each byte is read once). f32 accumulation;
//   after each row group the warps' butterfly sums are parked in shared memory, and every
//   GEMV8_BATCH groups one barrier lets thread (group, r, t) add them in warp order, apply bias and
//   the epilogue (store_epilogue: one bf16 rounding); two batches in turn. A step whose words are
//   all in range loads them without predicates (load_words). gemv_mma_body (below) keeps the same
//   blocks and rows.
// Key design choice (int8): a byte becomes an f32 without the int->float converter (quarter rate
//   on Hopper, which capped the previous kernel near 2 TB/s): flip its sign bit (b + 128, one LOP
//   per 4 bytes) and place it with one PRMT. The T <= 4 CUDA-core kernels (GEMV8_BIASED) put it
//   under the exponent of 2^15: the float 32896 + w, whose product with a bf16 x is exact in f32;
//   each row's sum of 8 such products starts from -32896 * (those 8 x), computed once for the R
//   rows, so the sum is the weights' own up to its roundings (magnitudes up to 32896 |x|: about
//   1e-4 of the sum of |w x|, far below the bf16 output's rounding). One PRMT + one FFMA a weight
//   instead of PRMT + FADD + FFMA: int8 decode 96.1-96.4 -> 98.8-98.9 tok/s (2026-11-30,
//   crates/cuda/NOTES.md). The T <= 8 kernel keeps the exact form (under 2^23, minus 2^23 + 128
//   with one FADD): the chunk sums' registers spilled there.
// Launched as programmatic dependents (Grid::with_pdl): each block issues its first weight loads
//   before PDL_WAIT, so they overlap the end of the previous kernel.
// Assumptions (checked on the host): K % 8 (bf16) or K % 16 (int8) == 0, x and w 16-byte aligned,
//   T <= MAXT of the instantiation; any grid is correct (more blocks than resident only lose the
//   single wave).
#include "prelude.cuh"

// bitsandbytes' int8_vectorwise_dequant constant 1/127.
#define INV_127 7.874015718698502e-3f

/// A 16-byte load of weights: read-only path, not kept in L1 (each weight is read once).
__device__ __forceinline__ uint4 ld_weights(const u8* p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

/// 1: the CUDA-core kernels for T <= 4 take int8 weights as w + BIAS (one PRMT a weight, no FADD)
/// and start each row's 8-weight chunk sum from -BIAS * (the chunk's x sum); 0: exact w (PRMT + FADD).
/// (T <= 8 keeps the exact weights: the chunk sums' registers spilled there.)
#ifndef GEMV8_BIASED
#define GEMV8_BIASED 1
#endif

/// The 4 signed bytes of `w` as exact f32 (see the file comment), each byte b flipped to b + 128:
/// BIASED, placed under the exponent of 2^15 by one PRMT, the float 32896 + w ((32896 + w) * x is
/// then exact in f32 for a bf16 x, so only the sums round); otherwise placed under 2^23 and
/// 2^23 + 128 subtracted, the float w.
template <bool BIASED>
__device__ __forceinline__ void int8x4_to_f32(u32 w, float* f) {
    const u32 u = w ^ 0x80808080u;  // each byte b -> b + 128 in [0, 255]
#pragma unroll
    for (int i = 0; i < 4; i++)
        f[i] = BIASED ? __int_as_float(__byte_perm(u, 0x47000000u, 0x7504u | (i << 4)))
                      : __int_as_float(__byte_perm(u, 0x4B000000u, 0x7540u | i)) - 8388736.0f;
}

/// bf16 weights: 8 per word, no scale.
struct WeightsBf16 {
    static constexpr int PER_WORD = 8;
    static constexpr bool SCALED = false;  // finish() is the identity
    static constexpr float BIAS = 0.f;     // chunk() gives the weights themselves
    /// The 8 weights of chunk `c` (8 weights; a bf16 word is one chunk) of word q.
    __device__ static __forceinline__ void chunk(const uint4& q, int, float* w) { unpack8_bf16(q, w); }
    __device__ static __forceinline__ float finish(float acc, const float*, int) { return acc; }
};

/// LLM.int8 weight-only: 16 weights per word (2 chunks of 8), row scale applied at the end.
struct WeightsInt8 {
    static constexpr int PER_WORD = 16;
    static constexpr bool SCALED = true;  // finish() applies the row's scale
    /// chunk<true>() gives w + BIAS (dot_words then subtracts BIAS * x once a chunk), chunk() w.
    static constexpr float BIAS = 32896.f;
    template <bool BIASED = false>
    __device__ static __forceinline__ void chunk(const uint4& q, int c, float* w) {
        int8x4_to_f32<BIASED>(c == 0 ? q.x : q.z, w);
        int8x4_to_f32<BIASED>(c == 0 ? q.y : q.w, w + 4);
    }
    /// (acc * scb) * (1/127), rounded as bitsandbytes' f32 dequantization (and the previous kernel).
    __device__ static __forceinline__ float finish(float acc, const float* scb, int n) {
        return __fmul_rn(acc * scb[n], INV_127);
    }
};

/// acc[r][t] += x[t, k of the words] . weights of q[u][r] for the U words from w0 (stride `step`).
template <class W, int MAXT, int R, int U, bool XS = false>
__device__ __forceinline__ void dot_words(float (&acc)[R][MAXT], const uint4 (&q)[U][R], const bf16* __restrict__ x,
                                          int K, int T, int w0, int step, int words) {
    constexpr int CHUNKS = W::PER_WORD / 8;
    constexpr bool BIASED = GEMV8_BIASED && W::BIAS != 0.f && MAXT <= 4;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int w = w0 + u * step;
        if (w >= words) break;
#pragma unroll
        for (int c = 0; c < CHUNKS; c++) {
            const int k = w * W::PER_WORD + c * 8;
            float xf[MAXT][8];
#pragma unroll
            for (int t = 0; t < MAXT; t++)
                if (t < T) {
                    const uint4* xp = reinterpret_cast<const uint4*>(x + (i64)t * K + k);
                    unpack8_bf16(XS ? *xp : __ldg(xp), xf[t]);  // XS: x in shared memory
                }
            // BIASED: each row's chunk sum starts from -BIAS * (the chunk's x sum), shared by the
            // R rows, so the biased weights' products add up to the weights' own (rounding: the sums
            // carry magnitudes up to BIAS * |x|, about 1e-4 of the sum of |w x|: the file comment).
            float base[MAXT];
            if constexpr (BIASED) {
#pragma unroll
                for (int t = 0; t < MAXT; t++)
                    if (t < T) {
                        const float* v = xf[t];
                        base[t] = -W::BIAS * (((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])));
                    }
            }
#pragma unroll
            for (int r = 0; r < R; r++) {
                float wv[8];
                if constexpr (BIASED) W::template chunk<true>(q[u][r], c, wv);
                else W::chunk(q[u][r], c, wv);
#pragma unroll
                for (int t = 0; t < MAXT; t++)
                    if (t < T) {
                        float a = BIASED ? base[t] : acc[r][t];
#pragma unroll
                        for (int e = 0; e < 8; e++) a = fmaf(wv[e], xf[t][e], a);
                        acc[r][t] = BIASED ? acc[r][t] + a : a;
                    }
            }
        }
    }
}

/// 1: load_words takes an unpredicated path when every word of the step is in range (0: always the
/// predicated, zero-filling one; 5.8% slower at int8 decode, 2026-11-30).
#ifndef GEMV8_FASTLOAD
#define GEMV8_FASTLOAD 1
#endif

/// Load U words of each of the R rows from word w0 on (stride `step` words); zeros past the row
/// or for rows at or past `rows_end` (r >= valid).
template <int R, int U>
__device__ __forceinline__ void load_words(uint4 (&q)[U][R], const u8* row0, i64 row_bytes, int valid, int w0,
                                           int step, int words) {
    if (GEMV8_FASTLOAD && valid >= R && w0 + (U - 1) * step < words) {  // every word in range: no predicates
        const u8* p = row0 + (i64)w0 * 16;
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++) q[u][r] = ld_weights(p + r * row_bytes + (i64)u * step * 16);
        return;
    }
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int w = w0 + u * step;
            q[u][r] = (w < words && r < valid) ? ld_weights(row0 + r * row_bytes + (i64)w * 16) : make_uint4(0, 0, 0, 0);
        }
}

/// Row groups whose warp sums wait in shared memory for one barrier (gemv_body): one barrier per
/// GEMV8_BATCH groups instead of one per group.
#ifndef GEMV8_BATCH
#define GEMV8_BATCH 4
#endif

/// Park this warp's sums of a row group in its part of `slot` ([WARPS][NV] floats: acc's R x MAXT,
/// or DUAL's R pairs of acc and acc2, whose W2 sums only scaled weights keep apart) and zero them.
template <class W, int MAXT, int R, int WARPS, bool DUAL>
__device__ __forceinline__ void park_group(float (&acc)[R][MAXT], float (&acc2)[R][1], float* slot) {
    constexpr int NV = R * MAXT * (DUAL ? 2 : 1);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < MAXT; t++) {
            const float v = warp_sum(acc[r][t]);
            if (lane == 0) slot[warp * NV + (DUAL ? 2 * r : r * MAXT + t)] = v;
            acc[r][t] = 0.f;
        }
    if (DUAL && W::SCALED)
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float v = warp_sum(acc2[r][0]);
            if (lane == 0) slot[warp * NV + 2 * r + 1] = v;
            acc2[r][0] = 0.f;
        }
}

/// The second product of a dual GEMV (gemv_body DUAL, T = 1): out[n] += x.W[n] + x2.W2[n] (+ both
/// biases) with W (N, K) and W2 (N, K2) walked row by row as if concatenated along K, so one launch
/// streams both and every output is finished in one place (Falcon's dense + dense_4h_to_h into x).
struct Seg2 {
    const bf16* x;
    const u8* w;
    const float* scb;
    int K;
    const bf16* bias;
};

/// Finish the `nslots` row groups parked in `batch` (slot j: the group of rows row0 + R j ..): a
/// barrier, then thread i takes output i: the warps' sums in warp order, the scale, the biases and
/// the epilogue with one bf16 rounding (DUAL, T = 1: out[n] gets both products). Every thread of the
/// block must call it.
template <class W, int MAXT, int R, int WARPS, bool DUAL>
__device__ __forceinline__ void flush_groups(const float* batch, int nslots, int row0, int row_end,
                                             const float* __restrict__ scb, const Seg2& s2, int N, int T,
                                             const bf16* __restrict__ bias, int epi, bf16* __restrict__ out) {
    constexpr int NV = R * MAXT * (DUAL ? 2 : 1), NO = R * MAXT;  // values a warp parks, outputs a group
    __syncthreads();
    for (int i = threadIdx.x; i < nslots * NO; i += WARPS * 32) {
        const int j = i / NO, o = i % NO, r = o / MAXT, t = o % MAXT, n = row0 + j * R + r;
        if (t >= T || n >= row_end) continue;
        const float* p = batch + j * WARPS * NV;
        float s = 0.f, s2sum = 0.f;
#pragma unroll
        for (int k = 0; k < WARPS; k++) {
            if (!DUAL) s += p[k * NV + o];
            else {
                s += p[k * NV + 2 * r];
                if (W::SCALED) s2sum += p[k * NV + 2 * r + 1];
            }
        }
        float v = W::finish(s, scb, n);
        if (DUAL && W::SCALED) v += W::finish(s2sum, s2.scb, n);
        if (bias != nullptr) v += bf2f(bias[n]);
        if (DUAL && s2.bias != nullptr) v += bf2f(s2.bias[n]);
        store_epilogue(out, (i64)t * N + n, v, epi);
    }
}

/// Word i of the normalised row: xs[8i..8i+8) = (x - mean) * rstd * w + b, rounded to bf16.
__device__ __forceinline__ void ln_store_word(uint4 xv, int i, float mean, float rstd, const bf16* __restrict__ w,
                                              const bf16* __restrict__ b, bf16* xs) {
    float v[8], wf[8], bf[8];
    unpack8_bf16(xv, v);
    unpack8_bf16(reinterpret_cast<const uint4*>(w)[i], wf);
    unpack8_bf16(reinterpret_cast<const uint4*>(b)[i], bf);
    __nv_bfloat162 h[4];
#pragma unroll
    for (int e = 0; e < 4; e++) {
        h[e].x = f2bf((v[2 * e] - mean) * rstd * wf[2 * e] + bf[2 * e]);
        h[e].y = f2bf((v[2 * e + 1] - mean) * rstd * wf[2 * e + 1] + bf[2 * e + 1]);
    }
    reinterpret_cast<uint4*>(xs)[i] = *reinterpret_cast<uint4*>(h);
}

/// xs (D bf16, shared memory) = LayerNorm of the row x (D % 8 == 0, x 16-byte aligned) with weight w
/// and bias b, f32 statistics. x comes in with cp.async (all of a thread's words in flight at once, on
/// a counter apart from the weight loads already in flight, so the norm never waits for those; each
/// thread reads back only its own words, so no barrier comes before the sums), then ONE block
/// reduction of the sums of d = x - x[0] and d^2: mean = x[0] + S1 / D, var = S2 / D - (S1 / D)^2 (the
/// shift keeps the difference well conditioned). The standalone layernorm2_vec_bf16 takes two passes
/// (mean, then squared deviations), so the two can differ in the last bit of a normalised value.
/// Every thread of the block must call it; it ends with a barrier.
__device__ __forceinline__ void layer_norm_to_smem(const bf16* __restrict__ x, int D, const bf16* __restrict__ w,
                                                   const bf16* __restrict__ b, float eps, bf16* xs) {
    __shared__ float partial[2][32];
    const int words = D / 8;
    const uint4* xr = reinterpret_cast<const uint4*>(x);
    const u32 xs_base = (u32)__cvta_generic_to_shared(xs);
    for (int i = threadIdx.x; i < words; i += blockDim.x)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(xs_base + 16u * (u32)i), "l"(xr + i) : "memory");
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;" ::: "memory");
    const uint4* xsw = reinterpret_cast<const uint4*>(xs);
    const float shift = bf2f(__ldg(x));
    float s1 = 0.f, s2 = 0.f;
    for (int i = threadIdx.x; i < words; i += blockDim.x) {
        float v[8];
        unpack8_bf16(xsw[i], v);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const float d = v[e] - shift;
            s1 += d;
            s2 = fmaf(d, d, s2);
        }
    }
    s1 = warp_sum(s1);
    s2 = warp_sum(s2);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    if (lane == 0) partial[0][warp] = s1, partial[1][warp] = s2;
    __syncthreads();
    float t1 = 0.f, t2 = 0.f;
    for (int j = 0; j < nwarps; j++) t1 += partial[0][j], t2 += partial[1][j];  // the same order in every thread
    const float m1 = t1 / (float)D, mean = shift + m1;
    const float rstd = 1.0f / sqrtf(fmaxf(t2 / (float)D - m1 * m1, 0.f) + eps);
    for (int i = threadIdx.x; i < words; i += blockDim.x) ln_store_word(xsw[i], i, mean, rstd, w, b, xs);
    __syncthreads();
}

/// See the file comment. Block = WARPS warps; steps = (row groups of R) x (K chunks of U words a lane).
/// `blk` of `nblk` blocks share the N rows (a pair launch gives each product its own range of blocks).
/// LN (T = 1): x is the row before its LayerNorm (ln_w, ln_b, eps); each block normalises it into
/// dynamic shared memory (K bf16) once the previous kernel is done, and reads x from there.
/// DUAL (T = 1): also s2's product, its chunks after W's in every row group (see Seg2).
template <class W, int MAXT, int R, int U, int WARPS, bool LN = false, bool DUAL = false>
__device__ __forceinline__ void gemv_body(const bf16* __restrict__ x, const u8* __restrict__ w,
                                          const float* __restrict__ scb, int N, int K, int T,
                                          const bf16* __restrict__ bias, int epi, bf16* __restrict__ out, int blk,
                                          int nblk, const bf16* __restrict__ ln_w = nullptr,
                                          const bf16* __restrict__ ln_b = nullptr, float eps = 0.f,
                                          Seg2 s2 = Seg2{nullptr, nullptr, nullptr, 0, nullptr}) {
    static_assert(!DUAL || MAXT == 1, "the dual GEMV is T = 1");
    constexpr int NV = R * MAXT * (DUAL ? 2 : 1);  // values a warp parks per row group
    __shared__ float partial[2][GEMV8_BATCH][WARPS * NV];  // two batches of parked groups, in turn
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int words = K / W::PER_WORD, words2 = DUAL ? s2.K / W::PER_WORD : 0;
    const i64 row_bytes = (i64)words * 16, row_bytes2 = (i64)words2 * 16;
    const int row_begin = (int)((i64)N * blk / nblk);
    const int row_end = (int)((i64)N * (blk + 1) / nblk);
    const int stride = 32 * WARPS;                           // words between a lane's words of a row
    const int chunks1 = (words + stride * U - 1) / (stride * U);  // steps per row group over W
    const int chunks = chunks1 + (DUAL ? (words2 + stride * U - 1) / (stride * U) : 0);  // (+ W2)
    const int steps = (row_end - row_begin + R - 1) / R * chunks; // block-uniform
    const int first = warp * 32 + lane;

    float acc[R][MAXT], acc2[R][1];  // acc2: DUAL's W2 sums (scaled weights)
#pragma unroll
    for (int r = 0; r < R; r++) {
        acc2[r][0] = 0.f;
#pragma unroll
        for (int t = 0; t < MAXT; t++) acc[r][t] = 0.f;
    }
    // The words of step (row group from `row`, chunk c): W's chunks, then (DUAL) W2's.
    auto load_step = [&](uint4 (&dst)[U][R], int row, int c) {
        if (!DUAL || c < chunks1)
            load_words<R, U>(dst, w + row * row_bytes, row_bytes, row_end - row, first + c * U * stride, stride, words);
        else
            load_words<R, U>(dst, s2.w + row * row_bytes2, row_bytes2, row_end - row, first + (c - chunks1) * U * stride,
                             stride, words2);
    };
    uint4 q[U][R];
    int g_row = row_begin, c = 0;  // the current step: row group and K chunk
    if (steps > 0) load_step(q, g_row, 0);
    if (LN)  // the norm's weight and bias are constants: into L1 now, read after the wait
        for (int i = threadIdx.x * 64; i < K; i += blockDim.x * 64) {
            asm volatile("prefetch.global.L1 [%0];" ::"l"(ln_w + i));
            asm volatile("prefetch.global.L1 [%0];" ::"l"(ln_b + i));
        }
    // Programmatic dependent launch: the first weights are in flight before waiting for the
    // kernel that writes x (and, for Accumulate, out).
    PDL_ENTER();
    const bf16* xr = x;
    if (LN) {
        extern __shared__ uint4 gemv8_xs[];  // K bf16
        layer_norm_to_smem(x, K, ln_w, ln_b, eps, reinterpret_cast<bf16*>(gemv8_xs));
        xr = reinterpret_cast<const bf16*>(gemv8_xs);
    }
    // Each step: the next step's words in flight while this one's are used; after a row group's last
    // chunk its sums are parked, and every GEMV8_BATCH groups (and at the end) the parked groups are
    // finished. (Two register buffers in turn instead of the copy into q measured 2% slower at int8
    // decode, 2026-11-30.)
    for (int s = 0; s < steps; s++) {
        const int n_row = c + 1 < chunks ? g_row : g_row + R, n_c = c + 1 < chunks ? c + 1 : 0;
        uint4 next[U][R];
        if (s + 1 < steps) load_step(next, n_row, n_c);
#ifndef GEMV8_LAB_NOCOMPUTE
        if (!DUAL || c < chunks1)
            dot_words<W, MAXT, R, U, LN>(acc, q, xr, K, T, first + c * U * stride, stride, words);
        else if (W::SCALED)
            dot_words<W, 1, R, U>(acc2, q, s2.x, s2.K, 1, first + (c - chunks1) * U * stride, stride, words2);
        else
            dot_words<W, MAXT, R, U>(acc, q, s2.x, s2.K, 1, first + (c - chunks1) * U * stride, stride, words2);
#else  // lab only (timing, wrong values): the loads and schedule without the products, the words kept live
        u32 mix = 0;
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++) mix ^= q[u][r].x ^ q[u][r].y ^ q[u][r].z ^ q[u][r].w;
        acc[0][0] += __uint_as_float(mix & 0x7fu);
#endif
        if (c + 1 == chunks) {
            const int grp = s / chunks, slot = grp % GEMV8_BATCH;
            float* batch = partial[(grp / GEMV8_BATCH) & 1][0];
            park_group<W, MAXT, R, WARPS, DUAL>(acc, acc2, batch + slot * WARPS * NV);
            if (slot + 1 == GEMV8_BATCH || s + 1 == steps)
                flush_groups<W, MAXT, R, WARPS, DUAL>(batch, slot + 1, row_begin + (grp - slot) * R, row_end, scb, s2, N,
                                                      T, bias, epi, out);
        }
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++) q[u][r] = next[u][r];
        g_row = n_row;
        c = n_c;
    }
}

// ---- Tensor-core variant (mma.sync m16n8k16, bf16 in, f32 accumulate): T <= 8 * NT, NT MMA n-tiles. ----
// Rows: the block's rows in G = ceil(rows / 16) groups of at most 16 (sizes balanced to one row);
// lane (g = lane / 4, c = lane % 4) holds rows g and g + 8 of the group as the A operand and x rows
// t = 8 nt + g (n-tile nt) as the B operands (zeros for t >= T). Each A fragment is made once and
// multiplied by the NT n-tiles, so a short prompt (T <= 32) streams the weights once. K is permuted
// inside each k-block (4 words a lane-row) so that one 16-byte load per row and lane feeds the MMAs
// directly, the same permutation for x: int8, lane c's word holds the fragment elements k' = 2c,
// 2c+1, 2c+8, 2c+9 of each of 4 MMAs (16 weights); bf16 (the lab only), of 2 MMAs (8 weights).

/// d (16x8 f32) += a (16x16 bf16, row) * b (16x8 bf16, col).
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 word_at(const uint4& q, int i) { return i == 0 ? q.x : i == 1 ? q.y : i == 2 ? q.z : q.w; }

/// The MMAs of one 16-byte word a row for a lane, weight format W (a specialisation per format;
/// examples/lab_gemv8.cu adds bf16): its words of rows g (qg) and g + 8 (qh), and x rows 8 nt + g of
/// each n-tile (xw[nt]: the x words under the weight word).
template <class W, int NT>
struct MmaWords;

/// int8: each word is 4 MMAs of 4 weights; the bytes become exact bf16 pairs (int8x4_to_bf16x2), once
/// for all n-tiles.
template <int NT>
struct MmaWords<WeightsInt8, NT> {
    __device__ static __forceinline__ void run(float (&d)[NT][4], const uint4& qg, const uint4& qh, const uint4 (&xw)[NT][2]) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            u32 g01, g23, h01, h23;
            int8x4_to_bf16x2(word_at(qg, j), g01, g23);
            int8x4_to_bf16x2(word_at(qh, j), h01, h23);
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
                mma_bf16_16816(d[nt], g01, h01, g23, h23, word_at(xw[nt][j / 2], 2 * (j % 2)), word_at(xw[nt][j / 2], 2 * (j % 2) + 1));
        }
    }
};

/// Row-group sums that wait in shared memory for one barrier and one parallel finish: 4 groups of
/// one n-tile, fewer of more (the shared array stays 32 KB at 8 warps).
#define GEMV8_MMA_BATCH(NT) ((NT) >= 4 ? 1 : 4 / (NT))

/// 1: a warp's U k-blocks of a step are adjacent, so its two loads of a row read 128 contiguous bytes;
/// 0: k-block i goes to warp i mod WARPS (3-6% slower at T = 2..32: tests/perf.rs short_prompt_linears,
/// 2026-11-30, call 11).
#ifndef GEMV8_MMA_KB_CONTIG
#define GEMV8_MMA_KB_CONTIG 1
#endif

/// The k-block that warp `warp` takes as its u-th of K chunk c.
template <int U, int WARPS>
__device__ __forceinline__ int mma_kblock(int warp, int c, int u) {
    return GEMV8_MMA_KB_CONTIG ? (c * WARPS + warp) * U + u : warp + (c * U + u) * WARPS;
}

/// See the comment above. Block = WARPS warps splitting K (a step's k-blocks: mma_kblock);
/// steps = (row groups) x (K chunks of U k-blocks a warp), two register buffers in turn.
template <class W, int U, int WARPS, int NT>
__device__ __forceinline__ void gemv_mma_body(const bf16* __restrict__ x, const u8* __restrict__ w,
                                              const float* __restrict__ scb, int N, int K, int T,
                                              const bf16* __restrict__ bias, int epi, bf16* __restrict__ out) {
    constexpr int NX = W::PER_WORD / 8;  // x words per weight word
    constexpr int BATCH = GEMV8_MMA_BATCH(NT);
    __shared__ float4 partial[2][BATCH][WARPS][NT][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
    const int words = K / W::PER_WORD;  // 16-byte words a row
    const int kblocks = words / 4;      // (the host checks words % 4 == 0)
    const i64 row_bytes = (i64)words * 16;
    const int begin = (int)((i64)N * blockIdx.x / gridDim.x), end = (int)((i64)N * (blockIdx.x + 1) / gridDim.x);
    const int rows = end - begin, groups = (rows + 15) / 16;
    const int chunks = (kblocks + U * WARPS - 1) / (U * WARPS);
    const int steps = groups * chunks;
    auto group_row = [&](int j) { return begin + (int)((i64)rows * j / groups); };

    float d[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) d[nt][0] = d[nt][1] = d[nt][2] = d[nt][3] = 0.f;
    int u_group = 0, u_c = 0;  // the step being used
    // The step being loaded: its group's first row and size, its K chunk, the lane's row pointers.
    int l_group = 0, l_c = 0, l_r0 = begin, l_size = groups > 0 ? group_row(1) - begin : 0;
    const u8* pg = w + (i64)(begin + g) * row_bytes;
    // Words of rows past the group or k-blocks past the row are not loaded: the buffer keeps older
    // values (or the zeros below), which only reach outputs that are never stored or MMAs skipped.
    auto load = [&](uint4 (&qg)[U], uint4 (&qh)[U]) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int kb = mma_kblock<U, WARPS>(warp, l_c, u);
            const int off = (kb * 4 + c) * 16;
            if (kb < kblocks && g < l_size) qg[u] = ld_weights(pg + off);
            if (kb < kblocks && g + 8 < l_size) qh[u] = ld_weights(pg + 8 * row_bytes + off);
        }
        if (++l_c == chunks) {
            l_c = 0;
            l_group++;
            l_r0 += l_size;
            l_size = group_row(l_group + 1) - l_r0;
            pg = w + (i64)(l_r0 + g) * row_bytes;
        }
    };
    auto use = [&](const uint4 (&qg)[U], const uint4 (&qh)[U]) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int kb = mma_kblock<U, WARPS>(warp, u_c, u);
            if (kb >= kblocks) break;
            uint4 xw[NT][NX];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const int t = 8 * nt + g;
                const bf16* xp = x + (i64)t * K + (i64)(kb * 4 + c) * W::PER_WORD;
#pragma unroll
                for (int i = 0; i < NX; i++) xw[nt][i] = t < T ? __ldg(reinterpret_cast<const uint4*>(xp) + i) : make_uint4(0, 0, 0, 0);
            }
            MmaWords<W, NT>::run(d, qg[u], qh[u], xw);
        }
        if (++u_c < chunks) return;
        // The group is done: its warps' sums meet in shared memory, finished BATCH groups at a time.
        u_c = 0;
        const int slot = u_group % BATCH, parity = (u_group / BATCH) & 1;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            partial[parity][slot][warp][nt][lane] = make_float4(d[nt][0], d[nt][1], d[nt][2], d[nt][3]);
            d[nt][0] = d[nt][1] = d[nt][2] = d[nt][3] = 0.f;
        }
        const int first = u_group - slot;
        u_group++;
        if (slot + 1 < BATCH && u_group < groups) return;
        __syncthreads();
        // Thread per (group, n-tile, lane, fragment value): value e of lane l is row (l/4) + 8 (e/2)
        // and token 8 nt + 2 (l%4) + e%2.
        for (int i = threadIdx.x; i < (slot + 1) * NT * 128; i += WARPS * 32) {
            const int j = i / (NT * 128), rem = i % (NT * 128), nt = rem / 128, v = rem % 128, l = v / 4, e = v % 4;
            const int t = 8 * nt + 2 * (l & 3) + (e & 1);
            const int r0 = group_row(first + j), size = group_row(first + j + 1) - r0;
            const int r = (l >> 2) + 8 * (e >> 1);
            if (t < T && r < size) {
                float s = 0.f;
#pragma unroll
                for (int k = 0; k < WARPS; k++) s += reinterpret_cast<const float*>(&partial[parity][j][k][nt][l])[e];
                const int n = r0 + r;
                const float bv = bias != nullptr ? bf2f(bias[n]) : 0.f;
                store_epilogue(out, (i64)t * N + n, W::finish(s, scb, n) + bv, epi);
            }
        }
    };
    uint4 ag[U], ah[U], bg[U], bh[U];
#pragma unroll
    for (int u = 0; u < U; u++) ag[u] = ah[u] = bg[u] = bh[u] = make_uint4(0, 0, 0, 0);
    if (steps > 0) load(ag, ah);
    PDL_ENTER();  // weights in flight; x and out come from earlier kernels
    for (int s = 0; s < steps; s += 2) {
        if (s + 1 < steps) load(bg, bh);
        use(ag, ah);
        if (s + 1 >= steps) break;
        if (s + 2 < steps) load(ag, ah);
        use(bg, bh);
    }
}

#ifndef GEMV8_LAB  // examples/lab_gemv8.rs compiles the helpers above with its own instantiations

// The production configuration (chosen in examples/lab_gemv8.rs, see NOTES.md): warps per block
// and blocks per SM (linear.rs mirrors both: its grid is min(GEMV8_BLOCKS_PER_SM * SMs, ceil(N / 4))
// for gemv_body, ceil(N / 16) for gemv_mma_body), rows per group R and words per row per step U.
#define GEMV8_WARPS 8
#define GEMV8_BLOCKS_PER_SM 2

#define GEMV8_KERNEL(NAME, WTYPE, MAXT, R, U)                                                                    \
    extern "C" __global__ void __launch_bounds__(GEMV8_WARPS * 32, GEMV8_BLOCKS_PER_SM)                          \
        NAME(const bf16* x, const u8* w, const float* scb, int N, int K, int T, const bf16* bias, int epi,          \
             bf16* out) {                                                                                          \
        gemv_body<WTYPE, MAXT, R, U, GEMV8_WARPS>(x, w, scb, N, K, T, bias, epi, out, blockIdx.x, gridDim.x);     \
    }

// Two T = 1 products in one launch (Falcon's parallel block: qkv and h->4h): blocks [0, blocks0)
// compute product 0, the rest product 1, each over its own rows, with its own x, epilogue and out;
// the host splits the blocks by bytes so both finish together. The _ln kernels also take each
// product's LayerNorm (weight, bias; eps): x0 and x1 are then the raw row and every block normalises
// it itself (dynamic shared memory K bf16), so no LayerNorm launch runs before the pair.
#define GEMV8_PAIR_KERNEL(NAME, WTYPE, R, U, LN)                                                                 \
    extern "C" __global__ void __launch_bounds__(GEMV8_WARPS * 32, GEMV8_BLOCKS_PER_SM)                          \
        NAME(const bf16* x0, const u8* w0, const float* scb0, int N0, int K0, const bf16* bias0, int epi0,        \
             bf16* out0, const bf16* x1, const u8* w1, const float* scb1, int N1, int K1, const bf16* bias1,      \
             int epi1, bf16* out1, int blocks0, const bf16* lnw0, const bf16* lnb0, const bf16* lnw1,           \
             const bf16* lnb1, float eps) {                                                                      \
        if ((int)blockIdx.x < blocks0)                                                                           \
            gemv_body<WTYPE, 1, R, U, GEMV8_WARPS, LN>(x0, w0, scb0, N0, K0, 1, bias0, epi0, out0, blockIdx.x,    \
                                                       blocks0, lnw0, lnb0, eps);                                \
        else                                                                                                     \
            gemv_body<WTYPE, 1, R, U, GEMV8_WARPS, LN>(x1, w1, scb1, N1, K1, 1, bias1, epi1, out1,                \
                                                       blockIdx.x - blocks0, gridDim.x - blocks0, lnw1, lnb1, eps); \
    }

GEMV8_KERNEL(gemv_bf16_t1, WeightsBf16, 1, 4, 2)
GEMV8_KERNEL(gemv_int8w_bf16_t1, WeightsInt8, 1, 8, 1)
// out += x.W^T + x2.W2^T (+ both biases) for T = 1, one wave over the N rows (gemv_body DUAL):
// Falcon's dense and dense_4h_to_h into the residual x in one launch (epi: Accumulate).
#define GEMV8_DUAL_KERNEL(NAME, WTYPE, R, U)                                                                     \
    extern "C" __global__ void __launch_bounds__(GEMV8_WARPS * 32, GEMV8_BLOCKS_PER_SM)                          \
        NAME(const bf16* x, const u8* w, const float* scb, int N, int K, const bf16* bias, int epi, bf16* out,    \
             const bf16* x2, const u8* w2, const float* scb2, int K2, const bf16* bias2) {                       \
        gemv_body<WTYPE, 1, R, U, GEMV8_WARPS, false, true>(x, w, scb, N, K, 1, bias, epi, out, blockIdx.x,       \
                                                            gridDim.x, nullptr, nullptr, 0.f,                    \
                                                            Seg2{x2, w2, scb2, K2, bias2});                      \
    }

GEMV8_DUAL_KERNEL(gemv_bf16_t1_dual, WeightsBf16, 4, 2)
GEMV8_DUAL_KERNEL(gemv_int8w_bf16_t1_dual, WeightsInt8, 8, 1)
GEMV8_PAIR_KERNEL(gemv_bf16_t1_pair, WeightsBf16, 4, 2, false)
GEMV8_PAIR_KERNEL(gemv_int8w_bf16_t1_pair, WeightsInt8, 8, 1, false)
GEMV8_PAIR_KERNEL(gemv_bf16_t1_pair_ln, WeightsBf16, 4, 2, true)
GEMV8_PAIR_KERNEL(gemv_int8w_bf16_t1_pair_ln, WeightsInt8, 8, 1, true)
// For K % 64 != 0 only (otherwise T >= 2 takes gemv_mma_int8w_bf16).
GEMV8_KERNEL(gemv_int8w_bf16_t2, WeightsInt8, 2, 4, 2)
GEMV8_KERNEL(gemv_int8w_bf16_t4, WeightsInt8, 4, 2, 2)
GEMV8_KERNEL(gemv_int8w_bf16_t8, WeightsInt8, 8, 2, 2)

// LLM.int8 weight-only on tensor cores, 2 <= T <= 8 * NT (short prompts read the weights once). Dense
// bf16 from T = 2 goes to cuBLAS, which streams at 3.2-4.1 TB/s for T = 2..32 where this body reached
// 1.9-3.2 (tests/perf.rs short_prompt_linears, 2026-11-30).
#define GEMV8_MMA_KERNEL(NAME, WTYPE, U, NT)                                                                   \
    extern "C" __global__ void __launch_bounds__(GEMV8_WARPS * 32, GEMV8_BLOCKS_PER_SM)                          \
        NAME(const bf16* x, const u8* w, const float* scb, int N, int K, int T, const bf16* bias, int epi,          \
             bf16* out) {                                                                                          \
        gemv_mma_body<WTYPE, U, GEMV8_WARPS, NT>(x, w, scb, N, K, T, bias, epi, out);                             \
    }
// U = 2 k-blocks a step for every n-tile count: 3 and 4 (where registers allow) measured no faster
// (tests/perf.rs short_prompt_linears, 2026-11-30, call 4).
GEMV8_MMA_KERNEL(gemv_mma_int8w_bf16, WeightsInt8, 2, 1)
GEMV8_MMA_KERNEL(gemv_mma_int8w_bf16_t16, WeightsInt8, 2, 2)
GEMV8_MMA_KERNEL(gemv_mma_int8w_bf16_t32, WeightsInt8, 2, 4)

#endif
