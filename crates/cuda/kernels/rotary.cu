// rotary.cu: GPT-NeoX rotary embedding over whole heads, and the KV-cache append.
// Kernels:
//   rotary_bf16(qkv (T, row_width), positions (T), n_head, n_kv, head_dim, row_width, theta, position_scale)
//     grid (T, n_head + n_kv): blockIdx.y < n_head rotates query head y, else the K head of group
//     y - n_head. Threads stride over the Hd/2 pairs. For pair i: inv_freq = 1 / theta^(2i/Hd),
//     angle = (pos / position_scale) * inv_freq, both in f32; (x[i], x[i+Hd/2]) ->
//     (x[i] cos - x[i+Hd/2] sin, x[i+Hd/2] cos + x[i] sin), rounded to bf16.
//   append_kv_bf16(qkv (T, row_width), positions (T), k_cache (P, G, Hd), v_cache (P, G, Hd), n_head, n_kv, head_dim, row_width)
//     grid (T, G): copies group g's K and V heads of token t to cache row positions[t].
//   rotary_append_bf16: both in one launch (see its comment).
// Layout (QkvLayout in peregrine-core): per group g, q_per_kv query heads, then K, then V, each Hd wide.
// Assumptions: positions < P checked on the host. The rotation itself is prelude.cuh's rope_pair.
#include "prelude.cuh"

extern "C" __global__ void rotary_bf16(bf16* __restrict__ qkv, const u32* __restrict__ positions, int n_head,
                                       int n_kv, int head_dim, int row_width, float theta, float position_scale) {
    PDL_ENTER();
    const int t = blockIdx.x, hh = blockIdx.y;
    const int qpk = n_head / n_kv;
    int off;
    if (hh < n_head) {
        const int g = hh / qpk;
        off = (g * (qpk + 2) + hh % qpk) * head_dim;
    } else {
        const int g = hh - n_head;
        off = (g * (qpk + 2) + qpk) * head_dim;
    }
    bf16* x = qkv + (i64)t * row_width + off;
    const int half = head_dim / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x)
        rope_pair(bf2f(x[i]), bf2f(x[i + half]), i, head_dim, positions[t], theta, position_scale, x[i], x[i + half]);
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
//   position_scale): rotary_bf16 and append_kv_bf16 in one launch (the same values: the rotated
//   K rounded to bf16 once, written to qkv and the cache). grid (T, n_head + n_kv).
extern "C" __global__ void rotary_append_bf16(bf16* __restrict__ qkv, const u32* __restrict__ positions,
                                              bf16* __restrict__ k_cache, bf16* __restrict__ v_cache, int n_head,
                                              int n_kv, int head_dim, int row_width, float theta,
                                              float position_scale) {
    PDL_ENTER();
    const int t = blockIdx.x, hh = blockIdx.y;
    const int qpk = n_head / n_kv;
    const bool is_k = hh >= n_head;
    const int g = is_k ? hh - n_head : hh / qpk;
    const int off = is_k ? (g * (qpk + 2) + qpk) * head_dim : (g * (qpk + 2) + hh % qpk) * head_dim;
    bf16* x = qkv + (i64)t * row_width + off;
    const int half = head_dim / 2;
    const u32 p = positions[t];
    const i64 dst = ((i64)p * n_kv + g) * head_dim;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        bf16 r1, r2;
        rope_pair(bf2f(x[i]), bf2f(x[i + half]), i, head_dim, p, theta, position_scale, r1, r2);
        x[i] = r1;
        x[i + half] = r2;
        if (is_k) {
            k_cache[dst + i] = r1;
            k_cache[dst + i + half] = r2;
            v_cache[dst + i] = x[head_dim + i];
            v_cache[dst + i + half] = x[head_dim + i + half];
        }
    }
}
