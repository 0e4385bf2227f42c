//! Linear layers on the device: dense bf16, LLM.int8 and bitsandbytes NF4/FP4. Dense and int8 keep
//! their stored layout; NF4/FP4 are repacked at load into tensor-core tiles of the same bytes
//! (`four_bit`: loading, dequantization, the decode GEMV), and every dequantized value is still
//! bitsandbytes' by construction.
//!
//! Dispatch (`matmul`): decode GEMVs that stream the weights once: dense at T = 1 and LLM.int8
//! weight-only at T <= 32 (kernels/gemv8.cu: CUDA cores at T = 1, tensor cores with 1, 2 or 4 MMA
//! n-tiles at T = 2..32, `gemv_mma`), NF4/FP4 at T <= 32 (tensor cores on the repacked tiles,
//! kernels/quant4.cu via `four_bit`: 1, 2 or 4 n-tiles); weights those kernels do not fit (K not
//! whole k-blocks, 4-bit scales the fast tile kernels do not index) run the 8-row GEMVs on chunks
//! of 8 rows up to T = 32 (short prompts); dense with more rows goes to
//! cuBLAS (faster than the GEMVs from T = 2, examples/lab_gemv8.rs, tests/perf.rs); quantized weights with more rows
//! (prefill) dequantize chunks of at most `DEQUANT_CHUNK_ELEMS` weights to bf16 and call cuBLAS,
//! so the extra memory stays bounded (64 MiB) whatever the layer. LLM.int8 with a threshold runs
//! the mixed-precision decomposition (int8 x int8 in dp4a for regular columns, bf16 for the
//! outlier columns), as bitsandbytes' MatMul8bitLt does.
//!
//! Legend: N = output features, K = input features, T = rows of the activation.

use half::bf16;
use peregrine_core::{DType, Epilogue, Error, Int8Weight, LinearWeight, Result};

use crate::alloc::DeviceBuffer;
use crate::device::{Args, Device, Grid};

/// Rows at or below which quantized linears use the fused GEMV kernels.
pub const GEMV_MAX_ROWS: usize = 8;
/// Weights dequantized per chunk on the prefill path (bf16: 64 MiB).
pub const DEQUANT_CHUNK_ELEMS: usize = 32 << 20;
/// Quantized products of up to this many rows (short prompts) run the decode GEMVs (in one launch
/// where the tensor-core kernels fit, else on chunks of GEMV_MAX_ROWS rows) rather than dequantizing
/// the weights to bf16 for cuBLAS (Falcon-40B on an H200: a layer's four GEMVs at T = 16 take about
/// 290 us int8 and 180 us nf4, tests/perf.rs; a 16-token prompt's first token took 75-78 ms through
/// dequantize + cuBLAS, about 1.25 ms a layer).
pub const GEMV_CHUNKED_MAX_ROWS: usize = 32;

pub mod four_bit;

pub use four_bit::{DeviceAbsmax, FourBitLayout, FourBitLinear};

/// A linear layer's weights on the device. (Variant sizes differ; a model holds a few hundred.)
#[allow(clippy::large_enum_variant)]
pub enum CudaLinear {
    /// w (N, K) bf16 row-major.
    Dense { w: DeviceBuffer<bf16>, n: usize, k: usize },
    /// cb (N, K) int8, scb (N,) f32; weight = cb * scb / 127.
    Int8 { cb: DeviceBuffer<i8>, scb: DeviceBuffer<f32>, threshold: Option<f32>, n: usize, k: usize },
    /// bitsandbytes NF4/FP4 (packed codes and scales, repacked into tiles where they fit).
    FourBit(FourBitLinear),
}

impl CudaLinear {
    /// (N, K).
    pub fn dims(&self) -> (usize, usize) {
        match self {
            CudaLinear::Dense { n, k, .. } | CudaLinear::Int8 { n, k, .. } => (*n, *k),
            CudaLinear::FourBit(w) => (w.n, w.k),
        }
    }
    /// Bytes resident on the device.
    pub fn bytes(&self) -> usize {
        match self {
            CudaLinear::Dense { w, .. } => w.bytes(),
            CudaLinear::Int8 { cb, scb, .. } => cb.bytes() + scb.bytes(),
            CudaLinear::FourBit(w) => w.bytes(),
        }
    }
}

