// quant4.cu: bitsandbytes NF4 / FP4 weights on the device: dequantization (prefill chunks,
// embeddings), the repack into tensor-core tiles done at load, and the decode GEMV for T <= 8.
// Weight = code[nibble] * scale; the scale is plain f32 or double-quantized (see scale_at).
//
// Two layouts of the same packed bytes:
//   bnb: the row-major flattened (N, K) weight, two codes a byte (first element in the high nibble),
//     one scale per `blocksize` elements, as bitsandbytes stores it. Kept only for shapes the tiles
//     do not fit (N % 16, K % 64, or a blocksize that is not a power-of-two multiple of 64).
//   tiles: the bytes permuted so that one warp's mma.sync A operand of a 16-row x 64-k tile is 512
//     contiguous bytes. Tile (r, j) (rows 16r.., k 64j..) starts at byte (r * KB + j) * 512, KB = K/64.
//     Lane l = 4g + t owns bytes 16l..16l+15, which interleave the 8 bnb bytes of row 16r+g at
//     k = 64j+16t.. (even bytes) with the 8 bnb bytes of row 16r+g+8 at the same k (odd bytes).
//     Word s of a lane's 16 bytes is then exactly its A fragment a0..a3 (rows g, g+8, g, g+8) of
//     k-step s, one packed byte per bf16x2 register, once the k order inside a tile is permuted
//     alike for A and B: k-step s of lane (g, t) multiplies k = 64j+16t+4s..+3, so its B fragment
//     (token g) is words 2s, 2s+1 of x[g][64j+16t..+15] (two 16-byte loads).
//     At blocksize 64 the scales are tiled too (absmax_q bytes or plain f32): element
//     (r * KB + j) * 16 + 2g + h is the scale of row 16r+g+8h, block j, so a lane's two scales are
//     adjacent. Nested absmax (per 256 blocks, flat block order) and the code books are unchanged.
// Kernels:
//   dequant4_bf16 / dequant4w_bf16 (bnb layout) and dequant4t_bf16 (tiles):
//     (packed, absmax.., code (16), blocksize, [tiled_scales,] K, row_ids, row0, nrows, out (nrows, K))
//     out row i = weight row (row_ids ? row_ids[i] : row0 + i) as bf16(code * scale), bitsandbytes'
//     values exactly. Grid-stride; used for prefill (dequantize a chunk, then cuBLAS) and embeddings.
//   repack4_tiles(bnb, tiles, N, K, dir), repack4_scales_{u8,f32}(flat, tiled, N, KB, dir):
//     bnb -> tiles (dir 0) or back (dir 1); thread per 16 tile bytes / per scale.
//   gemv4t_{fast,tiled,flat}_{dq,plain}_t{1,8}(x (T, K), tiles, absmax.., nested_shift, nested_jshift,
//     offset, code, bshift, N, K, T, bias, epi, out (T, N)): the tensor-core GEMV (gemv4t_body);
//     fast: tiled scales + hoisted nested index, tiled: nested index per block, flat: blocksize > 64;
//     gemv4t_fast_{dq,plain}_t{1,8}_split: the fast kernels with the split schedule (see gemv4t_body);
//     gemv4t_fast_{dq,plain}_t{16,32}: T <= 16 / 32 with two / four mma n-tiles (short prompts);
//   gemv4_rows_bf16(x, packed (bnb), absmax.., code, blocksize, N, K, T, bias, epi, out): a plain
//     warp-per-row GEMV for the bnb layout (odd shapes only: slow, but allocation-free like the rest).
#include "prelude.cuh"

/// The scale of a 4-bit block whose scale sits at `pos` (tiled or flat) and whose flat block index
/// is `blk` (the nested absmax is indexed by it). `plain` non-null: f32 scales. Otherwise double
/// quantization, rounded as bitsandbytes' dequantize_blockwise then `+= offset` (see absmax_at).
__device__ __forceinline__ float scale_at(const float* plain, const u8* q, const float* code2, const float* nested,
                                          int nested_blocksize, float offset, i64 pos, i64 blk) {
    if (plain != nullptr) return plain[pos];
    return __fadd_rn(__fmul_rn(code2[q[pos]], nested[blk / nested_blocksize]), offset);
}

extern "C" __global__ void dequant4_bf16(const u8* __restrict__ packed, const float* __restrict__ absmax,
                                         const u8* __restrict__ absmax_q, const float* __restrict__ absmax_code,
                                         const float* __restrict__ nested, int nested_blocksize, float offset,
                                         const float* __restrict__ code, int blocksize, int K,
                                         const u32* __restrict__ row_ids, i64 row0, i64 nrows, bf16* __restrict__ out) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
    const int half_k = K / 2;
    const i64 total = nrows * half_k;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const i64 i = idx / half_k;
        const int kp = (int)(idx % half_k);
        const i64 src_row = row_ids ? (i64)row_ids[i] : row0 + i;
        const i64 f = src_row * K + 2 * kp;  // flat index of the first element of the pair
        const u8 b = packed[f >> 1];
        const float a = absmax_at(absmax, absmax_q, absmax_code, nested, nested_blocksize, offset, f / blocksize);
        __nv_bfloat162 pair;
        pair.x = f2bf(lut[b >> 4] * a);
        pair.y = f2bf(lut[b & 15] * a);
        *reinterpret_cast<__nv_bfloat162*>(out + i * K + 2 * kp) = pair;
    }
}

// Fast dequantization of the bnb layout when every row starts on a 16-byte word: thread per word
// (32 weights, one scale), 16-byte load, four 16-byte stores.
extern "C" __global__ void dequant4w_bf16(const u8* __restrict__ packed, const float* __restrict__ absmax,
                                          const u8* __restrict__ absmax_q, const float* __restrict__ absmax_code,
                                          const float* __restrict__ nested, int nested_blocksize, float offset,
                                          const float* __restrict__ code, int blocksize, int K,
                                          const u32* __restrict__ row_ids, i64 row0, i64 nrows, bf16* __restrict__ out) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
    const int wpr = K / 32;  // words per row
    const i64 total = nrows * wpr;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const i64 i = idx / wpr;
        const int w = (int)(idx % wpr);
        const i64 src_row = row_ids ? (i64)row_ids[i] : row0 + i;
        const i64 f = src_row * K + (i64)w * 32;
        const uint4 q = __ldg(reinterpret_cast<const uint4*>(packed + (f >> 1)));
        const float a = absmax_at(absmax, absmax_q, absmax_code, nested, nested_blocksize, offset, f / blocksize);
        const u32 qw[4] = {q.x, q.y, q.z, q.w};
        uint4* dst = reinterpret_cast<uint4*>(out + i * K + (i64)w * 32);
