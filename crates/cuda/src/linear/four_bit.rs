//! bitsandbytes NF4/FP4 linears on the device: loading (with the repack into tensor-core tiles),
//! dequantization for prefill and embeddings, the decode GEMV (T <= 8) and the copy back to the
//! host in bitsandbytes' layout. Kernels: kernels/quant4.cu (its header describes both layouts).
//!
//! Key design choice: at load the packed bytes are permuted on the device (same bytes, same
//! resident size) so that one warp's mma.sync A operand of a 16-row x 64-k tile is 512 contiguous
//! bytes and a lane's 16-byte load is exactly its fragment for four k-steps; at blocksize 64 the
//! scales (double-quant bytes or plain f32) are tiled alike so a lane's two scales are adjacent.
//! The decode GEMV then runs on tensor cores (bytes -> bf16 code pairs through a per-lane shared
//! table, mma against x, scale per 64-k block applied to the f32 fragment). Shapes the tiles do
//! not fit keep bitsandbytes' layout and a plain warp-per-row GEMV.
//!
//! Legend: N = output features (rows), K = input features, KB = K / 64, T = activation rows.

use peregrine_core::{Absmax, DType, Epilogue, Error, FourBitFormat, FourBitWeight, Result};

use crate::alloc::DeviceBuffer;
use crate::device::{Args, Device, Grid};

/// Per-block scales of a 4-bit weight, on the device (flat block order, or tiled: see `FourBitLayout`).
pub enum DeviceAbsmax {
    /// (blocks,) f32.
    Plain(DeviceBuffer<f32>),
    /// absmax[i] = code[q[i]] * nested[i / nested_blocksize] + offset (i = flat block index).
    Double {
        /// (blocks,)
        q: DeviceBuffer<u8>,
        /// (256,)
        code: DeviceBuffer<f32>,
        /// (blocks / nested_blocksize rounded up,)
        nested: DeviceBuffer<f32>,
        nested_blocksize: usize,
        offset: f32,
    },
}

impl DeviceAbsmax {
    pub fn bytes(&self) -> usize {
        match self {
            DeviceAbsmax::Plain(a) => a.bytes(),
            DeviceAbsmax::Double { q, code, nested, .. } => q.bytes() + code.bytes() + nested.bytes(),
        }
    }
    /// The six kernel arguments: plain, q, code, nested, nested_blocksize, offset.
    pub fn args(&self, a: Args) -> Args {
        match self {
            DeviceAbsmax::Plain(p) => a.ptr(p.ptr()).ptr(0).ptr(0).ptr(0).i32(1).f32(0.0),
            DeviceAbsmax::Double { q, code, nested, nested_blocksize, offset } => {
                a.ptr(0).ptr(q.ptr()).ptr(code.ptr()).ptr(nested.ptr()).i32(*nested_blocksize as i32).f32(*offset)
            }
        }
    }
}

/// How the packed bytes (and scales) of a 4-bit weight are laid out on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FourBitLayout {
    /// bitsandbytes' own order (for shapes the tiles do not fit).
    Bnb,
    /// Tensor-core tiles of 16 rows x 64 k; `tiled_scales` (blocksize 64): scales in tile order too.
    Tiles { tiled_scales: bool },
}

/// A bitsandbytes NF4/FP4 linear on the device.
pub struct FourBitLinear {
    /// (N*K/2,) packed codes, in `layout`.
    pub packed: DeviceBuffer<u8>,
    pub absmax: DeviceAbsmax,
    /// (16,) the code book.
    pub code: DeviceBuffer<f32>,
    pub blocksize: usize,
    pub format: FourBitFormat,
    /// The dtype that was quantized (kept for `to_host`; the kernels always produce bf16).
    pub dtype: DType,
    pub layout: FourBitLayout,
    pub n: usize,
    pub k: usize,
}

/// The production configuration of the tile GEMV (G4_W, G4_RT, G4_U, G4_BPS in kernels/quant4.cu):
/// warps per block, row tiles per group, k-blocks per warp step, resident blocks per SM.
pub const GEMV4T_WARPS: usize = 8;
pub const GEMV4T_ROW_TILES: usize = 2;
pub const GEMV4T_KSTEP: usize = 2;
pub const GEMV4T_BLOCKS_PER_SM: usize = 2;
/// Rows of the widest tile kernels (gemv4t_fast_*_t32: four n-tiles, one row tile a group; the
/// t16 kernels keep GEMV4T_ROW_TILES; both one k-block a step).
pub const GEMV4T_WIDE_ROWS: usize = 32;
/// Most blocks a tile GEMV may have (kernels/quant4.cu G4_SPLIT_MAX).
pub const GEMV4T_SPLIT_MAX: usize = 1024;
/// Bytes of the per-lane decode table and the double-quant code (kernels/quant4.cu T4_LUT32_BYTES).
pub const GEMV4T_LUT_BYTES: usize = 32768 + 1024;

