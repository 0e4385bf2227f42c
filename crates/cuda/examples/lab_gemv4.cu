// lab_gemv4.cu: kernels for the 4-bit GEMV lab (examples/lab_gemv4.rs), compiled by the lab
// appended to kernels/quant4.cu (so it can instantiate gemv4t_body with other configurations).
// Contents:
//   lab_v1_gemv4_t{1,8}: v1, the GEMV this lab replaced (bnb layout, one warp per 4 rows, FMA on
//     decoded floats), kept verbatim for comparison (renamed; GEMV_* -> V1_*).
//   lab_stream_read(p (n16 uint4), n16, out): read-only streaming (xor of 16-byte loads), the
//     practical read ceiling; lab_stream_read4: 4 loads in flight per thread.
//   lab_old_body (v2..v4), lab_ring_body (v6): the measured alternatives to quant4.cu's gemv4t_body (v5).
//   lab_tc_*, lab_v5_*, lab_v7_*, lab_v9_*: gemv4t_body instantiations (see the table in lab_gemv4.rs).
//   lab_bulk_body (v8): the bulk-copy (TMA) ring.

/// quant4.cu's t4_mma_step_n for one n-tile (the lab bodies' k-step).
template <bool L64>
__device__ __forceinline__ void t4_mma_step(float (&c)[4], const uint4& a, int s, const u32 (&xu)[8], u32 sbase, u32 lane4) {
    t4_mma_step_n<L64, 1>(reinterpret_cast<float(&)[1][4]>(c), a, s, reinterpret_cast<const u32(&)[1][8]>(xu), sbase, lane4);
}

// ---- v1 (the previous gemv4_bf16_t*) ----

#define V1_ROWS 4
#define V1_WARPS 8
#define V1_UNROLL 2

__device__ __forceinline__ float v1_absmax_lut(const float* plain, const u8* q, const float* lut2, const float* nested,
                                            int nested_blocksize, float offset, i64 i) {
    if (plain != nullptr) return __ldg(plain + i);
    return __fadd_rn(__fmul_rn(lut2[__ldg(q + i)], __ldg(nested + i / nested_blocksize)), offset);
}

template <int MAXT>
__device__ __forceinline__ void v1_gemv4_body(const bf16* __restrict__ x, const u8* __restrict__ packed,
                                           const float* __restrict__ absmax, const u8* __restrict__ absmax_q,
                                           const float* __restrict__ absmax_code, const float* __restrict__ nested,
                                           int nested_blocksize, float offset, const float* __restrict__ code,
                                           int blocksize, int N, int K, int T, const bf16* __restrict__ bias,
                                           int epi, bf16* __restrict__ out) {
    __shared__ float lut[16];
    __shared__ float lut2[256];
    if (threadIdx.x < 16) lut[threadIdx.x] = code[threadIdx.x];
    if (absmax_code != nullptr)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) lut2[i] = absmax_code[i];
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n0 = (blockIdx.x * V1_WARPS + warp) * V1_ROWS;
    if (n0 >= N) return;
    const int words = K / 32;
    float acc[V1_ROWS][MAXT];
#pragma unroll
    for (int r = 0; r < V1_ROWS; r++)
#pragma unroll
        for (int t = 0; t < MAXT; t++) acc[r][t] = 0.f;

    for (int w0 = lane; w0 < words; w0 += 32 * V1_UNROLL) {
        uint4 q[V1_UNROLL][V1_ROWS];
        float a[V1_UNROLL][V1_ROWS];
#pragma unroll
        for (int u = 0; u < V1_UNROLL; u++) {
            const int w = w0 + 32 * u;
#pragma unroll
            for (int r = 0; r < V1_ROWS; r++) {
                const int n = n0 + r;
                const bool ok = (w < words) && (n < N);
                const i64 f = (i64)n * K + (i64)w * 32;
                q[u][r] = ok ? __ldg(reinterpret_cast<const uint4*>(packed + (f >> 1))) : make_uint4(0, 0, 0, 0);
                a[u][r] = ok ? v1_absmax_lut(absmax, absmax_q, lut2, nested, nested_blocksize, offset, f / blocksize) : 0.f;
            }
        }
#pragma unroll
        for (int u = 0; u < V1_UNROLL; u++) {
            const int w = w0 + 32 * u;
            if (w >= words) break;
#pragma unroll
            for (int part = 0; part < 4; part++) {
                const int k = w * 32 + part * 8;
                float xf[MAXT][8];
#pragma unroll
                for (int t = 0; t < MAXT; t++)
                    if (t < T) unpack8_bf16(__ldg(reinterpret_cast<const uint4*>(x + (i64)t * K + k)), xf[t]);
#pragma unroll
                for (int r = 0; r < V1_ROWS; r++) {
                    const u32 word = part == 0 ? q[u][r].x : part == 1 ? q[u][r].y : part == 2 ? q[u][r].z : q[u][r].w;
                    float wv[8];
#pragma unroll
                    for (int b = 0; b < 4; b++) {
                        const u32 byte = (word >> (8 * b)) & 0xFF;
                        wv[2 * b] = lut[byte >> 4] * a[u][r];
                        wv[2 * b + 1] = lut[byte & 15] * a[u][r];
                    }
#pragma unroll
                    for (int t = 0; t < MAXT; t++)
                        if (t < T)
#pragma unroll
                            for (int e = 0; e < 8; e++) acc[r][t] += wv[e] * xf[t][e];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < V1_ROWS; r++) {
        const int n = n0 + r;
        const float bv = (bias != nullptr && n < N) ? bf2f(bias[n]) : 0.f;
#pragma unroll
        for (int t = 0; t < MAXT; t++) {
            if (t < T) {
                const float s = warp_sum(acc[r][t]);
                if (lane == 0 && n < N) store_epilogue(out, (i64)t * N + n, s + bv, epi);
            }
        }
    }
}

#define V1_KERNEL(MAXT)                                                                                     \
    extern "C" __global__ void __launch_bounds__(V1_WARPS * 32) lab_v1_gemv4_t##MAXT(                           \
        const bf16* x, const u8* packed, const float* absmax, const u8* absmax_q, const float* absmax_code,    \
        const float* nested, int nested_blocksize, float offset, const float* code, int blocksize, int N, int K, \
        int T, const bf16* bias, int epi, bf16* out) {                                                                \
        v1_gemv4_body<MAXT>(x, packed, absmax, absmax_q, absmax_code, nested, nested_blocksize, offset, code,     \
                         blocksize, N, K, T, bias, epi, out);                                                       \
    }

V1_KERNEL(1)
V1_KERNEL(8)

// ---- the streaming-read ceiling ----
extern "C" __global__ void lab_stream_read(const uint4* __restrict__ p, i64 n16, u32* __restrict__ out) {
    u32 acc = 0;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n16; i += (i64)gridDim.x * blockDim.x) {
        uint4 v;
        asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p + i));
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) out[0] = acc;  // practically never: keeps the loads alive
}