#pragma unroll
        for (int part = 0; part < 4; part++) {
            __nv_bfloat162 h[4];
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const u32 byte = (qw[part] >> (8 * b)) & 0xFF;
                h[b].x = f2bf(lut[byte >> 4] * a);
                h[b].y = f2bf(lut[byte & 15] * a);
            }
            dst[part] = *reinterpret_cast<uint4*>(h);
        }
    }
}

// Dequantization of the tiles layout: thread per (output row, 64-k block, t): the 16 weights of
// the row at k = 64j+16t.. are the even (row g) or odd (row g+8) bytes of lane 4g+t's 16 bytes.
extern "C" __global__ void dequant4t_bf16(const uint4* __restrict__ tiles, const float* __restrict__ absmax,
                                          const u8* __restrict__ absmax_q, const float* __restrict__ absmax_code,
                                          const float* __restrict__ nested, int nested_blocksize, float offset,
                                          const float* __restrict__ code, int blocksize, int tiled_scales, int K,
                                          const u32* __restrict__ row_ids, i64 row0, i64 nrows, bf16* __restrict__ out) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
    const int KB = K >> 6;
    const i64 total = nrows * KB * 4;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const int t = (int)(idx & 3);
        const i64 rest = idx >> 2;
        const int j = (int)(rest % KB);
        const i64 i = rest / KB;
        const i64 n = row_ids ? (i64)row_ids[i] : row0 + i;
        const i64 r = n >> 4;
        const int g = (int)(n & 7), h = (int)((n >> 3) & 1);
        const uint4 v = __ldg(tiles + (r * KB + j) * 32 + 4 * g + t);
        const u32 sel = h ? 0x7531u : 0x6420u;  // the odd or the even bytes, in order
        const u32 rb[2] = {__byte_perm(v.x, v.y, sel), __byte_perm(v.z, v.w, sel)};
        const i64 blk = (n * K + 64 * j) / blocksize;
        const i64 pos = tiled_scales ? (r * KB + j) * 16 + 2 * g + h : blk;
        const float a = scale_at(absmax, absmax_q, absmax_code, nested, nested_blocksize, offset, pos, blk);
        __nv_bfloat162 o[8];
#pragma unroll
        for (int b = 0; b < 8; b++) {
            const u32 byte = (rb[b >> 2] >> (8 * (b & 3))) & 0xFF;
            o[b].x = f2bf(lut[byte >> 4] * a);
            o[b].y = f2bf(lut[byte & 15] * a);
        }
        uint4* dst = reinterpret_cast<uint4*>(out + i * K + 64 * j + 16 * t);
        dst[0] = *reinterpret_cast<uint4*>(&o[0]);
        dst[1] = *reinterpret_cast<uint4*>(&o[4]);
    }
}

// ------------------------------------------------------------------------------------------------
// Repack between the bnb and the tiles layout (see the file comment). Thread per (tile, lane).
extern "C" __global__ void repack4_tiles(u8* __restrict__ bnb, u8* __restrict__ tiles, int N, int K, int dir) {
    const int KB = K >> 6;
    const i64 total = (i64)(N >> 4) * KB * 32;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const int l = (int)(idx & 31), g = l >> 2, t = l & 3;
        const i64 tj = idx >> 5, r = tj / KB;
        const int j = (int)(tj % KB);
        const i64 src_g = ((16 * r + g) * K + 64 * j + 16 * t) >> 1;  // 8 bytes of row g
        const i64 src_h = src_g + 4 * (i64)K;                          // 8 bytes of row g + 8
        uint2* pg = reinterpret_cast<uint2*>(bnb + src_g);
        uint2* ph = reinterpret_cast<uint2*>(bnb + src_h);
        uint4* pt = reinterpret_cast<uint4*>(tiles + idx * 16);
        if (dir == 0) {
            const uint2 a = *pg, b = *ph;
            *pt = make_uint4(__byte_perm(a.x, b.x, 0x5140), __byte_perm(a.x, b.x, 0x7362), __byte_perm(a.y, b.y, 0x5140),
                             __byte_perm(a.y, b.y, 0x7362));
        } else {
            const uint4 v = *pt;
            *pg = make_uint2(__byte_perm(v.x, v.y, 0x6420), __byte_perm(v.z, v.w, 0x6420));
            *ph = make_uint2(__byte_perm(v.x, v.y, 0x7531), __byte_perm(v.z, v.w, 0x7531));
        }
    }
}

template <typename E>
__device__ __forceinline__ void repack_scales(E* __restrict__ flat, E* __restrict__ tiled, int N, int KB, int dir) {
    const i64 total = (i64)N * KB;
    for (i64 idx = blockIdx.x * (i64)blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const int m2 = (int)(idx & 15);  // 2g + h
        const i64 tj = idx >> 4, r = tj / KB;
        const int j = (int)(tj % KB);
        const i64 n = 16 * r + (m2 >> 1) + 8 * (m2 & 1);
        const i64 src = n * KB + j;
        if (dir == 0) tiled[idx] = flat[src];
        else flat[src] = tiled[idx];
    }
}

extern "C" __global__ void repack4_scales_u8(u8* flat, u8* tiled, int N, int KB, int dir) { repack_scales(flat, tiled, N, KB, dir); }
extern "C" __global__ void repack4_scales_f32(float* flat, float* tiled, int N, int KB, int dir) { repack_scales(flat, tiled, N, KB, dir); }