fn bad(what: &str, msg: String) -> Error {
    Error::input(format!("{what}: {msg}"))
}

/// Whether the tiles layout fits an (n, k) weight of `blocksize` (and, double-quantized, nested blocks
/// of `nested`): whole 16x64 tiles, and blocks that are power-of-two multiples of a tile's 64 k.
pub fn tiles_fit(n: usize, k: usize, blocksize: usize, nested: Option<usize>) -> bool {
    n % 16 == 0 && k % 64 == 0 && n > 0 && k > 0 && blocksize % 64 == 0 && blocksize.is_power_of_two() && nested.is_none_or(|b| b.is_power_of_two())
}

/// Blocks for a grid-stride loop over `n` items of `threads` (at most 16 per SM).
fn blocks_for(dev: &Device, n: usize, threads: u32) -> u32 {
    dev.blocks_for(n, threads)
}

/// Permute an (n, k) weight's packed bytes between bitsandbytes' order and the tiles (`dir` 0: to tiles).
///
/// # Safety
/// Both buffers hold n*k/2 bytes; n % 16 == 0, k % 64 == 0.
unsafe fn repack_bytes(dev: &Device, bnb: u64, tiles: u64, n: usize, k: usize, dir: i32) -> Result<()> {
    let g = Grid::new((blocks_for(dev, n / 16 * (k / 64) * 32, 256), 1, 1), 256);
    dev.launch("quant4", "repack4_tiles", g, Args::new().ptr(bnb).ptr(tiles).i32(n as i32).i32(k as i32).i32(dir))
}

/// Permute the n*kb scales (blocksize 64) between flat and tile order (`kernel`: repack4_scales_u8 or
/// _f32; `dir` 0: to tiles).
///
/// # Safety
/// Both buffers hold n*kb elements of the kernel's type; n % 16 == 0.
unsafe fn repack_scales(dev: &Device, kernel: &'static str, flat: u64, tiled: u64, n: usize, kb: usize, dir: i32) -> Result<()> {
    let g = Grid::new((blocks_for(dev, n * kb, 256), 1, 1), 256);
    dev.launch("quant4", kernel, g, Args::new().ptr(flat).ptr(tiled).i32(n as i32).i32(kb as i32).i32(dir))
}

impl FourBitLinear {
    /// Bytes resident on the device (the format's bytes: the tiles are a permutation).
    pub fn bytes(&self) -> usize {
        self.packed.bytes() + self.absmax.bytes() + self.code.bytes()
    }

    /// Upload a bitsandbytes weight and repack it into tiles when the shape allows.
    pub fn load(dev: &Device, w: FourBitWeight) -> Result<Self> {
        let (n, k) = (w.rows, w.cols);
        let what = format!("{} linear ({n}, {k})", w.format.as_str());
        if k % 2 != 0 {
            return Err(bad(&what, "an odd number of input features is not supported".into()));
        }
        if w.blocksize == 0 || w.blocksize % 2 != 0 {
            return Err(bad(&what, format!("blocksize {} must be even and positive", w.blocksize)));
        }
        let blocks = (n * k).div_ceil(w.blocksize);
        if w.packed.len() != n * k / 2 || w.code.len() != 16 || w.absmax.len() != blocks {
            return Err(bad(
                &what,
                format!("packed {} bytes (want {}), code {} (want 16), absmax {} (want {blocks})", w.packed.len(), n * k / 2, w.code.len(), w.absmax.len()),
            ));
        }
        let absmax = match w.absmax {
            Absmax::Plain(v) => DeviceAbsmax::Plain(dev.upload(&v)?),
            Absmax::Double { quantized, code, nested_absmax, nested_blocksize, offset } => {
                if code.len() != 256 || nested_blocksize == 0 || nested_absmax.len() != blocks.div_ceil(nested_blocksize) {
                    return Err(bad(&what, format!("double-quant code {} (want 256), nested {} for {blocks} blocks of {nested_blocksize}", code.len(), nested_absmax.len())));
                }
                DeviceAbsmax::Double { q: dev.upload(&quantized)?, code: dev.upload(&code)?, nested: dev.upload(&nested_absmax)?, nested_blocksize, offset }
            }
        };
        Self::from_bnb(dev, dev.upload(&w.packed)?, absmax, dev.upload(&w.code)?, w.blocksize, w.format, w.dtype, n, k)
    }

