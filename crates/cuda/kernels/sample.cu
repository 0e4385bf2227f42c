// sample.cu: choose the next token from one row of bf16 logits on the device, with the same result
// as peregrine_core::sampling::Sampler (bit for bit: see its module comment), so that only the
// 4-byte token id is copied to the host.
// Kernels:
//   sample_token_bf16(logits (V) bf16 bits, V, history (H) ids, H, keys (V) u32 scratch, out (1) u32,
//                     temperature, top_k K (1..V; V = off), top_p, penalty, r)
// Thread mapping: ONE block (up to 1024 threads) for the whole row; launched as a grid of 1.
// Method (no sort):
//   1. keys[i] = order key of value_i / temperature (value_i penalised for ids in the history):
//      the unsigned order of keys is f32::total_cmp, so "value descending, then id ascending" is
//      "key descending, then index ascending".
//   2. greedy: argmax with the CPU's semantics (first index of the maximum, NaN never wins).
//   3. each cut (top-k by count, top-p by mass, the draw by mass) is a radix select over the keys,
//      most significant digit first (11 + 11 + 10 bits): a shared histogram of counts and integer
//      masses per digit, an exclusive scan in descending digit order, and the one bin where the
//      cumulative total crosses the threshold. Masses are exact u64 (exp(x - max) in units of
//      2^-40 from a deterministic exp), so sums do not depend on order or atomics. Inside the
//      final key (equal values) every member has the same mass, so the crossing member's rank is
//      computed, and its index found by a block scan over contiguous index chunks.
// Self-contained (no prelude): logits are read as raw bf16 bits, so the file builds without
// cuda_bf16.h. Assumptions: blockDim.x a multiple of 32 and <= 1024; V <= 2^23 (masses < 2^63);
// 1 <= K <= V; keys holds V elements and is only touched by this launch.

typedef unsigned int u32;
typedef unsigned long long u64;

#define SAMPLE_FULL_MASK 0xffffffffu
#define SAMPLE_BINS 2048
#define SAMPLE_NONE 0xffffffffu

enum { BY_COUNT = 0, MASS_AT_LEAST = 1, MASS_ABOVE = 2 };

/// A cut: the first candidate (in order) whose inclusive cumulative count reaches `count`
/// (BY_COUNT) or whose cumulative mass, as f64, is >= / > `thr`.
struct Search {
    int mode;
    u64 count;
    double thr;
};

/// Candidates kept by top-k: key > `key`, or key == `key` and index < `index`.
struct Kept {
    u32 key;
    u32 index;
};

/// The key holding a cut's crossing candidate, the count and mass of the candidates before that
/// key, and the count and mass at that key (kept candidates with non-zero mass in mass modes).
struct Found {
    bool ok;
    u32 key;
    u64 before_cnt, before_mass, cnt, mass;
    u64 total_mass;  // mass of every kept candidate (mass modes)
    double thr;      // the threshold used (relative thresholds are resolved at the first digit)
};

struct Shared {
    u32 cnt[SAMPLE_BINS];
    u64 mass[SAMPLE_BINS];
    u64 level1_mass[SAMPLE_BINS];  // the first-digit mass histogram, kept for the draw after top-p
    u64 scan[64];
    float warp_v[32];
    u32 warp_i[32];
    u32 found_digit;
    u64 found_before_cnt, found_before_mass, found_cnt, found_mass;
    u32 max_key;
    u32 result;
};

