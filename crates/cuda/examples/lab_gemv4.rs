//! Lab for the NF4/FP4 (bitsandbytes 4-bit) decode GEMV at the memory roofline (issue 6).
//!
//! Run on a GPU machine: `cargo run --release -p peregrine-cuda --example lab_gemv4` (optional
//! arguments: `quick`, fewer trials; a name filter such as `v7` or `lab_v5_w8r2u2|v7`, see
//! name_filter). For each Falcon-40B shape (qkv 9216x8192, dense 8192x8192, h->4h 32768x8192,
//! 4h->h 8192x32768) it makes a synthetic NF4 weight with double quantization (blocksize 64) on the device, computes the CPU oracle (peregrine_quant::matmul on the weight
//! downloaded in bitsandbytes' layout) for 8 random activation rows, and runs every version:
//!   v1       the previous kernel (bnb layout, FMA on decoded floats; copied in lab_gemv4.cu)
//!   v2..v4   the tensor-core tile GEMV (lab_gemv4.cu instantiations of quant4.cu's gemv4t_body)
//!   sweep    other (warps, row tiles, k-blocks per step, blocks per SM) of v4
//!   v5       quant4.cu's gemv4t_body (production), and sweeps of it
//!   v6       a per-warp cp.async ring (lab_gemv4.cu)
//!   v7       v5 with 3 to 5 register stages (gemv4t_body's P)
//!   v8       a block-wide bulk-copy (TMA) ring with mbarriers (lab_gemv4.cu)
//!   v9       v5 with the split schedule (gemv4t_body's SPLIT: every resident block an equal share)
//!   v10      gemv4t_body with KO (a k-block at a time, x loaded with it): 1 row tile a group at 64-80
//!            registers, 3-6 blocks/SM (more warps, more bytes in flight), strided or split
//!   prod     the production path, linear::matmul (also T = 2, 4, 8, FP4, plain scales, blocksize 128)
//! Each is checked against the oracle (output poisoned with NaN first; relative error printed,
//! tolerance TOL) and timed with CUDA events: median over TRIALS of one pass over COPIES copies
//! of the weights (working set >= 256 MB, 5x the 50 MB L2), divided by the copies. A read-only
//! streaming kernel over 2 GiB gives the practical read ceiling, and the same kernel over each
//! shape's copies gives the ceiling at that size. The table prints last.

// `x % n == 0` stays: `is_multiple_of` needs Rust 1.87 and the workspace supports 1.85.
#![allow(clippy::manual_is_multiple_of, unknown_lints)]

use std::sync::Arc;