    /// A linear from device buffers in bitsandbytes' layout (as uploaded, or made by the synthetic
    /// generator), repacked into tiles on the device when the shape allows (the bnb buffers are
    /// freed after the copy, so the peak is one extra copy of this linear's bytes).
    #[allow(clippy::too_many_arguments)]
    pub fn from_bnb(
        dev: &Device,
        packed: DeviceBuffer<u8>,
        absmax: DeviceAbsmax,
        code: DeviceBuffer<f32>,
        blocksize: usize,
        format: FourBitFormat,
        dtype: DType,
        n: usize,
        k: usize,
    ) -> Result<Self> {
        let nested = match &absmax {
            DeviceAbsmax::Plain(_) => None,
            DeviceAbsmax::Double { nested_blocksize, .. } => Some(*nested_blocksize),
        };
        if !tiles_fit(n, k, blocksize, nested) {
            return Ok(FourBitLinear { packed, absmax, code, blocksize, format, dtype, layout: FourBitLayout::Bnb, n, k });
        }
        let tiles = dev.alloc_uninit::<u8>(packed.len())?;
        // SAFETY: both buffers hold the n*k/2 packed bytes of an (n, k) weight with n % 16 == k % 64 == 0.
        unsafe { repack_bytes(dev, packed.ptr(), tiles.ptr(), n, k, 0)? };
        let tiled_scales = blocksize == 64;
        let absmax = if tiled_scales { tile_scales(dev, absmax, n, k / 64)? } else { absmax };
        Ok(FourBitLinear { packed: tiles, absmax, code, blocksize, format, dtype, layout: FourBitLayout::Tiles { tiled_scales }, n, k })
    }

    /// The weight in bitsandbytes' layout on the host (for tests and tools).
    pub fn to_host(&self, dev: &Device) -> Result<FourBitWeight> {
        let (packed, q, plain) = match self.layout {
            FourBitLayout::Bnb => (dev.download(&self.packed, 0, self.packed.len())?, None, None),
            FourBitLayout::Tiles { tiled_scales } => {
                let flat = dev.alloc_uninit::<u8>(self.packed.len())?;
                let (n, kb) = (self.n, self.k / 64);
                // SAFETY: as in from_bnb, the other direction; the scale buffers hold n*kb blocks.
                unsafe {
                    repack_bytes(dev, flat.ptr(), self.packed.ptr(), n, self.k, 1)?;
                    let (q, plain) = match (&self.absmax, tiled_scales) {
                        (_, false) => (None, None),
                        (DeviceAbsmax::Double { q, .. }, true) => {
                            let f = dev.alloc_uninit::<u8>(q.len())?;
                            repack_scales(dev, "repack4_scales_u8", f.ptr(), q.ptr(), n, kb, 1)?;
                            (Some(dev.download(&f, 0, f.len())?), None)
                        }
                        (DeviceAbsmax::Plain(p), true) => {
                            let f = dev.alloc_uninit::<f32>(p.len())?;
                            repack_scales(dev, "repack4_scales_f32", f.ptr(), p.ptr(), n, kb, 1)?;
                            (None, Some(dev.download(&f, 0, f.len())?))
                        }
                    };
                    (dev.download(&flat, 0, flat.len())?, q, plain)
                }
            }
        };
        let absmax = match &self.absmax {
            DeviceAbsmax::Plain(a) => Absmax::Plain(match plain {
                Some(v) => v,
                None => dev.download(a, 0, a.len())?,
            }),
            DeviceAbsmax::Double { q: qd, code, nested, nested_blocksize, offset } => Absmax::Double {
                quantized: match q {
                    Some(v) => v,
                    None => dev.download(qd, 0, qd.len())?,
                },
                code: dev.download(code, 0, code.len())?,
                nested_absmax: dev.download(nested, 0, nested.len())?,
                nested_blocksize: *nested_blocksize,
                offset: *offset,
            },
        };
        Ok(FourBitWeight {
            rows: self.n,
            cols: self.k,
            format: self.format,
            dtype: self.dtype,
            blocksize: self.blocksize,
            packed,
            absmax,
            code: dev.download(&self.code, 0, self.code.len())?,
        })
    }