/// Order-preserving map: unsigned order of keys == Rust's f32::total_cmp.
__device__ __forceinline__ u32 order_key(float s) {
    const u32 b = __float_as_uint(s);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_value(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ float bf16_value(unsigned short bits) {
    return __uint_as_float(((u32)bits) << 16);
}

/// transformers' repetition penalty: divide positive values, multiply negative ones.
__device__ __forceinline__ float penalized(float l, float penalty) {
    return l < 0.0f ? __fmul_rn(l, penalty) : __fdiv_rn(l, penalty);
}

/// The value the candidates are ordered by: logit / temperature (the logit itself when greedy).
__device__ __forceinline__ float scaled(float l, bool greedy, float temperature) {
    return greedy ? l : __fdiv_rn(l, temperature);
}

/// peregrine_core::sampling::deterministic_exp, operation for operation (no FMA contraction).
__device__ __forceinline__ float det_exp(float x) {
    if (!(x >= -30.0f && x <= 0.0f)) return 0.0f;
    const float k = floorf(__fadd_rn(__fmul_rn(x, __uint_as_float(0x3fb8aa3bu)), 0.5f));
    const float r = __fsub_rn(__fsub_rn(x, __fmul_rn(k, __uint_as_float(0x3f317200u))),
                              __fmul_rn(k, __uint_as_float(0x35bfbe8eu)));
    const u32 c[8] = {0x39500d01u, 0x3ab60b61u, 0x3c088889u, 0x3d2aaaabu,
                      0x3e2aaaabu, 0x3f000000u, 0x3f800000u, 0x3f800000u};
    float p = __uint_as_float(c[0]);
#pragma unroll
    for (int i = 1; i < 8; i++) p = __fadd_rn(__fmul_rn(p, r), __uint_as_float(c[i]));
    return __fmul_rn(p, __uint_as_float((u32)((int)k + 127) << 23));
}

/// peregrine_core::sampling::candidate_mass of the candidate with key `k`.
__device__ __forceinline__ u64 mass_of(u32 k, float smax) {
    const float e = det_exp(__fsub_rn(key_value(k), smax));
    return __float2ull_rz(__fmul_rn(e, 1099511627776.0f));
}

__device__ __forceinline__ bool is_kept(u32 k, u32 i, Kept kept) {
    return k > kept.key || (k == kept.key && i < kept.index);
}

__device__ __forceinline__ bool reached(const Search& q, u64 c, u64 m) {
    if (q.mode == BY_COUNT) return c >= q.count;
    const double dm = __ull2double_rn(m);
    return q.mode == MASS_AT_LEAST ? dm >= q.thr : dm > q.thr;
}

/// Exclusive prefix sums over the block (thread order) of two u64 values, and their totals.
/// Contains barriers: every thread of the block must call it.
__device__ void block_scan2(u64 a, u64 b, u64& ea, u64& eb, u64& ta, u64& tb, u64* scan) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    u64 ia = a, ib = b;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const u64 ya = __shfl_up_sync(SAMPLE_FULL_MASK, ia, o);
        const u64 yb = __shfl_up_sync(SAMPLE_FULL_MASK, ib, o);
        if (lane >= o) {
            ia += ya;
            ib += yb;
        }
    }
    __syncthreads();  // `scan` may still be read by a previous call
    if (lane == 31) {
        scan[warp] = ia;
        scan[32 + warp] = ib;
    }
    __syncthreads();
    u64 pa = 0, pb = 0;
    ta = 0;
    tb = 0;
    for (int w = 0; w < nw; w++) {
        const u64 sa = scan[w], sb = scan[32 + w];
        if (w < warp) {
            pa += sa;
            pb += sb;
        }
        ta += sa;
        tb += sb;
    }
    ea = pa + ia - a;
    eb = pb + ib - b;
}

/// Add the candidates matching `prefix` under `pmask` to the digit histogram at `shift`.
__device__ void histogram(const u32* keys, int n, u32 prefix, u32 pmask, int shift, u32 digit_mask,
                          bool by_mass, Kept kept, float smax, Shared& sh) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const u32 k = keys[i];
        if ((k & pmask) != prefix) continue;
        const u32 d = (k >> shift) & digit_mask;
        if (by_mass) {
            if (!is_kept(k, (u32)i, kept)) continue;
            const u64 w = mass_of(k, smax);
            if (w == 0) continue;
            atomicAdd(&sh.mass[d], w);
        }
        atomicAdd(&sh.cnt[d], 1u);
    }
}