use cudarc::driver::{result as drv, sys as drv_sys, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use half::bf16;
use peregrine_core::{Epilogue, LinearWeight, QuantKind};
use peregrine_cuda::device::Device;
use peregrine_cuda::linear::{self, CudaLinear, DeviceAbsmax, FourBitLinear};
use peregrine_cuda::{libs, nvrtc, synthetic, DeviceBuffer, SyntheticOptions};

/// Relative error allowed against the f32 oracle (bf16 codes and activations, f32 sums).
const TOL: f64 = 1e-2;
/// The bandwidth the percentages refer to (HBM3e as measured by a device copy, KINDS.md).
const PEAK_GBS: f64 = 4270.0;
/// Working set of the rotated weight copies (>= 4x the 50 MB L2).
const WORKING_SET: usize = 256 << 20;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Kernel parameters, 8 bytes each (4-byte scalars in the low half), as the driver reads them.
#[derive(Default)]
struct P(Vec<u64>);
impl P {
    fn ptr(mut self, v: u64) -> Self {
        self.0.push(v);
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.push(v as u32 as u64);
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.push(v as u64);
        self
    }
    fn f32(mut self, v: f32) -> Self {
        self.0.push(v.to_bits() as u64);
        self
    }
}

/// The lab's own module: kernels/quant4.cu followed by examples/lab_gemv4.cu.
struct LabModule {
    module: Arc<CudaModule>,
}

impl LabModule {
    fn new(dev: &Device) -> Res<Self> {
        let code = format!("{}\n{}", include_str!("../kernels/quant4.cu"), include_str!("lab_gemv4.cu"));
        let src = nvrtc::KernelSource { name: "lab_gemv4", code: Box::leak(code.into_boxed_str()) };
        let compiled = nvrtc::compile_uncached(&src, dev.arch, libs::find_cuda_include().as_deref())?;
        Ok(LabModule { module: dev.ctx.load_module(Ptx::from_binary(compiled.cubin))? })
    }

    fn function(&self, name: &str, smem: u32) -> Res<CudaFunction> {
        let f = self.module.load_function(name)?;
        // SAFETY: a loaded function; the attribute takes a byte count.
        unsafe {
            drv::function::set_function_attribute(
                f.cu_function(),
                drv_sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem.max(1) as i32,
            )?
        };
        Ok(f)
    }

    /// Resident blocks per SM of `name` at `threads` and `smem`.
    fn occupancy(&self, name: &str, threads: u32, smem: u32) -> Res<u32> {
        Ok(self.function(name, smem)?.occupancy_max_active_blocks_per_multiprocessor(threads, smem as usize, None)?)
    }

    /// # Safety
    /// `p` must match the kernel's signature and address live buffers large enough.
    unsafe fn launch(&self, dev: &Device, name: &str, grid: u32, threads: u32, smem: u32, p: P) -> Res<()> {
        let f = self.function(name, smem)?;
        let mut vals = p.0;
        let mut params: Vec<*mut std::ffi::c_void> = vals.iter_mut().map(|v| v as *mut u64 as *mut std::ffi::c_void).collect();
        dev.bind()?;
        drv::launch_kernel(f.cu_function(), (grid, 1, 1), (threads, 1, 1), smem, dev.stream.cu_stream(), &mut params)?;
        Ok(())
    }
}

/// Which kernel body a configuration instantiates (see lab_gemv4.cu).
#[derive(Clone, Copy, PartialEq)]
enum Body {
    /// v2..v4: the first tile body (register prefetch defeated by scoreboard sharing).
    Old,
    /// v5: quant4.cu's gemv4t_body (production).
    V5,
    /// v6: the cp.async ring, `depth` stages per warp.
    Ring { depth: usize },
    /// v8: the block-wide bulk-copy ring, `depth` stages per block.
    Bulk { depth: usize },
    /// v9: v5 with the split schedule (every resident block takes an equal share of the steps).
    Split,
}

/// A tile-GEMV configuration compiled in lab_gemv4.cu (must match its kernel line).
#[derive(Clone, Copy)]
struct TileCfg {
    name: &'static str,
    label: &'static str,
    body: Body,
    warps: usize,
    row_tiles: usize,
    kstep: usize,
    l64: bool,
}

impl TileCfg {
    /// Dynamic shared memory: decode table (+ code2), the reduction, and the ring if any.
    fn smem(&self) -> u32 {
        let lut = if self.l64 { 65536 } else { 32768 + 1024 };
        let red = self.warps * self.row_tiles * 2 * 32 * 4;
        let ring = match self.body {
            Body::Ring { depth } => self.warps * depth * (self.row_tiles * self.kstep * 528 + self.kstep * 128),
            Body::Bulk { depth } => depth * self.row_tiles * self.warps * self.kstep * 528,
            _ => 0,
        };
        (lut + red + ring) as u32
    }
}

const fn cfg(name: &'static str, label: &'static str, body: Body, warps: usize, row_tiles: usize, kstep: usize, l64: bool) -> TileCfg {
    TileCfg { name, label, body, warps, row_tiles, kstep, l64 }
}

const CONFIGS: &[TileCfg] = &[
    cfg("lab_tc_v2", "v2 mma, 32K table, no prefetch (w8 r2 u2)", Body::Old, 8, 2, 2, false),
    cfg("lab_tc_v3", "v3 mma, 64K PRMT table, no prefetch", Body::Old, 8, 2, 2, true),
    cfg("lab_tc_v4", "v4 v3 + register prefetch (defeated)", Body::Old, 8, 2, 2, true),
    cfg("lab_v5_w8r2u2", "v5 prefetch fixed, 32K (prod cfg)", Body::V5, 8, 2, 2, false),
    cfg("lab_v5_w8r2u2_l64", "v5 64K PRMT table", Body::V5, 8, 2, 2, true),
    cfg("lab_v5_w8r1u2_b3", "v5 w8 r1 u2 3/SM", Body::V5, 8, 1, 2, false),
    cfg("lab_v5_w8r1u4", "v5 w8 r1 u4", Body::V5, 8, 1, 4, false),
    cfg("lab_v5_w8r3u1", "v5 w8 r3 u1", Body::V5, 8, 3, 1, false),
    cfg("lab_v5_w16r2u1", "v5 w16 r2 u1", Body::V5, 16, 2, 1, false),
    cfg("lab_v5_w4r2u2", "v5 w4 r2 u2", Body::V5, 4, 2, 2, false),
    cfg("lab_v6_w8r2u2d4", "v6 cp.async ring w8 r2 u2 d4", Body::Ring { depth: 4 }, 8, 2, 2, false),
    cfg("lab_v6_w8r2u2d3", "v6 cp.async ring w8 r2 u2 d3", Body::Ring { depth: 3 }, 8, 2, 2, false),
    cfg("lab_v6_w8r1u2d6", "v6 cp.async ring w8 r1 u2 d6", Body::Ring { depth: 6 }, 8, 1, 2, false),
    cfg("lab_v6_w8r2u1d6", "v6 cp.async ring w8 r2 u1 d6", Body::Ring { depth: 6 }, 8, 2, 1, false),
    cfg("lab_v6_w4r2u2d6", "v6 cp.async ring w4 r2 u2 d6", Body::Ring { depth: 6 }, 4, 2, 2, false),
    cfg("lab_v7_w8r1u2_p4", "v7 w8 r1 u2, 4 stages", Body::V5, 8, 1, 2, false),
    cfg("lab_v7_w8r1u2_p5", "v7 w8 r1 u2, 5 stages", Body::V5, 8, 1, 2, false),
    cfg("lab_v7_w8r2u1_p4", "v7 w8 r2 u1, 4 stages", Body::V5, 8, 2, 1, false),
    cfg("lab_v7_w8r2u1_p5", "v7 w8 r2 u1, 5 stages", Body::V5, 8, 2, 1, false),
    cfg("lab_v7_w4r1u2_p4_b4", "v7 w4 r1 u2, 4 stages, 4/SM", Body::V5, 4, 1, 2, false),
    cfg("lab_v7_w8r1u2_p4_l64", "v7 w8 r1 u2, 4 stages, 64K table", Body::V5, 8, 1, 2, true),
    cfg("lab_v7_w8r2u1_p4_l64", "v7 w8 r2 u1, 4 stages, 64K table", Body::V5, 8, 2, 1, true),
    cfg("lab_v7_w8r2u2_p3_b1", "v7 w8 r2 u2, 3 stages, 1/SM", Body::V5, 8, 2, 2, false),
    cfg("lab_v7_w8r2u2_p4_b1", "v7 w8 r2 u2, 4 stages, 1/SM", Body::V5, 8, 2, 2, false),
    cfg("lab_v7_w4r2u2_p3_b3", "v7 w4 r2 u2, 3 stages, 3/SM", Body::V5, 4, 2, 2, false),
    cfg("lab_v8_w8r2u2d3", "v8 bulk ring w8 r2 u2, 3 stages", Body::Bulk { depth: 3 }, 8, 2, 2, false),
    cfg("lab_v8_w8r2u2d4", "v8 bulk ring w8 r2 u2, 4 stages", Body::Bulk { depth: 4 }, 8, 2, 2, false),
    cfg("lab_v8_w8r2u1d4", "v8 bulk ring w8 r2 u1, 4 stages", Body::Bulk { depth: 4 }, 8, 2, 1, false),
    cfg("lab_v8_w8r2u2d6", "v8 bulk ring w8 r2 u2, 6 stages, 1/SM", Body::Bulk { depth: 6 }, 8, 2, 2, false),
    cfg("lab_v8_w8r2u2d4_l64", "v8 bulk ring, 4 stages, 64K table", Body::Bulk { depth: 4 }, 8, 2, 2, true),
    cfg("lab_v9_w8r2u2_split", "v9 v5 with the split schedule", Body::Split, 8, 2, 2, false),
    cfg("lab_v10_w8r2u2_ko", "v10 KO w8 r2 u2 (v5's bytes)", Body::V5, 8, 2, 2, false),
    cfg("lab_v10_w8r1u4", "v10 KO w8 r1 u4 2/SM", Body::V5, 8, 1, 4, false),
    cfg("lab_v10_w8r1u4_b3", "v10 KO w8 r1 u4 3/SM", Body::V5, 8, 1, 4, false),
    cfg("lab_v10_w8r1u4_b3_split", "v10 KO w8 r1 u4 3/SM split", Body::Split, 8, 1, 4, false),
    cfg("lab_v10_w8r1u4_b3_l64", "v10 KO w8 r1 u4 3/SM 64K table", Body::V5, 8, 1, 4, true),
    cfg("lab_v10_w4r1u4_b6", "v10 KO w4 r1 u4 6/SM", Body::V5, 4, 1, 4, false),
    cfg("lab_v10_w4r1u4_b6_split", "v10 KO w4 r1 u4 6/SM split", Body::Split, 4, 1, 4, false),
    cfg("lab_v10_w8r1u8", "v10 KO w8 r1 u8 2/SM", Body::V5, 8, 1, 8, false),
    cfg("lab_v10_w8r1u8_split", "v10 KO w8 r1 u8 2/SM split", Body::Split, 8, 1, 8, false),
    cfg("lab_v10_w8r1u2_b4", "v10 KO w8 r1 u2 4/SM", Body::V5, 8, 1, 2, false),
    cfg("lab_v10_w8r1u2_b4_split", "v10 KO w8 r1 u2 4/SM split", Body::Split, 8, 1, 2, false),
];

/// The lab's second argument (after an optional `quick`): only the versions whose kernel name
/// contains one of its `|`-separated parts; the production path and the stream reads always run.
fn name_filter() -> Option<String> {
    std::env::args().skip(1).find(|a| a != "quick")
}

fn wanted(name: &str) -> bool {
    name_filter().is_none_or(|f| f.split('|').any(|part| name.contains(part)))
}

fn selected(configs: &'static [TileCfg]) -> impl Iterator<Item = &'static TileCfg> {
    configs.iter().filter(|c| wanted(c.name))
}

/// One row of the final table.
struct Row {
    version: String,
    shape: String,
    t: usize,
    us: f64,
    spread: f64,
    bytes: usize,
    rel: f64,
    note: String,
}

/// Per-launch microseconds: median (and max - min) over `trials` of one pass over `copies`.
fn time_us(dev: &Device, copies: usize, trials: usize, mut launch: impl FnMut(usize) -> Res<()>) -> Res<(f64, f64)> {
    for c in 0..copies {
        launch(c)?;
    }
    dev.synchronize()?;
    let flags = Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT);
    let (e0, e1) = (dev.ctx.new_event(flags)?, dev.ctx.new_event(flags)?);
    let mut v = Vec::with_capacity(trials);
    for _ in 0..trials {
        e0.record(&dev.stream)?;
        for c in 0..copies {
            launch(c)?;
        }
        e1.record(&dev.stream)?;
        v.push(e0.elapsed_ms(&e1)? as f64 * 1000.0 / copies as f64);
    }
    dev.synchronize()?;
    v.sort_by(f64::total_cmp);
    Ok((v[v.len() / 2], v[v.len() - 1] - v[0]))
}

/// ||got - want|| / ||want|| over the first t rows; NaN if any output is not finite.
fn rel_err(dev: &Device, out: &DeviceBuffer<bf16>, t: usize, n: usize, want: &[f32]) -> Res<f64> {
    let got = dev.download(out, 0, t * n)?;
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in got.iter().zip(&want[..t * n]) {
        let g = g.to_f32() as f64;
        if !g.is_finite() {
            return Ok(f64::NAN);
        }
        num += (g - *w as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    Ok((num / den.max(1e-30)).sqrt())
}

/// A device copy of a 4-bit linear (same layout), for the rotation.
fn clone_linear(dev: &Device, w: &FourBitLinear) -> Res<CudaLinear> {
    fn dup<T: cudarc::driver::DeviceRepr>(dev: &Device, b: &DeviceBuffer<T>) -> Res<DeviceBuffer<T>> {
        let c = dev.alloc_uninit::<T>(b.len())?;
        // SAFETY: both hold b.len() elements.
        unsafe { dev.copy_d2d(c.ptr(), b.ptr(), b.bytes())? };
        Ok(c)
    }
    let absmax = match &w.absmax {
        DeviceAbsmax::Plain(p) => DeviceAbsmax::Plain(dup(dev, p)?),
        DeviceAbsmax::Double { q, code, nested, nested_blocksize, offset } => {
            DeviceAbsmax::Double { q: dup(dev, q)?, code: dup(dev, code)?, nested: dup(dev, nested)?, nested_blocksize: *nested_blocksize, offset: *offset }
        }
    };
    Ok(CudaLinear::FourBit(FourBitLinear {
        packed: dup(dev, &w.packed)?,
        absmax,
        code: dup(dev, &w.code)?,
        blocksize: w.blocksize,
        format: w.format,
        dtype: w.dtype,
        layout: w.layout,
        n: w.n,
        k: w.k,
    }))
}

fn four(w: &CudaLinear) -> &FourBitLinear {
    match w {
        CudaLinear::FourBit(f) => f,
        _ => panic!("not a 4-bit linear"),
    }
}

/// The weight bytes a GEMV must read: packed codes and every scale byte.
fn weight_bytes(w: &FourBitLinear) -> usize {
    w.packed.bytes() + w.absmax.bytes()
}

/// The bnb-layout buffers v1 reads (uploaded from the host weight).
struct BnbCopy {
    packed: DeviceBuffer<u8>,
    q: DeviceBuffer<u8>,
    code2: DeviceBuffer<f32>,
    nested: DeviceBuffer<f32>,
    code: DeviceBuffer<f32>,
    nbs: usize,
    offset: f32,
}

fn bnb_copy(dev: &Device, host: &LinearWeight) -> Res<BnbCopy> {
    let LinearWeight::FourBit(w) = host else { return Err("not 4-bit".into()) };
    let peregrine_core::Absmax::Double { quantized, code, nested_absmax, nested_blocksize, offset } = &w.absmax else {
        return Err("v1 copy wants double quantization".into());
    };
    Ok(BnbCopy {
        packed: dev.upload(&w.packed)?,
        q: dev.upload(quantized)?,
        code2: dev.upload(code)?,
        nested: dev.upload(nested_absmax)?,
        code: dev.upload(&w.code)?,
        nbs: *nested_blocksize,
        offset: *offset,
    })
}

/// Nested-index shifts of a tile configuration (mirrors linear::four_bit::TilePlan for the fast path).
fn nested_shifts(kb: usize, nbs: usize, jstep: usize) -> Option<(i32, i32)> {
    let s = nbs.trailing_zeros() as i32;
    if nbs % kb == 0 {
        Some((s, 31))
    } else if kb % nbs == 0 && nbs % jstep == 0 {
        Some((s, s))
    } else {
        None
    }
}

struct ShapeRun<'a> {
    dev: &'a Device,
    lab: &'a LabModule,
    name: String,
    n: usize,
    k: usize,
    tiles: Vec<CudaLinear>,
    x: DeviceBuffer<bf16>,
    out: DeviceBuffer<bf16>,
    want: Vec<f32>,
    trials: usize,
}

impl ShapeRun<'_> {
    fn copies(&self) -> usize {
        self.tiles.len()
    }

    fn poison(&self) -> Res<()> {
        self.dev.write(&self.out, &vec![bf16::NAN; self.out.len()])?;
        Ok(())
    }

    /// Check one launch on copy 0, then time the rotation.
    fn measure(&self, version: &str, t: usize, bytes: usize, note: String, launch: &mut dyn FnMut(usize) -> Res<()>) -> Res<Row> {
        self.measure_copies(version, t, bytes, note, self.copies(), launch)
    }

    /// measure() over `copies` launches a pass (for weights this run does not hold in `tiles`).
    fn measure_copies(&self, version: &str, t: usize, bytes: usize, note: String, copies: usize, launch: &mut dyn FnMut(usize) -> Res<()>) -> Res<Row> {
        self.poison()?;
        launch(0)?;
        self.dev.synchronize()?;
        let rel = rel_err(self.dev, &self.out, t, self.n, &self.want)?;
        if self.trials == 0 {
            // Correctness only (edge shapes).
            return Ok(Row { version: version.into(), shape: self.name.clone(), t, us: f64::NAN, spread: 0.0, bytes, rel, note });
        }
        let (us, spread) = time_us(self.dev, copies, self.trials, launch)?;
        let status = if rel.is_nan() || rel > TOL { " FAIL" } else { "" };
        println!("  {version:<44} T={t} {us:>8.2} us  {:>6.0} GB/s  rel {rel:.2e}{status}  {note}", bytes as f64 / us / 1e3);
        Ok(Row { version: version.into(), shape: self.name.clone(), t, us, spread, bytes, rel, note })
    }

    fn tile_cfg(&self, cfg: &TileCfg) -> Res<Row> {
        let (n, k) = (self.n, self.k);
        let w0 = four(&self.tiles[0]);
        let DeviceAbsmax::Double { nested_blocksize, offset, .. } = &w0.absmax else { return Err("tile lab wants double quant".into()) };
        let (ns, js) = nested_shifts(k / 64, *nested_blocksize, cfg.warps * cfg.kstep).ok_or("nested blocks do not fit the fast path")?;
        let threads = (cfg.warps * 32) as u32;
        let smem = cfg.smem();
        let occ = self.lab.occupancy(cfg.name, threads, smem)? as usize;
        if occ == 0 {
            return Err(format!("{}: no block fits an SM ({smem} bytes of shared memory)", cfg.name).into());
        }
        let groups = (n / 16).div_ceil(cfg.row_tiles);
        let resident = occ * self.dev.sm_count as usize;
        let split = cfg.body == Body::Split;
        let grid = if split { linear::four_bit::split_blocks(groups, resident) } else { linear::four_bit::strided_blocks(groups, resident) };
        let offset = *offset;
        let mut launch = |c: usize| -> Res<()> {
            let w = four(&self.tiles[c]);
            let DeviceAbsmax::Double { q, code, nested, .. } = &w.absmax else { unreachable!() };
            let p = P::default().ptr(self.x.ptr()).ptr(w.packed.ptr()).ptr(0).ptr(q.ptr()).ptr(code.ptr()).ptr(nested.ptr());
            let p = p.i32(ns).i32(js).f32(offset).ptr(w.code.ptr()).i32(0).i32(n as i32).i32(k as i32).i32(1).ptr(0).i32(0).ptr(self.out.ptr());
            // SAFETY: the arguments follow T4_ARGS; every buffer belongs to this (n, k) weight.
            unsafe { self.lab.launch(self.dev, cfg.name, grid, threads, smem, p) }
        };
        let note = format!("{occ}/SM, grid {grid}{}, {:.2} groups/block", if split { " split" } else { "" }, groups as f64 / grid as f64);
        self.measure(cfg.label, 1, weight_bytes(w0), note, &mut launch)
    }

    fn v1(&self, bnb: &[BnbCopy], t: usize) -> Res<Row> {
        let (n, k) = (self.n, self.k);
        let name = if t == 1 { "lab_v1_gemv4_t1" } else { "lab_v1_gemv4_t8" };
        let mut launch = |c: usize| -> Res<()> {
            let b = &bnb[c % bnb.len()];
            let p = P::default().ptr(self.x.ptr()).ptr(b.packed.ptr()).ptr(0).ptr(b.q.ptr()).ptr(b.code2.ptr()).ptr(b.nested.ptr());
            let p = p.i32(b.nbs as i32).f32(b.offset).ptr(b.code.ptr()).i32(64).i32(n as i32).i32(k as i32).i32(t as i32).ptr(0).i32(0).ptr(self.out.ptr());
            // SAFETY: the old gemv4_bf16 signature; the buffers hold the bnb weight of (n, k).
            unsafe { self.lab.launch(self.dev, name, n.div_ceil(32) as u32, 256, 0, p) }
        };
        let bytes = bnb[0].packed.bytes() + bnb[0].q.bytes() + bnb[0].nested.bytes() + bnb[0].code2.bytes();
        self.measure("v1 previous kernel (bnb layout, FMA)", t, bytes, String::new(), &mut launch)
    }

    fn prod(&self, label: &str, t: usize) -> Res<Row> {
        let mut launch = |c: usize| -> Res<()> {
            // SAFETY: x holds 8*K and out 8*N bf16 values.
            unsafe { linear::matmul(self.dev, self.x.ptr(), t, &self.tiles[c], None, Epilogue::Store, self.out.ptr())? };
            Ok(())
        };
        self.measure(label, t, weight_bytes(four(&self.tiles[0])), String::new(), &mut launch)
    }

    /// A streaming-read kernel over the packed bytes of the same copies.
    fn stream_same(&self, kernel: &str) -> Res<Row> {
        let bytes = four(&self.tiles[0]).packed.bytes();
        let sink = self.dev.alloc_zeros::<u32>(1)?;
        let grid = self.dev.sm_count * 16;
        let mut launch = |c: usize| -> Res<()> {
            let p = P::default().ptr(four(&self.tiles[c]).packed.ptr()).i64((bytes / 16) as i64).ptr(sink.ptr());
            // SAFETY: reads bytes/16 uint4 of a buffer of `bytes`.
            unsafe { self.lab.launch(self.dev, kernel, grid, 256, 0, p) }
        };
        let (us, spread) = time_us(self.dev, self.copies(), self.trials, &mut launch)?;
        println!("  {kernel:<44}     {us:>8.2} us  {:>6.0} GB/s", bytes as f64 / us / 1e3);
        Ok(Row { version: format!("{kernel} (same bytes, rotated)"), shape: self.name.clone(), t: 0, us, spread, bytes, rel: 0.0, note: String::new() })
    }
}

/// A fresh random (8, K) activation (bf16 values as f32) and the oracle's (8, N) product.
fn oracle(host: &LinearWeight, k: usize, seed: u64) -> Res<(Vec<f32>, Vec<f32>)> {
    let n = host.dims().0;
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let x: Vec<f32> = (0..8 * k)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            bf16::from_f32((u - 0.5) * 3.4).to_f32()
        })
        .collect();
    let mut want = vec![0f32; 8 * n];
    peregrine_quant::matmul(&x, 8, host, &mut want)?;
    Ok((x, want))
}

