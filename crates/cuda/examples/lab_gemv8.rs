//! lab_gemv8: the decode-GEMV lab (issue 6) for bf16 (Dense) and LLM.int8 weight-only linears at
//! the Falcon-40B shapes, T = 1 (and T = 8), against the memory roofline of one H200.
//!
//! Method (device/METHOD.md): numbered versions (v1 = the kernel before this lab; cuBLAS for
//! bf16), each checked against the CPU oracle (`peregrine_quant::matmul` on the downloaded
//! weights) on fresh random inputs with the output poisoned (NaN), relative error printed and
//! asserted under `TOL`; timed with CUDA events around each launch (median of `LAUNCHES`), the
//! queue kept full behind a long read so host launch cost stays out, rotating over enough copies
//! of the weights that the working set is >= `WORKING_SET` (8x the 50 MB L2). A plain streaming
//! read over 2 GiB (and over slices the size of the shapes) gives the practical ceiling. The
//! table comes last.
//!
//! Kernels: kernels/gemv8.cu (the production template, compiled with GEMV8_LAB so only its
//! helpers come in) + examples/lab_gemv8.cu (v1 copy, other mappings, the streaming read), one
//! NVRTC module per version, compiled in parallel. "engine" rows run `linear::matmul`.
//!
//! Run: cargo run --release -p peregrine-cuda --example lab_gemv8 [-- int8|bf16]

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{result as drv, sys, CudaEvent, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use half::bf16;
use peregrine_core::{Epilogue, Error, LinearWeight, QuantKind, Result};
use peregrine_cuda::device::Device;
use peregrine_cuda::nvrtc::KernelSource;
use peregrine_cuda::{linear, nvrtc, synthetic, CudaLinear, SyntheticOptions};

/// The H200's HBM3e roofline the percentages refer to (GB/s).
const PEAK_GBS: f64 = 4270.0;
/// ||gpu - oracle|| / ||oracle||: bf16 output rounding (2^-9) plus f32 summation order.
const TOL: f64 = 1e-2;
/// Timed launches per (version, shape, T); the median is reported.
const LAUNCHES: usize = 30;
/// Bytes of weight copies to rotate over (>= 8x the 50 MB L2; at least 2 copies).
const WORKING_SET: usize = 400 << 20;
/// Bytes of the streaming-read buffer (also the long read that fills the queue before timing).
const STREAM_BYTES: usize = 2 << 30;

/// (name, N, K) of the Falcon-40B linears; lm_head is timed for bf16 only.
const SHAPES: [(&str, usize, usize); 5] = [
    ("qkv", 9216, 8192),
    ("dense", 8192, 8192),
    ("h->4h", 32768, 8192),
    ("4h->h", 8192, 32768),
    ("lm_head", 65024, 8192),
];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fmt {
    Bf16,
    Int8,
}

/// How a version's grid follows from N.
#[derive(Clone, Copy)]
enum GridRule {
    /// ceil(N / rows) blocks (one block per row group; several waves for large N).
    RowsPerBlock(usize),
    /// One wave: min(blocks per SM * SMs, ceil(N / 4)) blocks (gemv_body's balanced rows).
    Wave(usize),
    /// One wave for the tensor-core body: min(blocks per SM * SMs, ceil(N / 16)).
    WaveMma(usize),
}

enum Impl {
    /// `linear::matmul`, what the engine runs.
    Engine,
    /// cuBLAS GemmEx through `Device::gemm_xwt_bf16` (bf16 only).
    Cublas,
    /// Lab kernels `{prefix}_t1` (and `_t8`), instantiated by `inst` lines after the prelude source.
    Lab { prefix: String, inst: String, threads: u32, grid: GridRule, smem: u32 },
}

struct Version {
    id: String,
    what: String,
    fmt: Fmt,
    imp: Impl,
    /// Also has a T <= 8 kernel (checked at T = 3 and 8, timed at T = 8).
    t8: bool,
}

/// A loaded lab kernel family.
struct LabKernels {
    t1: CudaFunction,
    t8: Option<CudaFunction>,
    _module: Arc<CudaModule>,
}

fn versions() -> Vec<Version> {
    let mut v = Vec::new();
    for fmt in [Fmt::Int8, Fmt::Bf16] {
        let (f, wt) = match fmt {
            Fmt::Int8 => ("int8", "WeightsInt8"),
            Fmt::Bf16 => ("bf16", "WeightsBf16"),
        };
        let mut push = |id: &str, what: &str, imp: Impl, t8: bool| v.push(Version { id: id.into(), what: what.into(), fmt, imp, t8 });
        match fmt {
            Fmt::Int8 => push(
                "v1",
                "before: warp/4 rows, I2F per byte",
                Impl::Lab { prefix: "v1_int8".into(), inst: "V1_KERNEL(1)\nV1_KERNEL(8)\n".into(), threads: 256, grid: GridRule::RowsPerBlock(32), smem: 0 },
                true,
            ),
            Fmt::Bf16 => push("v1", "cuBLAS GemmEx", Impl::Cublas, true),
        }
        let rg = |r: usize, u: usize, ks: usize, t8: bool| {
            let mut inst = format!("RG_KERNEL({f}, {wt}, 1, {r}, {u}, {ks})\n");
            if t8 {
                inst += &format!("RG_KERNEL({f}, {wt}, 8, {r}, {u}, {ks})\n");
            }
            Impl::Lab { prefix: format!("rg_{f}_r{r}u{u}k{ks}"), inst, threads: 256, grid: GridRule::RowsPerBlock(r * 8 / ks), smem: 0 }
        };
        push("v2", "rg r4u2: warp/4 rows, magic bytes, 2x buffered", rg(4, 2, 1, true), true);
        push("v3", "rg r2u4: warp/2 rows", rg(2, 4, 1, false), false);
        push("v4", "rg r4u2 ks4: 4 warps split K of 4 rows", rg(4, 2, 4, false), false);
        let br = |r: usize, u: usize, warps: u32, bps: usize| Impl::Lab {
            prefix: format!("br_{f}_r{r}u{u}w{warps}b{bps}"),
            inst: format!("BR_KERNEL({f}, {wt}, 1, {r}, {u}, {warps}, {bps})\n"),
            threads: warps * 32,
            grid: GridRule::Wave(bps),
            smem: 0,
        };
        push("v5", "br r4u2 w8 b2: 1 wave, rows balanced over blocks, K split over warps", br(4, 2, 8, 2), false);
        push("v7", "br r2u4 w8 b2", br(2, 4, 8, 2), false);
        push("v8", "br r4u2 w4 b4", br(4, 2, 4, 4), false);
        push("v10", "br r8u1 w8 b2", br(8, 1, 8, 2), false);
        let ba = |r: usize, u: usize, warps: u32, bps: usize, stages: u32| Impl::Lab {
            prefix: format!("ba_{f}_r{r}u{u}w{warps}b{bps}s{stages}"),
            inst: format!("BA_KERNEL({f}, {wt}, 1, {r}, {u}, {warps}, {bps}, {stages})\n"),
            threads: warps * 32,
            grid: GridRule::Wave(bps),
            smem: stages * (u * r) as u32 * warps * 512,
        };
        // (v6 br r4u2 w16 b1, v9 br r4u4 w8 b1, v11 ba s4 b1, v13 ba r4u1 s6, v14 ba r2u2 w16: run 1 only, see NOTES.md)
        push("v12", "ba r4u2 w8 b2 s3: br through a cp.async ring", ba(4, 2, 8, 2, 3), false);
        let bq = |name: &str, dec: &str, r: usize, u: usize, warps: u32, bps: usize| Impl::Lab {
            prefix: format!("bq_{f}_{name}"),
            inst: format!("BQ_KERNEL({f}_{name}, {dec}, 1, {r}, {u}, {warps}, {bps})\n"),
            threads: warps * 32,
            grid: GridRule::Wave(bps),
            smem: 0,
        };
        push("v15", "bq r4u2 w8 b2: br + ping-pong buffers, transposed sums, 1 barrier a 8 groups", bq("r4u2w8b2", wt, 4, 2, 8, 2), false);
        push("v16", "bq r8u1 w8 b2", bq("r8u1w8b2", wt, 8, 1, 8, 2), false);
        if fmt == Fmt::Int8 {
            push("v17", "bq r4u2 w8 b2, 1 byte in 4 by I2F", bq("mix1", "WeightsInt8Mix<1>", 4, 2, 8, 2), false);
            push("v18", "bq r4u2 w8 b2, 2 bytes in 4 by I2F", bq("mix2", "WeightsInt8Mix<2>", 4, 2, 8, 2), false);
        }
        push("v19", "bq r4u2 w4 b4", bq("r4u2w4b4", wt, 4, 2, 4, 4), false);
        let bm = |u: usize| Impl::Lab {
            prefix: format!("bm_{f}_u{u}"),
            inst: format!("BM_KERNEL({f}_u{u}, {wt}, {u})\n"),
            threads: 256,
            grid: GridRule::WaveMma(2),
            smem: 0,
        };
        push("v20", "bm u4: tensor cores (mma m16n8k16, T = N), 16-row groups", bm(4), true);
        push("v21", "bm u2", bm(2), true);
        let engine = match fmt {
            Fmt::Int8 => "engine: T=1 v10 (br r8u1), T=2..8 v21 (bm u2)",
            Fmt::Bf16 => "engine: T=1 v5 (br r4u2), T=2..8 cuBLAS (v1)",
        };
        push("v22", engine, Impl::Engine, true);
    }
    v
}

fn dev_err(what: &str) -> impl Fn(drv::DriverError) -> Error + '_ {
    move |e| Error::device(format!("{what}: {e:?}"))
}

