// attention.cu: causal attention of the query heads of a fused qkv over a KV cache that holds
// only the KV groups. Row t attends cache slots 0..=positions[t]. Score = (q.k) * scale, or with
// ALiBi (q.k + round_bf16(slope_h * j)) * scale for key slot j; softmax and accumulation in f32
// (online softmax: no T x T matrix anywhere). Output row t, head h at out[t, h*Hd .. (h+1)*Hd].
// Kernels (HD = head dim, instantiated for 64 and 128: every Falcon; add a line at the end for more):
//   attention_prefill_bf16_hd{HD}: grid (ceil(T/32), H), 128 threads. A block owns 32 query rows
//     of one head; thread (r = tid/4, c4 = tid%4) owns row r: it scores keys c4, c4+4, .. of each
//     32-key tile and accumulates output dims c4, c4+4, ..; the 4 threads of a row exchange
//     probabilities with warp shuffles. Q, K and V tiles sit in dynamic shared memory as f32 with
//     rows padded to HD+1 floats (conflict-free column reads). Dynamic smem = 3*32*(HD+1)*4 bytes.
//   attention_decode_bf16_hd{HD}: flash-decoding for few query rows. grid (T, H, S), 256 threads;
//     block (t, h, s) covers keys [256 s, 256 s + 256), warp w the 32 keys from 256 s + 32 w: lane =
//     key for q.k (16-byte loads of the K row, q broadcast from smem), one warp max and sum, then
//     lane = dims [l*HD/32, (l+1)*HD/32) for P.V with coalesced V rows, all loaded up front (one
//     memory round trip per chunk). Writes unnormalised
//     partials (o, max, sum) to f32 scratch (T, H, S, HD) and (T, H, S, 2); with one split (S = 1)
//     it writes the normalised output directly and no combine runs.
//   attention_combine_bf16(part_o, part_ml, out, H, Hd, S): grid (T, H); merges the S partials.
//   attention_prefill_tc_bf16_hd{HD}: the prefill on tensor cores (mma.sync bf16, f32 accumulate;
//     P rounded to bf16 before P.V as FlashAttention does). grid (ceil(T/128), H), 256 threads;
//     dynamic smem = 4 * 64 * (HD+8) * 2 bytes (K and V, two stages). See the comment above the kernel.
// Assumptions: positions[t] < P (checked on the host); HD % 32 == 0.
#include "prelude.cuh"

#define PF_ROWS 32
#define PF_KEYS 32
#define PF_THREADS 128