// ------------------------------------------------------------------------------------------------
// The tensor-core GEMV on the tiles layout.
// Block = W warps; a "group" = RT consecutive row tiles, walked in S steps. The host launches one
// wave (at most the resident blocks, at most one block a group) and picks the schedule:
//   strided (SPLIT false): block b walks whole groups b, b + grid, ... (the grid divides the groups
//     evenly); the blocks stream neighbouring groups at any time, which the memory favours (a
//     contiguous share each measured 6-10% slower on h->4h);
//   split (SPLIT true, kernels *_split): block b takes steps [b*G*S/grid, (b+1)*G*S/grid) of the
//     groups' steps in order, an equal share to one step, for shapes whose groups just exceed the
//     resident blocks (qkv: 288 groups, 264 blocks: strided would run 144 blocks of two groups at
//     half occupancy). A group is then cut by at most one block boundary; its two parts meet in
//     g4_split_ws.
// Inside a group the W warps split K: warp w takes k-blocks
// j = w + W*(U*step + u), U k-blocks x RT tiles (16-byte loads) per step. Register double buffering:
// the next step's loads (also across groups) are issued once the current step's data and x have
// arrived and before the current step is decoded; an opaque zero multiplied by the current data
// makes ptxas order it so (otherwise it put both stages on one scoreboard and the decode waited for
// the prefetch: measured, see NOTES.md).
// Per tile: 16 bytes -> 16 shared-memory lookups of a bf16x2 code pair -> 4 mma.sync m16n8k16
// from zero (B = x^T, tokens >= T zero); the tiles of a step are interleaved (no branches: tiles past
// N or K are zero-filled), then acc += frag * scale(row): the 64-k tile is one scale block at
// blocksize 64. The decode table is replicated per lane ([byte][lane]: every lane reads its own
// bank, no conflicts): 32 KB (+ 1 KB double-quant code2) by default; L64: 64 KB, row e = 32 lanes'
// code pair of byte e then 32 lanes' code2[e], so a lookup address is ONE PRMT (the byte placed over
// lane * 4, + 128 for code2).
// After the group, warps' fragments meet in shared memory and thread (row, token) adds them in
// warp order, adds bias and applies the epilogue (one bf16 rounding).
// Scales: TS (blocksize 64, tiled scales): a lane's two scales are one 4-byte (or 8-byte) load. NH:
// the nested absmax of row n at block j is nested[((n*KB) >> nested_shift) + (j >> nested_jshift)]
// (exact when KB % nbs == 0, jshift = log2 nbs, or nbs % KB == 0, jshift 31), reloaded with the
// stage only when that changes; else loaded per block with the stage. Flat scales (TS false): any
// power-of-two blocksize multiple of 64 (bshift = log2(blocksize / 64)), scales indexed per block.
// Rounding: codes are rounded to bf16 (the mma operand), products and sums are f32 and the scale
// multiplies the f32 partial sum: bitsandbytes rounds code * absmax to bf16 instead, so results
// differ from its by rounding only (relative ~2^-9 per weight, far less on a dot product).
#define T4_LUT64_BYTES 65536

// Groups cut by a block boundary (gemv4t_body's shares): each of the two blocks leaves its part, summed
// over its warps, in g4_split_ws[boundary][part] (boundary b lies between blocks b and b + 1), and the
// second to arrive (g4_split_cnt, reset by it) adds them. Module globals, so zero at load; one stream
// uses them, and a launch touches them only after its PDL wait (the previous launch has ended).
// The host keeps the grid at most G4_SPLIT_MAX blocks.
#define G4_SPLIT_MAX 1024
#define G4_SPLIT_OUT 256  // outputs of a part: RT * 16 rows x MAXT tokens
__device__ float g4_split_ws[G4_SPLIT_MAX][2][G4_SPLIT_OUT];
__device__ u32 g4_split_cnt[G4_SPLIT_MAX];
#define T4_LUT32_BYTES (32768 + 1024)

/// 16-byte load of weights: read-only path, not kept in L1 (each byte is read once).
__device__ __forceinline__ uint4 t4_ld_weights(const uint4* p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

__device__ __forceinline__ u32 t4_pack_pair(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo = the lower k
    return *reinterpret_cast<u32*>(&v);
}

template <bool L64>
__device__ __forceinline__ void t4_fill_lut(u8* smem, const float* __restrict__ code, const float* __restrict__ code2) {
    uint4* d = reinterpret_cast<uint4*>(smem);
    if (L64) {
        for (int idx = threadIdx.x; idx < 4096; idx += blockDim.x) {  // 16 uint4 per 256-byte row
            const int e = idx >> 4, part = idx & 15;
            u32 v = 0;
            if (part < 8) v = t4_pack_pair(__ldg(code + (e >> 4)), __ldg(code + (e & 15)));
            else if (code2 != nullptr) v = __float_as_uint(__ldg(code2 + e));
            d[idx] = make_uint4(v, v, v, v);
        }
    } else {
        for (int idx = threadIdx.x; idx < 2048; idx += blockDim.x) {  // 8 uint4 per 128-byte row
            const int e = idx >> 3;
            const u32 v = t4_pack_pair(__ldg(code + (e >> 4)), __ldg(code + (e & 15)));
            d[idx] = make_uint4(v, v, v, v);
        }
        float* c2 = reinterpret_cast<float*>(smem + 32768);
        for (int e = threadIdx.x; e < 256; e += blockDim.x) c2[e] = code2 != nullptr ? __ldg(code2 + e) : 0.f;
    }
}

/// The 32-bit shared-window address of dynamic shared memory: computed once, kept in a uniform
/// register, so a table lookup is LDS [offset + UR] with the offset from one PRMT.
__device__ __forceinline__ u32 t4_smem_base(const void* p) {
    u32 base;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(base) : "l"(p));
    return base;
}

/// A 4-byte shared-memory load (volatile: never moved above the barrier that publishes the table).
__device__ __forceinline__ u32 t4_lds(u32 addr) {
    u32 v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr));
    return v;
}

/// The bf16x2 code pair of byte I of `word`, from this lane's copy of the table.
template <bool L64, int I>
__device__ __forceinline__ u32 t4_pair(u32 sbase, u32 word, u32 lane4) {
    u32 off;
    if (L64) {
        off = __byte_perm(word, lane4, 0x5504u | (I << 4));  // byte I << 8 | lane * 4
    } else {
        // (byte I << 7) | lane * 4 as one shift and one LOP3: written in PTX because ptxas, left to
        // itself, has split the OR into two LOP3s (measured: 64 more instructions a step, -18%).
        const u32 shifted = I == 0 ? word << 7 : word >> (8 * I - 7);
        asm("lop3.b32 %0, %1, 0x7f80, %2, 0xea;" : "=r"(off) : "r"(shifted), "r"(lane4));  // (a & b) | c
    }
    return t4_lds(sbase + off);
}

/// code2[byte H of q2] (the double-quant code of one of a lane's two rows).
template <bool L64, int H>
__device__ __forceinline__ float t4_code2(u32 sbase, u32 q2, u32 lane4) {
    if (L64) return __uint_as_float(t4_lds(sbase + __byte_perm(q2, lane4 + 128u, 0x5504u | (H << 4))));
    return __uint_as_float(t4_lds(sbase + 32768u + ((q2 >> (8 * H)) & 0xFFu) * 4u));
}

/// code2[byte `b` of q] (b a run-time byte index, lane-dependent for tiled double quant).
template <bool L64>
__device__ __forceinline__ float t4_code2_at(u32 sbase, u32 q, u32 b, u32 lane4) {
    if (L64) return __uint_as_float(t4_lds(sbase + __byte_perm(q, lane4 + 128u, 0x5504u | (b << 4))));
    return __uint_as_float(t4_lds(sbase + 32768u + ((q >> (8 * b)) & 0xFFu) * 4u));
}