#[allow(clippy::too_many_arguments)]
fn run_shape(dev: &Device, lab: &LabModule, name: &str, n: usize, k: usize, kind: QuantKind, opts: SyntheticOptions, full: bool, trials: usize, rows: &mut Vec<Row>) -> Res<()> {
    println!("== {name} ({n} x {k}) {kind} blocksize {} double_quant {}", opts.blocksize, opts.double_quant);
    let w0 = synthetic::random_linear(dev, kind, n, k, 0.02, 1000 + n as u64 + k as u64, opts)?;
    let host = linear::to_host(dev, &w0)?;
    let bytes = weight_bytes(four(&w0));
    let copies = WORKING_SET.div_ceil(bytes).max(2);
    let (x, want) = oracle(&host, k, n as u64 ^ k as u64)?;
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut tiles = vec![w0];
    for _ in 1..copies {
        tiles.push(clone_linear(dev, four(&tiles[0]))?);
    }
    let run = ShapeRun { dev, lab, name: name.into(), n, k, tiles, x: dev.upload(&xb)?, out: dev.alloc_zeros::<bf16>(8 * n)?, want, trials };
    println!("  layout {:?}, {copies} copies of {:.1} MB", four(&run.tiles[0]).layout, bytes as f64 / 1e6);
    if full {
        if wanted("lab_v1_gemv4") {
            let bnb: Vec<BnbCopy> = (0..copies).map(|_| bnb_copy(dev, &host)).collect::<Res<_>>()?;
            rows.push(run.v1(&bnb, 1)?);
        }
        for cfg in selected(CONFIGS) {
            match run.tile_cfg(cfg) {
                Ok(r) => rows.push(r),
                Err(e) => println!("  {}: skipped: {e}", cfg.label),
            }
        }
    }
    for t in [1, 2, 4, 8] {
        if full || t == 1 {
            rows.push(run.prod("prod linear::matmul", t)?);
        }
    }
    if full {
        rows.push(run.stream_same("lab_stream_read")?);
        rows.push(run.stream_same("lab_stream_read4")?);
    }
    Ok(())
}