template <int HD>
__device__ __forceinline__ void prefill_body(const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache,
                                             const bf16* __restrict__ v_cache, const u32* __restrict__ positions,
                                             const float* __restrict__ slopes, bf16* __restrict__ out, int T,
                                             int n_head, int n_kv, int row_width, float scale) {
    extern __shared__ float smem[];
    constexpr int LD = HD + 1;
    float* Qs = smem;                  // [PF_ROWS][LD]
    float* Ks = Qs + PF_ROWS * LD;     // [PF_KEYS][LD]
    float* Vs = Ks + PF_KEYS * LD;     // [PF_KEYS][LD]

    const int tid = threadIdx.x, lane = tid & 31;
    const int r = tid >> 2, c4 = tid & 3;
    const int h = blockIdx.y, qpk = n_head / n_kv, g = h / qpk;
    const int t0 = blockIdx.x * PF_ROWS;
    const int q_off = (g * (qpk + 2) + h % qpk) * HD;

    // Q tile (rows past T are zeros and fully masked).
    for (int e = tid; e < PF_ROWS * HD; e += PF_THREADS) {
        const int rr = e / HD, d = e % HD, t = t0 + rr;
        Qs[rr * LD + d] = (t < T) ? bf2f(qkv[(i64)t * row_width + q_off + d]) : 0.f;
    }
    const int t = t0 + r;
    const int my_pos = (t < T) ? (int)positions[t] : -1;
    int max_pos = -1;
    for (int rr = 0; rr < PF_ROWS && t0 + rr < T; rr++) max_pos = max(max_pos, (int)positions[t0 + rr]);
    const float slope = (slopes != nullptr) ? slopes[h] : 0.f;

    float m = NEG_INF, l = 0.f;
    float o[HD / 4];
#pragma unroll
    for (int i = 0; i < HD / 4; i++) o[i] = 0.f;

    for (int k0 = 0; k0 <= max_pos; k0 += PF_KEYS) {
        __syncthreads();  // previous tile fully consumed (and Q written, first time)
        for (int e = tid; e < PF_KEYS * HD; e += PF_THREADS) {
            const int c = e / HD, d = e % HD, j = k0 + c;
            float kv = 0.f, vv = 0.f;
            if (j <= max_pos) {
                const i64 src = ((i64)j * n_kv + g) * HD + d;
                kv = bf2f(k_cache[src]);
                vv = bf2f(v_cache[src]);
            }
            Ks[c * LD + d] = kv;
            Vs[c * LD + d] = vv;
        }
        __syncthreads();

        float s[PF_KEYS / 4];
        float tile_max = NEG_INF;
#pragma unroll
        for (int jj = 0; jj < PF_KEYS / 4; jj++) {
            const int c = c4 + 4 * jj, j = k0 + c;
            float dot = 0.f;
#pragma unroll 8
            for (int d = 0; d < HD; d++) dot += Qs[r * LD + d] * Ks[c * LD + d];
            float sc;
            if (slopes != nullptr) sc = (dot + round_bf16(slope * (float)j)) * scale;
            else sc = dot * scale;
            s[jj] = (j <= my_pos) ? sc : NEG_INF;
            tile_max = fmaxf(tile_max, s[jj]);
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(FULL_MASK, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(FULL_MASK, tile_max, 2));
        const float m_new = fmaxf(m, tile_max);
        const float m_use = (m_new == NEG_INF) ? 0.f : m_new;  // fully masked so far: keep zeros
        const float corr = expf(m - m_use);
        float psum = 0.f;
#pragma unroll
        for (int jj = 0; jj < PF_KEYS / 4; jj++) {
            s[jj] = expf(s[jj] - m_use);
            psum += s[jj];
        }
        psum += __shfl_xor_sync(FULL_MASK, psum, 1);
        psum += __shfl_xor_sync(FULL_MASK, psum, 2);
        l = l * corr + psum;
#pragma unroll
        for (int i = 0; i < HD / 4; i++) o[i] *= corr;
#pragma unroll
        for (int jj = 0; jj < PF_KEYS / 4; jj++) {
#pragma unroll
            for (int sl = 0; sl < 4; sl++) {
                const float p = __shfl_sync(FULL_MASK, s[jj], (lane & ~3) | sl);
                const float* vrow = Vs + (sl + 4 * jj) * LD + c4;
#pragma unroll
                for (int i = 0; i < HD / 4; i++) o[i] += p * vrow[4 * i];
            }
        }
        m = m_new;
    }
    if (t < T) {
        const float inv = 1.0f / l;
        bf16* orow = out + (i64)t * n_head * HD + h * HD + c4;
#pragma unroll
        for (int i = 0; i < HD / 4; i++) orow[4 * i] = f2bf(o[i] * inv);
    }
}

#define DEC_WARPS 8
#define DEC_SPLIT 256  // keys per block (split) in the decode kernel: DEC_WARPS chunks of 32

// Read-only loads as volatile asm: the compiler keeps them in program order and does not sink
// them to their first use, so a chunk's loads are all in flight before the first wait.
__device__ __forceinline__ uint4 dec_ld16(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ uint2 dec_ld8(const void* p) {
    uint2 v;
    asm volatile("ld.global.nc.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}
__device__ __forceinline__ u32 dec_ld4(const void* p) {
    u32 v;
    asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}

/// The EPL (2 or 4) bf16 of one V row that a lane accumulates, as one 4- or 8-byte load.
template <int EPL>
struct VSlice;
template <>
struct VSlice<2> {
    u32 w;
    __device__ __forceinline__ void load(const bf16* p) { w = dec_ld4(p); }
    __device__ __forceinline__ void load_shared(const bf16* p) { w = *reinterpret_cast<const u32*>(p); }
    __device__ __forceinline__ void zero() { w = 0u; }
    __device__ __forceinline__ u32 first() const { return w; }
    __device__ __forceinline__ float at(int e) const { return e == 0 ? __uint_as_float(w << 16) : __uint_as_float(w & 0xFFFF0000u); }
};
template <>
struct VSlice<4> {
    uint2 w;
    __device__ __forceinline__ void load(const bf16* p) { w = dec_ld8(p); }
    __device__ __forceinline__ void load_shared(const bf16* p) { w = *reinterpret_cast<const uint2*>(p); }
    __device__ __forceinline__ void zero() { w = make_uint2(0u, 0u); }
    __device__ __forceinline__ u32 first() const { return w.x; }
    __device__ __forceinline__ float at(int e) const {
        const u32 v = e < 2 ? w.x : w.y;
        return (e & 1) == 0 ? __uint_as_float(v << 16) : __uint_as_float(v & 0xFFFF0000u);
    }
};

/// The fused decode's prologue: qs = q rotated (f32 of the bf16 rotary_append_bf16 writes), knew = k
/// rotated and vnew = v (bf16), for position `pos`; theta = 0: no rotation (ALiBi). Thread i < HD/2
/// rotates pair (i, i + HD/2) of q and k (rope_pair, the formula of rotary.cu).
template <int HD>
__device__ __forceinline__ void rotate_q_k(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                           const bf16* __restrict__ v, int pos, float theta, float position_scale,
                                           float* qs, bf16* knew, bf16* vnew) {
    constexpr int half = HD / 2;
    const int i = threadIdx.x;
    if (i < half) {
        bf16 q1 = q[i], q2 = q[i + half], k1 = k[i], k2 = k[i + half];
        if (theta > 0.f) {
            rope_pair(bf2f(q1), bf2f(q2), i, HD, (u32)pos, theta, position_scale, q1, q2);
            rope_pair(bf2f(k1), bf2f(k2), i, HD, (u32)pos, theta, position_scale, k1, k2);
        }
        qs[i] = bf2f(q1);
        qs[i + half] = bf2f(q2);
        knew[i] = k1;
        knew[i + half] = k2;
    } else if (i < half + HD) {
        vnew[i - half] = v[i - half];
    }
}

// Decode (flash-decoding): block (t, h, split) covers keys [split*256, split*256 + 256) up to
// positions[t]; warp w takes the chunk of 32 keys at split*256 + 32w (lane = key for the score: the
// full q.k over HD with 16-byte loads of the K row, q broadcast from shared memory), one warp
// max/sum, then lane = output dims for P.V. Latency first: a chunk's K row and all its V rows (the
// lane's dims, VB rows at a time) are loaded before the first use, so a chunk costs about one
// memory round trip instead of one per 8 V rows. Writes the normalised output (one split) or the
// unnormalised partial (acc, max, sum) that attention_combine_bf16 merges.
//
// FUSED (one query row, T = 1): the block also does rotary_append's work for this step, so no
// launch runs between the qkv GEMV and attention. It rotates q itself (theta > 0; ALiBi models pass
// theta = 0 and nothing rotates), and the new key k and value v of its group live in shared memory:
// the lane whose key is positions[0] takes them from there instead of the cache, and one block per
// group (its first head, the split holding the position) writes them to the cache slot. The other
// blocks' preloads of that slot may race with the write, but their values are replaced before use;
// the values and roundings are rotary_append_bf16's (the same rope_pair).
template <int HD, bool FUSED>
__device__ __forceinline__ void decode_body(const bf16* __restrict__ qkv, bf16* __restrict__ k_cache,
                                            bf16* __restrict__ v_cache, const u32* __restrict__ positions,
                                            const float* __restrict__ slopes, float* __restrict__ part_o,
                                            float* __restrict__ part_ml, bf16* __restrict__ out, int n_head,
                                            int n_kv, int row_width, float scale, float theta, float position_scale) {
    constexpr int EPL = HD / 32;              // output dims per lane
    constexpr int KW = HD / 8;                // 16-byte words of a K row
    constexpr int VB = HD == 64 ? 32 : 16;    // V rows in flight per lane
    __shared__ float qs[HD];
    __shared__ float red[DEC_WARPS][HD + 2];
    static_assert(!FUSED || DEC_WARPS * 32 == DEC_SPLIT, "the fused kernel preloads one chunk a warp");
    if (!FUSED) PDL_ENTER();
    const int t = blockIdx.x, h = blockIdx.y, split = blockIdx.z, S = gridDim.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int qpk = n_head / n_kv, g = h / qpk;
    const bf16* q = qkv + (i64)t * row_width + (g * (qpk + 2) + h % qpk) * HD;
    const int pos = (int)positions[t];
    const int begin = split * DEC_SPLIT, end = min(pos + 1, begin + DEC_SPLIT);
    const i64 key_stride = (i64)n_kv * HD;  // elements between consecutive keys of a group
    // The chunk's K row (key c0 + lane) and the lane's dims of its V rows b.. (VB of them), zeros past
    // the end (p = 0 there, and 0 * 0 adds nothing).
    uint4 kr[KW];
    VSlice<EPL> vr[VB];
    auto load_v = [&](int c0, int b) {
        const bool full = c0 + 32 <= end;  // warp-uniform: every key of the chunk is valid
        const bf16* vp = v_cache + (i64)(c0 + b) * key_stride + g * HD + lane * EPL;
#pragma unroll
        for (int jj = 0; jj < VB; jj++, vp += key_stride) {
            if (full || c0 + b + jj < end) vr[jj].load(vp);
            else vr[jj].zero();
        }
    };
    auto load_chunk = [&](int c0) {
        const int j = c0 + lane;
        const uint4* krow = reinterpret_cast<const uint4*>(k_cache + (i64)j * key_stride + g * HD);
#pragma unroll
        for (int v = 0; v < KW; v++) kr[v] = j < end ? dec_ld16(krow + v) : make_uint4(0u, 0u, 0u, 0u);
        load_v(c0, 0);
    };
    if (FUSED) {
        // The cache rows before this step's position were written by earlier steps, complete before
        // the previous kernel began (and positions before the step): they load before the PDL wait,
        // under the previous kernel's tail. Only qkv (this step's q, k, v) needs the wait.
        if (begin + warp * 32 < end) load_chunk(begin + warp * 32);
        PDL_ENTER();
    }
    __shared__ __align__(16) bf16 knew[FUSED ? HD : 1], vnew[FUSED ? HD : 1];  // this step's k (rotated) and v
    if (FUSED) {
        const bf16* kq = qkv + (i64)g * (qpk + 2) * HD + qpk * HD;  // the group's K head (T = 1: row 0)
        rotate_q_k<HD>(q, kq, kq + HD, pos, theta, position_scale, qs, knew, vnew);
    } else {
        for (int d = threadIdx.x; d < HD; d += blockDim.x) qs[d] = bf2f(q[d]);
    }
    __syncthreads();
    if (FUSED && h % qpk == 0 && pos / DEC_SPLIT == split) {  // the group's writer of the cache slot
        const i64 dst = ((i64)pos * n_kv + g) * HD;
        for (int d = threadIdx.x; d < HD; d += blockDim.x) {
            k_cache[dst + d] = knew[d];
            v_cache[dst + d] = vnew[d];
        }
    }
    const float slope = (slopes != nullptr) ? slopes[h] : 0.f;
    const u32 opaque_zero = (u32)n_kv >> 24;  // 0 (n_kv < 2^24), unknown to the compiler
    float m = NEG_INF, l = 0.f, acc[EPL];
#pragma unroll
    for (int e = 0; e < EPL; e++) acc[e] = 0.f;
    for (int c0 = begin + warp * 32; c0 < end; c0 += DEC_WARPS * 32) {
        const int j = c0 + lane;
        if (!FUSED) load_chunk(c0);  // the fused kernel loaded its one chunk before the wait
        // dot starts at +0 computed from every load of the chunk (opaque_zero is 0 at run time), so
        // ptxas must issue all of them before the first multiply waits (left alone it sinks each K
        // load to its use: a round trip per 16 bytes).
        u32 mix = 0;
#pragma unroll
        for (int v = 0; v < KW; v++) mix ^= kr[v].x;
#pragma unroll
        for (int jj = 0; jj < VB; jj++) mix ^= vr[jj].first();
        float dot = __uint_as_float(mix & opaque_zero);
        if (FUSED && j == pos)  // the new key: from shared memory (its V row below)
#pragma unroll
            for (int v = 0; v < KW; v++) kr[v] = reinterpret_cast<const uint4*>(knew)[v];
#pragma unroll
        for (int v = 0; v < KW; v++) {
            float kf[8];
            unpack8_bf16(kr[v], kf);
#pragma unroll
            for (int e = 0; e < 8; e++) dot += qs[8 * v + e] * kf[e];
        }
        float sc = NEG_INF;
        if (j < end) sc = (slopes != nullptr) ? (dot + round_bf16(slope * (float)j)) * scale : dot * scale;
        const float m_new = fmaxf(m, warp_max(sc));  // lane 0's key is valid: finite
        const float corr = expf(m - m_new);
        const float p = (j < end) ? expf(sc - m_new) : 0.f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int e = 0; e < EPL; e++) acc[e] *= corr;
#pragma unroll
        for (int b = 0; b < 32; b += VB) {
            if (b > 0) load_v(c0, b);  // HD 128: the second half of the chunk's V rows
            if (FUSED && pos - c0 - b >= 0 && pos - c0 - b < VB)  // the new value row
#pragma unroll
                for (int jj = 0; jj < VB; jj++)
                    if (c0 + b + jj == pos) vr[jj].load_shared(vnew + lane * EPL);
#pragma unroll
            for (int jj = 0; jj < VB; jj++) {
                const float pj = __shfl_sync(FULL_MASK, p, b + jj);
#pragma unroll
                for (int e = 0; e < EPL; e++) acc[e] = fmaf(pj, vr[jj].at(e), acc[e]);
            }
        }
        m = m_new;
    }
    if (lane == 0) {
        red[warp][HD] = m;
        red[warp][HD + 1] = l;
    }
#pragma unroll
    for (int e = 0; e < EPL; e++) red[warp][lane * EPL + e] = acc[e];
    __syncthreads();
    float M = NEG_INF;
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, red[w][HD]);
    float wscale[DEC_WARPS], L = 0.f;
    for (int w = 0; w < DEC_WARPS; w++) {
        wscale[w] = (red[w][HD] == NEG_INF) ? 0.f : expf(red[w][HD] - M);
        L += red[w][HD + 1] * wscale[w];
    }
    const i64 slot = ((i64)t * n_head + h) * S + split;
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < DEC_WARPS; w++) o += red[w][d] * wscale[w];
        if (S == 1) out[((i64)t * n_head + h) * HD + d] = f2bf(o * (1.0f / L));  // no combine needed
        else part_o[slot * HD + d] = o;
    }
    if (threadIdx.x == 0 && S > 1) {
        part_ml[2 * slot] = M;
        part_ml[2 * slot + 1] = L;
    }
}