    /// Write rows of the dequantized weight (bf16, bitsandbytes' values) into `out` (nrows, K): row i
    /// is weight row `row_ids[i]` if given, else `row0 + i`.
    ///
    /// # Safety
    /// `out` must hold nrows * K bf16; `row_ids` (if given) nrows u32 values < N.
    pub unsafe fn dequantize_rows(&self, dev: &Device, row_ids: Option<u64>, row0: usize, nrows: usize, out: u64) -> Result<()> {
        let k = self.k;
        let threads = 256;
        let a = self.absmax.args(Args::new().ptr(self.packed.ptr())).ptr(self.code.ptr()).i32(self.blocksize as i32);
        let (kernel, items, a) = match self.layout {
            FourBitLayout::Tiles { tiled_scales } => ("dequant4t_bf16", nrows * (k / 64) * 4, a.i32(tiled_scales as i32)),
            FourBitLayout::Bnb if k % 32 == 0 && self.blocksize % 32 == 0 => ("dequant4w_bf16", nrows * k / 32, a),
            FourBitLayout::Bnb => ("dequant4_bf16", nrows * k / 2, a),
        };
        let a = a.i32(k as i32).opt(row_ids).i64(row0 as i64).i64(nrows as i64).ptr(out);
        dev.launch("quant4", kernel, Grid::new((blocks_for(dev, items, threads), 1, 1), threads), a)
    }

    /// The most activation rows `gemv` takes in one launch: 32 where the fast tile kernels serve the
    /// weight (tiled scales at blocksize 64 and a hoistable nested index: every Falcon shape), else 8.
    pub fn gemv_max_rows(&self) -> usize {
        match self.layout {
            FourBitLayout::Tiles { tiled_scales: true } if NestedIndex::of(self).fast() => GEMV4T_WIDE_ROWS,
            _ => 8,
        }
    }

    /// out (T, N) = epi(x (T, K) @ W^T + bias) for T = `rows` <= `gemv_max_rows()`: kernel launches
    /// only (no allocation, no synchronisation), so a decode step can be captured in a graph.
    ///
    /// # Safety
    /// x must hold rows*K, out rows*N, bias (if any) N bf16 values; x 16-byte aligned.
    pub unsafe fn gemv(&self, dev: &Device, x: u64, rows: usize, bias: Option<u64>, epi: Epilogue, out: u64) -> Result<()> {
        let (n, k) = (self.n, self.k);
        if rows > self.gemv_max_rows() {
            return Err(Error::msg(format!("4-bit GEMV ({n}, {k}): {rows} rows of x, at most {} in one launch", self.gemv_max_rows())));
        }
        match self.layout {
            FourBitLayout::Bnb => {
                let a = self.absmax.args(Args::new().ptr(x).ptr(self.packed.ptr())).ptr(self.code.ptr()).i32(self.blocksize as i32);
                let a = a.i32(n as i32).i32(k as i32).i32(rows as i32).opt(bias).i32(epi.code()).ptr(out);
                dev.launch("quant4", "gemv4_rows_bf16", Grid::new((n.div_ceil(8) as u32, 1, 1), 256), a)
            }
            FourBitLayout::Tiles { tiled_scales } => {
                let plan = TilePlan::new(self, tiled_scales, rows, dev.sm_count as usize);
                let (plain, q, code2, nested, offset) = match &self.absmax {
                    DeviceAbsmax::Plain(p) => (p.ptr(), 0, 0, 0, 0.0),
                    DeviceAbsmax::Double { q, code, nested, offset, .. } => (0, q.ptr(), code.ptr(), nested.ptr(), *offset),
                };
                let a = Args::new().ptr(x).ptr(self.packed.ptr()).ptr(plain).ptr(q).ptr(code2).ptr(nested);
                let a = a.i32(plan.nested_shift).i32(plan.nested_jshift).f32(offset).ptr(self.code.ptr()).i32(plan.bshift);
                let a = a.i32(n as i32).i32(k as i32).i32(rows as i32).opt(bias).i32(epi.code()).ptr(out);
                let g = Grid::new((plan.blocks, 1, 1), plan.threads).with_smem(plan.smem).with_pdl();
                dev.launch("quant4", plan.kernel, g, a)
            }
        }
    }
}