// The same with 4 independent loads per thread in flight (a better ceiling for tens of MB).
extern "C" __global__ void lab_stream_read4(const uint4* __restrict__ p, i64 n16, u32* __restrict__ out) {
    u32 acc = 0;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n16; i += 4 * stride) {
        uint4 v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            v[u] = make_uint4(0, 0, 0, 0);
            if (i + u * stride < n16)
                asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                             : "=r"(v[u].x), "=r"(v[u].y), "=r"(v[u].z), "=r"(v[u].w) : "l"(p + i + u * stride));
        }
#pragma unroll
        for (int u = 0; u < 4; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    if (acc == 0x12345678u) out[0] = acc;
}

// ---- v2..v4: the first tensor-core GEMV body, kept verbatim (measured in lab run 1) ----
// Its prefetch did not work: ptxas put the next stage's loads on the same scoreboard as the current
// stage's and x's, so the first use of the current data waited for the next stage too (see NOTES.md).
/// One step's loads: NT = U * RT tiles, each 16 weight bytes and the raw scales of the lane's two
/// rows (DQ: the two code bytes in s0; plain: the two f32 in s0, s1).
template <int NT>
struct T4OldStage {
    uint4 a[NT];
    u32 s0[NT], s1[NT];
};

template <int W, int RT, int U, int MAXT, bool DQ, bool GEN, bool PF, bool L64>
__device__ __forceinline__ void lab_old_body(const bf16* __restrict__ x, const uint4* __restrict__ tiles,
                                            const float* __restrict__ absmax, const u8* __restrict__ absmax_q,
                                            const float* __restrict__ absmax_code, const float* __restrict__ nested,
                                            int nested_shift, int nested_jshift, float offset,
                                            const float* __restrict__ code, int bshift, int N, int K, int T,
                                            const bf16* __restrict__ bias, int epi, bf16* __restrict__ out) {
    constexpr int NT = U * RT;
    constexpr int NC = MAXT == 1 ? 2 : 4;  // fragment values kept per tile: (row g, row g+8) x tokens 2t(, 2t+1)
    constexpr int LUT_BYTES = L64 ? T4_LUT64_BYTES : T4_LUT32_BYTES;
    constexpr int JSTEP = W * U;  // k-blocks a warp advances per step
    extern __shared__ __align__(16) u8 t4_smem[];  // (the same symbol as quant4.cu's)
    float* red = reinterpret_cast<float*>(t4_smem + LUT_BYTES);  // [W][RT][NC][32]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const u32 lane4 = (u32)lane * 4, sbase = t4_smem_base(t4_smem);
    const int KB = K >> 6, tiles_n = N >> 4, groups = (tiles_n + RT - 1) / RT;
    const int S = (KB + JSTEP - 1) / JSTEP;  // steps per group, the same for every warp
    const int my_groups = (int)blockIdx.x < groups ? (groups - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    const int total = my_groups * S;

    // Load cursor: group lg, step ls; tpl[rt] / spl[rt] point at tile (lg*RT + rt, k-block warp + JSTEP*ls)
    // (this lane's 16 bytes) and its scales (this lane's two).
    int lg = blockIdx.x, ls = 0;
    const uint4* tpl[RT];
    const u8* spl[RT];
    auto set_load_ptrs = [&]() {
#pragma unroll
        for (int rt = 0; rt < RT; rt++) {
            const i64 tile = (i64)(lg * RT + rt) * KB + warp;
            tpl[rt] = tiles + tile * 32 + lane;
            spl[rt] = DQ ? absmax_q + tile * 16 + 2 * g : reinterpret_cast<const u8*>(absmax + tile * 16 + 2 * g);
        }
    };
    auto advance_load = [&]() {
        if (++ls == S) {
            ls = 0;
            lg += gridDim.x;
            set_load_ptrs();
        } else {
#pragma unroll
            for (int rt = 0; rt < RT; rt++) {
                tpl[rt] += JSTEP * 32;
                spl[rt] += JSTEP * 16 * (DQ ? 1 : 4);
            }
        }
    };
    auto load_one = [&](T4OldStage<NT>& st, int u, int rt) {
        const int e = u * RT + rt;
        st.a[e] = t4_ld_weights(tpl[rt] + u * W * 32);
        st.s1[e] = 0;
        if (GEN) {  // scales by index: tiled (bshift 0) or flat blocks of 64 << bshift
            const int r = lg * RT + rt, j = warp + JSTEP * ls + W * u;
            const i64 tile = (i64)r * KB + j;
            const i64 bg = bshift == 0 ? tile * 16 + 2 * g : ((i64)(16 * r + g) * KB + j) >> bshift;
            const i64 bh = bshift == 0 ? bg + 1 : ((i64)(16 * r + g + 8) * KB + j) >> bshift;
            if (DQ) st.s0[e] = (u32)__ldg(absmax_q + bg) | ((u32)__ldg(absmax_q + bh) << 8);
            else {
                st.s0[e] = __float_as_uint(__ldg(absmax + bg));
                st.s1[e] = __float_as_uint(__ldg(absmax + bh));
            }
        } else if (DQ) {
            st.s0[e] = __ldg(reinterpret_cast<const unsigned short*>(spl[rt] + u * W * 16));
        } else {
            const float2 p = __ldg(reinterpret_cast<const float2*>(spl[rt]) + u * W * 8);
            st.s0[e] = __float_as_uint(p.x);
            st.s1[e] = __float_as_uint(p.y);
        }
    };
    auto load = [&](T4OldStage<NT>& st) {
        const int j0 = warp + JSTEP * ls;
        if (j0 + W * (U - 1) < KB && lg * RT + RT <= tiles_n) {  // the whole step in range (warp-uniform)
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int rt = 0; rt < RT; rt++) load_one(st, u, rt);
        } else {
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int rt = 0; rt < RT; rt++) {
                    if (j0 + W * u < KB && lg * RT + rt < tiles_n) load_one(st, u, rt);
                    else {
                        st.a[u * RT + rt] = make_uint4(0, 0, 0, 0);
                        st.s0[u * RT + rt] = st.s1[u * RT + rt] = 0;
                    }
                }
        }
        advance_load();
    };

    float acc[RT][NC];
    float nest[RT][2];
    int nest_grp = -1, nest_jp = -1;