/// Every tile configuration once (T = 1) on small shapes that exercise the edges: a partial last
/// group, two nested blocks a row (K 32768), warps without k-blocks and many groups a block (K 128),
/// one tile. Correctness only.
fn edge_checks(dev: &Device, lab: &LabModule, rows: &mut Vec<Row>) -> Res<()> {
    for (n, k) in [(272, 512), (48, 32768), (9216, 128), (16, 64)] {
        let w0 = synthetic::random_linear(dev, QuantKind::Nf4, n, k, 0.02, 77 + n as u64, SyntheticOptions::default())?;
        let host = linear::to_host(dev, &w0)?;
        let (x, want) = oracle(&host, k, 5 + k as u64)?;
        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let run = ShapeRun { dev, lab, name: format!("edge {n}x{k}"), n, k, tiles: vec![w0], x: dev.upload(&xb)?, out: dev.alloc_zeros::<bf16>(8 * n)?, want, trials: 0 };
        for cfg in selected(CONFIGS) {
            rows.push(run.tile_cfg(cfg)?);
        }
        for t in [1, 3, 8] {
            rows.push(run.prod("prod linear::matmul", t)?);
        }
    }
    Ok(())
}

/// v11 (a measurement, not an engine path): LLM.int8 weight-only at T = 1 on tensor cores from
/// 16 x 32 tiles (lab_gemv4.cu i8t_body), against the engine's int8 GEMV (linear::matmul) on the
/// same shape and the streaming read, in the same run.
const I8T_CONFIGS: &[(&str, usize, usize, usize)] = &[
    // (kernel, warps, row tiles, blocks per SM the registers allow)
    ("lab_v11_i8t_w8r2u2", 8, 2, 2),
    ("lab_v11_i8t_w8r2u4", 8, 2, 2),
    ("lab_v11_i8t_w8r4u2", 8, 4, 2),
    ("lab_v11_i8t_w8r2u2_b3", 8, 2, 3),
];