/// Radix select for the cut `q` (see Found). `level1`: 0 build the first-digit histogram,
/// 1 build it and keep a copy of its masses, 2 reuse the kept copy (same kept set and max).
/// `rel`: the threshold is `factor` times the total mass, known after the first digit.
__device__ __noinline__ Found radix_select(const u32* keys, int n, Search q, bool rel, double factor, Kept kept,
                              float smax, int level1, Shared& sh) {
    const int tid = threadIdx.x, nt = blockDim.x;
    const bool by_mass = q.mode != BY_COUNT;
    const int per = (SAMPLE_BINS + nt - 1) / nt;  // bins per thread, in descending digit order
    Found f;
    f.ok = false;
    f.key = 0;
    f.before_cnt = f.before_mass = f.cnt = f.mass = f.total_mass = 0;
    u32 prefix = 0, pmask = 0;
    u64 bc = 0, bm = 0;
    for (int level = 0; level < 3; level++) {
        const int shift = level == 0 ? 21 : (level == 1 ? 10 : 0);
        const int nb = level == 2 ? 1024 : 2048;
        const bool reuse = level == 0 && level1 == 2;
        __syncthreads();  // every thread has read the previous level's result
        if (tid == 0) sh.found_digit = SAMPLE_NONE;
        for (int d = tid; d < SAMPLE_BINS; d += nt) {
            sh.cnt[d] = 0;
            sh.mass[d] = reuse ? sh.level1_mass[d] : 0;
        }
        __syncthreads();
        if (!reuse) histogram(keys, n, prefix, pmask, shift, (u32)(nb - 1), by_mass, kept, smax, sh);
        __syncthreads();
        if (level == 0 && level1 == 1)
            for (int d = tid; d < SAMPLE_BINS; d += nt) sh.level1_mass[d] = sh.mass[d];
        const int p0 = tid * per;
        u64 lc = 0, lm = 0;
        for (int p = p0; p < p0 + per && p < nb; p++) {
            lc += sh.cnt[nb - 1 - p];
            lm += sh.mass[nb - 1 - p];
        }
        u64 ec, em, tc, tm;
        block_scan2(lc, lm, ec, em, tc, tm, sh.scan);
        if (level == 0) {
            f.total_mass = tm;
            if (rel) q.thr = __dmul_rn(factor, __ull2double_rn(tm));
        }
        u64 c = bc + ec, m = bm + em;
        for (int p = p0; p < p0 + per && p < nb; p++) {
            const int d = nb - 1 - p;
            const u64 c2 = c + sh.cnt[d], m2 = m + sh.mass[d];
            if (!reached(q, c, m) && reached(q, c2, m2)) {  // true for at most one bin of the block
                sh.found_digit = (u32)d;
                sh.found_before_cnt = c;
                sh.found_before_mass = m;
                sh.found_cnt = sh.cnt[d];
                sh.found_mass = sh.mass[d];
            }
            c = c2;
            m = m2;
        }
        __syncthreads();
        const u32 d = sh.found_digit;
        if (d == SAMPLE_NONE) {  // the same for every thread: the threshold is never reached
            __syncthreads();
            f.thr = q.thr;
            return f;
        }
        prefix |= d << shift;
        pmask |= (u32)(nb - 1) << shift;
        bc = sh.found_before_cnt;
        bm = sh.found_before_mass;
        f.cnt = sh.found_cnt;
        f.mass = sh.found_mass;
    }
    __syncthreads();
    f.ok = true;
    f.key = prefix;
    f.before_cnt = bc;
    f.before_mass = bm;
    f.thr = q.thr;
    return f;
}

/// Index of the `q`-th (1-based) candidate with key `key`, in index order. Block scan over
/// contiguous index chunks, one per thread.
__device__ __noinline__ u32 find_nth(const u32* keys, int n, u32 key, u64 q, Shared& sh) {
    const int tid = threadIdx.x, nt = blockDim.x;
    const int chunk = (n + nt - 1) / nt;
    const int lo = min(n, tid * chunk), hi = min(n, lo + chunk);
    u64 c = 0;
    for (int i = lo; i < hi; i++) c += keys[i] == key ? 1 : 0;
    __syncthreads();  // every thread has read the previous result
    if (tid == 0) sh.result = SAMPLE_NONE;
    u64 e, e2, t, t2;
    block_scan2(c, 0, e, e2, t, t2, sh.scan);  // its barriers order the reset before the write
    if (e < q && q <= e + c) {
        u64 left = q - e;
        for (int i = lo; i < hi; i++) {
            if (keys[i] == key && --left == 0) {
                sh.result = (u32)i;
                break;
            }
        }
    }
    __syncthreads();
    return sh.result;
}