#pragma unroll
    for (int rt = 0; rt < RT; rt++) {
#pragma unroll
        for (int c = 0; c < NC; c++) acc[rt][c] = 0.f;
        nest[rt][0] = nest[rt][1] = 0.f;
    }

    // Compute cursor: group cg, step cs; xp = this lane's x (token g) at k-block warp + JSTEP*cs.
    int cg = blockIdx.x, cs = 0;
    const bf16* xp0 = x + (i64)g * K + 64 * warp + 16 * t;
    const bf16* xp = xp0;

    auto compute = [&](const T4OldStage<NT>& st) {
        const int j0 = warp + JSTEP * cs;
        if (DQ && !GEN) {  // the nested absmax of the lane's rows: reloaded when group or segment changes
            const int jp = j0 >> nested_jshift;  // the host guarantees a step never crosses a segment
            if (jp != nest_jp || cg != nest_grp) {  // warp-uniform, rare
                nest_jp = jp;
                nest_grp = cg;
#pragma unroll
                for (int rt = 0; rt < RT; rt++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const i64 n = (i64)(cg * RT + rt) * 16 + g + 8 * h;
                        nest[rt][h] = n < N ? __ldg(nested + ((n * KB) >> nested_shift) + jp) : 0.f;
                    }
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j = j0 + W * u;
            if (j >= KB) break;  // warp-uniform
            u32 xw[8];
            t4_ld_x(xp + 64 * W * u, g < T, xw);
#pragma unroll
            for (int rt = 0; rt < RT; rt++) {
                const int r = cg * RT + rt, e = u * RT + rt;
                if (r >= tiles_n) break;  // warp-uniform
                float c[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int s = 0; s < 4; s++) t4_mma_step<L64>(c, st.a[e], s, xw, sbase, lane4);
                float sg, sh;
                if (DQ) {
                    float ng = nest[rt][0], nh = nest[rt][1];
                    if (GEN) {
                        const i64 n = (i64)r * 16 + g;
                        ng = __ldg(nested + ((((n * KB + j) >> bshift)) >> nested_shift));
                        nh = __ldg(nested + (((((n + 8) * KB + j) >> bshift)) >> nested_shift));
                    }
                    sg = __fadd_rn(__fmul_rn(t4_code2<L64, 0>(sbase, st.s0[e], lane4), ng), offset);
                    sh = __fadd_rn(__fmul_rn(t4_code2<L64, 1>(sbase, st.s0[e], lane4), nh), offset);
                } else {
                    sg = __uint_as_float(st.s0[e]);
                    sh = __uint_as_float(st.s1[e]);
                }
                t4_scale_acc<MAXT>(acc[rt], c, sg, sh);
            }
        }
    };

    // Block-uniform: every thread reaches both barriers.
    auto reduce = [&](int grp) {
        t4_park(acc, red);
        gemv4t_finish<W, RT, NC, MAXT>(red, grp, -1, N, T, bias, epi, out);  // barriers inside
    };

    auto advance_compute = [&]() {
        if (++cs == S) {
            reduce(cg);
            cs = 0;
            cg += gridDim.x;
            xp = xp0;
        } else {
            xp += 64 * JSTEP;
        }
    };

    set_load_ptrs();
    T4OldStage<NT> sa, sb;
    if (PF && total > 0) load(sa);  // in flight while the table is filled
    t4_fill_lut<L64>(t4_smem, code, DQ ? absmax_code : nullptr);
    __syncthreads();
    auto run = [&](T4OldStage<NT>& cur, T4OldStage<NT>& nxt, int it) {
        if (!PF) load(cur);
        else if (it + 1 < total) load(nxt);  // the next step, possibly the next group's first
        compute(cur);
        advance_compute();
    };
    for (int it = 0; it < total; it += 2) {
        run(sa, sb, it);
        if (it + 1 < total) run(sb, sa, it + 1);
    }
}


#define LAB_OLD_KERNEL(NAME, W, RT, U, MAXT, DQ, GEN, PF, L64, BPS)                                  \
    extern "C" __global__ void __launch_bounds__(W * 32, BPS) NAME(T4_ARGS) {                          \
        lab_old_body<W, RT, U, MAXT, DQ, GEN, PF, L64>(T4_PASS);                                      \
    }