fn bad(what: &str, msg: String) -> Error {
    Error::input(format!("{what}: {msg}"))
}

/// Upload a linear layer's weights in their stored format (dense ones become bf16).
pub fn load(dev: &Device, w: LinearWeight) -> Result<CudaLinear> {
    match w {
        LinearWeight::Dense(t) => {
            let (n, k) = t.dims2();
            if t.shape.len() != 2 {
                return Err(bad("dense linear", format!("expected a 2-D weight, got shape {:?}", t.shape)));
            }
            let values: Vec<bf16> = if t.dtype == DType::BF16 {
                t.bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect()
            } else if t.dtype.is_float() {
                Device::to_bf16(&t.to_f32())
            } else {
                return Err(bad("dense linear", format!("weights of dtype {} are not floating point", t.dtype)));
            };
            Ok(CudaLinear::Dense { w: dev.upload(&values)?, n, k })
        }
        LinearWeight::Int8(w) => load_int8(dev, w),
        LinearWeight::FourBit(w) => Ok(CudaLinear::FourBit(FourBitLinear::load(dev, w)?)),
    }
}

fn load_int8(dev: &Device, w: Int8Weight) -> Result<CudaLinear> {
    let (n, k) = (w.rows, w.cols);
    if w.cb.len() != n * k || w.scb.len() != n {
        return Err(bad("int8 linear", format!("cb has {} values and scb {} for ({n}, {k})", w.cb.len(), w.scb.len())));
    }
    Ok(CudaLinear::Int8 { cb: dev.upload(&w.cb)?, scb: dev.upload(&w.scb)?, threshold: w.threshold.filter(|t| *t > 0.0), n, k })
}

/// Write rows of the dequantized weight (bf16) into `out` (nrows, K): row i is weight row
/// `row_ids[i]` if given, else `row0 + i`. Dense weights are gathered/copied.
///
/// # Safety
/// `out` must hold nrows * K bf16; `row_ids` (if given) nrows u32 values < N.
pub unsafe fn dequantize_rows(dev: &Device, w: &CudaLinear, row_ids: Option<u64>, row0: usize, nrows: usize, out: u64) -> Result<()> {
    let (_, k) = w.dims();
    let threads = 256;
    match w {
        CudaLinear::Dense { w, .. } => match row_ids {
            Some(ids) => {
                let g = Grid::new((nrows as u32, 1, 1), threads);
                dev.launch("elementwise", "embedding_bf16", g, Args::new().ptr(w.ptr()).ptr(ids).ptr(out).i32(k as i32))
            }
            None => dev.copy_d2d(out, w.ptr_at(row0 * k), nrows * k * 2),
        },
        CudaLinear::Int8 { cb, scb, .. } => {
            let (kernel, per_thread) = if k % 16 == 0 { ("dequant_int8w_bf16", 8) } else { ("dequant_int8_bf16", 1) };
            let g = Grid::new((dev.blocks_for(nrows * k / per_thread, threads), 1, 1), threads);
            let a = Args::new().ptr(cb.ptr()).ptr(scb.ptr()).i32(k as i32).opt(row_ids).i64(row0 as i64).i64(nrows as i64).ptr(out);
            dev.launch("int8", kernel, g, a)
        }
        CudaLinear::FourBit(w) => w.dequantize_rows(dev, row_ids, row0, nrows, out),
    }
}