/// The 16 bf16 x values at p (a lane's B fragments for a 64-k block, 16-byte aligned) as 8 words, or
/// zeros when !ok (token or k-block out of range).
__device__ __forceinline__ void t4_ld_x(const bf16* p, bool ok, u32 (&xw)[8]) {
    if (ok) {
        const uint4 v0 = __ldg(reinterpret_cast<const uint4*>(p)), v1 = __ldg(reinterpret_cast<const uint4*>(p) + 1);
        xw[0] = v0.x; xw[1] = v0.y; xw[2] = v0.z; xw[3] = v0.w;
        xw[4] = v1.x; xw[5] = v1.y; xw[6] = v1.z; xw[7] = v1.w;
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) xw[i] = 0u;
    }
}

__device__ __forceinline__ void t4_mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/// K-step s of a tile into c[nn] for NN n-tiles of 8 tokens: the lane's word s of `a` as four code
/// pairs (this lane's copy of the table, looked up once) against each n-tile's B fragments
/// xu[nn][2s], xu[nn][2s + 1].
template <bool L64, int NN>
__device__ __forceinline__ void t4_mma_step_n(float (&c)[NN][4], const uint4& a, int s, const u32 (&xu)[NN][8], u32 sbase, u32 lane4) {
    const u32 w = s == 0 ? a.x : s == 1 ? a.y : s == 2 ? a.z : a.w;
    const u32 p0 = t4_pair<L64, 0>(sbase, w, lane4), p1 = t4_pair<L64, 1>(sbase, w, lane4);
    const u32 p2 = t4_pair<L64, 2>(sbase, w, lane4), p3 = t4_pair<L64, 3>(sbase, w, lane4);
#pragma unroll
    for (int nn = 0; nn < NN; nn++) t4_mma(c[nn], p0, p1, p2, p3, xu[nn][2 * s], xu[nn][2 * s + 1]);
}

/// acc (one row tile's sums: rows g, g + 8 x this lane's tokens) += a tile's mma fragment c times the
/// scales of its rows (sg: row g, sh: row g + 8), into acc[base..]: n-tile nn's four values at base
/// 4 nn. At MAXT 1 only token 0's two values are kept.
template <int MAXT, int NC>
__device__ __forceinline__ void t4_scale_acc(float (&acc)[NC], const float (&c)[4], float sg, float sh, int base = 0) {
    if (MAXT == 1) {
        acc[0] = fmaf(c[0], sg, acc[0]);
        acc[1] = fmaf(c[2], sh, acc[1]);
    } else {
        acc[base + 0] = fmaf(c[0], sg, acc[base + 0]);
        acc[base + 1] = fmaf(c[1], sg, acc[base + 1]);
        acc[base + 2] = fmaf(c[2], sh, acc[base + 2]);
        acc[base + 3] = fmaf(c[3], sh, acc[base + 3]);
    }
}

/// Park this warp's group sums in red ([W][RT][NC][32] floats, for gemv4t_finish) and zero them.
template <int RT, int NC>
__device__ __forceinline__ void t4_park(float (&acc)[RT][NC], float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int c = 0; c < NC; c++) {
            red[((warp * RT + rt) * NC + c) * 32 + lane] = acc[rt][c];
            acc[rt][c] = 0.f;
        }
}

/// The end of a group of the tile GEMV (gemv4t_body): red holds each warp's fragment sums
/// ([W][RT][NC][32] floats; above 8 tokens, n-tile nn's four values at 4 nn); thread (row, token)
/// adds them in warp order. part -1: the whole group was this block's: add bias, apply the
/// epilogue, store. part 0 / 1: the block computed the group's
/// first / last steps; the sums wait in g4_split_ws for gemv4t_settle. Every thread of the block
/// calls it (barriers inside).
template <int W, int RT, int NC, int MAXT>
__device__ __forceinline__ void gemv4t_finish(const float* red, int grp, int part, int N, int T, const bf16* __restrict__ bias,
                                           int epi, bf16* __restrict__ out) {
    static_assert(MAXT > 8 || RT * 16 * MAXT <= G4_SPLIT_OUT, "a split part must fit g4_split_ws");
    __syncthreads();
    const int per_tile = 16 * T;
    const int boundary = part == 0 ? blockIdx.x : blockIdx.x - 1;
    for (int o = threadIdx.x; o < RT * per_tile; o += blockDim.x) {
        const int rt = o / per_tile, rem = o - rt * per_tile, tok = rem >> 4, m = rem & 15;
        int src_lane = (m & 7) * 4 + (tok >> 1);
        int c = MAXT == 1 ? (m >> 3) : (m >> 3) * 2 + (tok & 1);
        if constexpr (MAXT > 8) {  // token tok: n-tile tok / 8, column tok % 8
            src_lane = (m & 7) * 4 + ((tok & 7) >> 1);
            c = (tok >> 3) * 4 + (m >> 3) * 2 + (tok & 1);
        }
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < W; w++) sum += red[((w * RT + rt) * NC + c) * 32 + src_lane];
        const int n = (grp * RT + rt) * 16 + m;
        if (part >= 0) g4_split_ws[boundary][part][o] = sum;
        else if (n < N) store_epilogue(out, (i64)tok * N + n, sum + (bias != nullptr ? bf2f(bias[n]) : 0.f), epi);
    }
    __syncthreads();
}

/// gemv4t_finish out of line, for the split kernels (they call it from three places).
template <int W, int RT, int NC, int MAXT>
__device__ __noinline__ void gemv4t_finish_call(const float* red, int grp, int part, int N, int T, const bf16* __restrict__ bias,
                                                int epi, bf16* __restrict__ out) {
    gemv4t_finish<W, RT, NC, MAXT>(red, grp, part, N, T, bias, epi, out);
}