/// The lab source: gemv8.cu's helpers, the lab bodies, then `inst`.
fn lab_source(inst: &str) -> String {
    format!("#define GEMV8_LAB\n{}\n{}\n{inst}", include_str!("../kernels/gemv8.cu"), include_str!("lab_gemv8.cu"))
}

/// (module name, source) of every lab module: the streaming read, then one per Lab version.
fn lab_jobs(versions: &[Version]) -> Vec<(String, String)> {
    let mut jobs: Vec<(String, String)> = vec![("lab_stream".into(), lab_source(""))];
    for v in versions {
        if let Impl::Lab { prefix, inst, .. } = &v.imp {
            jobs.push((format!("lab_{prefix}"), lab_source(inst)));
        }
    }
    jobs
}

/// Compile `jobs` for sm_{arch} in parallel through the engine's CUBIN cache (so a cache filled
/// here with `--compile-only` saves the device machine the compile time).
fn compile_all(jobs: &[(String, String)], arch: u32) -> Vec<Result<nvrtc::Compiled>> {
    let t0 = std::time::Instant::now();
    let out = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(name, code)| {
                // KernelSource wants 'static strings: the lab lives for the whole run.
                let src = KernelSource { name: Box::leak(name.clone().into_boxed_str()), code: Box::leak(code.clone().into_boxed_str()) };
                s.spawn(move || nvrtc::compile_cached(&src, arch))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::device("compile thread panicked")))).collect()
    });
    println!("compiled {} modules for sm_{arch} in {:.1} s", jobs.len(), t0.elapsed().as_secs_f64());
    out
}