// ---- v6: a cp.async ring instead of register double buffering (T = 1, double quant, tiled scales,
// hoisted nested absmax). Each warp keeps D stages in flight in shared memory: its tiles (lane l
// copies its own 16 bytes and reads them back), the tiles' 16 code bytes (lanes 0..3) and token 0's x
// (lanes 0..3). cp.async groups, not scoreboards, say what has landed: wait_group(D - 1) + __syncwarp.
__device__ __forceinline__ void lab_cp16(u32 dst, const void* src, u32 bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void lab_cp4(u32 dst, const void* src, u32 bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void lab_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void lab_cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
__device__ __forceinline__ uint4 lab_lds128(u32 a) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a) : "memory");
    return v;
}

template <int W, int RT, int U, int D, bool L64>
__device__ __forceinline__ void lab_ring_body(const bf16* __restrict__ x, const uint4* __restrict__ tiles,
                                              const float* __restrict__ absmax, const u8* __restrict__ absmax_q,
                                              const float* __restrict__ absmax_code, const float* __restrict__ nested,
                                              int nested_shift, int nested_jshift, float offset,
                                              const float* __restrict__ code, int bshift, int N, int K, int T,
                                              const bf16* __restrict__ bias, int epi, bf16* __restrict__ out) {
    constexpr int NT = U * RT, NC = 2, JSTEP = W * U;
    constexpr int LUT_BYTES = L64 ? T4_LUT64_BYTES : T4_LUT32_BYTES;
    constexpr int STAGE = NT * 528 + U * 128;  // tiles, their code bytes, x
    constexpr int RED = W * RT * NC * 128;
    extern __shared__ __align__(16) u8 t4_smem[];
    float* red = reinterpret_cast<float*>(t4_smem + LUT_BYTES);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2;
    const u32 lane4 = (u32)lane * 4, sbase = t4_smem_base(t4_smem);
    const u32 ring = sbase + LUT_BYTES + RED + warp * D * STAGE;
    const int KB = K >> 6, tiles_n = N >> 4, groups = (tiles_n + RT - 1) / RT;
    const int S = (KB + JSTEP - 1) / JSTEP;
    const int my_groups = (int)blockIdx.x < groups ? (groups - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    const int total = my_groups * S;
    const u32 qb = 2 * (g & 1);
    int ig = blockIdx.x, is = 0;
    auto issue = [&](int slot) {
        const u32 st = ring + slot * STAGE;
        const int j0 = warp + JSTEP * is;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j = j0 + W * u;
            const bool jok = j < KB;
#pragma unroll
            for (int rt = 0; rt < RT; rt++) {
                const int e = u * RT + rt, r = ig * RT + rt;
                const bool ok = jok && r < tiles_n;
                const i64 tile = ok ? (i64)r * KB + j : 0;
                lab_cp16(st + e * 512 + lane * 16, tiles + tile * 32 + lane, ok ? 16 : 0);
                if (lane < 4) lab_cp4(st + NT * 512 + e * 16 + lane * 4, absmax_q + tile * 16 + lane * 4, ok ? 4 : 0);
            }
            if (lane < 4) {
                const bf16* src = x + (jok ? 64 * j + 16 * lane : 0);
                lab_cp16(st + NT * 528 + u * 128 + lane * 32, src, jok ? 16 : 0);
                lab_cp16(st + NT * 528 + u * 128 + lane * 32 + 16, src + 8, jok ? 16 : 0);
            }
        }
        if (++is == S) {
            is = 0;
            ig += gridDim.x;
        }
    };
#pragma unroll
    for (int d = 0; d < D - 1; d++) {
        if (d < total) issue(d);
        lab_cp_commit();
    }
    t4_fill_lut<L64>(t4_smem, code, absmax_code);
    __syncthreads();
    float acc[RT][NC];
    float nest[RT][2];
    int nest_grp = -1, nest_jp = -1;
#pragma unroll
    for (int rt = 0; rt < RT; rt++) acc[rt][0] = acc[rt][1] = nest[rt][0] = nest[rt][1] = 0.f;
    int cg = blockIdx.x, cs = 0;
    for (int it = 0; it < total; it++) {
        if (it + D - 1 < total) issue((it + D - 1) % D);
        lab_cp_commit();
        lab_cp_wait<D - 1>();
        __syncwarp();
        const u32 st = ring + (it % D) * STAGE;
        const int j0 = warp + JSTEP * cs;
        const int jp = j0 >> nested_jshift;
        if (jp != nest_jp || cg != nest_grp) {  // warp-uniform, rare
            nest_jp = jp;
            nest_grp = cg;
#pragma unroll
            for (int rt = 0; rt < RT; rt++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const i64 n = (i64)(cg * RT + rt) * 16 + g + 8 * h;
                    nest[rt][h] = n < N ? __ldg(nested + ((n * KB) >> nested_shift) + jp) : 0.f;
                }
        }
        u32 xw[U][8];
#pragma unroll
        for (int u = 0; u < U; u++) {
            uint4 v0 = make_uint4(0, 0, 0, 0), v1 = v0;
            if (lane < 4) {
                v0 = lab_lds128(st + NT * 528 + u * 128 + lane * 32);
                v1 = lab_lds128(st + NT * 528 + u * 128 + lane * 32 + 16);
            }
            xw[u][0] = v0.x; xw[u][1] = v0.y; xw[u][2] = v0.z; xw[u][3] = v0.w;
            xw[u][4] = v1.x; xw[u][5] = v1.y; xw[u][6] = v1.z; xw[u][7] = v1.w;
        }
        uint4 a[NT];
#pragma unroll
        for (int e = 0; e < NT; e++) a[e] = lab_lds128(st + e * 512 + lane * 16);
        float c[NT][4];
#pragma unroll
        for (int e = 0; e < NT; e++) c[e][0] = c[e][1] = c[e][2] = c[e][3] = 0.f;
#pragma unroll
        for (int s = 0; s < 4; s++)
#pragma unroll
            for (int e = 0; e < NT; e++) t4_mma_step<L64>(c[e], a[e], s, xw[e / RT], sbase, lane4);
#pragma unroll
        for (int e = 0; e < NT; e++) {
            const int rt = e % RT;
            const u32 q = t4_lds(st + NT * 512 + e * 16 + 4 * (g >> 1));
            const float sg = __fadd_rn(__fmul_rn(t4_code2_at<L64>(sbase, q, qb, lane4), nest[rt][0]), offset);
            const float sh = __fadd_rn(__fmul_rn(t4_code2_at<L64>(sbase, q, qb + 1, lane4), nest[rt][1]), offset);
            acc[rt][0] = fmaf(c[e][0], sg, acc[rt][0]);
            acc[rt][1] = fmaf(c[e][2], sh, acc[rt][1]);
        }
        __syncwarp();
        if (++cs == S) {  // block-uniform
            t4_park(acc, red);
            __syncthreads();
            for (int o = threadIdx.x; o < RT * 16; o += blockDim.x) {
                const int rt = o >> 4, m = o & 15;
                float sum = 0.f;
#pragma unroll
                for (int w = 0; w < W; w++) sum += red[((w * RT + rt) * NC + (m >> 3)) * 32 + (m & 7) * 4];
                const int n = (cg * RT + rt) * 16 + m;
                if (n < N) store_epilogue(out, n, sum + (bias != nullptr ? bf2f(bias[n]) : 0.f), epi);
            }
            __syncthreads();
            cs = 0;
            cg += gridDim.x;
        }
    }
}

