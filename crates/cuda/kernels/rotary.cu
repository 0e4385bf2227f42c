// rotary.cu: GPT-NeoX rotary embedding over whole heads, and the KV-cache append.
// Kernels:
//   rotary_bf16(qkv (T, row_width), positions (T), n_head, n_kv, head_dim, row_width, theta, position_scale,
//     heads_per_block) grid (T, ceil((n_head + n_kv) / heads_per_block)), dynamic smem Hd * 4 bytes:
//     block (t, y) rotates heads y * heads_per_block.. of token t (query heads, then the K head of
//     each group). For pair i: inv_freq = 1 / theta^(2i/Hd), angle = (pos / position_scale) *
//     inv_freq, both in f32, computed once a block; (x[i], x[i+Hd/2]) ->
//     (x[i] cos - x[i+Hd/2] sin, x[i+Hd/2] cos + x[i] sin), rounded to bf16. The host picks
//     heads_per_block so a long prompt runs one block a token (all heads) and a short one a block a
//     head (a 2,048-token prefill took 337 us a layer with a 32-thread block per head and token).
//   append_kv_bf16(qkv (T, row_width), positions (T), k_cache (P, G, Hd), v_cache (P, G, Hd), n_head, n_kv, head_dim, row_width)
//     grid (T, G): copies group g's K and V heads of token t to cache row positions[t].
//   rotary_append_bf16: both in one launch (see its comment).
// Layout (QkvLayout in peregrine-core): per group g, q_per_kv query heads, then K, then V, each Hd wide.
// Assumptions: positions < P checked on the host. The rotation itself is prelude.cuh's rope_angle and rope_rotate.
#include "prelude.cuh"

/// Heads [h0, h0 + heads_per_block) of token blockIdx.x (query heads 0..n_head-1, then the K heads of
/// the groups): the angles of the Hd/2 pairs at this token's position once into shared memory, then a
/// thread per (head, pair). APPEND: a K head, once rotated, goes to the cache row with its V head.
template <bool APPEND>
__device__ __forceinline__ void rotary_rows(bf16* __restrict__ qkv, const u32* __restrict__ positions,
                                            bf16* __restrict__ k_cache, bf16* __restrict__ v_cache, int n_head,
                                            int n_kv, int head_dim, int row_width, float theta,
                                            float position_scale, int heads_per_block) {
    extern __shared__ float rope_cs[];  // [Hd/2][2]: cosine, sine
    const int t = blockIdx.x, qpk = n_head / n_kv, half = head_dim / 2;
    const int h0 = blockIdx.y * heads_per_block, h1 = min(h0 + heads_per_block, n_head + n_kv);
    const u32 p = positions[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) rope_angle(i, head_dim, p, theta, position_scale, rope_cs[2 * i], rope_cs[2 * i + 1]);
    __syncthreads();
    for (int e = threadIdx.x; e < (h1 - h0) * half; e += blockDim.x) {
        const int hh = h0 + e / half, i = e % half;
        const bool is_k = hh >= n_head;
        const int g = is_k ? hh - n_head : hh / qpk;
        bf16* x = qkv + (i64)t * row_width + (g * (qpk + 2) + (is_k ? qpk : hh % qpk)) * head_dim;
        bf16 r1, r2;
        rope_rotate(bf2f(x[i]), bf2f(x[i + half]), rope_cs[2 * i], rope_cs[2 * i + 1], r1, r2);
        x[i] = r1;
        x[i + half] = r2;
        if (APPEND && is_k) {
            const i64 dst = ((i64)p * n_kv + g) * head_dim;
            k_cache[dst + i] = r1;
            k_cache[dst + i + half] = r2;
            v_cache[dst + i] = x[head_dim + i];
            v_cache[dst + i + half] = x[head_dim + i + half];
        }
    }
}

extern "C" __global__ void rotary_bf16(bf16* __restrict__ qkv, const u32* __restrict__ positions, int n_head,
                                       int n_kv, int head_dim, int row_width, float theta, float position_scale,
                                       int heads_per_block) {
    PDL_ENTER();
    rotary_rows<false>(qkv, positions, nullptr, nullptr, n_head, n_kv, head_dim, row_width, theta, position_scale,
                       heads_per_block);
}

extern "C" __global__ void append_kv_bf16(const bf16* __restrict__ qkv, const u32* __restrict__ positions,
                                          bf16* __restrict__ k_cache, bf16* __restrict__ v_cache, int n_head,
                                          int n_kv, int head_dim, int row_width) {
    PDL_ENTER();
    const int t = blockIdx.x, g = blockIdx.y;
    const int qpk = n_head / n_kv;
    const bf16* k = qkv + (i64)t * row_width + (g * (qpk + 2) + qpk) * head_dim;
    const bf16* v = k + head_dim;
    const i64 dst = ((i64)positions[t] * n_kv + g) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        k_cache[dst + d] = k[d];
        v_cache[dst + d] = v[d];
    }
}

// rotary_append_bf16(qkv, positions, k_cache, v_cache, n_head, n_kv, head_dim, row_width, theta,
//   position_scale, heads_per_block): rotary_bf16 and append_kv_bf16 in one launch (the same values:
//   the rotated K rounded to bf16 once, written to qkv and the cache).
extern "C" __global__ void rotary_append_bf16(bf16* __restrict__ qkv, const u32* __restrict__ positions,
                                              bf16* __restrict__ k_cache, bf16* __restrict__ v_cache, int n_head,
                                              int n_kv, int head_dim, int row_width, float theta,
                                              float position_scale, int heads_per_block) {
    PDL_ENTER();
    rotary_rows<true>(qkv, positions, k_cache, v_cache, n_head, n_kv, head_dim, row_width, theta, position_scale,
                      heads_per_block);
}