/// Compile (or read from the cache) and load every lab module.
fn load_lab(dev: &Device, versions: &[Version]) -> Result<(Vec<Option<LabKernels>>, CudaFunction, Arc<CudaModule>)> {
    let jobs = lab_jobs(versions);
    let cubins = compile_all(&jobs, dev.arch);
    let mut modules = Vec::new();
    for ((name, _), c) in jobs.iter().zip(cubins) {
        let m = dev.ctx.load_module(Ptx::from_binary(c?.cubin)).map_err(dev_err(&format!("loading {name}")))?;
        modules.push(m);
    }
    let stream_mod = modules[0].clone();
    let stream = stream_mod.load_function("stream_read").map_err(dev_err("stream_read"))?;
    let mut next = modules.into_iter().skip(1);
    let mut kernels = Vec::new();
    for v in versions {
        kernels.push(match &v.imp {
            Impl::Lab { prefix, threads, smem, .. } => {
                let m = next.next().ok_or_else(|| Error::device("module count"))?;
                let t1 = m.load_function(&format!("{prefix}_t1")).map_err(dev_err(prefix))?;
                let t8 = if v.t8 { Some(m.load_function(&format!("{prefix}_t8")).map_err(dev_err(prefix))?) } else { None };
                for f in std::iter::once(&t1).chain(t8.as_ref()) {
                    f.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, *smem as i32).map_err(dev_err("smem attribute"))?;
                }
                let occ = t1.occupancy_max_active_blocks_per_multiprocessor(*threads, *smem as usize, None).map_err(dev_err("occupancy"))?;
                println!("  {} {:?} {prefix}: {threads} threads, {smem} B shared, {occ} blocks/SM resident", v.id, v.fmt);
                Some(LabKernels { t1, t8, _module: m })
            }
            _ => None,
        });
    }
    Ok((kernels, stream, stream_mod))
}