#define LAB_RING_KERNEL(NAME, W, RT, U, D, L64, BPS)                                                  \
    extern "C" __global__ void __launch_bounds__(W * 32, BPS) NAME(T4_ARGS) {                          \
        lab_ring_body<W, RT, U, D, L64>(T4_PASS);                                                     \
    }

// ---- variants (NAME, W, RT, U, MAXT, DQ, GEN, PF, L64, BPS) ----
// v2: the lead design as briefed: 32 KB table (shift/mask/or + add per byte), no prefetch.
LAB_OLD_KERNEL(lab_tc_v2, 8, 2, 2, 1, true, false, false, false, 3)
// v3: 64 KB table, one PRMT per byte (LDS [PRMT + UR]), no prefetch.
LAB_OLD_KERNEL(lab_tc_v3, 8, 2, 2, 1, true, false, false, true, 3)
// v4: v3 + register double buffering (which the scoreboard sharing defeated).
LAB_OLD_KERNEL(lab_tc_v4, 8, 2, 2, 1, true, false, true, true, 2)
// v5 (quant4.cu gemv4t_body: prefetch made to work, branch-free interleaved tiles), (NAME, W, RT, U,
// MAXT, DQ, TS, NH, L64, BPS); lab_v5_w8r2u2 is the production configuration.
GEMV4T_KERNEL(lab_v5_w8r2u2, 8, 2, 2, 1, true, true, true, false, 2)
GEMV4T_KERNEL(lab_v5_w8r2u2_l64, 8, 2, 2, 1, true, true, true, true, 2)
GEMV4T_KERNEL(lab_v5_w8r1u2_b3, 8, 1, 2, 1, true, true, true, false, 3)
GEMV4T_KERNEL(lab_v5_w8r1u4, 8, 1, 4, 1, true, true, true, false, 2)
GEMV4T_KERNEL(lab_v5_w8r3u1, 8, 3, 1, 1, true, true, true, false, 2)
GEMV4T_KERNEL(lab_v5_w8r4u1, 8, 4, 1, 1, true, true, true, false, 2)
GEMV4T_KERNEL(lab_v5_w16r2u1, 16, 2, 1, 1, true, true, true, false, 1)
GEMV4T_KERNEL(lab_v5_w4r2u2, 4, 2, 2, 1, true, true, true, false, 4)
// v6: cp.async ring (NAME, W, RT, U, D, L64, BPS)
LAB_RING_KERNEL(lab_v6_w8r2u2d4, 8, 2, 2, 4, false, 2)
LAB_RING_KERNEL(lab_v6_w8r2u2d3, 8, 2, 2, 3, false, 2)
LAB_RING_KERNEL(lab_v6_w8r1u2d6, 8, 1, 2, 6, false, 2)
LAB_RING_KERNEL(lab_v6_w8r2u1d6, 8, 2, 1, 6, false, 2)
LAB_RING_KERNEL(lab_v6_w4r2u2d6, 4, 2, 2, 6, false, 3)
// v7: v5 with P register stages (P - 1 steps in flight while one is decoded), (NAME, W, RT, U, MAXT,
// DQ, TS, NH, L64, BPS, P). Fewer tiles a step keep 16 warps an SM within 128 registers.
GEMV4T_KERNEL_P(lab_v7_w8r1u2_p4, 8, 1, 2, 1, true, true, true, false, 2, 4)
GEMV4T_KERNEL_P(lab_v7_w8r1u2_p5, 8, 1, 2, 1, true, true, true, false, 2, 5)
GEMV4T_KERNEL_P(lab_v7_w8r2u1_p4, 8, 2, 1, 1, true, true, true, false, 2, 4)
GEMV4T_KERNEL_P(lab_v7_w8r2u1_p5, 8, 2, 1, 1, true, true, true, false, 2, 5)
GEMV4T_KERNEL_P(lab_v7_w4r1u2_p4_b4, 4, 1, 2, 1, true, true, true, false, 4, 4)
GEMV4T_KERNEL_P(lab_v7_w8r1u2_p4_l64, 8, 1, 2, 1, true, true, true, true, 2, 4)
GEMV4T_KERNEL_P(lab_v7_w8r2u1_p4_l64, 8, 2, 1, 1, true, true, true, true, 2, 4)
GEMV4T_KERNEL_P(lab_v7_w8r2u2_p3_b1, 8, 2, 2, 1, true, true, true, false, 1, 3)
GEMV4T_KERNEL_P(lab_v7_w8r2u2_p4_b1, 8, 2, 2, 1, true, true, true, false, 1, 4)
GEMV4T_KERNEL_P(lab_v7_w4r2u2_p3_b3, 4, 2, 2, 1, true, true, true, false, 3, 3)

