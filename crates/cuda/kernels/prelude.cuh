// prelude.cuh: helpers shared by every Peregrine kernel file (passed to NVRTC as a header).
// Contents: short type names, bf16 <-> f32, warp/block reductions, and the bitsandbytes 4-bit
// scale restore (plain f32 absmax, or double-quantized: code2[q[i]] * nested[i / nbs] + offset,
// computed with explicit round-to-nearest multiply then add so no FMA contraction changes it).
// Assumptions: blockDim.x is a multiple of 32 and at most 1024 wherever block_* helpers are used.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

typedef __nv_bfloat16 bf16;
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

// Programmatic dependent launch (Grid::with_pdl on the host, sm_90+): PDL_WAIT() blocks until
// the previous kernel has finished and its writes are visible, so it must come before the first
// read of anything an earlier kernel wrote (reading weights and constants before it is fine);
// PDL_TRIGGER() lets the next kernel be scheduled early. Both are no-ops without PDL.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#define PDL_TRIGGER() asm volatile("griddepcontrol.launch_dependents;" :::)
#else
#define PDL_WAIT()
#define PDL_TRIGGER()
#endif

// PDL_ENTER(): the entry of a programmatic dependent: wait for the previous kernel, then let the
// next one be scheduled. (Triggering before the wait was measured slower: crates/cuda/NOTES.md.)
#define PDL_ENTER() \
    do {            \
        PDL_WAIT();    \
        PDL_TRIGGER(); \
    } while (0)

#define FULL_MASK 0xffffffffu
#define NEG_INF (-__int_as_float(0x7f800000))

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16_rn(x); }

/// GPT-NeoX rotary embedding, the one formula of rotary.cu and the fused decode attention. The angle
/// of pair (x[i], x[i + Hd/2]) at `pos` is (pos / position_scale) / theta^(2i/Hd) in f32 (precise
/// sincosf: angles reach 1e4 rad); rope_angle gives its cosine and sine, the same for every head.
__device__ __forceinline__ void rope_angle(int i, int head_dim, u32 pos, float theta, float position_scale, float& c,
                                           float& s) {
    const float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
    sincosf(((float)pos / position_scale) * inv_freq, &s, &c);
}

/// Pair (x1, x2) rotated by the angle of cosine c and sine s, rounded to bf16.
__device__ __forceinline__ void rope_rotate(float x1, float x2, float c, float s, bf16& r1, bf16& r2) {
    r1 = f2bf(x1 * c - x2 * s);
    r2 = f2bf(x2 * c + x1 * s);
}

/// Pair i of a head rotated for position `pos` (rope_angle, then rope_rotate).
__device__ __forceinline__ void rope_pair(float x1, float x2, int i, int head_dim, u32 pos, float theta,
                                          float position_scale, bf16& r1, bf16& r2) {
    float c, s;
    rope_angle(i, head_dim, pos, theta, position_scale, c, s);
    rope_rotate(x1, x2, c, s, r1, r2);
}

/// Round an f32 to the nearest bf16 and back (what a bf16 tensor would hold).
__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

/// The 8 bf16 values of a 16-byte word, as f32.
__device__ __forceinline__ void unpack8_bf16(uint4 w, float* out) {
    const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&w);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(p[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}

/// Store a linear's result y at out[i] under an epilogue (peregrine_core::Epilogue codes: 0 store,
/// 1 exact erf GELU, 2 accumulate onto what out[i] holds), rounding to bf16 once.
__device__ __forceinline__ void store_epilogue(bf16* out, i64 i, float y, int epi) {
    if (epi == 1) y = 0.5f * y * (1.0f + erff(y * 0.70710678118654752440f));
    else if (epi == 2) y += bf2f(out[i]);
    out[i] = f2bf(y);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ int warp_max_int(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ int warp_min_int(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

/// Sum over the whole block; every thread gets the result. `scratch` holds 32 floats.
/// Contains barriers: every thread of the block must call it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.f;
    for (int w = 0; w < nwarps; w++) total += scratch[w];  // same order in every thread
    return total;
}

/// Max over the whole block; every thread gets the result. Same contract as block_sum.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = scratch[0];
    for (int w = 1; w < nwarps; w++) m = fmaxf(m, scratch[w]);
    return m;
}

/// The scale of 4-bit block `i` (bitsandbytes). `plain` non-null: f32 absmax per block.
/// Otherwise double quantization: code2[q[i]] * nested[i / nested_blocksize] + offset, each
/// operation rounded separately exactly as bitsandbytes' dequantize_blockwise then `+= offset`.
__device__ __forceinline__ float absmax_at(const float* plain, const u8* q, const float* code2,
                                           const float* nested, int nested_blocksize, float offset, i64 i) {
    if (plain != nullptr) return plain[i];
    return __fadd_rn(__fmul_rn(code2[q[i]], nested[i / nested_blocksize]), offset);
}

/// Counter-based standard normal: value number `idx` of stream `seed` (splitmix64 hash, then
/// Box-Muller on two 24-bit uniforms). The same (seed, idx) gives the same value on any launch shape.
__device__ __forceinline__ u64 splitmix64(u64 z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ float normal_at(u64 seed, u64 idx) {
    const u64 h = splitmix64(splitmix64(seed) ^ idx);
    const float u1 = (float)((h >> 40) + 1) * 5.9604644775390625e-8f;  // (0, 1]
    const float u2 = (float)(h & 0xFFFFFFull) * 5.9604644775390625e-8f; // [0, 1)
    return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

/// Four int8 (one u32) as two exact bf16 pairs (lo: bytes 0, 1; hi: bytes 2, 3): with m = b & 0x7F
/// and s = b & 0x80, b = bf16(0x4300 | m) (= 128 + m) + bf16(0xC300 | s) (= -128 or -256), one
/// bf16x2 add whose exact result is representable.
__device__ __forceinline__ void int8x4_to_bf16x2(u32 w, u32& lo, u32& hi) {
    const u32 m = w & 0x7F7F7F7Fu, s = w & 0x80808080u;
    const u32 m01 = __byte_perm(m, 0x43434343u, 0x5140), m23 = __byte_perm(m, 0x43434343u, 0x5342);
    const u32 s01 = __byte_perm(s, 0xC3C3C3C3u, 0x5140), s23 = __byte_perm(s, 0xC3C3C3C3u, 0x5342);
    __nv_bfloat162 a = __hadd2(*reinterpret_cast<const __nv_bfloat162*>(&m01), *reinterpret_cast<const __nv_bfloat162*>(&s01));
    __nv_bfloat162 b = __hadd2(*reinterpret_cast<const __nv_bfloat162*>(&m23), *reinterpret_cast<const __nv_bfloat162*>(&s23));
    lo = *reinterpret_cast<u32*>(&a);
    hi = *reinterpret_cast<u32*>(&b);
}