/// Queue `f` with 8-byte arguments (pointers, or 4-byte scalars in the low half).
///
/// # Safety
/// `args` must match the kernel's signature; every pointer must be valid for what it touches.
unsafe fn launch_raw(dev: &Device, f: &CudaFunction, grid: u32, threads: u32, smem: u32, args: &mut [u64]) -> Result<()> {
    dev.bind()?;
    let mut params: Vec<*mut c_void> = args.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
    drv::launch_kernel(f.cu_function(), (grid, 1, 1), (threads, 1, 1), smem, dev.stream.cu_stream(), &mut params).map_err(dev_err("lab launch"))
}

/// Median microseconds of one call of `launch(i)` (i = 0, 1, ..: the copy index is i mod copies)
/// and the back-to-back mean (first start to last end over LAUNCHES).
fn time_us(dev: &Device, busy: &dyn Fn() -> Result<()>, launch: &mut dyn FnMut(usize) -> Result<()>) -> Result<(f64, f64)> {
    for i in 0..3 {
        launch(i)?;
    }
    let event = || dev.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(dev_err("event"));
    let evs: Vec<(CudaEvent, CudaEvent)> = (0..LAUNCHES).map(|_| Ok((event()?, event()?))).collect::<Result<_>>()?;
    busy()?;
    for (i, (a, b)) in evs.iter().enumerate() {
        a.record(&dev.stream).map_err(dev_err("record"))?;
        launch(i)?;
        b.record(&dev.stream).map_err(dev_err("record"))?;
    }
    dev.synchronize()?;
    let mut t: Vec<f64> = evs.iter().map(|(a, b)| a.elapsed_ms(b).map(|ms| ms as f64 * 1e3)).collect::<std::result::Result<_, _>>().map_err(dev_err("elapsed"))?;
    let span = evs[0].0.elapsed_ms(&evs[LAUNCHES - 1].1).map_err(dev_err("elapsed"))? as f64 * 1e3 / LAUNCHES as f64;
    t.sort_by(f64::total_cmp);
    Ok((t[LAUNCHES / 2], span))
}

struct Row {
    version: String,
    shape: String,
    t: usize,
    us: f64,
    b2b_us: f64,
    bytes: f64,
    rel: Option<f64>,
}

fn print_table(rows: &[Row]) {
    println!("\n| version | shape | T | us (median) | us (b2b) | GB/s | % of 4.27 TB/s | rel err |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let gbs = r.bytes / r.us / 1e3;
        let rel = r.rel.map(|e| format!("{e:.2e}")).unwrap_or_else(|| "-".into());
        println!("| {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.1}% | {rel} |", r.version, r.shape, r.t, r.us, r.b2b_us, gbs, 100.0 * gbs / PEAK_GBS);
    }
}

/// The weight (and scale) pointers of a linear.
fn weight_ptrs(w: &CudaLinear) -> (u64, u64) {
    match w {
        CudaLinear::Dense { w, .. } => (w.ptr(), 0),
        CudaLinear::Int8 { cb, scb, .. } => (cb.ptr(), scb.ptr()),
        CudaLinear::FourBit { .. } => (0, 0),
    }
}

/// ||got[..T*N] - want[..T*N]|| / ||want||, failing on any NaN (an unwritten output).
fn rel_err(what: &str, got: &[bf16], want: &[f32]) -> Result<f64> {
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        let g = g.to_f32();
        if !g.is_finite() {
            return Err(Error::device(format!("{what}: non-finite output (unwritten?)")));
        }
        num += (g as f64 - *w as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    let rel = (num / den.max(1e-30)).sqrt();
    if rel > TOL {
        return Err(Error::device(format!("{what}: relative error {rel:.3e} > {TOL:.0e}")));
    }
    Ok(rel)
}

/// Everything the versions share for one (format, shape).
struct Case<'a> {
    dev: &'a Device,
    fmt: Fmt,
    name: &'static str,
    n: usize,
    k: usize,
    copies: Vec<CudaLinear>,
    x: peregrine_cuda::DeviceBuffer<bf16>,
    out: peregrine_cuda::DeviceBuffer<bf16>,
    /// The oracle's (8, N) output for x's 8 rows.
    want: Vec<f32>,
}