// ---- v8: a block-wide bulk-copy (TMA) ring (T <= MAXT, double quant, tiled scales, hoisted nested
// absmax). Register double buffering tops out at one step in flight a warp (ptxas puts every weight
// load on one scoreboard, so a deeper register pipeline waits for all of it: v7). Here one thread
// copies each step's bytes (the block's RT row tiles x JSTEP k-blocks: RT contiguous runs of JSTEP
// tiles and their code bytes) into stage it % D with cp.async.bulk, completing on full[slot]; the
// warps read their tiles back with one LDS.128 a tile, decode as v5 and arrive on empty[slot]; the
// copier refills a slot once all W warps arrived. D - 1 steps stay in flight with no register cost.
// x (and the nested absmax) of the next step are loaded into registers one step ahead.
__device__ __forceinline__ void lab_mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void lab_mbar_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void lab_mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void lab_mbar_wait(u32 bar, u32 parity) {
    asm volatile(
        "{\n .reg .pred p;\n LAB_WAIT_%=:\n"
        " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
        " @!p bra LAB_WAIT_%=;\n}" ::"r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void lab_bulk_copy(u32 dst, const void* src, u32 bytes, u32 bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}

template <int W, int RT, int U, int MAXT, int D, bool L64>
__device__ __forceinline__ void lab_bulk_body(const bf16* __restrict__ x, const uint4* __restrict__ tiles,
                                              const float* __restrict__ absmax, const u8* __restrict__ absmax_q,
                                              const float* __restrict__ absmax_code, const float* __restrict__ nested,
                                              int nested_shift, int nested_jshift, float offset,
                                              const float* __restrict__ code, int bshift, int N, int K, int T,
                                              const bf16* __restrict__ bias, int epi, bf16* __restrict__ out) {
    constexpr int NT = U * RT, JSTEP = W * U;
    constexpr int NC = MAXT == 1 ? 2 : 4;
    constexpr int LUT_BYTES = L64 ? T4_LUT64_BYTES : T4_LUT32_BYTES;
    constexpr int RED = W * RT * NC * 128;
    constexpr int TILE_BYTES = RT * JSTEP * 512;        // a stage: the tiles, then their code bytes
    constexpr int STAGE = TILE_BYTES + RT * JSTEP * 16;
    extern __shared__ __align__(128) u8 t4_smem[];
    __shared__ __align__(8) u64 bars[2 * D];  // full[D], then empty[D]
    float* red = reinterpret_cast<float*>(t4_smem + LUT_BYTES);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const u32 lane4 = (u32)lane * 4, sbase = t4_smem_base(t4_smem);
    const u32 stage0 = sbase + LUT_BYTES + RED;
    const u32 bar0 = t4_smem_base(bars);
    const int KB = K >> 6, tiles_n = N >> 4, groups = (tiles_n + RT - 1) / RT;
    const int S = (KB + JSTEP - 1) / JSTEP;
    const int my_groups = (int)blockIdx.x < groups ? (groups - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    const int total = my_groups * S;
    const u32 qb = 2 * (g & 1);
    const bool copier = threadIdx.x == 0;

    // The copier's view of step `it`: group blockIdx.x + (it / S) * gridDim.x, k-blocks JSTEP * (it % S)..
    auto issue = [&](int it) {
        const int slot = it % D;
        const int grp = blockIdx.x + (it / S) * gridDim.x, s = it % S;
        const int nkb = min(JSTEP, KB - JSTEP * s);
        int rows = min(RT, tiles_n - grp * RT);
        const u32 full = bar0 + 8 * slot, dst = stage0 + slot * STAGE;
        lab_mbar_expect_tx(full, (u32)(rows * nkb * 528));
        for (int rt = 0; rt < rows; rt++) {
            const i64 tile = (i64)(grp * RT + rt) * KB + JSTEP * s;
            lab_bulk_copy(dst + rt * JSTEP * 512, tiles + tile * 32, nkb * 512, full);
            lab_bulk_copy(dst + TILE_BYTES + rt * JSTEP * 16, absmax_q + tile * 16, nkb * 16, full);
        }
    };

    if (copier) {
        for (int i = 0; i < D; i++) {
            lab_mbar_init(bar0 + 8 * i, 1);
            lab_mbar_init(bar0 + 8 * (D + i), W);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (copier)
        for (int it = 0; it < D - 1 && it < total; it++) issue(it);
    t4_fill_lut<L64>(t4_smem, code, absmax_code);
    __syncthreads();
    PDL_ENTER();

    float acc[RT][NC];
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int c = 0; c < NC; c++) acc[rt][c] = 0.f;

    // x of step `it` (token g's 16 values at k 64j+16t.. of this warp's k-blocks), zero past K or T.
    auto load_x = [&](int it, u32 (&xw)[U][8]) {
        const int s = it % S;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j = JSTEP * s + W * u + warp;
            t4_ld_x(x + (i64)g * K + 64 * j + 16 * t, it < total && g < T && j < KB, xw[u]);
        }
    };
    // The nested absmax of this lane's rows (g, g + 8 of each row tile) at step `it`.
    auto load_nv = [&](int it, float (&nv)[RT][2]) {
        const int grp = blockIdx.x + (it / S) * gridDim.x, jp = (JSTEP * (it % S)) >> nested_jshift;
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const i64 n = (i64)(grp * RT + rt) * 16 + g + 8 * h;
                nv[rt][h] = (it < total && n < N) ? __ldg(nested + ((n * KB) >> nested_shift) + jp) : 0.f;
            }
    };
    auto nv_key = [&](int it) { return (it / S) * 65536 + ((JSTEP * (it % S)) >> nested_jshift); };

    auto reduce = [&](int grp) {
        t4_park(acc, red);
        gemv4t_finish<W, RT, NC, MAXT>(red, grp, -1, N, T, bias, epi, out);  // barriers inside
    };

    u32 xw[U][8], xn[U][8];
    float nv[RT][2], nn[RT][2];
    load_x(0, xw);
    load_nv(0, nv);
    int key = nv_key(0);
    for (int it = 0; it < total; it++) {
        const int slot = it % D, s = it % S;
        const int grp = blockIdx.x + (it / S) * gridDim.x;
        if (copier && it + D - 1 < total) {
            if (it >= 1) lab_mbar_wait(bar0 + 8 * (D + (it - 1) % D), (u32)(((it - 1) / D) & 1));
            issue(it + D - 1);
        }
        // Next step's x and nested absmax into registers (waited for one step later).
        load_x(it + 1, xn);
        const int next_key = nv_key(it + 1);
        const bool new_nv = next_key != key;
        if (new_nv) load_nv(it + 1, nn);
        lab_mbar_wait(bar0 + 8 * slot, (u32)((it / D) & 1));
        const u32 st = stage0 + slot * STAGE;
        uint4 a[NT];
        u32 s0[NT];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int rt = 0; rt < RT; rt++) {
                const int e = u * RT + rt, jl = W * u + warp;
                const bool ok = JSTEP * s + jl < KB && grp * RT + rt < tiles_n;
                a[e] = ok ? lab_lds128(st + (rt * JSTEP + jl) * 512 + lane * 16) : make_uint4(0, 0, 0, 0);
                s0[e] = ok ? t4_lds(st + TILE_BYTES + (rt * JSTEP + jl) * 16 + 4 * (g >> 1)) : 0u;
            }
        __syncwarp();
        if (lane == 0) lab_mbar_arrive(bar0 + 8 * (D + slot));
        float c[NT][4];
#pragma unroll
        for (int e = 0; e < NT; e++) c[e][0] = c[e][1] = c[e][2] = c[e][3] = 0.f;
#pragma unroll
        for (int q = 0; q < 4; q++)
#pragma unroll
            for (int e = 0; e < NT; e++) t4_mma_step<L64>(c[e], a[e], q, xw[e / RT], sbase, lane4);
#pragma unroll
        for (int e = 0; e < NT; e++) {
            const int rt = e % RT;
            const float cg2 = t4_code2_at<L64>(sbase, s0[e], qb, lane4), ch2 = t4_code2_at<L64>(sbase, s0[e], qb + 1, lane4);
            const float sg = __fadd_rn(__fmul_rn(cg2, nv[rt][0]), offset), sh = __fadd_rn(__fmul_rn(ch2, nv[rt][1]), offset);
            t4_scale_acc<MAXT>(acc[rt], c[e], sg, sh);
        }
        if (s == S - 1) reduce(grp);
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int i = 0; i < 8; i++) xw[u][i] = xn[u][i];
        if (new_nv) {
            key = next_key;
#pragma unroll
            for (int rt = 0; rt < RT; rt++) nv[rt][0] = nn[rt][0], nv[rt][1] = nn[rt][1];
        }
    }
}

