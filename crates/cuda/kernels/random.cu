// random.cu: synthetic weights made on the device (no host copy), for benchmarking model shapes
// without a download. Values are normal_at(seed, i) * std + mean (prelude.cuh: a counter-based
// generator, so every element depends only on (seed, flat index)), rounded to bf16 like a bf16
// checkpoint, then quantized with bitsandbytes semantics where asked.
// Kernels:
//   fill_normal_bf16(out, n, seed, mean, std): thread per element, grid-stride.
//   random_quant4(packed, absmax (blocks), code (16), n, blocksize, seed, std, fp4): thread per block
//     of `blocksize` weights: pass 1 absmax = max |w|, pass 2 regenerates each w and stores the
//     index of the nearest code to w * (1 / absmax) (ties as bitsandbytes: same sign, then smaller
//     magnitude; FP4 takes its sign bit from w < 0 as bitsandbytes does), two per
//     byte, first element in the high nibble. An all-zero block stores the code nearest 0.
//   absmax_sum(absmax, blocks, out (1) f64): warp sums in f64, one atomicAdd per warp (the mean
//     is then cast to f32, so the order of the f64 additions does not show).
//   quantize_blockwise8(values, n, offset_sum (1) f64, count, code (256), q (n), nested (n/256)):
//     double quantization of the 4-bit scales (bitsandbytes quantize_blockwise, blocksize 256):
//     v = absmax - mean, nested[b] = max |v| over the block, q = nearest code to v / nested[b].
//     One block of 256 threads per 256 values.
//   random_int8(cb (N, K), scb (N), K, seed, std): one block per row: scb = max |w| over the row,
//     cb = round(w * (127 / scb)) (bitsandbytes int8_vectorwise_quant without outliers).
// Assumptions: blocksize even; n even for 4-bit.
#include "prelude.cuh"

__device__ __forceinline__ float synth(u64 seed, u64 idx, float mean, float std) {
    return round_bf16(normal_at(seed, idx) * std + mean);
}

extern "C" __global__ void fill_normal_bf16(bf16* __restrict__ out, i64 n, u64 seed, float mean, float std) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        out[i] = f2bf(normal_at(seed, (u64)i) * std + mean);
}

/// Between two codes equally near v, bitsandbytes' decision trees keep v's sign (FP4 has +0 and
/// -0) and then the smaller magnitude (a value exactly on a midpoint goes down).
__device__ __forceinline__ bool tie_prefers(float a, float b, float v) {
    const bool sa = signbit(a) == signbit(v), sb = signbit(b) == signbit(v);
    if (sa != sb) return sa;
    return fabsf(a) < fabsf(b);
}

__device__ __forceinline__ int nearest_code(const float* lut, int len, float v) {
    int best = 0;
    float bd = fabsf(v - lut[0]);
    for (int c = 1; c < len; c++) {
        const float d = fabsf(v - lut[c]);
        if (d < bd || (d == bd && tie_prefers(lut[c], lut[best], v))) {
            bd = d;
            best = c;
        }
    }
    return best;
}

/// The 4-bit code of a normalised value v. FP4 (`fp4` != 0) is sign-magnitude like bitsandbytes'
/// dQuantizeFP4: the sign bit from v < 0, the magnitude nearest |v| among codes 0..7. NF4: nearest.
__device__ __forceinline__ int quant4_code(const float* lut, int fp4, float v) {
    if (fp4) return (v < 0.f ? 8 : 0) + nearest_code(lut, 8, fabsf(v));
    return nearest_code(lut, 16, v);
}

extern "C" __global__ void random_quant4(u8* __restrict__ packed, float* __restrict__ absmax,
                                         const float* __restrict__ code, i64 n, int blocksize, u64 seed, float std,
                                         int fp4) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
    const i64 blocks = (n + blocksize - 1) / blocksize;
    for (i64 b = blockIdx.x * (i64)blockDim.x + threadIdx.x; b < blocks; b += (i64)gridDim.x * blockDim.x) {
        const i64 begin = b * blocksize, end = min(n, begin + blocksize);
        float m = 0.f;
        for (i64 i = begin; i < end; i++) m = fmaxf(m, fabsf(synth(seed, (u64)i, 0.f, std)));
        absmax[b] = m;
        const float inv = (m > 0.f) ? 1.0f / m : 0.f;
        for (i64 i = begin; i < end; i += 2) {
            const int hi = quant4_code(lut, fp4, synth(seed, (u64)i, 0.f, std) * inv);
            const int lo = (i + 1 < end) ? quant4_code(lut, fp4, synth(seed, (u64)(i + 1), 0.f, std) * inv)
                                         : quant4_code(lut, fp4, 0.f);
            packed[i >> 1] = (u8)((hi << 4) | lo);
        }
    }
}

extern "C" __global__ void absmax_sum(const float* __restrict__ absmax, i64 blocks, double* __restrict__ out) {
    double s = 0.0;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < blocks; i += (i64)gridDim.x * blockDim.x)
        s += (double)absmax[i];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(FULL_MASK, s, o);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, s);  // f64: the order of additions barely matters
}

extern "C" __global__ void quantize_blockwise8(const float* __restrict__ values, i64 n,
                                               const double* __restrict__ sum, i64 count,
                                               const float* __restrict__ code, u8* __restrict__ q,
                                               float* __restrict__ nested, float* __restrict__ offset_out) {
    __shared__ float lut[256];
    __shared__ float scratch[32];
    lut[threadIdx.x] = code[threadIdx.x];
    const float offset = (float)(*sum / (double)count);
    const i64 i = blockIdx.x * (i64)256 + threadIdx.x;
    const float v = (i < n) ? values[i] - offset : 0.f;
    const float m = block_max(fabsf(v), scratch);  // barrier also publishes lut
    const float inv = (m > 0.f) ? 1.0f / m : 0.f;
    if (i < n) q[i] = (u8)nearest_code(lut, 256, v * inv);
    if (threadIdx.x == 0) {
        nested[blockIdx.x] = m;
        if (blockIdx.x == 0) *offset_out = offset;
    }
}

extern "C" __global__ void random_int8(i8* __restrict__ cb, float* __restrict__ scb, int K, u64 seed, float std) {
    __shared__ float scratch[32];
    const i64 row = blockIdx.x;
    float m = 0.f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) m = fmaxf(m, fabsf(synth(seed, (u64)(row * K + k), 0.f, std)));
    const float absmax = block_max(m, scratch);
    const float s = (absmax > 0.f) ? 127.0f / absmax : 0.f;
    for (int k = threadIdx.x; k < K; k += blockDim.x)
        cb[row * K + k] = (i8)__float2int_rn(synth(seed, (u64)(row * K + k), 0.f, std) * s);
    if (threadIdx.x == 0) scb[row] = absmax;
}