impl Case<'_> {
    fn bytes(&self, t: usize) -> f64 {
        (self.copies[0].bytes() + t * self.k * 2 + t * self.n * 2) as f64
    }

    /// Launch `v` for `t` rows on weight copy `c`.
    fn launch(&self, v: &Version, lab: Option<&LabKernels>, t: usize, c: usize) -> Result<()> {
        let w = &self.copies[c % self.copies.len()];
        let (wp, sp) = weight_ptrs(w);
        // SAFETY: x holds 8*K, out 8*N bf16; the weights are (N, K) in the version's format.
        unsafe {
            match (&v.imp, lab) {
                (Impl::Engine, _) => linear::matmul(self.dev, self.x.ptr(), t, w, None, Epilogue::Store, self.out.ptr()),
                (Impl::Cublas, _) => self.dev.gemm_xwt_bf16(self.x.ptr(), t, wp, self.n, self.k, self.out.ptr(), self.n, 0.0),
                (Impl::Lab { threads, grid, smem, .. }, Some(k)) => {
                    let f = if t == 1 { &k.t1 } else { k.t8.as_ref().ok_or_else(|| Error::device("no t8 kernel"))? };
                    let blocks = match grid {
                        GridRule::RowsPerBlock(r) => self.n.div_ceil(*r),
                        GridRule::Wave(bps) => (bps * self.dev.sm_count as usize).min(self.n.div_ceil(4)),
                        GridRule::WaveMma(bps) => (bps * self.dev.sm_count as usize).min(self.n.div_ceil(16)),
                    };
                    let mut a = [self.x.ptr(), wp, sp, self.n as u64, self.k as u64, t as u64, 0, 0, self.out.ptr()];
                    launch_raw(self.dev, f, blocks as u32, *threads, *smem, &mut a)
                }
                _ => Err(Error::device("lab kernels missing")),
            }
        }
    }

    /// Poison out, run `v` at `t` rows on copy 0, compare with the oracle.
    fn check(&self, v: &Version, lab: Option<&LabKernels>, t: usize) -> Result<f64> {
        let nan = vec![bf16::NAN; 8 * self.n];
        // SAFETY: out holds 8*N bf16.
        unsafe { drv::memcpy_htod_async(self.out.ptr(), &nan[..], self.dev.stream.cu_stream()) }.map_err(dev_err("poison"))?;
        self.launch(v, lab, t, 0)?;
        let got = self.dev.download(&self.out, 0, t * self.n)?;
        rel_err(&format!("{} {:?} {} T={t}", v.id, self.fmt, self.name), &got, &self.want[..t * self.n])
    }
}

fn make_case<'a>(dev: &'a Device, fmt: Fmt, name: &'static str, n: usize, k: usize, seed: u64) -> Result<Case<'a>> {
    let kind = if fmt == Fmt::Int8 { QuantKind::Int8 } else { QuantKind::Bf16 };
    let opts = SyntheticOptions { int8_threshold: None, ..SyntheticOptions::default() };
    let first = synthetic::random_linear(dev, kind, n, k, 0.02, seed, opts)?;
    let per = first.bytes();
    let mut copies = vec![first];
    while copies.len() < 2 || copies.len() * per < WORKING_SET {
        copies.push(synthetic::random_linear(dev, kind, n, k, 0.02, seed + copies.len() as u64, opts)?);
    }
    let x = synthetic::random_bf16(dev, 8 * k, 0.0, 1.0, seed ^ 0x5eed)?;
    let out = dev.alloc_uninit::<bf16>(8 * n)?;
    let host_w: LinearWeight = linear::to_host(dev, &copies[0])?;
    let xh: Vec<f32> = dev.download(&x, 0, 8 * k)?.iter().map(|v| v.to_f32()).collect();
    let mut want = vec![0f32; 8 * n];
    peregrine_quant::matmul(&xh, 8, &host_w, &mut want)?;
    Ok(Case { dev, fmt, name, n, k, copies, x, out, want })
}

