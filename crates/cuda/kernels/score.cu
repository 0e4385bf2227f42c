// score.cu: the perplexity figures of rows of bf16 logits on the device, so that only four
// numbers a row cross to the host (peregrine_core::scoring computes the same in f64 on the host).
// Kernels:
//   score_rows_bf16(logits (rows, V), ref (rows, V) or null, first, V, targets (R), out (R, 4) f64)
//     grid (R), 256 threads; block r scores logits row first + r against targets[r]:
//     out[r] = { log p(target), KL(ref || row) (0 without ref), argmax, ref argmax } (the argmaxes
//     are exact in f64; lowest index among equal maxima, as the host's).
// Arithmetic: each exponential in f32, every sum and the log-sum-exp in f64 (as the host's f64
// scoring: perplexities over 10^5 tokens then agree to the 4th decimal); max first, then sums of
// exp(x - max), so nothing overflows; three passes over the row (L2-resident after the first).
// Assumptions: targets < V (checked on the host).
#include "prelude.cuh"

struct ArgMax {
    float v;
    int i;
};

__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) { return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a; }

/// The block's maximum and its lowest index; every thread gets it. Contains barriers.
__device__ ArgMax block_argmax(ArgMax m, float* sv, int* si) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const ArgMax other = {__shfl_xor_sync(FULL_MASK, m.v, o), __shfl_xor_sync(FULL_MASK, m.i, o)};
        m = better(m, other);
    }
    __syncthreads();  // sv/si may still be read by a previous call
    if (lane == 0) {
        sv[warp] = m.v;
        si[warp] = m.i;
    }
    __syncthreads();
    ArgMax r = {sv[0], si[0]};
    for (int w = 1; w < nwarps; w++) r = better(r, ArgMax{sv[w], si[w]});
    return r;
}

__device__ ArgMax row_argmax(const bf16* row, int n, float* sv, int* si) {
    ArgMax m = {NEG_INF, 0x7fffffff};
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = better(m, ArgMax{bf2f(row[i]), i});
    return block_argmax(m, sv, si);
}

/// Sum over the block in f64; every thread gets it. `scratch` holds 32 doubles. Contains barriers.
__device__ double block_sum_f64(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double total = 0.0;
    for (int w = 0; w < nwarps; w++) total += scratch[w];
    return total;
}

/// log sum exp of a row whose maximum is `mx`.
__device__ double row_lse(const bf16* row, int n, float mx, double* scratch) {
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += (double)expf(bf2f(row[i]) - mx);
    return (double)mx + log(block_sum_f64(s, scratch));
}

extern "C" __global__ void score_rows_bf16(const bf16* __restrict__ logits, const bf16* __restrict__ ref, i64 first,
                                           int vocab, const u32* __restrict__ targets, double* __restrict__ out) {
    PDL_WAIT();
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ double scratch[32];
    const i64 r = blockIdx.x;
    const bf16* x = logits + (first + r) * vocab;
    const ArgMax mx = row_argmax(x, vocab, sv, si);
    const double lse = row_lse(x, vocab, mx.v, scratch);
    double kl = 0.0;
    int ref_arg = 0;
    if (ref != nullptr) {
        const bf16* p = ref + (first + r) * vocab;
        const ArgMax mr = row_argmax(p, vocab, sv, si);
        const double lse_r = row_lse(p, vocab, mr.v, scratch);
        double s = 0.0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            const double lp = (double)bf2f(p[i]) - lse_r;
            s += exp(lp) * (lp - ((double)bf2f(x[i]) - lse));
        }
        kl = fmax(block_sum_f64(s, scratch), 0.0);
        ref_arg = mr.i;
    }
    if (threadIdx.x == 0) {
        out[4 * r] = (double)bf2f(x[targets[r]]) - lse;
        out[4 * r + 1] = kl;
        out[4 * r + 2] = (double)mx.i;
        out[4 * r + 3] = (double)ref_arg;
    }
}