/// After the block's last step: for each group it shared with a neighbour (head: its first group,
/// boundary blockIdx.x - 1; tail: its last, boundary blockIdx.x; -1 when none), count its arrival;
/// the second of the two blocks adds part 0 then part 1 (a fixed order: every run rounds alike),
/// adds bias, applies the epilogue, stores and resets the counter. Here rather than at the group's
/// end, because the fence also waits for the loads in flight: once a block, with none left.
template <int RT>
__device__ __noinline__ void gemv4t_settle(int head_grp, int tail_grp, int N, int T, const bf16* __restrict__ bias,
                                           int epi, bf16* __restrict__ out) {
    __shared__ u32 second[2];
    if (head_grp < 0 && tail_grp < 0) return;  // block-uniform
    __threadfence();
    __syncthreads();
    if (threadIdx.x < 2) {
        const int grp = threadIdx.x == 0 ? head_grp : tail_grp;
        const int boundary = threadIdx.x == 0 ? blockIdx.x - 1 : blockIdx.x;
        second[threadIdx.x] = 0;
        if (grp >= 0 && atomicAdd(&g4_split_cnt[boundary], 1u) == 1) {
            g4_split_cnt[boundary] = 0;
            second[threadIdx.x] = 1;
        }
    }
    __syncthreads();
    const int per_tile = 16 * T;
    for (int side = 0; side < 2; side++) {
        if (!second[side]) continue;
        __threadfence();
        const int grp = side == 0 ? head_grp : tail_grp, boundary = side == 0 ? blockIdx.x - 1 : blockIdx.x;
        for (int o = threadIdx.x; o < RT * per_tile; o += blockDim.x) {
            const int rt = o / per_tile, rem = o - rt * per_tile, tok = rem >> 4, m = rem & 15;
            const int n = (grp * RT + rt) * 16 + m;
            const float sum = __ldcg(&g4_split_ws[boundary][0][o]) + __ldcg(&g4_split_ws[boundary][1][o]);
            if (n < N) store_epilogue(out, (i64)tok * N + n, sum + (bias != nullptr ? bf2f(bias[n]) : 0.f), epi);
        }
    }
}

/// One step's loads (v5 register pipeline): NT = U * RT tiles, each 16 weight bytes and the raw
/// scales of the lane's two rows: tiled double quant: the u32 holding both code bytes (s0); tiled
/// plain: the two f32 (s0, s1); flat scales (TS false): the two code bytes or f32 (s0, s1) and, double
/// quantized, the two nested absmax (n0, n1); hoisted nested absmax: the lane's rows' values (nv).
template <int NT, int RT>
struct T4Stage {
    uint4 a[NT];
    u32 s0[NT], s1[NT];
    float n0[NT], n1[NT];
    float nv[RT][2];
};