fn main() -> Result<()> {
    let only = std::env::args().nth(1);
    if only.as_deref() == Some("--compile-only") {
        // No device: fill the CUBIN cache for sm_90 with the engine's modules and the lab's.
        let engine: Vec<(String, String)> = nvrtc::SOURCES.iter().map(|s| (s.name.to_string(), s.code.to_string())).collect();
        for c in compile_all(&engine, 90).into_iter().chain(compile_all(&lab_jobs(&versions()), 90)) {
            c?;
        }
        return Ok(());
    }
    let dev = Device::new(0)?;
    println!("device: {} (sm_{}, {} SMs)", dev.name, dev.arch, dev.sm_count);
    let versions: Vec<Version> = versions()
        .into_iter()
        .filter(|v| only.as_deref().is_none_or(|o| format!("{:?}", v.fmt).eq_ignore_ascii_case(o)))
        .collect();
    let (kernels, stream, _stream_mod) = load_lab(&dev, &versions)?;
    let mut rows = Vec::new();

    // The practical ceiling: a plain read of 16-byte words, 2 GiB and slices of the shapes' sizes.
    let buf = synthetic::random_bf16(&dev, STREAM_BYTES / 2, 0.0, 1.0, 99)?;
    let sink = dev.alloc_zeros::<u32>(1)?;
    let read = |off: usize, bytes: usize| -> Result<()> {
        let mut a = [buf.ptr() + off as u64, (bytes / 16) as u64, sink.ptr()];
        // SAFETY: [off, off + bytes) lies inside buf; the sink holds one u32.
        unsafe { launch_raw(&dev, &stream, dev.sm_count * 8, 256, 0, &mut a) }
    };
    let busy = || read(0, STREAM_BYTES);
    for (label, bytes) in [("2 GiB", STREAM_BYTES), ("268 MB", 268 << 20), ("75 MB", 75 << 20), ("67 MB", 67 << 20)] {
        let slots = STREAM_BYTES / bytes;
        let (us, b2b) = time_us(&dev, &busy, &mut |i| read((i % slots) * bytes, bytes))?;
        rows.push(Row { version: "stream read".into(), shape: label.into(), t: 0, us, b2b_us: b2b, bytes: bytes as f64, rel: None });
    }

    for fmt in [Fmt::Int8, Fmt::Bf16] {
        let vs: Vec<(&Version, Option<&LabKernels>)> = versions.iter().zip(&kernels).filter(|(v, _)| v.fmt == fmt).map(|(v, k)| (v, k.as_ref())).collect();
        if vs.is_empty() {
            continue;
        }
        for (si, &(name, n, k)) in SHAPES.iter().enumerate() {
            if fmt == Fmt::Int8 && name == "lm_head" {
                continue;
            }
            let t0 = std::time::Instant::now();
            let case = make_case(&dev, fmt, name, n, k, 1000 * si as u64 + fmt as u64)?;
            println!("{fmt:?} {name} ({n} x {k}): {} copies, oracle in {:.1} s", case.copies.len(), t0.elapsed().as_secs_f64());
            for &(v, lab) in &vs {
                let ts: Vec<usize> = match (&v.imp, v.t8) {
                    (Impl::Engine, _) => (1..=8).collect(),
                    (_, true) => vec![1, 3, 8],
                    _ => vec![1],
                };
                // A wrong version is reported and skipped; the others still run.
                let rels: Result<Vec<(usize, f64)>> = ts.iter().map(|&t| case.check(v, lab, t).map(|e| (t, e))).collect();
                let rels = match rels {
                    Ok(r) => r,
                    Err(e) => {
                        println!("  {} {}: FAILED: {e}", v.id, v.what);
                        rows.push(Row { version: format!("{} {:?} {} FAILED", v.id, fmt, v.what), shape: name.into(), t: 0, us: f64::NAN, b2b_us: f64::NAN, bytes: 0.0, rel: None });
                        continue;
                    }
                };
                let worst = rels.iter().map(|r| r.1).fold(0.0, f64::max);
                println!("  {} {}: rel err {:.2e} (worst over T = {:?})", v.id, v.what, worst, ts);
                let many = matches!(v.imp, Impl::Engine | Impl::Cublas) || v.id == "v20" || v.id == "v21";
                let times = if many { vec![1, 2, 4, 8] } else if v.t8 { vec![1, 8] } else { vec![1] };
                for t in times {
                    let (us, b2b) = time_us(&dev, &busy, &mut |i| case.launch(v, lab, t, i))?;
                    let rel = rels.iter().find(|r| r.0 == t).map(|r| r.1);
                    rows.push(Row { version: format!("{} {:?} {}", v.id, fmt, v.what), shape: name.into(), t, us, b2b_us: b2b, bytes: case.bytes(t), rel });
                }
            }
        }
    }
    print_table(&rows);
    Ok(())
}