#define LAB_BULK_KERNEL(NAME, W, RT, U, D, L64, BPS)                                                  \
    extern "C" __global__ void __launch_bounds__(W * 32, BPS) NAME(T4_ARGS) {                          \
        lab_bulk_body<W, RT, U, 1, D, L64>(T4_PASS);                                                  \
    }
// v8 (NAME, W, RT, U, D, L64, BPS)
LAB_BULK_KERNEL(lab_v8_w8r2u2d3, 8, 2, 2, 3, false, 2)
LAB_BULK_KERNEL(lab_v8_w8r2u2d4, 8, 2, 2, 4, false, 2)
LAB_BULK_KERNEL(lab_v8_w8r2u1d4, 8, 2, 1, 4, false, 2)
LAB_BULK_KERNEL(lab_v8_w8r2u2d6, 8, 2, 2, 6, false, 1)
LAB_BULK_KERNEL(lab_v8_w8r2u2d4_l64, 8, 2, 2, 4, true, 1)
// v9: the production body with the split schedule (every resident block an equal share of the steps).
GEMV4T_KERNEL_SPLIT(lab_v9_w8r2u2_split, 8, 2, 2, 1, true, true, true, false, 2)
// v10: gemv4t_body with KO (one k-block at a time: x loaded per k-block, only RT fragments live), so
// one row tile a group fits 80 (3 blocks/SM) or 64 (4/SM) registers: more warps, more bytes in flight.
#define LAB_KO_KERNEL(NAME, W, RT, U, L64, BPS, SPLIT)                                                     \
    extern "C" __global__ void __launch_bounds__(W * 32, BPS) NAME(T4_ARGS) {                              \
        gemv4t_body<W, RT, U, 1, true, true, true, L64, 2, SPLIT, true>(T4_PASS);                          \
    }
LAB_KO_KERNEL(lab_v10_w8r1u4, 8, 1, 4, false, 2, false)
LAB_KO_KERNEL(lab_v10_w8r1u4_b3, 8, 1, 4, false, 3, false)
LAB_KO_KERNEL(lab_v10_w8r1u4_b3_split, 8, 1, 4, false, 3, true)
LAB_KO_KERNEL(lab_v10_w8r1u4_b3_l64, 8, 1, 4, true, 3, false)
LAB_KO_KERNEL(lab_v10_w4r1u4_b6, 4, 1, 4, false, 6, false)
LAB_KO_KERNEL(lab_v10_w4r1u4_b6_split, 4, 1, 4, false, 6, true)
LAB_KO_KERNEL(lab_v10_w8r1u8, 8, 1, 8, false, 2, false)
LAB_KO_KERNEL(lab_v10_w8r1u8_split, 8, 1, 8, false, 2, true)
LAB_KO_KERNEL(lab_v10_w8r1u2_b4, 8, 1, 2, false, 4, false)
LAB_KO_KERNEL(lab_v10_w8r1u2_b4_split, 8, 1, 2, false, 4, true)
LAB_KO_KERNEL(lab_v10_w8r2u2_ko, 8, 2, 2, false, 2, false)