/// The tile GEMV. W warps, RT row tiles a group, U k-blocks a warp step, MAXT tokens (above 8: MAXT / 8
/// mma n-tiles, each code looked up once for all of them; strided schedule only); DQ double
/// quantization; TS tiled scales (blocksize 64); NH nested index hoisted (see the header); L64 the
/// 64 KB PRMT table (else 32 KB); P register stages (lab v7); SPLIT the split schedule; KO one k-block
/// at a time, x loaded with it (lab v10: fewer registers, measured slower). Register double
/// buffering: the next step's loads are issued after the current step's data and x have arrived and
/// before they are decoded.
template <int W, int RT, int U, int MAXT, bool DQ, bool TS, bool NH, bool L64, int P = 2, bool SPLIT = false, bool KO = false>
__device__ __forceinline__ void gemv4t_body(const bf16* __restrict__ x, const uint4* __restrict__ tiles,
                                            const float* __restrict__ absmax, const u8* __restrict__ absmax_q,
                                            const float* __restrict__ absmax_code, const float* __restrict__ nested,
                                            int nested_shift, int nested_jshift, float offset,
                                            const float* __restrict__ code, int bshift, int N, int K, int T,
                                            const bf16* __restrict__ bias, int epi, bf16* __restrict__ out) {
    constexpr int NT = U * RT;
    constexpr int NN = MAXT > 8 ? MAXT / 8 : 1;  // mma n-tiles (8 tokens each)
    // Fragment values kept per tile: (row g, row g+8) x tokens 2t(, 2t+1), for each n-tile.
    constexpr int NC = (MAXT == 1 ? 2 : 4) * NN;
    static_assert(MAXT <= 8 || (MAXT % 8 == 0 && !SPLIT && !KO), "more than 8 tokens: whole n-tiles, strided, one pass");
    constexpr int LUT_BYTES = L64 ? T4_LUT64_BYTES : T4_LUT32_BYTES;
    constexpr int JSTEP = W * U;  // k-blocks a warp advances per step
    extern __shared__ __align__(16) u8 t4_smem[];
    float* red = reinterpret_cast<float*>(t4_smem + LUT_BYTES);  // [W][RT][NC][32]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const u32 lane4 = (u32)lane * 4, sbase = t4_smem_base(t4_smem);
    const int KB = K >> 6, tiles_n = N >> 4, groups = (tiles_n + RT - 1) / RT;
    const int S = (KB + JSTEP - 1) / JSTEP;  // steps per group, the same for every warp
    // The block's work (see the header): strided, whole groups blockIdx.x, + gridDim.x, ...; split,
    // steps [begin, end) of the groups' steps in order, an equal share to one step (the host keeps
    // gridDim.x <= groups, so a share holds at least S steps and a group is cut by at most one block
    // boundary: gemv4t_settle).
    const i64 units = (i64)groups * S;
    const int begin = SPLIT ? (int)(units * blockIdx.x / gridDim.x) : (int)blockIdx.x * S;
    const int end = SPLIT ? (int)(units * (blockIdx.x + 1) / gridDim.x) : begin + S;  // (strided: first group)
    const int gstride = SPLIT ? 1 : (int)gridDim.x;
    const int my_groups = (int)blockIdx.x < groups ? (groups - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    const int total = SPLIT ? end - begin : my_groups * S;
    const int lg_last = (end - 1) / S;  // the split share's last group
    // 0 at run time (T <= 8, checked on the host) but opaque to the compiler. Multiplied by words of
    // the current step it makes the next step's addresses depend on them, so ptxas retires the current
    // loads (and x) before issuing the next ones, and the decode never waits on the next step's
    // scoreboard (without it every load shared one scoreboard and the prefetch was waited for at once).
    const u32 opaque_zero = (u32)T >> 16;
    // Tiled double quant: the lane's two code bytes are bytes qb, qb + 1 of the u32 it loads.
    const u32 qb = 2 * (g & 1);

    // Load cursor: group lg, step ls; tpl[rt] / spl[rt] point at tile (lg*RT + rt, k-block warp + JSTEP*ls)
    // (this lane's 16 bytes) and at its scales. Advanced just before each load (not after), so the
    // advance carries the dependency on the step being decoded.
    int lg = begin / S, ls = begin % S;
    const uint4* tpl[RT];
    const u8* spl[RT];
    auto set_load_ptrs = [&](u32 dep) {
#pragma unroll
        for (int rt = 0; rt < RT; rt++) {
            const i64 tile = (i64)(lg * RT + rt) * KB + warp + JSTEP * ls + dep;
            tpl[rt] = tiles + tile * 32 + lane;
            spl[rt] = DQ ? absmax_q + tile * 16 + 4 * (g >> 1) : reinterpret_cast<const u8*>(absmax + tile * 16 + 2 * g);
        }
    };
    auto advance_load = [&](u32 dep) {
        if (++ls == S) {
            ls = 0;
            lg += gstride;
            if (SPLIT && lg > lg_last) lg = groups;  // past the share: zeros, not the next block's bytes
            set_load_ptrs(dep);
        } else {
#pragma unroll
            for (int rt = 0; rt < RT; rt++) {
                tpl[rt] += JSTEP * 32 + dep;
                spl[rt] += JSTEP * 16 * (DQ ? 1 : 4) + dep;
            }
        }
    };
    auto load_one = [&](T4Stage<NT, RT>& st, int u, int rt, u32 dep) {
        const int e = u * RT + rt;
        st.a[e] = t4_ld_weights(tpl[rt] + u * W * 32);
        st.s1[e] = 0;
        st.n0[e] = st.n1[e] = 0.f;
        if (TS) {
            if (DQ) st.s0[e] = __ldg(reinterpret_cast<const u32*>(spl[rt] + u * W * 16));
            else {
                const float2 p = __ldg(reinterpret_cast<const float2*>(spl[rt]) + u * W * 8);
                st.s0[e] = __float_as_uint(p.x);
                st.s1[e] = __float_as_uint(p.y);
            }
        } else {  // flat scales, blocks of 64 << bshift
            const i64 n = (i64)(lg * RT + rt) * 16 + g;
            const int j = warp + JSTEP * ls + W * u;
            const i64 bg = ((n * KB + j) >> bshift) + dep, bh = (((n + 8) * KB + j) >> bshift) + dep;
            if (DQ) {
                st.s0[e] = __ldg(absmax_q + bg);
                st.s1[e] = __ldg(absmax_q + bh);
                st.n0[e] = __ldg(nested + (bg >> nested_shift));
                st.n1[e] = __ldg(nested + (bh >> nested_shift));
            } else {
                st.s0[e] = __float_as_uint(__ldg(absmax + bg));
                st.s1[e] = __float_as_uint(__ldg(absmax + bh));
            }
        }
        if (DQ && TS && !NH) {  // tiled scales, nested index per block
            const i64 n = (i64)(lg * RT + rt) * 16 + g;
            const int j = warp + JSTEP * ls + W * u;
            st.n0[e] = __ldg(nested + ((n * KB + j + dep) >> nested_shift));
            st.n1[e] = __ldg(nested + (((n + 8) * KB + j + dep) >> nested_shift));
        }
    };
    auto zero_one = [&](T4Stage<NT, RT>& st, int e) {
        st.a[e] = make_uint4(0, 0, 0, 0);
        st.s0[e] = st.s1[e] = 0;
        st.n0[e] = st.n1[e] = 0.f;
    };
    // Hoisted nested absmax: reloaded with the stage whose (group, segment) differs from the last.
    int nv_grp = -1, nv_jp = -1;
    auto load = [&](T4Stage<NT, RT>& st, const T4Stage<NT, RT>& prev, u32 dep) {
        const int j0 = warp + JSTEP * ls;
        if (DQ && TS && NH) {
            const int jp = j0 >> nested_jshift;  // a step never crosses a segment (host)
            if (jp != nv_jp || lg != nv_grp) {  // warp-uniform, rare
                nv_jp = jp;
                nv_grp = lg;
#pragma unroll
                for (int rt = 0; rt < RT; rt++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const i64 n = (i64)(lg * RT + rt) * 16 + g + 8 * h;
                        st.nv[rt][h] = n < N ? __ldg(nested + ((n * KB) >> nested_shift) + jp + dep) : 0.f;
                    }
            } else {
#pragma unroll
                for (int rt = 0; rt < RT; rt++) st.nv[rt][0] = prev.nv[rt][0], st.nv[rt][1] = prev.nv[rt][1];
            }
        }
        if (j0 + W * (U - 1) < KB && lg * RT + RT <= tiles_n) {  // the whole step in range (warp-uniform)
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int rt = 0; rt < RT; rt++) load_one(st, u, rt, dep);
        } else {
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int rt = 0; rt < RT; rt++) {
                    if (j0 + W * u < KB && lg * RT + rt < tiles_n) load_one(st, u, rt, dep);
                    else zero_one(st, u * RT + rt);
                }
        }
    };

    float acc[RT][NC];
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int c = 0; c < NC; c++) acc[rt][c] = 0.f;

    // Compute cursor: group cg, step cs; xp = this lane's x (token g) at k-block warp + JSTEP*cs.
    int cg = begin / S, cs = begin % S;
    const bf16* xp0 = x + (i64)g * K + 64 * warp + 16 * t;
    const bf16* xp = xp0 + 64 * JSTEP * cs;
    // The step the block began the current group at: > 0 only for a group whose first steps belong
    // to the previous block.
    int cs_first = cs;

    // x of the current step's k-block u: token 8 nn + g's 16 values at k 64j+16t.. (B fragments of
    // n-tile nn), zero past K or T.
    auto load_x_u = [&](int u, u32 (&xu)[NN][8]) {
#pragma unroll
        for (int nn = 0; nn < NN; nn++)
            t4_ld_x(xp + 64 * W * u + (i64)8 * nn * K, g + 8 * nn < T && warp + JSTEP * cs + W * u < KB, xu[nn]);
    };
    auto load_x = [&](u32 (&xw)[U][NN][8]) {
#ifdef G4_LAB_NOX  // lab only (timing, wrong values): no x loads, x taken as zero
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int nn = 0; nn < NN; nn++)
#pragma unroll
                for (int i = 0; i < 8; i++) xw[u][nn][i] = opaque_zero;
#else
#pragma unroll
        for (int u = 0; u < U; u++) load_x_u(u, xw[u]);