/// cb (N, K) row-major -> the v11 tile layout (see lab_gemv4.cu).
fn i8_tiles(cb: &[i8], n: usize, k: usize) -> Vec<u8> {
    let kb = k / 32;
    let mut out = vec![0u8; n * k];
    for r in 0..n / 16 {
        for j in 0..kb {
            let base = (r * kb + j) * 512;
            for lane in 0..32 {
                let (g, t) = (lane / 4, lane % 4);
                for word in 0..4 {
                    let row = 16 * r + g + 8 * (word & 1);
                    let k0 = 32 * j + 16 * (word >> 1) + 2 * t;
                    for (b, dk) in [0, 1, 8, 9].iter().enumerate() {
                        out[base + lane * 16 + word * 4 + b] = cb[row * k + k0 + dk] as u8;
                    }
                }
            }
        }
    }
    out
}

fn int8_tile_shape(dev: &Device, lab: &LabModule, name: &str, n: usize, k: usize, trials: usize, rows: &mut Vec<Row>) -> Res<()> {
    println!("== {name} ({n} x {k}) int8 weight-only, T = 1");
    let weight_only = SyntheticOptions { int8_threshold: None, ..SyntheticOptions::default() };  // the decode's int8 path
    let w0 = synthetic::random_linear(dev, QuantKind::Int8, n, k, 0.02, 3000 + n as u64 + k as u64, weight_only)?;
    let host = linear::to_host(dev, &w0)?;
    let LinearWeight::Int8(h) = &host else { return Err("not int8".into()) };
    let bytes = n * k + 4 * n;
    let copies = WORKING_SET.div_ceil(bytes).max(2);
    let (x, want) = oracle(&host, k, (11 + n as u64) ^ k as u64)?;
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let tiles = i8_tiles(&h.cb, n, k);
    let mut tile_copies = Vec::with_capacity(copies);
    let mut engine = vec![w0];
    for c in 0..copies {
        tile_copies.push(dev.upload(&tiles)?);
        if c > 0 {
            engine.push(synthetic::random_linear(dev, QuantKind::Int8, n, k, 0.02, 3000 + n as u64 + k as u64, weight_only)?);
        }
    }
    let scb = dev.upload(&h.scb)?;
    let run = ShapeRun { dev, lab, name: name.into(), n, k, tiles: Vec::new(), x: dev.upload(&xb)?, out: dev.alloc_zeros::<bf16>(8 * n)?, want, trials };
    let mut launch = |c: usize| -> Res<()> {
        // SAFETY: x holds 8*K and out 8*N bf16 values; engine[c] is an (n, k) int8 linear.
        unsafe { linear::matmul(dev, run.x.ptr(), 1, &engine[c % engine.len()], None, Epilogue::Store, run.out.ptr())? };
        Ok(())
    };
    rows.push(run.measure_copies("engine int8 weight-only GEMV (linear::matmul)", 1, bytes, String::new(), copies, &mut launch)?);
    for &(kernel, warps, row_tiles, bps) in I8T_CONFIGS.iter().filter(|c| wanted(c.0)) {
        let threads = (warps * 32) as u32;
        let occ = lab.occupancy(kernel, threads, 0)? as usize;
        let groups = (n / 16).div_ceil(row_tiles);
        let grid = linear::four_bit::strided_blocks(groups, occ.min(bps) * dev.sm_count as usize);
        let mut launch = |c: usize| -> Res<()> {
            let p = P::default().ptr(run.x.ptr()).ptr(tile_copies[c].ptr()).ptr(scb.ptr()).i32(n as i32).i32(k as i32).ptr(run.out.ptr());
            // SAFETY: the i8t_body signature; tile_copies[c] holds the (n, k) tiles, scb n floats.
            unsafe { lab.launch(dev, kernel, grid, threads, 0, p) }
        };
        let note = format!("{occ}/SM, grid {grid}, {:.2} groups/block", groups as f64 / grid as f64);
        rows.push(run.measure_copies(&format!("v11 {kernel}"), 1, bytes, note, copies, &mut launch)?);
    }
    let sink = dev.alloc_zeros::<u32>(1)?;
    for kernel in ["lab_stream_read", "lab_stream_read4"] {
        let grid = dev.sm_count * 16;
        let mut launch = |c: usize| -> Res<()> {
            let p = P::default().ptr(tile_copies[c].ptr()).i64((n * k / 16) as i64).ptr(sink.ptr());
            // SAFETY: reads n*k/16 uint4 of a buffer of n*k bytes.
            unsafe { lab.launch(dev, kernel, grid, 256, 0, p) }
        };
        let (us, spread) = time_us(dev, copies, trials, &mut launch)?;
        println!("  {kernel:<44}     {us:>8.2} us  {:>6.0} GB/s", (n * k) as f64 / us / 1e3);
        rows.push(Row { version: format!("{kernel} (same bytes, rotated)"), shape: name.into(), t: 0, us, spread, bytes: n * k, rel: 0.0, note: String::new() });
    }
    Ok(())
}