/// out (T, N) = epi(x (T, K) @ W^T (+ bias)), all bf16 buffers given as pointers. The GEMV
/// kernels apply the epilogue as they store; the cuBLAS paths accumulate through beta = 1 and
/// run GELU as a separate pass.
///
/// # Safety
/// x must hold rows*K, out rows*N, bias (if any) N bf16 values (the backend checks).
pub unsafe fn matmul(dev: &Device, x: u64, rows: usize, w: &CudaLinear, bias: Option<u64>, epi: Epilogue, out: u64) -> Result<()> {
    let (n, k) = w.dims();
    if rows == 0 || n == 0 {
        return Ok(());
    }
    if rows == 1 && lab_read() {
        let [a, b] = read_ranges(w);
        return lab_read_weights(dev, a, b, out);
    }
    if gemv_mma(dev, x, rows, w, bias, epi, out)? {
        return Ok(());
    }
    let gemv_rows = gemv_max_rows(w, x);
    if rows > gemv_rows && rows <= GEMV_CHUNKED_MAX_ROWS && gemv_rows > 0 {
        return gemv_chunks(dev, x, rows, gemv_rows, w, bias, epi, out);
    }
    let beta = if epi == Epilogue::Accumulate { 1.0 } else { 0.0 };
    match w {
        CudaLinear::Dense { w, .. } if gemv8_fits(rows, GEMV8_DENSE_MAX_ROWS, k, 8, x) => gemv8(dev, "gemv_bf16_t1", 4, x, rows, w.ptr(), 0, n, k, bias, epi, out),
        CudaLinear::Dense { w, .. } => {
            dev.gemm_xwt_bf16(x, rows, w.ptr(), n, k, out, n, beta)?;
            add_bias(dev, out, rows, n, bias)?;
            gelu_pass(dev, out, rows * n, epi)
        }
        CudaLinear::FourBit(w) if rows <= gemv_rows => w.gemv(dev, x, rows, bias, epi, out),
        CudaLinear::Int8 { cb, scb, threshold: None, .. } if gemv8_fits(rows, GEMV_MAX_ROWS, k, 16, x) => {
            // T = 1, or K not whole tensor-core k-blocks (gemv_mma took the rest): CUDA cores.
            gemv8(dev, gemv_kernel(GEMV8_INT8W, rows), 4, x, rows, cb.ptr(), scb.ptr(), n, k, bias, epi, out)
        }
        CudaLinear::Int8 { cb, scb, threshold: Some(thr), .. } => int8_mixed(dev, x, rows, cb, scb, *thr, n, k, bias, epi, out),
        _ => dequant_gemm(dev, x, rows, w, bias, epi, out),
    }
}

/// One product of a pair launch: x, the linear, its bias (device pointers), the epilogue and out.
#[derive(Clone, Copy)]
pub struct PairProduct<'a> {
    pub x: u64,
    pub w: &'a CudaLinear,
    pub bias: Option<u64>,
    pub epi: Epilogue,
    pub out: u64,
}

/// The LayerNorms a pair launch applies to its row first: each product's (weight, bias) device
/// pointers (K bf16 each) and eps. Both products then read the same raw row x (K = the row's width).
#[derive(Clone, Copy)]
pub struct PairNorm {
    pub a: (u64, u64),
    pub b: (u64, u64),
    pub eps: f32,
}

/// Widest row the _ln pair kernels normalise into shared memory (K bf16 within the 48 KB a block
/// gets without raising its limit; Falcon-180B's 14,848 is the widest).
const PAIR_NORM_MAX_K: usize = 24 * 1024;