#endif
    };

    // acc[rt] += tile e's fragment sums c (each n-tile's) times its rows' scales.
    auto scale_tile = [&](const T4Stage<NT, RT>& st, int e, const float (&c)[NN][4]) {
        const int rt = e % RT;
        float sg, sh;
        if (DQ) {
            const float ng = (TS && NH) ? st.nv[rt][0] : st.n0[e], nh = (TS && NH) ? st.nv[rt][1] : st.n1[e];
            const float cg2 = TS ? t4_code2_at<L64>(sbase, st.s0[e], qb, lane4) : t4_code2_at<L64>(sbase, st.s0[e], 0, lane4);
            const float ch2 = TS ? t4_code2_at<L64>(sbase, st.s0[e], qb + 1, lane4) : t4_code2_at<L64>(sbase, st.s1[e], 0, lane4);
            sg = __fadd_rn(__fmul_rn(cg2, ng), offset);
            sh = __fadd_rn(__fmul_rn(ch2, nh), offset);
        } else {
            sg = __uint_as_float(st.s0[e]);
            sh = __uint_as_float(st.s1[e]);
        }
#pragma unroll
        for (int nn = 0; nn < NN; nn++) t4_scale_acc<MAXT>(acc[rt], c[nn], sg, sh, 4 * nn);
    };
    // K-step s of tile e into c.
    auto mma_tile = [&](const T4Stage<NT, RT>& st, int e, int s, const u32 (&xu)[NN][8], float (&c)[NN][4]) {
        t4_mma_step_n<L64, NN>(c, st.a[e], s, xu, sbase, lane4);
    };

    // Decode and multiply one step, then the scales. Tiles past N or K were zero-filled, so they add 0.
    // KO false: one pass, all tiles' lookups and mma chains interleaved; KO true: a pass a k-block
    // (its RT tiles interleaved, x loaded with it), so only RT fragments are live (fewer registers
    // for larger steps).
    auto compute = [&](const T4Stage<NT, RT>& st, const u32 (&xw)[U][NN][8]) {
        constexpr int PASSES = KO ? U : 1, NE = NT / PASSES;
        u32 xl[U][NN][8];  // KO: x of the pass's k-block (xw unused)
#pragma unroll
        for (int q = 0; q < PASSES; q++) {
            if (KO) load_x_u(q, xl[q]);
            float c[NE][NN][4];
#pragma unroll
            for (int i = 0; i < NE; i++)
#pragma unroll
                for (int nn = 0; nn < NN; nn++) c[i][nn][0] = c[i][nn][1] = c[i][nn][2] = c[i][nn][3] = 0.f;
#pragma unroll
            for (int s = 0; s < 4; s++)
#pragma unroll
                for (int i = 0; i < NE; i++) {
                    const int e = q * NE + i;
                    if constexpr (KO) mma_tile(st, e, s, xl[e / RT], c[i]);
                    else mma_tile(st, e, s, xw[e / RT], c[i]);
                }
#pragma unroll
            for (int i = 0; i < NE; i++) scale_tile(st, q * NE + i, c[i]);
        }
    };

    // The group's per-warp sums go to shared memory; gemv4t_finish adds them.
    auto reduce = [&](int grp, int part) {
        t4_park(acc, red);
        if (SPLIT) gemv4t_finish_call<W, RT, NC, MAXT>(red, grp, part, N, T, bias, epi, out);
        else gemv4t_finish<W, RT, NC, MAXT>(red, grp, part, N, T, bias, epi, out);
    };

    // After a group's last step: a flat share began mid-group (part 1) only at its first group (its
    // last group, if cut, is reduced after the loop, part 0).
    auto advance_compute = [&]() {
        if (++cs == S) {
            reduce(cg, cs_first > 0 ? 1 : -1);
            cs = 0;
            cs_first = 0;
            cg += gstride;
            xp = xp0;
        } else {
            xp += 64 * JSTEP;
        }
    };

    // P stages: P - 1 in flight while one is decoded. st[p] holds steps p, p + P, ...
    set_load_ptrs(0);
    T4Stage<NT, RT> st[P];
    load(st[0], st[P - 1], 0);  // in flight while the table is filled (prev unused: nv_grp is -1)
#pragma unroll
    for (int p = 1; p < P - 1; p++) {
        advance_load(0);
        load(st[p], st[p - 1], 0);
    }
    t4_fill_lut<L64>(t4_smem, code, DQ ? absmax_code : nullptr);
    __syncthreads();
    // Programmatic dependent launch (Grid::with_pdl): the first weights and the table above never
    // depend on the previous kernel; x (and out, for Accumulate) do, so wait here.
    PDL_ENTER();
    // cur: the step decoded now; nxt: the stage it frees last time round, loaded with the step P - 1
    // ahead; last: the most recently loaded stage (its hoisted nested absmax carries over).
    auto run = [&](T4Stage<NT, RT>& cur, T4Stage<NT, RT>& nxt, const T4Stage<NT, RT>& last) {
        u32 xw[U][NN][8];
        if (!KO) load_x(xw);
        // Unconditional (past the last step it loads nothing: zeros), so the wait it implies is on
        // every path and the decode below finds the current data and x retired.
        // One word of every load of the current step (ptxas may spread them over scoreboards).
        u32 mix = 0;
#pragma unroll
        for (int e = 0; e < NT; e++) {
            mix ^= cur.a[e].x ^ cur.s0[e];
#ifdef G4_LAB_NOCOMPUTE  // every word of the 16-byte loads stays live
            mix ^= cur.a[e].y ^ cur.a[e].z ^ cur.a[e].w;
#endif
            if (!TS) mix ^= cur.s1[e];
            if (!TS || (DQ && !NH)) mix ^= __float_as_uint(cur.n0[e]) ^ __float_as_uint(cur.n1[e]);
        }
        if (!KO)
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int nn = 0; nn < NN; nn++) mix ^= xw[u][nn][0] ^ xw[u][nn][4];
        if (DQ && TS && NH)
#pragma unroll
            for (int rt = 0; rt < RT; rt++) mix ^= __float_as_uint(cur.nv[rt][0]) ^ __float_as_uint(cur.nv[rt][1]);
        const u32 dep = mix * opaque_zero;
        advance_load(dep);
        load(nxt, last, dep);
#ifndef G4_LAB_NOCOMPUTE
        compute(cur, xw);
#else  // lab only (timing, wrong values): the loads and schedule without the decode, the data kept live
        acc[0][0] += __uint_as_float(mix & 0x7fu);
#endif
        advance_compute();
    };
    for (int it = 0; it < total; it += P) {
#pragma unroll
        for (int p = 0; p < P; p++)
            if (p == 0 || it + p < total) run(st[p], st[(p + P - 1) % P], st[(p + P - 2) % P]);
    }
    if (SPLIT && end % S != 0) reduce(cg, 0);
    if (SPLIT) gemv4t_settle<RT>(begin % S != 0 ? begin / S : -1, end % S != 0 ? end / S : -1, N, T, bias, epi, out);
}

#define T4_ARGS                                                                                                     \
    const bf16 *x, const uint4 *tiles, const float *absmax, const u8 *absmax_q, const float *absmax_code,            \
        const float *nested, int nested_shift, int nested_jshift, float offset, const float *code, int bshift, int N, \
        int K, int T, const bf16 *bias, int epi, bf16 *out