/// Move flat scales into tile order. Only at blocksize 64 (one scale per tile row and k-block).
fn tile_scales(dev: &Device, absmax: DeviceAbsmax, n: usize, kb: usize) -> Result<DeviceAbsmax> {
    // SAFETY: the scale buffers hold n * kb blocks (blocksize 64, n % 16 == 0).
    unsafe {
        Ok(match absmax {
            DeviceAbsmax::Plain(p) => {
                let t = dev.alloc_uninit::<f32>(p.len())?;
                repack_scales(dev, "repack4_scales_f32", p.ptr(), t.ptr(), n, kb, 0)?;
                DeviceAbsmax::Plain(t)
            }
            DeviceAbsmax::Double { q, code, nested, nested_blocksize, offset } => {
                let t = dev.alloc_uninit::<u8>(q.len())?;
                repack_scales(dev, "repack4_scales_u8", q.ptr(), t.ptr(), n, kb, 0)?;
                DeviceAbsmax::Double { q: t, code, nested, nested_blocksize, offset }
            }
        })
    }
}

/// How one tile GEMV is launched: kernel, grid, shared memory and the scale-index shifts.
#[derive(Clone, Copy, Debug)]
pub struct TilePlan {
    pub kernel: &'static str,
    pub blocks: u32,
    pub threads: u32,
    pub smem: u32,
    /// log2 of the nested blocksize (0 without double quantization).
    pub nested_shift: i32,
    /// Fast kernels: nested index = (n*KB >> nested_shift) + (j >> nested_jshift).
    pub nested_jshift: i32,
    /// log2(blocksize / 64).
    pub bshift: i32,
    /// The split schedule (see tile_schedule): `kernel` is a `*_split` variant.
    pub split: bool,
}

/// How the tile GEMV finds a block's scale: double quantization or not, and whether the nested
/// absmax index can be hoisted out of the k loop (kernels/quant4.cu's header: NH).
#[derive(Clone, Copy, Debug)]
struct NestedIndex {
    dq: bool,
    /// log2 of the nested blocksize (0 without double quantization).
    shift: i32,
    /// Hoisted: nested index = (n*KB >> shift) + (j >> jshift).
    jshift: i32,
    hoist: bool,
}

impl NestedIndex {
    fn of(w: &FourBitLinear) -> Self {
        let kb = w.k / 64;
        let kstep = GEMV4T_WARPS * GEMV4T_KSTEP;  // the t1/t8 step; the t16 kernels' single k-block never crosses a segment
        match &w.absmax {
            DeviceAbsmax::Plain(_) => NestedIndex { dq: false, shift: 0, jshift: 31, hoist: true },
            DeviceAbsmax::Double { nested_blocksize: nbs, .. } => {
                let shift = nbs.trailing_zeros() as i32;
                let (jshift, hoist) = if nbs % kb == 0 {
                    (31, true)
                } else if kb % nbs == 0 && nbs % kstep == 0 {
                    (shift, true)
                } else {
                    (31, false)
                };
                NestedIndex { dq: true, shift, jshift, hoist }
            }
        }
    }

    /// Whether the fast kernels (hoisted or no nested index) serve the weight, given tiled scales.
    fn fast(&self) -> bool {
        self.hoist || !self.dq
    }
}