/// Two T = 1 products in one launch (kernels/gemv8.cu GEMV8_PAIR_KERNEL) when both are bf16 or both
/// LLM.int8 weight-only and each fits the T = 1 GEMV: the blocks of one wave are split between them
/// in proportion to their bytes, so both stream together and share one ramp and one tail. With
/// `norm`, x is the row before its LayerNorms and every block normalises it itself (the _ln
/// kernels), so no LayerNorm launch precedes the pair. Returns false, having launched nothing, when
/// the pair does not fit. (NF4/FP4 pairs are not served: the same split of the tile GEMV measured 7%
/// slower end to end than two launches, crates/cuda/NOTES.md.)
///
/// # Safety
/// As `matmul` for each product with rows = 1; with `norm`, its four pointers hold K bf16 each.
pub unsafe fn matmul_pair(dev: &Device, a: PairProduct, b: PairProduct, norm: Option<PairNorm>) -> Result<bool> {
    let ((na, ka), (nb, kb)) = (a.w.dims(), b.w.dims());
    let ok_norm = norm.is_none() || (a.x == b.x && ka == kb && ka % 8 == 0 && ka <= PAIR_NORM_MAX_K);
    let Some((int8, (wa, sa), (wb, sb))) = gemv8_t1_operands(&a, &b).filter(|_| ok_norm) else { return Ok(false) };
    if lab_read() {
        return lab_read_two(dev, &a, &b);
    }
    let kernel = if int8 { ["gemv_int8w_bf16_t1_pair", "gemv_int8w_bf16_t1_pair_ln"] } else { ["gemv_bf16_t1_pair", "gemv_bf16_t1_pair_ln"] };
    let (blocks_a, blocks_b) = pair_blocks(GEMV8_BLOCKS_PER_SM * dev.sm_count as usize, (na, ka), (nb, kb), 4);
    let args = Args::new().ptr(a.x).ptr(wa).ptr(sa).i32(na as i32).i32(ka as i32).opt(a.bias).i32(a.epi.code()).ptr(a.out);
    let args = args.ptr(b.x).ptr(wb).ptr(sb).i32(nb as i32).i32(kb as i32).opt(b.bias).i32(b.epi.code()).ptr(b.out);
    let args = args.i32(blocks_a as i32);
    let grid = Grid::new(((blocks_a + blocks_b) as u32, 1, 1), GEMV8_WARPS * 32).with_pdl();
    match norm {
        None => dev.launch("gemv8", kernel[0], grid, args.ptr(0).ptr(0).ptr(0).ptr(0).f32(0.0))?,
        Some(n) => {
            let args = args.ptr(n.a.0).ptr(n.a.1).ptr(n.b.0).ptr(n.b.1).f32(n.eps);
            dev.launch("gemv8", kernel[1], grid.with_smem((ka * 2) as u32), args)?
        }
    }
    Ok(true)
}

/// out += a + b for two T = 1 products of the same N in one launch (kernels/gemv8.cu
/// GEMV8_DUAL_KERNEL) when both are bf16 or both LLM.int8 weight-only: every block streams its rows
/// of both weights, as if concatenated along K, and finishes each output once (one rounding, one
/// ramp and tail). `a.epi` and `b.epi` are ignored (the sum accumulates into out). Returns false,
/// having launched nothing, when the pair does not fit.
///
/// # Safety
/// As `matmul` for each product with rows = 1 and Epilogue::Accumulate into the same out.
pub unsafe fn matmul_sum(dev: &Device, a: PairProduct, b: PairProduct) -> Result<bool> {
    let ((na, ka), (nb, kb)) = (a.w.dims(), b.w.dims());
    let same_out = na == nb && a.out == b.out;
    let Some((int8, (wa, sa), (wb, sb))) = gemv8_t1_operands(&a, &b).filter(|_| same_out) else { return Ok(false) };
    if lab_read() {
        return lab_read_two(dev, &a, &b);
    }
    let kernel = if int8 { "gemv_int8w_bf16_t1_dual" } else { "gemv_bf16_t1_dual" };
    let blocks = gemv8_blocks(dev, na, 4);
    let args = Args::new().ptr(a.x).ptr(wa).ptr(sa).i32(na as i32).i32(ka as i32).opt(a.bias).i32(Epilogue::Accumulate.code()).ptr(a.out);
    let args = args.ptr(b.x).ptr(wb).ptr(sb).i32(kb as i32).opt(b.bias);
    dev.launch("gemv8", kernel, Grid::new((blocks as u32, 1, 1), GEMV8_WARPS * 32).with_pdl(), args)?;
    Ok(true)
}

/// Whether `PEREGRINE_LAB_READ` is set: a lab switch (timing only, the outputs are wrong) that
/// replaces every one-row weight product, pair and sum launch by a plain read of the same weight
/// bytes (`lab_read_weights`), so a decode measures in place, inside its graph and PDL chain, the
/// time its GEMVs could at best reach (crates/cuda/NOTES.md).
fn lab_read() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PEREGRINE_LAB_READ").is_some())
}

/// The device ranges (pointer, bytes) a one-row product of `w` streams: the weights, and the
/// per-block scales where they are a share of the bytes (4-bit; int8's per-row scales are < 0.1%).
fn read_ranges(w: &CudaLinear) -> [(u64, usize); 2] {
    match w {
        CudaLinear::Dense { w, .. } => [(w.ptr(), w.bytes()), (0, 0)],
        CudaLinear::Int8 { cb, .. } => [(cb.ptr(), cb.bytes()), (0, 0)],
        CudaLinear::FourBit(f) => {
            let scales = match &f.absmax {
                DeviceAbsmax::Plain(p) => (p.ptr(), p.bytes()),
                DeviceAbsmax::Double { q, .. } => (q.ptr(), q.bytes()),
            };
            [(f.packed.ptr(), f.packed.bytes()), scales]
        }
    }
}

