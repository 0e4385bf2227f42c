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
//   attention_decode_bf16_hd{HD}: flash-decoding for few query rows. grid (T, H, S), 128 threads;
//     block (t, h, s) covers keys [256 s, 256 s + 256). Warps take chunks of 32 keys: lane = key
//     for q.k (16-byte loads of the K row, q broadcast from smem), one warp max and sum per chunk,
//     then lane = dims [l*HD/32, (l+1)*HD/32) for P.V with coalesced V rows. Writes unnormalised
//     partials (o, max, sum) to f32 scratch (T, H, S, HD) and (T, H, S, 2).
//   attention_combine_bf16(part_o, part_ml, out, H, Hd, S): grid (T, H); merges the S partials.
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

#define DEC_WARPS 4
#define DEC_SPLIT 256  // keys per block (split) in the decode kernel

// Decode (flash-decoding): block (t, h, split) covers keys [split*256, split*256 + 256) up to
// positions[t]; each warp takes chunks of 32 keys, lane = key for the scores (full q.k over HD
// with 16-byte loads of the K row, q broadcast from shared memory), one warp max/sum per chunk,
// then lane = output dims for P.V. Writes the unnormalised partial (acc, max, sum) per split;
// attention_combine_bf16 merges the splits.
template <int HD>
__device__ __forceinline__ void decode_body(const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache,
                                            const bf16* __restrict__ v_cache, const u32* __restrict__ positions,
                                            const float* __restrict__ slopes, float* __restrict__ part_o,
                                            float* __restrict__ part_ml, int n_head, int n_kv, int row_width,
                                            float scale) {
    constexpr int EPL = HD / 32;
    __shared__ float qs[HD];
    __shared__ float red[DEC_WARPS][HD + 2];
    const int t = blockIdx.x, h = blockIdx.y, split = blockIdx.z, S = gridDim.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int qpk = n_head / n_kv, g = h / qpk;
    const bf16* q = qkv + (i64)t * row_width + (g * (qpk + 2) + h % qpk) * HD;
    for (int d = threadIdx.x; d < HD; d += blockDim.x) qs[d] = bf2f(q[d]);
    __syncthreads();
    const int pos = (int)positions[t];
    const int begin = split * DEC_SPLIT, end = min(pos + 1, begin + DEC_SPLIT);
    const float slope = (slopes != nullptr) ? slopes[h] : 0.f;
    float m = NEG_INF, l = 0.f, acc[EPL];
#pragma unroll
    for (int e = 0; e < EPL; e++) acc[e] = 0.f;
    for (int c0 = begin + warp * 32; c0 < end; c0 += DEC_WARPS * 32) {
        const int j = c0 + lane;
        float sc = NEG_INF;
        if (j < end) {
            const uint4* krow = reinterpret_cast<const uint4*>(k_cache + ((i64)j * n_kv + g) * HD);
            float dot = 0.f;
#pragma unroll
            for (int v = 0; v < HD / 8; v++) {
                float kf[8];
                unpack8_bf16(__ldg(krow + v), kf);
#pragma unroll
                for (int e = 0; e < 8; e++) dot += qs[8 * v + e] * kf[e];
            }
            sc = (slopes != nullptr) ? (dot + round_bf16(slope * (float)j)) * scale : dot * scale;
        }
        const float m_new = fmaxf(m, warp_max(sc));  // lane 0's key is valid: finite
        const float corr = expf(m - m_new);
        const float p = (j < end) ? expf(sc - m_new) : 0.f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int e = 0; e < EPL; e++) acc[e] *= corr;
        const int nvalid = min(32, end - c0);
        const bf16* vbase = v_cache + ((i64)c0 * n_kv + g) * HD + lane * EPL;
#pragma unroll 8
        for (int jj = 0; jj < nvalid; jj++) {
            const float pj = __shfl_sync(FULL_MASK, p, jj);
            const bf16* vrow = vbase + (i64)jj * n_kv * HD;
#pragma unroll
            for (int e = 0; e < EPL; e++) acc[e] += pj * bf2f(vrow[e]);
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
        part_o[slot * HD + d] = o;
    }
    if (threadIdx.x == 0) {
        part_ml[2 * slot] = M;
        part_ml[2 * slot + 1] = L;
    }
}

// Merge the decode splits: out[t, h*Hd + d] = sum_s o_s[d] e^(m_s - M) / sum_s l_s e^(m_s - M).
// grid (T, H), threads over Hd. Splits past positions[t] have m = -inf and weigh nothing.
extern "C" __global__ void attention_combine_bf16(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                                  bf16* __restrict__ out, int n_head, int head_dim, int S) {
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

#define ATTENTION_KERNELS(HD)                                                                              \
    extern "C" __global__ void __launch_bounds__(PF_THREADS) attention_prefill_bf16_hd##HD(              \
        const bf16* qkv, const bf16* k_cache, const bf16* v_cache, const u32* positions, const float* slopes, \
        bf16* out, int T, int n_head, int n_kv, int row_width, float scale) {                              \
        prefill_body<HD>(qkv, k_cache, v_cache, positions, slopes, out, T, n_head, n_kv, row_width, scale); \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(DEC_WARPS * 32) attention_decode_bf16_hd##HD(           \
        const bf16* qkv, const bf16* k_cache, const bf16* v_cache, const u32* positions, const float* slopes, \
        float* part_o, float* part_ml, int n_head, int n_kv, int row_width, float scale) {                 \
        decode_body<HD>(qkv, k_cache, v_cache, positions, slopes, part_o, part_ml, n_head, n_kv, row_width, scale); \
    }

ATTENTION_KERNELS(64)
ATTENTION_KERNELS(128)