// ---- v11: LLM.int8 weight-only at T = 1 on tensor cores, from a tile layout (a measurement of the
// idea, not wired into the engine). Tiles of 16 rows x 32 k (512 B): lane l = 4g + t holds 16 bytes,
// words 0..3 = (row g, k-step 0), (row g + 8, k-step 0), (row g, k-step 1), (row g + 8, k-step 1),
// each word the bytes of k = 16s + 2t, 2t + 1, 2t + 8, 2t + 9 (the mma A fragment order). Tile (r, j)
// at (r * K/32 + j) * 512. A word becomes two exact bf16 pairs (prelude.cuh int8x4_to_bf16x2: 2 LOP3,
// 4 PRMT, 2 HADD2 for 4 weights); 2 mma.sync a tile. Row scales (scb / 127) multiply each
// warp's sums before the block reduction (gemv4t_finish). Block = W warps over groups of RT row
// tiles (strided), warps split K, U k-blocks a step, register double buffering as gemv4t_body.
#define INV127_LAB 7.874015718698502e-3f  // bitsandbytes' 1/127

template <int W, int RT, int U>
__device__ __forceinline__ void i8t_body(const bf16* __restrict__ x, const uint4* __restrict__ tiles, const float* __restrict__ scb,
                                         int N, int K, bf16* __restrict__ out) {
    constexpr int NT = U * RT, JSTEP = W * U;
    __shared__ float red[W * RT * 2 * 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int KB = K >> 5, tiles_n = N >> 4, groups = (tiles_n + RT - 1) / RT;
    const int S = (KB + JSTEP - 1) / JSTEP;
    const int my_groups = (int)blockIdx.x < groups ? (groups - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    const int total = my_groups * S;
    const u32 opaque_zero = (u32)K >> 30;  // 0 for K < 2^30, opaque to the compiler
    int lg = blockIdx.x, ls = 0;  // load cursor
    auto load = [&](uint4 (&a)[NT], u32 dep) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int rt = 0; rt < RT; rt++) {
                const int j = warp + JSTEP * ls + W * u, r = lg * RT + rt;
                a[u * RT + rt] = (lg < groups && j < KB && r < tiles_n) ? t4_ld_weights(tiles + ((i64)r * KB + j) * 32 + lane + dep)
                                                                         : make_uint4(0, 0, 0, 0);
            }
        if (++ls == S) ls = 0, lg += gridDim.x;
    };
    float acc[RT][2];
#pragma unroll
    for (int rt = 0; rt < RT; rt++) acc[rt][0] = acc[rt][1] = 0.f;
    int cg = blockIdx.x, cs = 0;  // compute cursor
    uint4 cur[NT], nxt[NT];
    load(cur, 0);
    PDL_ENTER();
    for (int it = 0; it < total; it++) {
        u32 mix = 0;
#pragma unroll
        for (int e = 0; e < NT; e++) mix ^= cur[e].x;
        load(nxt, mix * opaque_zero);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j = warp + JSTEP * cs + W * u;
            u32 xb[4] = {0u, 0u, 0u, 0u};
            if (g == 0 && j < KB) {
                const u32* xp = reinterpret_cast<const u32*>(x + 32 * j + 2 * t);
                xb[0] = __ldg(xp); xb[1] = __ldg(xp + 4); xb[2] = __ldg(xp + 8); xb[3] = __ldg(xp + 12);
            }
#pragma unroll
            for (int rt = 0; rt < RT; rt++) {
                const uint4 q = cur[u * RT + rt];
                float c[4] = {0.f, 0.f, 0.f, 0.f};
                u32 a0, a2, a1, a3;
                int8x4_to_bf16x2(q.x, a0, a2);
                int8x4_to_bf16x2(q.y, a1, a3);
                t4_mma(c, a0, a1, a2, a3, xb[0], xb[1]);
                int8x4_to_bf16x2(q.z, a0, a2);
                int8x4_to_bf16x2(q.w, a1, a3);
                t4_mma(c, a0, a1, a2, a3, xb[2], xb[3]);
                acc[rt][0] += c[0];
                acc[rt][1] += c[2];
            }
        }
        if (++cs == S) {  // group done: scale rows, reduce over warps, store
#pragma unroll
            for (int rt = 0; rt < RT; rt++) {
                const int n = (cg * RT + rt) * 16 + g;
                acc[rt][0] *= n < N ? __ldg(scb + n) * INV127_LAB : 0.f;
                acc[rt][1] *= n + 8 < N ? __ldg(scb + n + 8) * INV127_LAB : 0.f;
            }
            t4_park<RT, 2>(acc, red);
            gemv4t_finish<W, RT, 2, 1>(red, cg, -1, N, 1, nullptr, 0, out);
            cs = 0;
            cg += gridDim.x;
        }
#pragma unroll
        for (int e = 0; e < NT; e++) cur[e] = nxt[e];
    }
}
#define LAB_I8T_KERNEL(NAME, W, RT, U, BPS)                                                                 \
    extern "C" __global__ void __launch_bounds__(W * 32, BPS)                                               \
        NAME(const bf16* x, const uint4* tiles, const float* scb, int N, int K, bf16* out) {               \
        i8t_body<W, RT, U>(x, tiles, scb, N, K, out);                                                       \
    }
LAB_I8T_KERNEL(lab_v11_i8t_w8r2u2, 8, 2, 2, 2)
LAB_I8T_KERNEL(lab_v11_i8t_w8r2u4, 8, 2, 4, 2)
LAB_I8T_KERNEL(lab_v11_i8t_w8r4u2, 8, 4, 2, 2)
LAB_I8T_KERNEL(lab_v11_i8t_w8r2u2_b3, 8, 2, 2, 3)