#define T4_PASS x, tiles, absmax, absmax_q, absmax_code, nested, nested_shift, nested_jshift, offset, code, bshift, N, K, T, bias, epi, out

// NAME, warps, row tiles per group, k-blocks per step, max tokens, double quant, tiled scales, nested
// index hoisted, 64 KB table, blocks per SM the registers must allow(, register pipeline stages).
#define GEMV4T_KERNEL_P(NAME, W, RT, U, MAXT, DQ, TS, NH, L64, BPS, P)                                    \
    extern "C" __global__ void __launch_bounds__(W * 32, BPS) NAME(T4_ARGS) {                              \
        gemv4t_body<W, RT, U, MAXT, DQ, TS, NH, L64, P, false, G4_KO && MAXT <= 8>(T4_PASS);             \
    }
#define GEMV4T_KERNEL(NAME, W, RT, U, MAXT, DQ, TS, NH, L64, BPS) GEMV4T_KERNEL_P(NAME, W, RT, U, MAXT, DQ, TS, NH, L64, BPS, 2)
// The split schedule (see the header; linear/four_bit.rs tile_schedule picks it).
#define GEMV4T_KERNEL_SPLIT(NAME, W, RT, U, MAXT, DQ, TS, NH, L64, BPS)                                      \
    extern "C" __global__ void __launch_bounds__(W * 32, BPS) NAME(T4_ARGS) {                              \
        gemv4t_body<W, RT, U, MAXT, DQ, TS, NH, L64, 2, true, G4_KO>(T4_PASS);                             \
    }

// Production configuration (crates/cuda/src/linear/four_bit.rs mirrors it: GEMV4T_* constants).
// fast: tiled scales, nested hoisted; tiled: tiled scales, nested per block; flat: blocksize > 64.
#define G4_W 8
#define G4_RT 2
#ifndef G4_KO  // one k-block at a time (KO; overridable for lab runs)
#define G4_KO false
#endif
#ifndef G4_U  // k-blocks a step (overridable for lab runs: the host's plan holds for 1, 2 and 4 at Falcon shapes)
#define G4_U 2
#endif
#define G4_L64 false
#define G4_BPS 2
#define G4_KERNELS(MAXT)                                                                                   \
    GEMV4T_KERNEL(gemv4t_fast_dq_t##MAXT, G4_W, G4_RT, G4_U, MAXT, true, true, true, G4_L64, G4_BPS)       \
    GEMV4T_KERNEL(gemv4t_tiled_dq_t##MAXT, G4_W, G4_RT, G4_U, MAXT, true, true, false, G4_L64, G4_BPS)     \
    GEMV4T_KERNEL(gemv4t_flat_dq_t##MAXT, G4_W, G4_RT, G4_U, MAXT, true, false, false, G4_L64, G4_BPS)     \
    GEMV4T_KERNEL(gemv4t_fast_plain_t##MAXT, G4_W, G4_RT, G4_U, MAXT, false, true, true, G4_L64, G4_BPS)   \
    GEMV4T_KERNEL(gemv4t_flat_plain_t##MAXT, G4_W, G4_RT, G4_U, MAXT, false, false, true, G4_L64, G4_BPS)       \
    GEMV4T_KERNEL_SPLIT(gemv4t_fast_dq_t##MAXT##_split, G4_W, G4_RT, G4_U, MAXT, true, true, true, G4_L64, G4_BPS) \
    GEMV4T_KERNEL_SPLIT(gemv4t_fast_plain_t##MAXT##_split, G4_W, G4_RT, G4_U, MAXT, false, true, true, G4_L64, G4_BPS)
G4_KERNELS(1)
G4_KERNELS(8)
// Short prompts, 9..16 and 17..32 tokens (two and four n-tiles: the weights are read once where 8-row
// chunks read them two to four times), the fast kernels only (tiled scales, hoisted nested index:
// every Falcon shape), strided. One k-block a step (and one row tile a group at 32 tokens) keeps them
// within 128 registers without spills (two k-blocks spill 60-200 bytes; linear/four_bit.rs mirrors
// the row tiles).
GEMV4T_KERNEL(gemv4t_fast_dq_t16, G4_W, G4_RT, 1, 16, true, true, true, G4_L64, G4_BPS)
GEMV4T_KERNEL(gemv4t_fast_plain_t16, G4_W, G4_RT, 1, 16, false, true, true, G4_L64, G4_BPS)
GEMV4T_KERNEL(gemv4t_fast_dq_t32, G4_W, 1, 1, 32, true, true, true, G4_L64, G4_BPS)
GEMV4T_KERNEL(gemv4t_fast_plain_t32, G4_W, 1, 1, 32, false, true, true, G4_L64, G4_BPS)

// ------------------------------------------------------------------------------------------------
// The bnb-layout fallback GEMV: one warp per weight row (8 per block), lanes stride over its packed
// bytes, scale per element pair (absmax_at), f32 accumulation per token, warp sum, one bf16 rounding.
extern "C" __global__ void __launch_bounds__(256) gemv4_rows_bf16(
    const bf16* __restrict__ x, const u8* __restrict__ packed, const float* __restrict__ absmax,
    const u8* __restrict__ absmax_q, const float* __restrict__ absmax_code, const float* __restrict__ nested,
    int nested_blocksize, float offset, const float* __restrict__ code, int blocksize, int N, int K, int T,
    const bf16* __restrict__ bias, int epi, bf16* __restrict__ out) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const i64 n = (i64)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (n >= N) return;
    float acc[8];
#pragma unroll
    for (int t = 0; t < 8; t++) acc[t] = 0.f;
    for (int p = lane; p < K / 2; p += 32) {
        const i64 f = n * K + 2 * p;
        const u8 b = packed[f >> 1];
        const float a = absmax_at(absmax, absmax_q, absmax_code, nested, nested_blocksize, offset, f / blocksize);
        const float w0 = lut[b >> 4] * a, w1 = lut[b & 15] * a;
#pragma unroll
        for (int t = 0; t < 8; t++)
            if (t < T) acc[t] += w0 * bf2f(x[(i64)t * K + 2 * p]) + w1 * bf2f(x[(i64)t * K + 2 * p + 1]);
    }
    const float bv = bias != nullptr ? bf2f(bias[n]) : 0.f;
#pragma unroll
    for (int t = 0; t < 8; t++) {
        if (t < T) {
            const float s = warp_sum(acc[t]);
            if (lane == 0) store_epilogue(out, (i64)t * N + n, s + bv, epi);
        }
    }
}