/// A pair or sum launch under `PEREGRINE_LAB_READ`: one read of both products' weights.
///
/// # Safety
/// As `matmul_pair` / `matmul_sum`.
unsafe fn lab_read_two(dev: &Device, a: &PairProduct, b: &PairProduct) -> Result<bool> {
    lab_read_weights(dev, read_ranges(a.w)[0], read_ranges(b.w)[0], a.out)?;
    Ok(true)
}

/// One launch of kernels/elementwise.cu lab_read_weights over ranges `a` and `b` (whole 16-byte
/// words of each; `sink` is written only in the kernel's practically impossible magic case).
///
/// # Safety
/// Both ranges are device memory of at least the given bytes; sink holds 4 bytes.
unsafe fn lab_read_weights(dev: &Device, a: (u64, usize), b: (u64, usize), sink: u64) -> Result<()> {
    let grid = Grid::new((dev.sm_count * 8, 1, 1), 256).with_pdl();
    let args = Args::new().ptr(a.0).i64((a.1 / 16) as i64).ptr(b.0).i64((b.1 / 16) as i64).ptr(sink);
    dev.launch("elementwise", "lab_read_weights", grid, args)
}

/// The weights of two T = 1 products that gemv8's two-product kernels serve together: both bf16
/// (whole 16-byte words a row) or both LLM.int8 weight-only (the same), N > 0, x 16-byte aligned.
/// Returns (int8, (w, scb) of a, (w, scb) of b); scb is 0 for bf16.
fn gemv8_t1_operands(a: &PairProduct, b: &PairProduct) -> Option<(bool, (u64, u64), (u64, u64))> {
    let ((na, ka), (nb, kb)) = (a.w.dims(), b.w.dims());
    if na == 0 || nb == 0 || a.x % 16 != 0 || b.x % 16 != 0 {
        return None;
    }
    match (a.w, b.w) {
        (CudaLinear::Dense { w: x, .. }, CudaLinear::Dense { w: y, .. }) if ka % 8 == 0 && kb % 8 == 0 => Some((false, (x.ptr(), 0), (y.ptr(), 0))),
        (CudaLinear::Int8 { cb: x, scb: xs, threshold: None, .. }, CudaLinear::Int8 { cb: y, scb: ys, threshold: None, .. }) if ka % 16 == 0 && kb % 16 == 0 => {
            Some((true, (x.ptr(), xs.ptr()), (y.ptr(), ys.ptr())))
        }
        _ => None,
    }
}

/// Blocks of a gemv8 launch: one wave (GEMV8_BLOCKS_PER_SM a multiprocessor), at most one per
/// `rows_per_group` of the N rows.
fn gemv8_blocks(dev: &Device, n: usize, rows_per_group: usize) -> usize {
    (GEMV8_BLOCKS_PER_SM * dev.sm_count as usize).min(n.div_ceil(rows_per_group)).max(1)
}

/// Split `total` blocks between two products of shapes (N, K) in proportion to their weights, each
/// at least one block and at most one per `rows_per_group` rows.
pub fn pair_blocks(total: usize, (na, ka): (usize, usize), (nb, kb): (usize, usize), rows_per_group: usize) -> (usize, usize) {
    let (wa, wb) = ((na * ka) as f64, (nb * kb) as f64);
    let a = ((total as f64 * wa / (wa + wb)).round() as usize).clamp(1, total.saturating_sub(1).max(1));
    let b = total.saturating_sub(a).max(1);
    (a.min(na.div_ceil(rows_per_group)), b.min(nb.div_ceil(rows_per_group)))
}