/// Members of the crossing key (each of mass f.mass / f.cnt) up to and including the crossing one.
__device__ u64 members_needed(int mode, const Found& f) {
    Search q;
    q.mode = mode;
    q.count = 0;
    q.thr = f.thr;
    const u64 w = f.mass / f.cnt;
    u64 lo = 1, hi = f.cnt;
    while (lo < hi) {
        const u64 mid = lo + (hi - lo) / 2;
        if (reached(q, 0, f.before_mass + mid * w)) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/// Greedy: the first index of the largest value; NaN never wins; 0 when value 0 is NaN or all are.
__device__ u32 greedy_argmax(const u32* keys, int n, Shared& sh) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    float bv = 0.0f;
    u32 bi = SAMPLE_NONE;
    for (int i = tid; i < n; i += blockDim.x) {
        const float v = key_value(keys[i]);
        if (v != v) continue;
        if (bi == SAMPLE_NONE || v > bv) {
            bv = v;
            bi = (u32)i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(SAMPLE_FULL_MASK, bv, o);
        const u32 oi = __shfl_xor_sync(SAMPLE_FULL_MASK, bi, o);
        if (oi != SAMPLE_NONE && (bi == SAMPLE_NONE || ov > bv || (ov == bv && oi < bi))) {
            bv = ov;
            bi = oi;
        }
    }
    if (lane == 0) {
        sh.warp_v[warp] = bv;
        sh.warp_i[warp] = bi;
    }
    __syncthreads();
    if (tid == 0) {
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) {
            const float ov = sh.warp_v[w];
            const u32 oi = sh.warp_i[w];
            if (oi != SAMPLE_NONE && (bi == SAMPLE_NONE || ov > bv || (ov == bv && oi < bi))) {
                bv = ov;
                bi = oi;
            }
        }
        const float v0 = key_value(keys[0]);
        sh.result = (bi == SAMPLE_NONE || v0 != v0) ? 0u : bi;
    }
    __syncthreads();
    return sh.result;
}

/// The largest key of the row.
__device__ u32 max_key(const u32* keys, int n, Shared& sh) {
    u32 mk = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) mk = max(mk, keys[i]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mk = max(mk, __shfl_xor_sync(SAMPLE_FULL_MASK, mk, o));
    if ((threadIdx.x & 31) == 0) atomicMax(&sh.max_key, mk);
    __syncthreads();
    return sh.max_key;
}

/// The first candidate in order (used only when no candidate has mass: the maximum is NaN/inf).
__device__ u32 first_candidate(const u32* keys, int n, float smax, Shared& sh) {
    Search q;
    q.mode = BY_COUNT;
    q.count = 1;
    q.thr = 0.0;
    Kept all;
    all.key = 0;
    all.index = (u32)n;
    const Found f = radix_select(keys, n, q, false, 0.0, all, smax, 0, sh);
    return find_nth(keys, n, f.key, 1, sh);
}

extern "C" __global__ void __launch_bounds__(1024, 1)
sample_token_bf16(const unsigned short* __restrict__ logits, int n, const u32* __restrict__ history,
                  int n_hist, u32* keys, u32* out, float temperature, int top_k, float top_p,
                  float penalty, float r) {
    __shared__ Shared sh;
    const int tid = threadIdx.x, nt = blockDim.x;
    const bool greedy = temperature == 0.0f;
    if (tid == 0) sh.max_key = 0;
    for (int i = tid; i < n; i += nt) keys[i] = order_key(scaled(bf16_value(logits[i]), greedy, temperature));
    __syncthreads();
    if (penalty != 1.0f) {
        // Duplicated ids write the same value (computed from the untouched logit), as the CPU
        // penalises each distinct id once.
        for (int j = tid; j < n_hist; j += nt) {
            const u32 id = history[j];
            if (id < (u32)n) keys[id] = order_key(scaled(penalized(bf16_value(logits[id]), penalty), greedy, temperature));
        }
    }
    __syncthreads();
    if (greedy) {
        const u32 t = greedy_argmax(keys, n, sh);
        if (tid == 0) *out = t;
        return;
    }
    const float smax = key_value(max_key(keys, n, sh));

    Kept kept;
    kept.key = 0;
    kept.index = (u32)n;
    if (top_k < n) {
        Search q;
        q.mode = BY_COUNT;
        q.count = (u64)top_k;
        q.thr = 0.0;
        const Found f = radix_select(keys, n, q, false, 0.0, kept, smax, 0, sh);
        const u32 last = find_nth(keys, n, f.key, (u64)top_k - f.before_cnt, sh);
        kept.key = f.key;
        kept.index = last + 1;
    }

    bool have_nucleus = false;
    u64 nucleus = 0;
    if (top_p < 1.0f) {
        Search q;
        q.mode = MASS_AT_LEAST;
        q.count = 0;
        q.thr = 0.0;
        const Found f = radix_select(keys, n, q, true, (double)top_p, kept, smax, 1, sh);
        if (!f.ok) {  // no mass at all
            const u32 t = first_candidate(keys, n, smax, sh);
            if (tid == 0) *out = t;
            return;
        }
        nucleus = f.before_mass + members_needed(MASS_AT_LEAST, f) * (f.mass / f.cnt);
        have_nucleus = true;
    }

    Search q;
    q.mode = MASS_ABOVE;
    q.count = 0;
    q.thr = have_nucleus ? __dmul_rn((double)r, __ull2double_rn(nucleus)) : 0.0;
    const Found f = radix_select(keys, n, q, !have_nucleus, (double)r, kept, smax, have_nucleus ? 2 : 0, sh);
    u32 token;
    if (!f.ok) token = first_candidate(keys, n, smax, sh);
    else token = find_nth(keys, n, f.key, members_needed(MASS_ABOVE, f), sh);
    if (tid == 0) *out = token;
}