fn main() -> Res<()> {
    let quick = std::env::args().any(|a| a == "quick");
    let trials = if quick { 9 } else { 25 };
    let dev = Device::new(0)?;
    println!("device: {} ({} SMs), trials {trials}", dev.name, dev.sm_count);
    let lab = LabModule::new(&dev)?;
    let mut rows = Vec::new();

    // The practical read ceiling: 2 GiB of random bf16, read once per launch.
    let big = synthetic::random_bf16(&dev, 1 << 30, 0.0, 1.0, 7)?;
    let sink = dev.alloc_zeros::<u32>(1)?;
    let n16 = (big.bytes() / 16) as i64;
    let (us, spread) = time_us(&dev, 1, trials, |_| {
        let p = P::default().ptr(big.ptr()).i64(n16).ptr(sink.ptr());
        // SAFETY: reads n16 uint4 of `big`.
        unsafe { lab.launch(&dev, "lab_stream_read", dev.sm_count * 16, 256, 0, p) }
    })?;
    println!("stream read 2 GiB: {us:.1} us, {:.0} GB/s", big.bytes() as f64 / us / 1e3);
    rows.push(Row { version: "stream read 2 GiB".into(), shape: "-".into(), t: 0, us, spread, bytes: big.bytes(), rel: 0.0, note: String::new() });
    drop(big);

    let mut edge = Vec::new();
    edge_checks(&dev, &lab, &mut edge)?;
    let edge_fails: Vec<&Row> = edge.iter().filter(|r| r.rel.is_nan() || r.rel > TOL).collect();
    println!("edge checks: {} runs, {} over tolerance", edge.len(), edge_fails.len());
    for r in &edge_fails {
        println!("  EDGE FAIL {} {} T={} rel {:.3e}", r.version, r.shape, r.t, r.rel);
    }
    let dq = SyntheticOptions::default();
    for (name, n, k) in [("qkv", 9216, 8192), ("dense", 8192, 8192), ("h->4h", 32768, 8192), ("4h->h", 8192, 32768)] {
        run_shape(&dev, &lab, name, n, k, QuantKind::Nf4, dq, true, trials, &mut rows)?;
    }
    if name_filter().is_some_and(|f| f.contains("v11")) {
        for (name, n, k) in [("qkv", 9216, 8192), ("dense", 8192, 8192), ("h->4h", 32768, 8192), ("4h->h", 8192, 32768)] {
            int8_tile_shape(&dev, &lab, name, n, k, trials, &mut rows)?;
        }
    }
    // Other formats through the production path (T = 1): FP4, plain f32 scales, blocksize 128.
    run_shape(&dev, &lab, "qkv fp4", 9216, 8192, QuantKind::Fp4, dq, false, trials, &mut rows)?;
    run_shape(&dev, &lab, "qkv nf4 plain", 9216, 8192, QuantKind::Nf4, SyntheticOptions { double_quant: false, ..dq }, false, trials, &mut rows)?;
    run_shape(&dev, &lab, "qkv nf4 bs128", 9216, 8192, QuantKind::Nf4, SyntheticOptions { blocksize: 128, ..dq }, false, trials, &mut rows)?;
    run_shape(&dev, &lab, "4h->h nf4 bs128", 8192, 32768, QuantKind::Nf4, SyntheticOptions { blocksize: 128, ..dq }, false, trials, &mut rows)?;

    let fails = rows.iter().filter(|r| r.rel.is_nan() || r.rel > TOL).count() + edge_fails.len();
    let mut table = String::new();
    table.push_str(&format!("\n| version | shape | T | us | spread us | GB/s | % of {PEAK_GBS:.0} | rel err | note |\n|---|---|---|---|---|---|---|---|---|\n"));
    for r in &rows {
        let gbs = r.bytes as f64 / r.us / 1e3;
        table.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.1}% | {:.2e} | {} |\n",
            r.version,
            r.shape,
            r.t,
            r.us,
            r.spread,
            gbs,
            100.0 * gbs / PEAK_GBS,
            r.rel,
            r.note
        ));
    }
    let worst_edge = edge.iter().map(|r| r.rel).fold(0f64, f64::max);
    table.push_str(&format!("\n{} rows + {} edge checks (worst rel err {worst_edge:.2e}), {fails} over tolerance {TOL:.0e}\n", rows.len(), edge.len()));
    if let Some(dir) = std::env::var_os("OUT") {
        std::fs::write(std::path::Path::new(&dir).join("lab_gemv4.md"), &table)?;
    }
    print!("{table}");
    if fails > 0 {
        return Err(format!("{fails} versions failed the oracle check").into());
    }
    Ok(())
}