/// The most rows of x a quantized weight's decode GEMV takes in one launch (0: none), x 16-byte
/// aligned: NF4/FP4 8 or 16 (`FourBitLinear::gemv_max_rows`), int8 weight-only with whole 16-byte
/// words a row GEMV_MAX_ROWS (those with whole 64-weight k-blocks take up to 32 in gemv_mma first).
fn gemv_max_rows(w: &CudaLinear, x: u64) -> usize {
    match w {
        CudaLinear::FourBit(f) if x % 16 == 0 => f.gemv_max_rows(),
        CudaLinear::Int8 { threshold: None, k, .. } if gemv8_fits(GEMV_MAX_ROWS, GEMV_MAX_ROWS, *k, 16, x) => GEMV_MAX_ROWS,
        _ => 0,
    }
}

/// `matmul` of `rows` rows as GEMVs over chunks of `chunk` (8 or 16) rows (row r0 of x and out at
/// bf16 offsets r0*K and r0*N: 16-byte aligned, as r0 is a multiple of 8).
///
/// # Safety
/// As `matmul`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemv_chunks(dev: &Device, x: u64, rows: usize, chunk: usize, w: &CudaLinear, bias: Option<u64>, epi: Epilogue, out: u64) -> Result<()> {
    let (n, k) = w.dims();
    for r0 in (0..rows).step_by(chunk) {
        let r = (rows - r0).min(chunk);
        matmul(dev, x + (r0 * k * 2) as u64, r, w, bias, epi, out + (r0 * n * 2) as u64)?;
    }
    Ok(())
}

/// Whether kernels/gemv8.cu serves this product: at most `max_rows` rows, whole 16-byte words of
/// `per_word` weights in every row, and x 16-byte aligned (its rows then are too).
fn gemv8_fits(rows: usize, max_rows: usize, k: usize, per_word: usize, x: u64) -> bool {
    rows <= max_rows && k % per_word == 0 && x % 16 == 0
}

/// Warps per block and resident blocks per SM of the gemv8 kernels (GEMV8_WARPS and
/// GEMV8_BLOCKS_PER_SM in kernels/gemv8.cu).
const GEMV8_WARPS: u32 = 8;
const GEMV8_BLOCKS_PER_SM: usize = 2;
/// Dense linears take the bf16 GEMV for this many rows; cuBLAS is faster from 2 rows on
/// (examples/lab_gemv8.rs: qkv 45 us against 54-60 us for the GEMVs at T = 2..8).
const GEMV8_DENSE_MAX_ROWS: usize = 1;
/// The int8 weight-only kernels for T = 1 and the CUDA-core ones for T <= 2, 4, 8.
const GEMV8_INT8W: [&str; 4] = ["gemv_int8w_bf16_t1", "gemv_int8w_bf16_t2", "gemv_int8w_bf16_t4", "gemv_int8w_bf16_t8"];
/// The tensor-core int8 kernels (gemv_mma_body) for T <= 8, 16 and 32.
const GEMV8_INT8W_MMA: [&str; 3] = ["gemv_mma_int8w_bf16", "gemv_mma_int8w_bf16_t16", "gemv_mma_int8w_bf16_t32"];
/// Most activation rows the tensor-core kernels take (four MMA n-tiles).
pub const GEMV_MMA_MAX_ROWS: usize = 32;