// Merge the decode splits: out[t, h*Hd + d] = sum_s o_s[d] e^(m_s - M) / sum_s l_s e^(m_s - M).
// grid (T, H), threads over Hd. Splits past positions[t] have m = -inf and weigh nothing.
extern "C" __global__ void attention_combine_bf16(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                                  bf16* __restrict__ out, int n_head, int head_dim, int S) {
    PDL_ENTER();
    const int t = blockIdx.x, h = blockIdx.y;
    const i64 base = ((i64)t * n_head + h) * S;
    float M = NEG_INF;
    for (int s = 0; s < S; s++) M = fmaxf(M, part_ml[2 * (base + s)]);
    float L = 0.f;
    for (int s = 0; s < S; s++) {
        const float ms = part_ml[2 * (base + s)];
        if (ms != NEG_INF) L += part_ml[2 * (base + s) + 1] * expf(ms - M);
    }
    const float inv = 1.0f / L;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float o = 0.f;
        for (int s = 0; s < S; s++) {
            const float ms = part_ml[2 * (base + s)];
            if (ms != NEG_INF) o += part_o[(base + s) * head_dim + d] * expf(ms - M);
        }
        out[((i64)t * n_head + h) * head_dim + d] = f2bf(o * inv);
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core prefill (FlashAttention-2 style) with mma.sync m16n8k16 bf16 -> f32 (sm_80+).
// Block = TC_WARPS warps = 16 * TC_WARPS query rows of one head (blocks taken last rows first, so
// the longest run first and the short ones fill the tail); warp w owns rows 16w..16w+15, its Q
// fragments stay in registers. Per tile of 64 keys: K and V (row-major, rows padded by 8 elements:
// conflict-free ldmatrix) are copied to shared memory with cp.async by the whole block,
// double-buffered so the next tile arrives while this one is used; every warp of the block reuses
// them (8 warps: half the L2 -> shared traffic of 4). K's B fragments come from ldmatrix, V's from
// ldmatrix.trans. S = Q K^T in registers; a tile wholly at or below every row's position of the
// warp (and no ALiBi) skips the mask and folds the scale into the exponent's FFMA; the others are
// masked, scaled and biased per score. Online softmax per row (a row's 64 scores live in one quad
// of lanes), then P (rounded to bf16, reusing the S accumulator layout as the A operand) times V
// accumulates O in f32. A warp skips tiles past its last row's position (it still joins the
// barriers). Fragment layout (PTX ISA, m16n8k16): g = lane / 4, c = lane % 4; A regs (row g | g+8,
// k 2c..2c+1 | 2c+8..2c+9); B regs (k 2c..2c+1 | 2c+8..2c+9, n g); C (row g | g+8, n 2c, 2c+1).
#define TC_WARPS 8
#define TC_ROWS (16 * TC_WARPS)
#define TC_KEYS 64
// Resident blocks a SM the registers must allow: two at head dim 64 (16 warps), one at 128.
#define TC_MIN_BLOCKS(HD) ((HD) <= 64 ? 2 : 1)

__device__ __forceinline__ void mma_bf16_16816(float* d, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<u32*>(&v);
}

__device__ __forceinline__ u32 ld_u32(const bf16* p) { return *reinterpret_cast<const u32*>(p); }

/// 16 bytes global -> shared without registers (sm_80+); src_bytes 0 fills zeros.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
    const u32 s = (u32)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/// Four transposed 8x8 bf16 matrices from shared memory (lane l gives the row address of matrix
/// l / 8): with rows = keys of a row-major V tile, the registers are mma B fragments of V.
__device__ __forceinline__ void ldmatrix_x4_trans(u32* r, const bf16* row) {
    const u32 a = (u32)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/// Four 8x8 bf16 matrices from shared memory, not transposed: with rows = keys of a row-major K
/// tile, thread (g, c) receives K[key g][dims 2c, 2c+1] of each matrix, the B fragments of K^T.
__device__ __forceinline__ void ldmatrix_x4(u32* r, const bf16* row) {
    const u32 a = (u32)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/// 2^x as one MUFU.EX2 (ex2.approx.ftz: exp2f's own approximation without its subnormal range
/// handling, which costs a compare and two multiplies a call; results below 2^-126 become 0, a
/// weight no softmax term can feel next to the row maximum's 1).
__device__ __forceinline__ float ex2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/// A compile-time bool passed to a generic lambda (NVRTC has no <type_traits>).
template <bool B>
struct TcBool {
    static constexpr bool value = B;
};

template <int HD>
__device__ __forceinline__ void prefill_tc_body(const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache,
                                                const bf16* __restrict__ v_cache, const u32* __restrict__ positions,
                                                const float* __restrict__ slopes, bf16* __restrict__ out, int T,
                                                int n_head, int n_kv, int row_width, float scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ int block_max_pos;
    constexpr int LDK = HD + 8;  // K and V rows padded by 16 bytes: conflict-free ldmatrix
    bf16* Ks = reinterpret_cast<bf16*>(smem_raw);  // [2 stages][TC_KEYS][LDK]
    bf16* Vs = Ks + 2 * TC_KEYS * LDK;            // [2 stages][TC_KEYS][LDK], row-major like K
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
    const int h = blockIdx.y, qpk = n_head / n_kv, grp = h / qpk;
    const int t0 = (gridDim.x - 1 - blockIdx.x) * TC_ROWS;  // last rows first: the longest blocks start first
    const int ta = t0 + warp * 16 + g, tb = ta + 8;
    const int q_off = (grp * (qpk + 2) + h % qpk) * HD;

    u32 qa[HD / 16][4];
#pragma unroll
    for (int ks = 0; ks < HD / 16; ks++) {
        const bf16* ra = qkv + (i64)ta * row_width + q_off + 16 * ks + 2 * c;
        const bf16* rb = qkv + (i64)tb * row_width + q_off + 16 * ks + 2 * c;
        qa[ks][0] = (ta < T) ? ld_u32(ra) : 0u;
        qa[ks][1] = (tb < T) ? ld_u32(rb) : 0u;
        qa[ks][2] = (ta < T) ? ld_u32(ra + 8) : 0u;
        qa[ks][3] = (tb < T) ? ld_u32(rb + 8) : 0u;
    }
    const int pos_a = (ta < T) ? (int)positions[ta] : -1;
    const int pos_b = (tb < T) ? (int)positions[tb] : -1;
    // The warp's last key (tiles past it are skipped) and the key every row of the warp reaches
    // (tiles up to it need no mask); rows past T count as position -1 (masked everywhere).
    const int warp_max_pos = warp_max_int(max(pos_a, pos_b));
    const int warp_min_pos = warp_min_int(min(pos_a, pos_b));
    if (tid == 0) block_max_pos = -1;
    __syncthreads();
    if (lane == 0) atomicMax(&block_max_pos, warp_max_pos);
    __syncthreads();
    const int max_pos = block_max_pos;
    const bool alibi = slopes != nullptr;
    const float slope = alibi ? slopes[h] : 0.f;
    // Scores in log2 units (scale x log2 e), so every exponential is one ex2: the softmax is unchanged.
    const float scale2 = scale * 1.4426950408889634f;

    float m_a = NEG_INF, m_b = NEG_INF, l_a = 0.f, l_b = 0.f;
    float o[HD / 8][4];
#pragma unroll
    for (int nt = 0; nt < HD / 8; nt++) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;

    // Tiles of TC_KEYS keys, double-buffered: tile i+1 is copied (cp.async) while tile i is used.
    auto load_tile = [&](int stage, int k0) {
        for (int e = threadIdx.x; e < TC_KEYS * (HD / 8); e += blockDim.x) {
            const int key = e / (HD / 8), c8 = (e % (HD / 8)) * 8, j = k0 + key;
            const bool ok = j <= max_pos;  // slots past max_pos may hold garbage (even NaN): zeros instead
            const i64 src = ok ? ((i64)j * n_kv + grp) * HD + c8 : 0;
            cp_async16(Ks + (stage * TC_KEYS + key) * LDK + c8, k_cache + src, ok ? 16 : 0);
            cp_async16(Vs + (stage * TC_KEYS + key) * LDK + c8, v_cache + src, ok ? 16 : 0);
        }
        cp_async_commit();
    };

    // One tile for this warp: scores, online softmax, P.V. MASKED: per-score mask, scale and ALiBi
    // (s then holds scaled scores); else s holds raw q.k and the scale is applied in the exponent.
    auto attend_tile = [&](const bf16* Kt, const bf16* Vt, int k0, auto masked_tag) {
        constexpr bool MASKED = decltype(masked_tag)::value;
        float s[TC_KEYS / 8][4];
#pragma unroll
        for (int nt = 0; nt < TC_KEYS / 8; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < HD / 16; ks += 2) {
                // Matrices (keys 8nt..8nt+7) x (dims 16ks | 16ks+8 | 16ks+16 | 16ks+24): b0, b1 of k-steps ks, ks+1.
                u32 b[4];
                ldmatrix_x4(b, Kt + (8 * nt + (lane & 7)) * LDK + 16 * ks + 8 * (lane >> 3));
                mma_bf16_16816(s[nt], qa[ks], b[0], b[1]);
                mma_bf16_16816(s[nt], qa[ks + 1], b[2], b[3]);
            }
        }
        float mx_a = NEG_INF, mx_b = NEG_INF;
#pragma unroll
        for (int nt = 0; nt < TC_KEYS / 8; nt++) {
            if constexpr (MASKED) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int j = k0 + 8 * nt + 2 * c + (e & 1);
                    float v = s[nt][e];
                    v = alibi ? (v + round_bf16(slope * (float)j)) * scale2 : v * scale2;
                    const int pos = (e < 2) ? pos_a : pos_b;
                    s[nt][e] = (j <= pos) ? v : NEG_INF;
                }
            }
            mx_a = fmaxf(mx_a, fmaxf(s[nt][0], s[nt][1]));
            mx_b = fmaxf(mx_b, fmaxf(s[nt][2], s[nt][3]));
        }
        mx_a = fmaxf(mx_a, __shfl_xor_sync(FULL_MASK, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(FULL_MASK, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(FULL_MASK, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(FULL_MASK, mx_b, 2));
        if constexpr (!MASKED) {  // raw scores: the scaled maximum (scale2 > 0 keeps the order)
            mx_a *= scale2;
            mx_b *= scale2;
        }
        const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        const float use_a = (mn_a == NEG_INF) ? 0.f : mn_a, use_b = (mn_b == NEG_INF) ? 0.f : mn_b;
        const float corr_a = ex2_ftz(m_a - use_a), corr_b = ex2_ftz(m_b - use_b);
        const float sc = MASKED ? 1.f : scale2;
        float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
        for (int nt = 0; nt < TC_KEYS / 8; nt++) {
            s[nt][0] = ex2_ftz(fmaf(s[nt][0], sc, -use_a));
            s[nt][1] = ex2_ftz(fmaf(s[nt][1], sc, -use_a));
            s[nt][2] = ex2_ftz(fmaf(s[nt][2], sc, -use_b));
            s[nt][3] = ex2_ftz(fmaf(s[nt][3], sc, -use_b));
            sum_a += s[nt][0] + s[nt][1];
            sum_b += s[nt][2] + s[nt][3];
        }
        sum_a += __shfl_xor_sync(FULL_MASK, sum_a, 1);
        sum_a += __shfl_xor_sync(FULL_MASK, sum_a, 2);
        sum_b += __shfl_xor_sync(FULL_MASK, sum_b, 1);
        sum_b += __shfl_xor_sync(FULL_MASK, sum_b, 2);
        l_a = l_a * corr_a + sum_a;
        l_b = l_b * corr_b + sum_b;
#pragma unroll
        for (int nt = 0; nt < HD / 8; nt++) {
            o[nt][0] *= corr_a;
            o[nt][1] *= corr_a;
            o[nt][2] *= corr_b;
            o[nt][3] *= corr_b;
        }
#pragma unroll
        for (int kk = 0; kk < TC_KEYS / 16; kk++) {
            u32 pa[4];
            pa[0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int nt = 0; nt < HD / 8; nt += 2) {
                // Matrices (keys 16kk+0..7 | 16kk+8..15) x (dims 8nt | 8nt+8): B fragments of n-tiles nt, nt+1.
                const int m = lane >> 3;
                u32 b[4];
                ldmatrix_x4_trans(b, Vt + (16 * kk + (m & 1) * 8 + (lane & 7)) * LDK + 8 * nt + (m >> 1) * 8);
                mma_bf16_16816(o[nt], pa, b[0], b[1]);
                mma_bf16_16816(o[nt + 1], pa, b[2], b[3]);
            }
        }
        m_a = mn_a;
        m_b = mn_b;
    };

    if (max_pos >= 0) load_tile(0, 0);
    for (int k0 = 0, stage = 0; k0 <= max_pos; k0 += TC_KEYS, stage ^= 1) {
        if (k0 + TC_KEYS <= max_pos) {
            load_tile(stage ^ 1, k0 + TC_KEYS);  // its buffer was released by the barrier ending the last tile
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // tile `stage` is complete for every thread
        const bf16* Kt = Ks + stage * TC_KEYS * LDK;
        const bf16* Vt = Vs + stage * TC_KEYS * LDK;
        if (k0 <= warp_max_pos) {  // warp-uniform
            if (!alibi && k0 + TC_KEYS - 1 <= warp_min_pos) attend_tile(Kt, Vt, k0, TcBool<false>{});
            else attend_tile(Kt, Vt, k0, TcBool<true>{});
        }
        __syncthreads();  // every warp is done with tile `stage` before it is refilled
    }
    const float inv_a = 1.0f / l_a, inv_b = 1.0f / l_b;
#pragma unroll
    for (int nt = 0; nt < HD / 8; nt++) {
        const int d = h * HD + 8 * nt + 2 * c;
        if (ta < T) *reinterpret_cast<__nv_bfloat162*>(out + (i64)ta * n_head * HD + d) = __floats2bfloat162_rn(o[nt][0] * inv_a, o[nt][1] * inv_a);
        if (tb < T) *reinterpret_cast<__nv_bfloat162*>(out + (i64)tb * n_head * HD + d) = __floats2bfloat162_rn(o[nt][2] * inv_b, o[nt][3] * inv_b);
    }
}

#define ATTENTION_KERNELS(HD)                                                                              \
    extern "C" __global__ void __launch_bounds__(PF_THREADS) attention_prefill_bf16_hd##HD(              \
        const bf16* qkv, const bf16* k_cache, const bf16* v_cache, const u32* positions, const float* slopes, \
        bf16* out, int T, int n_head, int n_kv, int row_width, float scale) {                              \
        PDL_ENTER();                                                                                   \
        prefill_body<HD>(qkv, k_cache, v_cache, positions, slopes, out, T, n_head, n_kv, row_width, scale); \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32) attention_decode_bf16_hd##HD(           \
        const bf16* qkv, const bf16* k_cache, const bf16* v_cache, const u32* positions, const float* slopes, \
        float* part_o, float* part_ml, bf16* out, int n_head, int n_kv, int row_width, float scale) {      \
        decode_body<HD, false>(qkv, const_cast<bf16*>(k_cache), const_cast<bf16*>(v_cache), positions, slopes, part_o, \
                               part_ml, out, n_head, n_kv, row_width, scale, 0.f, 1.f);                      \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32) attention_decode_fused_bf16_hd##HD(     \
        const bf16* qkv, bf16* k_cache, bf16* v_cache, const u32* positions, const float* slopes,         \
        float* part_o, float* part_ml, bf16* out, int n_head, int n_kv, int row_width, float scale,        \
        float theta, float position_scale) {                                                               \
        decode_body<HD, true>(qkv, k_cache, v_cache, positions, slopes, part_o, part_ml, out, n_head, n_kv, \
                              row_width, scale, theta, position_scale);                                   \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(TC_WARPS * 32, TC_MIN_BLOCKS(HD)) attention_prefill_tc_bf16_hd##HD(                    \
        const bf16* qkv, const bf16* k_cache, const bf16* v_cache, const u32* positions, const float* slopes, \
        bf16* out, int T, int n_head, int n_kv, int row_width, float scale) {                              \
        PDL_ENTER();                                                                                   \
        prefill_tc_body<HD>(qkv, k_cache, v_cache, positions, slopes, out, T, n_head, n_kv, row_width, scale); \
    }

ATTENTION_KERNELS(64)
ATTENTION_KERNELS(128)

// attention_generic_bf16: any head dim (a correctness path for shapes no real Falcon has, such
// as the tiny reference checkpoints; every Falcon uses the specialised kernels above). grid (T, H),
// 128 threads. Dynamic smem = (HD + 32 + positions[t] + 1) floats: q, reduction scratch, and the
// scores of keys 0..=positions[t] (two passes: max, then exp/sum, then P.V by output dim).
extern "C" __global__ void attention_generic_bf16(const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache,
                                                  const bf16* __restrict__ v_cache, const u32* __restrict__ positions,
                                                  const float* __restrict__ slopes, bf16* __restrict__ out, int n_head,
                                                  int n_kv, int hd, int row_width, float scale) {
    PDL_ENTER();
    extern __shared__ float gsm[];
    const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int qpk = n_head / n_kv, g = h / qpk;
    const int q_off = (g * (qpk + 2) + h % qpk) * hd;
    const int pos = (int)positions[t];
    float* q = gsm;
    float* scratch = q + hd;
    float* s = scratch + 32;
    for (int d = tid; d < hd; d += blockDim.x) q[d] = bf2f(qkv[(i64)t * row_width + q_off + d]);
    __syncthreads();
    const float slope = (slopes != nullptr) ? slopes[h] : 0.f;
    float mx = NEG_INF;
    for (int j = tid; j <= pos; j += blockDim.x) {
        const bf16* k = k_cache + ((i64)j * n_kv + g) * hd;
        float dot = 0.f;
        for (int d = 0; d < hd; d++) dot += q[d] * bf2f(k[d]);
        const float sc = (slopes != nullptr) ? (dot + round_bf16(slope * (float)j)) * scale : dot * scale;
        s[j] = sc;
        mx = fmaxf(mx, sc);
    }
    mx = block_max(mx, scratch);
    float sum = 0.f;
    for (int j = tid; j <= pos; j += blockDim.x) {
        const float e = expf(s[j] - mx);
        s[j] = e;
        sum += e;
    }
    sum = block_sum(sum, scratch);  // its barriers also publish every s[j]
    const float inv = 1.f / sum;
    for (int d = tid; d < hd; d += blockDim.x) {
        float o = 0.f;
        for (int j = 0; j <= pos; j++) o += s[j] * bf2f(v_cache[((i64)j * n_kv + g) * hd + d]);
        out[(i64)t * n_head * hd + h * hd + d] = __float2bfloat16_rn(o * inv);
    }
}