impl TilePlan {
    fn new(w: &FourBitLinear, tiled_scales: bool, rows: usize, sm_count: usize) -> Self {
        let nested = NestedIndex::of(w);
        let (dq, nested_shift, nested_jshift) = (nested.dq, nested.shift, nested.jshift);
        // fast: tiled scales and hoisted nested index; tiled: tiled scales, nested per block;
        // flat: scales in flat block order (blocksize > 64).
        let one = rows <= 1;
        // Above 8 rows only the fast kernels (gemv_max_rows): two or four n-tiles, strided.
        let (wide, widest) = (rows > 8, rows > 16);
        let kernel = match (tiled_scales, nested.fast(), dq, one) {
            (true, true, true, _) if widest => "gemv4t_fast_dq_t32",
            (true, _, false, _) if widest => "gemv4t_fast_plain_t32",
            (true, true, true, _) if wide => "gemv4t_fast_dq_t16",
            (true, _, false, _) if wide => "gemv4t_fast_plain_t16",
            (true, true, true, true) => "gemv4t_fast_dq_t1",
            (true, true, true, false) => "gemv4t_fast_dq_t8",
            (true, false, _, true) => "gemv4t_tiled_dq_t1",
            (true, false, _, false) => "gemv4t_tiled_dq_t8",
            (false, _, true, true) => "gemv4t_flat_dq_t1",
            (false, _, true, false) => "gemv4t_flat_dq_t8",
            (true, _, false, true) => "gemv4t_fast_plain_t1",
            (true, _, false, false) => "gemv4t_fast_plain_t8",
            (false, _, false, true) => "gemv4t_flat_plain_t1",
            (false, _, false, false) => "gemv4t_flat_plain_t8",
        };
        let row_tiles = if widest { 1 } else { GEMV4T_ROW_TILES };
        let groups = (w.n / 16).div_ceil(row_tiles);
        // f32 fragment values a lane parks per row tile: 2 at T = 1, 4 per n-tile of 8 tokens.
        let fragments = if one { 2 } else { 4 * rows.div_ceil(8).next_power_of_two() };
        // Only the fast kernels have split variants (the Falcon shapes all take them).
        let split_kernel = match kernel {
            "gemv4t_fast_dq_t1" => Some("gemv4t_fast_dq_t1_split"),
            "gemv4t_fast_dq_t8" => Some("gemv4t_fast_dq_t8_split"),
            "gemv4t_fast_plain_t1" => Some("gemv4t_fast_plain_t1_split"),
            "gemv4t_fast_plain_t8" => Some("gemv4t_fast_plain_t8_split"),
            _ => None,
        };
        let resident = GEMV4T_BLOCKS_PER_SM * sm_count;
        let (blocks, split, kernel) = match (tile_schedule(groups, resident), split_kernel) {
            ((blocks, true), Some(name)) => (blocks, true, name),
            _ => (strided_blocks(groups, resident), false, kernel),
        };
        TilePlan {
            kernel,
            blocks,
            split,
            threads: (GEMV4T_WARPS * 32) as u32,
            smem: (GEMV4T_LUT_BYTES + GEMV4T_WARPS * row_tiles * fragments * 32 * 4) as u32,
            nested_shift,
            nested_jshift,
            bshift: (w.blocksize / 64).trailing_zeros() as i32,
        }
    }
}

/// The tile GEMV's grid and schedule (kernels/quant4.cu, gemv4t_body) for `groups` groups when at
/// most `resident` blocks run at once: (blocks, split). Strided, whole groups in one wave of equal
/// blocks, when the groups fit the resident blocks or an even split of them keeps at least 7/8 of
/// those busy (every Falcon-40B shape but qkv); otherwise split: every resident block (at most
/// G4_SPLIT_MAX) takes an equal share of the groups' steps.
pub fn tile_schedule(groups: usize, resident: usize) -> (u32, bool) {
    let strided = strided_blocks(groups, resident);
    if groups <= resident || strided as usize * 8 >= resident * 7 {
        (strided, false)
    } else {
        (split_blocks(groups, resident), true)
    }
}

/// The strided schedule's grid: one wave in which every block gets the same number of groups.
pub fn strided_blocks(groups: usize, resident: usize) -> u32 {
    let rounds = groups.div_ceil(resident.max(1)).max(1);
    groups.div_ceil(rounds).max(1) as u32
}

/// The split schedule's grid: every resident block, at most one a group and G4_SPLIT_MAX.
pub fn split_blocks(groups: usize, resident: usize) -> u32 {
    groups.min(resident).clamp(1, GEMV4T_SPLIT_MAX) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Falcon-40B shapes on an H200 (132 SMs, 2 blocks each: 264 resident) and the edges.
    #[test]
    fn tile_schedule_splits_only_when_strided_would_idle_blocks() {
        assert_eq!(tile_schedule(288, 264), (264, true), "qkv 9216 rows: 144 strided blocks would idle 120");
        assert_eq!(tile_schedule(256, 264), (256, false), "dense, 4h->h: one group a block");
        assert_eq!(tile_schedule(1024, 264), (256, false), "h->4h: four groups a block");
        assert_eq!(tile_schedule(9, 264), (9, false), "few groups: one a block");
        assert_eq!(tile_schedule(2000, 264), (250, false), "eight rounds keep 250 of 264 busy");
        assert_eq!(tile_schedule(5000, 2000), (1024, true), "the split grid stops at G4_SPLIT_MAX");
        assert_eq!(strided_blocks(288, 264), 144);
        assert_eq!(split_blocks(0, 264), 1);
    }
}