/// LLM.int8 weight-only products of 2..=32 rows on tensor cores (kernels/gemv8.cu gemv_mma_body),
/// streaming the weights once (K a multiple of 64, x 16-byte aligned). Returns false, having
/// launched nothing, for every other product.
///
/// # Safety
/// As `matmul`.
pub unsafe fn gemv_mma(dev: &Device, x: u64, rows: usize, w: &CudaLinear, bias: Option<u64>, epi: Epilogue, out: u64) -> Result<bool> {
    if !(2..=GEMV_MMA_MAX_ROWS).contains(&rows) || x % 16 != 0 {
        return Ok(false);
    }
    let tier = rows.div_ceil(8).next_power_of_two().trailing_zeros() as usize;  // 8, 16, 32 rows: 0, 1, 2
    let (n, k) = w.dims();
    match w {
        CudaLinear::Int8 { cb, scb, threshold: None, .. } if k % 64 == 0 => gemv8(dev, GEMV8_INT8W_MMA[tier], 16, x, rows, cb.ptr(), scb.ptr(), n, k, bias, epi, out)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Launch a gemv8 kernel: one wave of blocks, each owning an equal share of the N rows
/// (`rows_per_group`: 4 for gemv_body, 16 for gemv_mma_body, so small N gets whole groups).
///
/// # Safety
/// As `matmul`; w holds N*K weights (and scb N scales, or 0 for bf16) in the kernel's format.
#[allow(clippy::too_many_arguments)]
unsafe fn gemv8(dev: &Device, kernel: &'static str, rows_per_group: usize, x: u64, rows: usize, w: u64, scb: u64, n: usize, k: usize, bias: Option<u64>, epi: Epilogue, out: u64) -> Result<()> {
    let blocks = gemv8_blocks(dev, n, rows_per_group);
    let a = Args::new().ptr(x).ptr(w).ptr(scb).i32(n as i32).i32(k as i32).i32(rows as i32).opt(bias).i32(epi.code()).ptr(out);
    dev.launch("gemv8", kernel, Grid::new((blocks as u32, 1, 1), GEMV8_WARPS * 32).with_pdl(), a)
}

/// The GEMV instantiation for `rows` (<= 8) activation rows: t1, t2, t4 or t8.
fn gemv_kernel(names: [&'static str; 4], rows: usize) -> &'static str {
    match rows {
        0 | 1 => names[0],
        2 => names[1],
        3 | 4 => names[2],
        _ => names[3],
    }
}

/// GEMV kernels: 8 warps per block, 4 weight rows per warp.
fn gemv_grid(n: usize) -> Grid {
    Grid::new((n.div_ceil(32) as u32, 1, 1), 256)
}

/// Prefill path for quantized weights: dequantize chunks of rows to bf16, cuBLAS each chunk
/// into its column range of `out`.
unsafe fn dequant_gemm(dev: &Device, x: u64, rows: usize, w: &CudaLinear, bias: Option<u64>, epi: Epilogue, out: u64) -> Result<()> {
    let beta = if epi == Epilogue::Accumulate { 1.0 } else { 0.0 };
    let (n, k) = w.dims();
    let chunk_rows = (DEQUANT_CHUNK_ELEMS / k.max(1)).clamp(1, n);
    let scratch = dev.alloc_uninit::<bf16>(chunk_rows * k)?;
    let mut r0 = 0;
    while r0 < n {
        let nr = chunk_rows.min(n - r0);
        dequantize_rows(dev, w, None, r0, nr, scratch.ptr())?;
        dev.gemm_xwt_bf16(x, rows, scratch.ptr(), nr, k, out + (r0 * 2) as u64, n, beta)?;
        r0 += nr;
    }
    add_bias(dev, out, rows, n, bias)?;
    gelu_pass(dev, out, rows * n, epi)
}

/// The GELU of an Epilogue::Gelu, as its own pass over `len` values (for the cuBLAS paths).
unsafe fn gelu_pass(dev: &Device, out: u64, len: usize, epi: Epilogue) -> Result<()> {
    if epi != Epilogue::Gelu {
        return Ok(());
    }
    let g = Grid::new((dev.blocks_for(len, 256), 1, 1), 256);
    dev.launch("elementwise", "gelu_bf16", g, Args::new().ptr(out).i64(len as i64))
}

unsafe fn add_bias(dev: &Device, out: u64, rows: usize, n: usize, bias: Option<u64>) -> Result<()> {
    let Some(b) = bias else { return Ok(()) };
    let g = Grid::new((dev.blocks_for(rows * n, 256), 1, 1), 256);
    dev.launch("elementwise", "add_bias_bf16", g, Args::new().ptr(out).ptr(b).i64(rows as i64).i32(n as i32))
}

/// LLM.int8 with outlier threshold: find outlier columns of x (|x| >= threshold in any row),
/// quantize the rest of each row to int8, int8 GEMM, and add the outlier columns in bf16.
#[allow(clippy::too_many_arguments)]
unsafe fn int8_mixed(
    dev: &Device,
    x: u64,
    rows: usize,
    cb: &DeviceBuffer<i8>,
    scb: &DeviceBuffer<f32>,
    threshold: f32,
    n: usize,
    k: usize,
    bias: Option<u64>,
    epi: Epilogue,
    out: u64,
) -> Result<()> {
    if k % 4 != 0 {
        return Err(Error::input(format!("LLM.int8 with a threshold needs K % 4 == 0, got K = {k}")));
    }
    let flags = dev.alloc_uninit::<u8>(k)?;
    let cols = dev.alloc_uninit::<i32>(k)?;
    let count = dev.alloc_uninit::<i32>(1)?;
    let xq = dev.alloc_uninit::<i8>(rows * k)?;
    let sca = dev.alloc_uninit::<f32>(rows)?;
    let g = Grid::new((dev.blocks_for(k, 256), 1, 1), 256);
    dev.launch("int8", "int8_outlier_flags", g, Args::new().ptr(x).i32(rows as i32).i32(k as i32).f32(threshold).ptr(flags.ptr()))?;
    let g = Grid::new((1, 1, 1), 1024);
    dev.launch("int8", "int8_compact_cols", g, Args::new().ptr(flags.ptr()).i32(k as i32).ptr(cols.ptr()).ptr(count.ptr()))?;
    let g = Grid::new((rows as u32, 1, 1), 256);
    let a = Args::new().ptr(x).i32(k as i32).f32(threshold).ptr(flags.ptr()).ptr(xq.ptr()).ptr(sca.ptr());
    dev.launch("int8", "int8_quant_rows", g, a)?;
    let a = Args::new().ptr(xq.ptr()).ptr(sca.ptr()).ptr(cb.ptr()).ptr(scb.ptr()).ptr(x).ptr(cols.ptr()).ptr(count.ptr());
    if rows <= GEMV_MAX_ROWS && k % 16 == 0 {
        let names = ["gemv_int8_mixed_bf16_t1", "gemv_int8_mixed_bf16_t2", "gemv_int8_mixed_bf16_t4", "gemv_int8_mixed_bf16_t8"];
        let a = a.i32(n as i32).i32(k as i32).i32(rows as i32).opt(bias).i32(epi.code()).ptr(out);
        return dev.launch("int8", gemv_kernel(names, rows), gemv_grid(n), a);
    }
    let (bm, kernel) = if rows <= 16 { (16, "int8_mm_bf16_bm16") } else { (64, "int8_mm_bf16_bm64") };
    let g = Grid::new((n.div_ceil(64) as u32, rows.div_ceil(bm) as u32, 1), 256);
    let a = a.i32(rows as i32).i32(n as i32).i32(k as i32).opt(bias).i32(epi.code()).ptr(out);
    dev.launch("int8", kernel, g, a)
}

/// Copy a linear back to the host in the core's format (for tests and tools). Dense comes back bf16.
pub fn to_host(dev: &Device, w: &CudaLinear) -> Result<LinearWeight> {
    match w {
        CudaLinear::Dense { w, n, k } => {
            let v = dev.download(w, 0, w.len())?;
            let bytes = v.iter().flat_map(|b| b.to_le_bytes()).collect();
            Ok(LinearWeight::Dense(peregrine_core::HostTensor::new(vec![*n, *k], DType::BF16, bytes)))
        }
        CudaLinear::Int8 { cb, scb, threshold, n, k } => Ok(LinearWeight::Int8(Int8Weight {
            rows: *n,
            cols: *k,
            cb: dev.download(cb, 0, cb.len())?,
            scb: dev.download(scb, 0, scb.len())?,
            threshold: *threshold,
        })),
        CudaLinear::FourBit(w) => Ok(LinearWeight::FourBit(w.to_host(dev)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::pair_blocks;

    #[test]
    fn pair_blocks_split_one_wave_by_bytes() {
        // Falcon-40B qkv + h->4h on an H200 (264 resident gemv8 blocks): 75.5 and 268 MB.
        assert_eq!(pair_blocks(264, (9216, 8192), (32768, 8192), 4), (58, 206));
        // Equal products share evenly; every product keeps at least one block.
        assert_eq!(pair_blocks(264, (1024, 1024), (1024, 1024), 4), (132, 132));
        assert_eq!(pair_blocks(264, (1, 16), (65536, 8192), 4), (1, 263));
        // No block gets less than a row group: 3 rows take one block, 257 rows at most 65.
        assert_eq!(pair_blocks(264, (3, 528), (257, 528), 4), (1, 65));
    }
}
