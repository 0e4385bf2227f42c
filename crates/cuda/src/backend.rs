//! `CudaBackend`: the `peregrine_core::Backend` operations on one NVIDIA GPU.
//!
//! Precision (design choice): every activation buffer, the KV cache and dense weights are bf16,
//! as transformers runs Falcon in bf16; every kernel computes in f32 (LayerNorm statistics,
//! softmax, GEMM accumulation, GELU, rotary) and rounds once when it stores. So results match a
//! bf16 reference closely and an f32 reference to about 1e-2 relative.
//!
//! Host-side arguments (token ids, positions, ALiBi slopes) are uploaded per call into small
//! stream-ordered allocations; every size is checked on the host before a launch, so user input
//! can never make a kernel read or write out of bounds. A recorded decode step (a CUDA graph,
//! `record_step`) instead reads ids and positions from a step slot written before each replay,
//! sizes its grids for the cache's capacity, and uses scratch buffers kept by the backend, so
//! replaying it allocates and uploads nothing but the slot.
//!
//! Legend: T = tokens, D = hidden, H = query heads, G = KV groups, Hd = head dim, P = cache
//! positions, N/K = linear out/in features.

use half::bf16;
use peregrine_core::scoring::RowScore;
use peregrine_core::{AttentionParams, Backend, ClockProbe, Epilogue, Error, HostTensor, LayerKv, LinearInput, LinearWeight, MemoryStats, PairNorms, PairSide, QkvLayout, QuantKind, Result, RotaryParams};

use std::sync::{Arc, Mutex};

use crate::alloc::DeviceBuffer;
use crate::device::{Args, Device, Grid};
use crate::linear::{self, CudaLinear};
use crate::synthetic::{self, SyntheticOptions};

/// An activation buffer: bf16 on the device.
pub type CudaBuf = DeviceBuffer<bf16>;

/// Query rows at or below which attention uses the decode kernel (one block per row and head).
pub const DECODE_MAX_ROWS: usize = 8;
/// Keys per block of the decode kernel (DEC_SPLIT in kernels/attention.cu).
pub const DECODE_SPLIT: usize = 256;
/// Threads per block of the decode kernel (DEC_WARPS * 32 in kernels/attention.cu: a warp per 32 keys).
const DECODE_THREADS: u32 = 256;
/// Query rows and threads of a block of the tensor-core prefill attention (kernels/attention.cu:
/// TC_ROWS, TC_WARPS * 32).
const TC_PREFILL_ROWS: usize = 128;
const TC_PREFILL_THREADS: u32 = 256;
/// Blocks a SM the rotary kernels aim for (rotary_grid).
const ROTARY_BLOCKS_PER_SM: usize = 4;
/// Head dims the attention kernels are instantiated for (kernels/attention.cu).
pub const ATTENTION_HEAD_DIMS: [usize; 2] = [64, 128];

/// Which kernel runs attention for more than DECODE_MAX_ROWS query rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefillAttention {
    /// mma.sync bf16 tensor cores (FlashAttention-2 style); P rounded to bf16 before P.V.
    TensorCore,
    /// f32 CUDA cores throughout (slower; the first version, kept as a reference).
    Simt,
}

/// Rows a recorded decode step may have (the step slot holds this many ids and positions).
pub const STEP_MAX_ROWS: usize = DECODE_MAX_ROWS;

/// The CUDA backend on one device.
pub struct CudaBackend {
    dev: Device,
    /// PrefillAttention as a flag (true = TensorCore), switchable at run time for tests.
    tc_prefill: std::sync::atomic::AtomicBool,
    step: Mutex<StepState>,
    /// f32 scratch of the attention decode partials, grown on demand (never while recording).
    attn_scratch: Mutex<Option<DeviceBuffer<f32>>>,
    /// u32 scratch of the sampler: keys (vocab), the token (1), the history.
    sample_scratch: Mutex<Option<DeviceBuffer<u32>>>,
    /// Which one-row decode fusions run (all unless PEREGRINE_UNFUSE names them).
    fuse: Fusions,
    /// Decode-step stages left out for timing experiments (PEREGRINE_LAB_SKIP; results are wrong).
    lab_skip: LabSkip,
    /// The ALiBi slopes last used, uploaded once (a model's constant).
    alibi: Mutex<Option<(Vec<f32>, DeviceBuffer<f32>)>>,
    /// NVML on this device (telemetry.rs), opened on the first `clock_probe` call.
    clocks: std::sync::OnceLock<Option<Arc<dyn ClockProbe>>>,
}

/// The decode-step slot and mode (see `Backend::record_step`).
#[derive(Default)]
struct StepState {
    /// (2 * STEP_MAX_ROWS,) u32: ids first, then positions. Allocated on first use.
    slot: Option<DeviceBuffer<u32>>,
    /// Some(key_bound) while a step is being recorded.
    active: Option<usize>,
}

/// A recorded decode step: the graph and what it was recorded for.
pub struct CudaStepGraph {
    graph: cudarc::driver::CudaGraph,
    rows: usize,
    key_bound: usize,
}

/// Device ids or positions an op reads: the step slot, or an upload it owns.
enum Indices {
    Slot(u64),
    Uploaded(DeviceBuffer<u32>),
}

impl Indices {
    fn ptr(&self) -> u64 {
        match self {
            Indices::Slot(p) => *p,
            Indices::Uploaded(b) => b.ptr(),
        }
    }
}

fn check_len(op: &str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::input(format!("{op}: {what} holds {have} elements, needs {need}")));
    }
    Ok(())
}

/// The lengths a linear (x (rows, K) -> out (rows, N)) needs, and N, K within the kernels' range.
fn check_linear(x: &CudaBuf, rows: usize, w: &CudaLinear, bias: Option<&CudaBuf>, out_len: usize) -> Result<()> {
    let (n, k) = w.dims();
    check_len("linear", "x", x.len(), rows * k)?;
    check_len("linear", "out", out_len, rows * n)?;
    if let Some(b) = bias {
        check_len("linear", "bias", b.len(), n)?;
    }
    as_i32("linear", "N", n)?;
    as_i32("linear", "K", k)?;
    Ok(())
}

/// A LayerNorm's (weight, bias) hold `dim` values each.
fn check_norm((w, bias): (&CudaBuf, &CudaBuf), dim: usize) -> Result<()> {
    check_len("layer_norm", "weight", w.len(), dim)?;
    check_len("layer_norm", "bias", bias.len(), dim)
}

/// The one-row (decode) fusions, each on unless `PEREGRINE_UNFUSE` (a comma-separated list) names it:
/// `pair`: `linear_pair` of bf16 or int8 weight-only in one launch (`PEREGRINE_NO_PAIR_GEMV` also
/// turns it off); `norm`: a parallel block's LayerNorms inside that launch; `attention`: rotary and
/// the K/V append inside the attention kernel; `sum`: `linear_sum` of bf16 or int8 weight-only (a
/// parallel block's dense and dense_4h_to_h) in one launch. For measuring each against its
/// separate launches.
#[derive(Clone, Copy)]
struct Fusions {
    pair: bool,
    norm: bool,
    attention: bool,
    sum: bool,
}

impl Fusions {
    fn from_env() -> Self {
        let off = env_list("PEREGRINE_UNFUSE");
        let on = |w: &str| !off.iter().any(|x| x == w);
        let pair = on("pair") && std::env::var_os("PEREGRINE_NO_PAIR_GEMV").is_none();
        Fusions { pair, norm: on("norm"), attention: on("attention"), sum: on("sum") }
    }
}

/// The comma-separated words of environment variable `var` (none when it is unset).
fn env_list(var: &str) -> Vec<String> {
    std::env::var(var).unwrap_or_default().split(',').map(|w| w.trim().to_string()).filter(|w| !w.is_empty()).collect()
}

/// Stages of a step that `PEREGRINE_LAB_SKIP` (a comma-separated list of `norm`, `rotary`,
/// `attention`) leaves out, to time what each costs inside a recorded decode step ("leave one stage
/// out", device/METHOD.md). The outputs are then wrong: a lab switch, never for real use.
#[derive(Clone, Copy, Default)]
struct LabSkip {
    /// layer_norm2 (both norms of a parallel block).
    norm: bool,
    /// rotary_append.
    rotary: bool,
    /// The one-row decode attention.
    attention: bool,
}

impl LabSkip {
    fn from_env() -> Self {
        let skip = env_list("PEREGRINE_LAB_SKIP");
        let has = |w: &str| skip.iter().any(|x| x == w);
        LabSkip { norm: has("norm"), rotary: has("rotary"), attention: has("attention") }
    }
}

/// A pair launch's view of one product.
fn pair_product<'a>(p: LinearInput<'a, CudaBackend>, epi: Epilogue, out: u64) -> linear::PairProduct<'a> {
    linear::PairProduct { x: p.x.ptr(), w: p.w, bias: p.bias.map(|b| b.ptr()), epi, out }
}

/// i32 for a kernel argument, or an error naming it.
fn as_i32(op: &str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::input(format!("{op}: {what} = {v} exceeds the kernels' 32-bit range")))
}

impl CudaBackend {
    /// Open GPU `ordinal`. One clear `Error::Device` line when there is no driver, no such GPU,
    /// no NVRTC or no cuBLAS.
    pub fn new(ordinal: usize) -> Result<Self> {
        Ok(CudaBackend {
            dev: Device::new(ordinal)?,
            tc_prefill: std::sync::atomic::AtomicBool::new(true),
            step: Mutex::new(StepState::default()),
            attn_scratch: Mutex::new(None),
            sample_scratch: Mutex::new(None),
            fuse: Fusions::from_env(),
            lab_skip: LabSkip::from_env(),
            alibi: Mutex::new(None),
            clocks: std::sync::OnceLock::new(),
        })
    }

    /// Choose the prefill attention kernel (default: tensor cores).
    pub fn set_prefill_attention(&self, kind: PrefillAttention) {
        self.tc_prefill.store(kind == PrefillAttention::TensorCore, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn prefill_attention(&self) -> PrefillAttention {
        if self.tc_prefill.load(std::sync::atomic::Ordering::Relaxed) {
            PrefillAttention::TensorCore
        } else {
            PrefillAttention::Simt
        }
    }

    /// The device (context, stream, kernels), for launchers outside the trait.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// (free, total) bytes of device memory, for a pre-flight check before loading a model.
    pub fn free_device_memory(&self) -> (usize, usize) {
        self.dev.free_memory().unwrap_or((0, 0))
    }

    /// An (n, k) linear of synthetic normal(0, std) weights made on the device (see `synthetic`),
    /// quantized as `kind` with the default options (NF4/FP4 blocksize 64 with double quant,
    /// int8 threshold 6.0).
    pub fn random_linear(&self, kind: QuantKind, n: usize, k: usize, std: f32, seed: u64) -> Result<CudaLinear> {
        synthetic::random_linear(&self.dev, kind, n, k, std, seed, SyntheticOptions::default())
    }

    /// Like `random_linear` with explicit storage options.
    pub fn random_linear_with(&self, kind: QuantKind, n: usize, k: usize, std: f32, seed: u64, opts: SyntheticOptions) -> Result<CudaLinear> {
        synthetic::random_linear(&self.dev, kind, n, k, std, seed, opts)
    }

    /// A buffer of `len` synthetic normal(mean, std) values (layernorm weights: mean 1).
    pub fn random_vector(&self, len: usize, mean: f32, std: f32, seed: u64) -> Result<CudaBuf> {
        synthetic::random_bf16(&self.dev, len, mean, std, seed)
    }

    /// The linear's weights back on the host in the core's format (dense as bf16).
    pub fn linear_to_host(&self, w: &CudaLinear) -> Result<LinearWeight> {
        linear::to_host(&self.dev, w)
    }

    /// The dequantized (N, K) weight as the kernels see it (bf16 values as f32).
    pub fn dequantize_linear(&self, w: &CudaLinear) -> Result<Vec<f32>> {
        let (n, k) = w.dims();
        let out = self.dev.alloc_uninit::<bf16>(n * k)?;
        // SAFETY: out holds n*k bf16.
        unsafe { linear::dequantize_rows(&self.dev, w, None, 0, n, out.ptr())? };
        Ok(self.dev.download(&out, 0, n * k)?.iter().map(|v| v.to_f32()).collect())
    }

    fn upload_u32(&self, v: &[u32]) -> Result<DeviceBuffer<u32>> {
        self.dev.upload(v)
    }

    fn step_state(&self) -> Result<std::sync::MutexGuard<'_, StepState>> {
        self.step.lock().map_err(|_| Error::device("step state lock poisoned"))
    }

    /// Token ids (`positions` false) or positions (true) for an op: the step slot while a step
    /// is recorded, else an upload of `host`.
    fn indices(&self, host: &[u32], positions: bool) -> Result<Indices> {
        let st = self.step_state()?;
        match (&st.slot, st.active) {
            (Some(slot), Some(_)) => {
                if host.len() > STEP_MAX_ROWS {
                    return Err(Error::input(format!("a recorded step has at most {STEP_MAX_ROWS} rows, got {}", host.len())));
                }
                Ok(Indices::Slot(slot.ptr_at(if positions { STEP_MAX_ROWS } else { 0 })))
            }
            _ => Ok(Indices::Uploaded(self.upload_u32(host)?)),
        }
    }

    /// Keys attention must be able to reach: the recording's bound, else max(positions) + 1.
    fn key_bound(&self, positions: &[u32]) -> Result<usize> {
        let exact = positions.iter().max().map_or(0, |&p| p as usize + 1);
        Ok(self.step_state()?.active.map_or(exact, |bound| bound.max(exact)))
    }

    /// A device pointer to at least `len` elements of the scratch in `cell`, grown when too small.
    fn scratch<T: cudarc::driver::DeviceRepr>(&self, cell: &Mutex<Option<DeviceBuffer<T>>>, len: usize) -> Result<u64> {
        let mut guard = cell.lock().map_err(|_| Error::device("scratch lock poisoned"))?;
        if guard.as_ref().is_none_or(|b| b.len() < len) {
            *guard = None; // freed in stream order, after the work already queued on it
            *guard = Some(self.dev.alloc_uninit::<T>(len)?);
        }
        Ok(guard.as_ref().map_or(0, |b| b.ptr()))
    }

    /// The device copy of `slopes`, uploaded when they differ from the last ones.
    fn alibi_slopes(&self, slopes: &[f32]) -> Result<u64> {
        let mut cached = self.alibi.lock().map_err(|_| Error::device("ALiBi cache lock poisoned"))?;
        if cached.as_ref().is_none_or(|(v, _)| v.as_slice() != slopes) {
            *cached = Some((slopes.to_vec(), self.dev.upload(slopes)?));
        }
        Ok(cached.as_ref().map_or(0, |(_, b)| b.ptr()))
    }

    /// Fill the step slot with `ids` and `positions` (allocating it on first use).
    fn write_step_slot(&self, ids: &[u32], positions: &[u32]) -> Result<()> {
        if ids.is_empty() || ids.len() > STEP_MAX_ROWS || positions.len() != ids.len() {
            return Err(Error::input(format!(
                "a recorded step takes 1 to {STEP_MAX_ROWS} ids with one position each, got {} ids and {} positions",
                ids.len(),
                positions.len()
            )));
        }
        let mut st = self.step_state()?;
        if st.slot.is_none() {
            st.slot = Some(self.dev.alloc_zeros::<u32>(2 * STEP_MAX_ROWS)?);
        }
        let mut values = [0u32; 2 * STEP_MAX_ROWS];
        values[..ids.len()].copy_from_slice(ids);
        values[STEP_MAX_ROWS..STEP_MAX_ROWS + positions.len()].copy_from_slice(positions);
        let slot = st.slot.as_ref().ok_or_else(|| Error::device("step slot missing"))?;
        self.dev.write(slot, &values)
    }

    fn set_step_active(&self, bound: Option<usize>) -> Result<()> {
        self.step_state()?.active = bound;
        Ok(())
    }

    /// Run `step` in step mode, then record it. None when some op of the step allocates per
    /// call (a fallback path for shapes no Falcon has): the step then stays eager.
    fn run_and_record(&self, step: &mut dyn FnMut() -> Result<()>) -> Result<Option<cudarc::driver::CudaGraph>> {
        step()?; // this step's results; also sizes every scratch buffer and loads every kernel
        self.dev.begin_capture()?;
        let queued = step();
        let graph = self.dev.end_capture();
        if queued.is_err() && self.dev.capture_needed_memory() {
            return Ok(None);
        }
        queued?;
        graph.map(Some)
    }

    /// The lengths and positions every attention path needs.
    fn check_attention(&self, qkv: &CudaBuf, cache: &LayerKv<Self>, params: &AttentionParams<'_>, out: &CudaBuf) -> Result<()> {
        let l = params.layout;
        Self::check_layout("attention", l)?;
        let t = params.positions.len();
        check_len("attention", "qkv", qkv.len(), t * l.row_width())?;
        check_len("attention", "out", out.len(), t * l.n_head * l.head_dim)?;
        self.check_positions("attention", cache, l, params.positions)?;
        if let Some(s) = params.alibi_slopes {
            check_len("attention", "alibi slopes", s.len(), l.n_head)?;
        }
        Ok(())
    }

    /// The arguments every attention kernel starts with: qkv, k and v caches, positions, slopes.
    fn attention_args(&self, qkv: &CudaBuf, cache: &LayerKv<Self>, params: &AttentionParams<'_>) -> Result<Args> {
        let pos = self.indices(params.positions, true)?;
        let slopes = match params.alibi_slopes {
            Some(s) => Some(self.alibi_slopes(s)?),
            None => None,
        };
        Ok(Args::new().ptr(qkv.ptr()).ptr(cache.k.ptr()).ptr(cache.v.ptr()).ptr(pos.ptr()).opt(slopes))
    }

    /// Flash-decoding for at most DECODE_MAX_ROWS rows (checked by the caller): S splits of
    /// DECODE_SPLIT keys (splits past a row's position do nothing), then a merge when S > 1.
    /// `fused` = Some((theta, position_scale)): one row, and the kernel also rotates (theta > 0) and
    /// appends this step's K/V (attention_decode_fused_*; theta 0 appends without rotating).
    fn decode_attention(&self, qkv: &CudaBuf, cache: &LayerKv<Self>, params: &AttentionParams<'_>, out: &CudaBuf, fused: Option<(f32, f32)>) -> Result<()> {
        let (l, t, hd) = (params.layout, params.positions.len(), params.layout.head_dim);
        let a = self.attention_args(qkv, cache, params)?;
        let splits = self.key_bound(params.positions)?.div_ceil(DECODE_SPLIT).max(1);
        let o_len = t * l.n_head * splits * hd;
        let scratch = self.scratch(&self.attn_scratch, o_len + t * l.n_head * splits * 2)?;
        let (part_o, part_ml) = (scratch, scratch + 4 * o_len as u64);
        let a = a.ptr(part_o).ptr(part_ml).ptr(out.ptr()).i32(l.n_head as i32).i32(l.n_kv as i32).i32(l.row_width() as i32).f32(params.scale);
        let (name, a) = match fused {
            Some((theta, position_scale)) => (if hd == 64 { "attention_decode_fused_bf16_hd64" } else { "attention_decode_fused_bf16_hd128" }, a.f32(theta).f32(position_scale)),
            None => (if hd == 64 { "attention_decode_bf16_hd64" } else { "attention_decode_bf16_hd128" }, a),
        };
        let g = Grid::new((t as u32, l.n_head as u32, splits as u32), DECODE_THREADS).with_pdl();
        // SAFETY: every length and position checked by the caller (check_attention); partials sized
        // (T, H, S, Hd) and (T, H, S, 2); the fused kernel writes only the cache slot positions[0].
        unsafe {
            self.dev.launch("attention", name, g, a)?;
            if splits == 1 {
                return Ok(()); // the kernel wrote the output
            }
            let a = Args::new().ptr(part_o).ptr(part_ml).ptr(out.ptr()).i32(l.n_head as i32).i32(hd as i32).i32(splits as i32);
            self.dev.launch("attention", "attention_combine_bf16", Grid::new((t as u32, l.n_head as u32, 1), hd as u32).with_pdl(), a)
        }
    }

    /// Cache capacity P of a layer and a check that every position fits.
    fn check_positions(&self, op: &str, cache: &LayerKv<Self>, layout: QkvLayout, positions: &[u32]) -> Result<usize> {
        let per_pos = layout.n_kv * layout.head_dim;
        if per_pos == 0 || cache.k.len() != cache.v.len() {
            return Err(Error::input(format!("{op}: K and V caches differ or the layout is empty")));
        }
        let capacity = cache.k.len() / per_pos;
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= capacity) {
            return Err(Error::input(format!("{op}: position {p} is beyond the KV cache capacity {capacity}")));
        }
        Ok(capacity)
    }

    fn check_layout(op: &str, l: QkvLayout) -> Result<()> {
        if l.n_kv == 0 || l.n_head % l.n_kv != 0 || l.head_dim == 0 {
            return Err(Error::input(format!("{op}: invalid head layout {l:?}")));
        }
        Ok(())
    }

    /// Launch shape of rotary_bf16 / rotary_append_bf16 for `t` tokens, and the heads a block takes:
    /// the fewest blocks that still give each SM about four (a long prompt: one block a token with
    /// every head; one token: a block a head). Dynamic shared memory holds a token's pair angles.
    fn rotary_grid(&self, t: usize, layout: QkvLayout) -> (Grid, i32) {
        let heads = layout.n_head + layout.n_kv;
        let wanted = ROTARY_BLOCKS_PER_SM * self.dev.sm_count as usize;
        let per_block = heads.div_ceil(wanted.div_ceil(t).clamp(1, heads));
        let threads = (per_block * layout.head_dim / 2).clamp(32, 256) as u32;
        let g = Grid::new((t as u32, heads.div_ceil(per_block) as u32, 1), threads).with_smem((layout.head_dim * 4) as u32);
        (g, per_block as i32)
    }
}

impl CudaBackend {
    /// Attention for head dims without a specialised kernel (none of the real Falcons):
    /// one block per (row, head), the row's scores held in shared memory.
    fn attention_generic(&self, a: Args, l: QkvLayout, params: &AttentionParams<'_>, out: &mut CudaBuf) -> Result<()> {
        let t = params.positions.len();
        let max_pos = self.key_bound(params.positions)?.max(1) - 1;
        let smem = 4 * (l.head_dim + 32 + max_pos + 1);
        if smem > 48 * 1024 {
            return Err(Error::input(format!(
                "attention: head dim {} has no specialised kernel (have {:?}) and {} positions exceed the generic kernel's limit",
                l.head_dim,
                ATTENTION_HEAD_DIMS,
                max_pos + 1
            )));
        }
        let a = a.ptr(out.ptr()).i32(l.n_head as i32).i32(l.n_kv as i32).i32(l.head_dim as i32).i32(l.row_width() as i32).f32(params.scale);
        let g = Grid::new((t as u32, l.n_head as u32, 1), 128).with_smem(smem as u32);
        // SAFETY: lengths and positions checked by the caller; shared memory sized for the longest row.
        unsafe { self.dev.launch("attention", "attention_generic_bf16", g, a) }
    }
}

/// 16-byte words per thread of layernorm2_vec_bf16 (LN_VPT in kernels/layernorm.cu).
const LN_VPT: usize = 2;

/// Whether a row of `dim` values fits layernorm2_vec_bf16's registers (1024 threads).
fn vec_layer_norm_fits(dim: usize) -> bool {
    dim % 8 == 0 && dim / 8 <= 1024 * LN_VPT
}

impl CudaBackend {
    /// LayerNorm of `rows` rows of x into `out_a` and, when given, with a second (weight, bias)
    /// into a second output: one pass sharing the statistics (the register kernel), or the
    /// generic kernel once per output for rows that do not fit registers.
    #[allow(clippy::too_many_arguments)]
    fn layer_norms(&self, x: &CudaBuf, rows: usize, dim: usize, norm_a: (&CudaBuf, &CudaBuf), eps: f32, out_a: u64, b: Option<((&CudaBuf, &CudaBuf), u64)>) -> Result<()> {
        check_len("layer_norm", "x", x.len(), rows * dim)?;
        for n in std::iter::once(norm_a).chain(b.map(|(n, _)| n)) {
            check_norm(n, dim)?;
        }
        let rows_i = as_i32("layer_norm", "rows", rows)?;
        let dim_i = as_i32("layer_norm", "dim", dim)?;
        if rows == 0 {
            return Ok(());
        }
        if !vec_layer_norm_fits(dim) {
            // The generic kernel, once per output.
            for ((w, bias), out) in std::iter::once((norm_a, out_a)).chain(b) {
                let a = Args::new().ptr(x.ptr()).ptr(w.ptr()).ptr(bias.ptr()).ptr(out).i32(dim_i).f32(eps);
                // SAFETY: lengths checked above (outputs by the callers); one block per row.
                unsafe { self.dev.launch("layernorm", "layernorm_bf16", Grid::new((rows_i as u32, 1, 1), 256).with_pdl(), a)? };
            }
            return Ok(());
        }
        let threads = (dim / 8).div_ceil(LN_VPT).div_ceil(32).clamp(1, 32) * 32;
        let ((w_b, b_b), out_b) = b.map_or(((0, 0), 0), |((w, bias), o)| ((w.ptr(), bias.ptr()), o));
        let a = Args::new().ptr(x.ptr()).ptr(norm_a.0.ptr()).ptr(norm_a.1.ptr()).ptr(out_a).ptr(w_b).ptr(b_b).ptr(out_b);
        let a = a.i32(dim_i).f32(eps);
        // SAFETY: lengths checked above (outputs by the callers); dim % 8 == 0 and dim / 8 <= threads * LN_VPT.
        unsafe { self.dev.launch("layernorm", "layernorm2_vec_bf16", Grid::new((rows_i as u32, 1, 1), threads as u32).with_pdl(), a) }
    }
}

/// Rows up to this many tokens are sampled on the device (kernels/sample.cu keeps integer masses
/// below 2^63); longer rows take the trait's host path.
pub const SAMPLE_MAX_VOCAB: usize = 1 << 23;

impl CudaBackend {
    /// `Backend::sample` on the device: one block runs the whole sampler over row `row` of
    /// `logits` (rows of `vocab`), and only the 4-byte token id is copied back. The uniform draw is
    /// taken from `sampler` on the host exactly as the CPU path takes it, so a seed gives the same
    /// tokens on both (see peregrine_core::sampling for the shared arithmetic).
    fn sample_on_device(&self, logits: &CudaBuf, row: usize, vocab: usize, sampler: &mut peregrine_core::sampling::Sampler, history: &[u32]) -> Result<u32> {
        let p = sampler.params().clone();
        p.validate()?;
        if vocab == 0 {
            return Err(Error::input("sample: the vocabulary is empty"));
        }
        check_len("sample", "logits", logits.len(), (row + 1) * vocab)?;
        as_i32("sample", "history length", history.len())?;
        let r = if p.is_greedy() { 0.0 } else { sampler.next_uniform() };
        let top_k = if p.top_k > 0 && p.top_k < vocab { p.top_k } else { vocab };
        // Only the repetition penalty reads the history: without it nothing is copied per token.
        let history = if p.repetition_penalty != 1.0 { history } else { &[] };
        // Scratch: history (len), then keys (vocab), then the token (1).
        let base = self.scratch(&self.sample_scratch, history.len() + vocab + 1)?;
        let (keys, out) = (base + 4 * history.len() as u64, base + 4 * (history.len() + vocab) as u64);
        // SAFETY: the scratch holds history.len() + vocab + 1 u32 (sized just above).
        unsafe { self.dev.write_raw(base, history)? };
        let a = Args::new().ptr(logits.ptr_at(row * vocab)).i32(vocab as i32).ptr(base).i32(history.len() as i32);
        let a = a.ptr(keys).ptr(out).f32(p.temperature).i32(top_k as i32).f32(p.top_p);
        let a = a.f32(p.repetition_penalty).f32(r);
        // SAFETY: the row lies inside `logits` (checked), the scratch holds keys and the token; history
        // ids are bounds-checked in the kernel; one block, as the kernel requires.
        unsafe { self.dev.launch("sample", "sample_token_bf16", Grid::new((1, 1, 1), 1024), a)? };
        // SAFETY: `out` is the scratch's last element.
        let token = unsafe { self.dev.download_raw::<u32>(out, 1)? }[0];
        if token as usize >= vocab {
            return Err(Error::device(format!("sample: the kernel returned token {token} for a vocabulary of {vocab}")));
        }
        Ok(token)
    }
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Linear = CudaLinear;
    type StepGraph = CudaStepGraph;

    fn record_step(&self, ids: &[u32], positions: &[u32], key_bound: usize, step: &mut dyn FnMut() -> Result<()>) -> Result<Option<CudaStepGraph>> {
        self.write_step_slot(ids, positions)?;
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= key_bound) {
            return Err(Error::input(format!("record_step: position {p} is not below the key bound {key_bound}")));
        }
        self.set_step_active(Some(key_bound))?;
        let graph = self.run_and_record(step);
        self.set_step_active(None)?;
        Ok(graph?.map(|graph| CudaStepGraph { graph, rows: ids.len(), key_bound }))
    }

    fn replay_step(&self, graph: &CudaStepGraph, ids: &[u32], positions: &[u32]) -> Result<()> {
        if ids.len() != graph.rows {
            return Err(Error::input(format!("replay_step: the step was recorded for {} rows, got {}", graph.rows, ids.len())));
        }
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= graph.key_bound) {
            return Err(Error::input(format!("replay_step: position {p} is beyond the recorded bound of {} keys", graph.key_bound)));
        }
        self.write_step_slot(ids, positions)?;
        graph.graph.launch().map_err(|e| Error::device(format!("CUDA graph launch: {e:?}")))
    }

    fn name(&self) -> String {
        format!("cuda:{} {} (sm_{})", self.dev.ctx.ordinal(), self.dev.name, self.dev.arch)
    }

    fn device_memory(&self) -> Option<(u64, u64)> {
        let (free, total) = self.free_device_memory();
        Some((free as u64, total as u64))
    }

    fn clock_probe(&self) -> Option<Arc<dyn ClockProbe>> {
        let open = || crate::telemetry::Nvml::for_cuda_ordinal(self.dev.ctx.ordinal()).map(|n| Arc::new(n) as Arc<dyn ClockProbe>);
        self.clocks.get_or_init(open).clone()
    }

    fn synthetic_linear(
        &self,
        format: &peregrine_core::SyntheticFormat,
        n: usize,
        k: usize,
        std: f32,
        seed: u64,
    ) -> Result<Option<CudaLinear>> {
        let opts = SyntheticOptions {
            blocksize: format.blocksize,
            double_quant: format.double_quant,
            int8_threshold: format.int8_threshold,
        };
        self.random_linear_with(format.kind, n, k, std, seed, opts).map(Some)
    }

    fn synthetic_vector(&self, len: usize, mean: f32, std: f32, seed: u64) -> Result<Option<CudaBuf>> {
        self.random_vector(len, mean, std, seed).map(Some)
    }

    fn alloc(&self, len: usize) -> Result<CudaBuf> {
        self.dev.alloc_zeros::<bf16>(len)
    }

    fn upload(&self, values: &[f32]) -> Result<CudaBuf> {
        self.dev.upload(&Device::to_bf16(values))
    }

    fn download(&self, buf: &CudaBuf, offset: usize, len: usize) -> Result<Vec<f32>> {
        Ok(self.dev.download(buf, offset, len)?.iter().map(|v| v.to_f32()).collect())
    }

    fn load_vector(&self, t: &HostTensor) -> Result<CudaBuf> {
        if !t.dtype.is_float() {
            return Err(Error::input(format!("vector parameter of dtype {} is not floating point", t.dtype)));
        }
        self.upload(&t.to_f32())
    }

    fn load_linear(&self, w: LinearWeight) -> Result<CudaLinear> {
        linear::load(&self.dev, w)
    }

    fn linear_dims(&self, w: &CudaLinear) -> (usize, usize) {
        w.dims()
    }

    fn linear_bytes(&self, w: &CudaLinear) -> usize {
        w.bytes()
    }

    fn embedding(&self, table: &CudaLinear, ids: &[u32], out: &mut CudaBuf) -> Result<()> {
        let (v, d) = table.dims();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= v) {
            return Err(Error::input(format!("embedding: token id {bad} is outside the vocabulary of {v}")));
        }
        check_len("embedding", "out", out.len(), ids.len() * d)?;
        as_i32("embedding", "D", d)?;
        if ids.is_empty() {
            return Ok(());
        }
        let ids_dev = self.indices(ids, false)?;
        // SAFETY: ids < V checked; out holds T*D.
        unsafe { linear::dequantize_rows(&self.dev, table, Some(ids_dev.ptr()), 0, ids.len(), out.ptr()) }
    }

    fn layer_norm(&self, x: &CudaBuf, rows: usize, dim: usize, weight: &CudaBuf, bias: &CudaBuf, eps: f32, out: &mut CudaBuf) -> Result<()> {
        check_len("layer_norm", "out", out.len(), rows * dim)?;
        self.layer_norms(x, rows, dim, (weight, bias), eps, out.ptr(), None)
    }

    fn layer_norm2(
        &self,
        x: &CudaBuf,
        rows: usize,
        dim: usize,
        norm_a: (&CudaBuf, &CudaBuf),
        norm_b: (&CudaBuf, &CudaBuf),
        eps: f32,
        out_a: &mut CudaBuf,
        out_b: &mut CudaBuf,
    ) -> Result<()> {
        check_len("layer_norm", "out", out_a.len(), rows * dim)?;
        check_len("layer_norm", "out", out_b.len(), rows * dim)?;
        if self.lab_skip.norm {
            return Ok(());
        }
        self.layer_norms(x, rows, dim, norm_a, eps, out_a.ptr(), Some((norm_b, out_b.ptr())))
    }

    fn linear(&self, x: &CudaBuf, rows: usize, w: &CudaLinear, bias: Option<&CudaBuf>, out: &mut CudaBuf) -> Result<()> {
        self.linear_fused(x, rows, w, bias, Epilogue::Store, out)
    }

    fn linear_fused(&self, x: &CudaBuf, rows: usize, w: &CudaLinear, bias: Option<&CudaBuf>, epilogue: Epilogue, out: &mut CudaBuf) -> Result<()> {
        check_linear(x, rows, w, bias, out.len())?;
        // SAFETY: lengths checked above.
        unsafe { linear::matmul(&self.dev, x.ptr(), rows, w, bias.map(|b| b.ptr()), epilogue, out.ptr()) }
    }

    fn linear_pair(
        &self,
        rows: usize,
        a: LinearInput<'_, Self>,
        epi_a: Epilogue,
        out_a: &mut CudaBuf,
        b: LinearInput<'_, Self>,
        epi_b: Epilogue,
        out_b: &mut CudaBuf,
    ) -> Result<()> {
        check_linear(a.x, rows, a.w, a.bias, out_a.len())?;
        check_linear(b.x, rows, b.w, b.bias, out_b.len())?;
        if rows == 1 && self.fuse.pair {
            let pa = pair_product(a, epi_a, out_a.ptr());
            let pb = pair_product(b, epi_b, out_b.ptr());
            // SAFETY: lengths checked above.
            if unsafe { linear::matmul_pair(&self.dev, pa, pb, None)? } {
                return Ok(());
            }
        }
        peregrine_core::backend::linear_pair_separately(self, rows, a, epi_a, out_a, b, epi_b, out_b)
    }

    fn linear_sum(&self, rows: usize, a: LinearInput<'_, Self>, b: LinearInput<'_, Self>, out: &mut CudaBuf) -> Result<()> {
        check_linear(a.x, rows, a.w, a.bias, out.len())?;
        check_linear(b.x, rows, b.w, b.bias, out.len())?;
        if rows == 1 && self.fuse.sum {
            let pa = pair_product(a, Epilogue::Accumulate, out.ptr());
            let pb = pair_product(b, Epilogue::Accumulate, out.ptr());
            // SAFETY: lengths checked above; both products write out (N = its length per row).
            if unsafe { linear::matmul_sum(&self.dev, pa, pb)? } {
                return Ok(());
            }
        }
        peregrine_core::backend::linear_sum_separately(self, rows, a, b, out)
    }

    fn norm_linear_pair(
        &self,
        x: &CudaBuf,
        rows: usize,
        dim: usize,
        norms: PairNorms<'_, Self>,
        ln_a: &mut CudaBuf,
        ln_b: &mut CudaBuf,
        a: PairSide<'_, Self>,
        out_a: &mut CudaBuf,
        b: PairSide<'_, Self>,
        out_b: &mut CudaBuf,
    ) -> Result<()> {
        let fits = rows == 1 && self.fuse.pair && self.fuse.norm && !self.lab_skip.norm && a.w.dims().1 == dim && b.w.dims().1 == dim;
        if fits {
            let norm_b = norms.b.unwrap_or(norms.a);
            check_norm(norms.a, dim)?;
            check_norm(norm_b, dim)?;
            check_linear(x, 1, a.w, a.bias, out_a.len())?;
            check_linear(x, 1, b.w, b.bias, out_b.len())?;
            let pa = pair_product(LinearInput { x, w: a.w, bias: a.bias }, a.epi, out_a.ptr());
            let pb = pair_product(LinearInput { x, w: b.w, bias: b.bias }, b.epi, out_b.ptr());
            let ptrs = |(w, bias): (&CudaBuf, &CudaBuf)| (w.ptr(), bias.ptr());
            let norm = linear::PairNorm { a: ptrs(norms.a), b: ptrs(norm_b), eps: norms.eps };
            // SAFETY: lengths checked above (x, the norms and both products: K = dim).
            if unsafe { linear::matmul_pair(&self.dev, pa, pb, Some(norm))? } {
                return Ok(());
            }
        }
        peregrine_core::backend::norm_then_pair(self, x, rows, dim, norms, ln_a, ln_b, a, out_a, b, out_b)
    }

    fn rotary(&self, qkv: &mut CudaBuf, layout: QkvLayout, positions: &[u32], rope: RotaryParams) -> Result<()> {
        Self::check_layout("rotary", layout)?;
        let t = positions.len();
        check_len("rotary", "qkv", qkv.len(), t * layout.row_width())?;
        if layout.head_dim % 2 != 0 {
            return Err(Error::input(format!("rotary: head dim {} is odd", layout.head_dim)));
        }
        if t == 0 {
            return Ok(());
        }
        let pos = self.indices(positions, true)?;
        let (g, per_block) = self.rotary_grid(t, layout);
        let a = Args::new().ptr(qkv.ptr()).ptr(pos.ptr()).i32(layout.n_head as i32).i32(layout.n_kv as i32);
        let a = a.i32(layout.head_dim as i32).i32(layout.row_width() as i32).f32(rope.theta).f32(rope.position_scale).i32(per_block);
        // SAFETY: qkv holds T rows of row_width; heads addressed through the checked layout.
        unsafe { self.dev.launch("rotary", "rotary_bf16", g, a) }
    }

    fn rotary_append(&self, qkv: &mut CudaBuf, layout: QkvLayout, positions: &[u32], rope: RotaryParams, cache: &mut LayerKv<Self>) -> Result<()> {
        Self::check_layout("rotary", layout)?;
        let t = positions.len();
        check_len("rotary", "qkv", qkv.len(), t * layout.row_width())?;
        self.check_positions("append_kv", cache, layout, positions)?;
        if layout.head_dim % 2 != 0 {
            return Err(Error::input(format!("rotary: head dim {} is odd", layout.head_dim)));
        }
        if t == 0 {
            return Ok(());
        }
        if self.lab_skip.rotary {
            return Ok(());
        }
        let pos = self.indices(positions, true)?;
        let (g, per_block) = self.rotary_grid(t, layout);
        let a = Args::new().ptr(qkv.ptr()).ptr(pos.ptr()).ptr(cache.k.ptr()).ptr(cache.v.ptr()).i32(layout.n_head as i32).i32(layout.n_kv as i32);
        let a = a.i32(layout.head_dim as i32).i32(layout.row_width() as i32).f32(rope.theta).f32(rope.position_scale).i32(per_block);
        // SAFETY: qkv holds T rows of row_width; positions < capacity checked; heads addressed through the checked layout.
        unsafe { self.dev.launch("rotary", "rotary_append_bf16", g.with_pdl(), a) }
    }

    fn append_kv(&self, qkv: &CudaBuf, layout: QkvLayout, positions: &[u32], cache: &mut LayerKv<Self>) -> Result<()> {
        Self::check_layout("append_kv", layout)?;
        let t = positions.len();
        check_len("append_kv", "qkv", qkv.len(), t * layout.row_width())?;
        self.check_positions("append_kv", cache, layout, positions)?;
        if t == 0 {
            return Ok(());
        }
        let pos = self.indices(positions, true)?;
        let g = Grid::new((t as u32, layout.n_kv as u32, 1), layout.head_dim.clamp(32, 256) as u32);
        let a = Args::new().ptr(qkv.ptr()).ptr(pos.ptr()).ptr(cache.k.ptr()).ptr(cache.v.ptr());
        let a = a.i32(layout.n_head as i32).i32(layout.n_kv as i32).i32(layout.head_dim as i32).i32(layout.row_width() as i32);
        // SAFETY: positions < capacity checked; qkv length checked.
        unsafe { self.dev.launch("rotary", "append_kv_bf16", g, a) }
    }

    fn append_attend(
        &self,
        qkv: &mut CudaBuf,
        cache: &mut LayerKv<Self>,
        rope: Option<RotaryParams>,
        params: &AttentionParams<'_>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let fuse = self.fuse.attention
            && params.positions.len() == 1
            && ATTENTION_HEAD_DIMS.contains(&params.layout.head_dim)
            && !self.lab_skip.rotary
            && !self.lab_skip.attention;
        if !fuse {
            return peregrine_core::backend::append_then_attend(self, qkv, cache, rope, params, out);
        }
        self.check_attention(qkv, cache, params, out)?;
        let rope = rope.map_or((0.0, 1.0), |r| (r.theta, r.position_scale));
        self.decode_attention(qkv, cache, params, out, Some(rope))
    }

    fn attention(&self, qkv: &CudaBuf, cache: &LayerKv<Self>, params: &AttentionParams<'_>, out: &mut CudaBuf) -> Result<()> {
        let l = params.layout;
        let t = params.positions.len();
        self.check_attention(qkv, cache, params, out)?;
        if t == 0 {
            return Ok(());
        }
        if t == 1 && self.lab_skip.attention {
            return Ok(());
        }
        let hd = l.head_dim;
        let specialised = ATTENTION_HEAD_DIMS.contains(&hd);
        if specialised && t <= DECODE_MAX_ROWS {
            return self.decode_attention(qkv, cache, params, out, None);
        }
        let a = self.attention_args(qkv, cache, params)?;
        if !specialised {
            return self.attention_generic(a, l, params, out);
        }
        if self.prefill_attention() == PrefillAttention::TensorCore {
            let name = if hd == 64 { "attention_prefill_tc_bf16_hd64" } else { "attention_prefill_tc_bf16_hd128" };
            let smem = (4 * 64 * (hd + 8) * 2) as u32; // K and V tiles, two stages
            let a = a.ptr(out.ptr()).i32(t as i32).i32(l.n_head as i32).i32(l.n_kv as i32).i32(l.row_width() as i32).f32(params.scale);
            let g = Grid::new((t.div_ceil(TC_PREFILL_ROWS) as u32, l.n_head as u32, 1), TC_PREFILL_THREADS).with_smem(smem);
            // SAFETY: every length and position checked above.
            unsafe { self.dev.launch("attention", name, g, a) }
        } else {
            let name = if hd == 64 { "attention_prefill_bf16_hd64" } else { "attention_prefill_bf16_hd128" };
            let smem = (3 * 32 * (hd + 1) * 4) as u32;
            let a = a.ptr(out.ptr()).i32(t as i32).i32(l.n_head as i32).i32(l.n_kv as i32).i32(l.row_width() as i32).f32(params.scale);
            let g = Grid::new((t.div_ceil(32) as u32, l.n_head as u32, 1), 128).with_smem(smem);
            // SAFETY: every length and position checked above.
            unsafe { self.dev.launch("attention", name, g, a) }
        }
    }

    fn gelu(&self, x: &mut CudaBuf, len: usize) -> Result<()> {
        check_len("gelu", "x", x.len(), len)?;
        if len == 0 {
            return Ok(());
        }
        let g = Grid::new((self.dev.blocks_for(len, 256), 1, 1), 256);
        // SAFETY: x holds len values.
        unsafe { self.dev.launch("elementwise", "gelu_bf16", g, Args::new().ptr(x.ptr()).i64(len as i64)) }
    }

    fn add(&self, dst: &mut CudaBuf, src: &CudaBuf, len: usize) -> Result<()> {
        check_len("add", "dst", dst.len(), len)?;
        check_len("add", "src", src.len(), len)?;
        if len == 0 {
            return Ok(());
        }
        let g = Grid::new((self.dev.blocks_for(len, 256), 1, 1), 256);
        // SAFETY: both hold len values.
        unsafe { self.dev.launch("elementwise", "add_bf16", g, Args::new().ptr(dst.ptr()).ptr(src.ptr()).i64(len as i64)) }
    }

    fn copy_rows(&self, src: &CudaBuf, src_row: usize, n_rows: usize, dim: usize, dst: &mut CudaBuf) -> Result<()> {
        check_len("copy_rows", "src", src.len(), (src_row + n_rows) * dim)?;
        check_len("copy_rows", "dst", dst.len(), n_rows * dim)?;
        if n_rows * dim == 0 {
            return Ok(());
        }
        // SAFETY: both ranges checked above.
        unsafe { self.dev.copy_d2d(dst.ptr(), src.ptr_at(src_row * dim), n_rows * dim * 2) }
    }

    fn synchronize(&self) -> Result<()> {
        self.dev.synchronize()
    }

    fn memory(&self) -> MemoryStats {
        self.dev.mem.stats()
    }

    fn reset_peak_memory(&self) {
        self.dev.mem.reset_peak()
    }

    fn score_rows(&self, logits: &CudaBuf, reference: Option<&CudaBuf>, first: usize, vocab: usize, targets: &[u32]) -> Result<Vec<RowScore>> {
        let n = targets.len();
        if let Some(&t) = targets.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::input(format!("score_rows: target token {t} is outside the vocabulary of {vocab}")));
        }
        check_len("score_rows", "logits", logits.len(), (first + n) * vocab)?;
        if let Some(r) = reference {
            check_len("score_rows", "reference logits", r.len(), (first + n) * vocab)?;
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let ids = self.upload_u32(targets)?;
        let out = self.dev.alloc_uninit::<f64>(4 * n)?;
        let a = Args::new().ptr(logits.ptr()).opt(reference.map(|r| r.ptr())).i64(first as i64).i32(as_i32("score_rows", "vocab", vocab)?);
        let a = a.ptr(ids.ptr()).ptr(out.ptr());
        // SAFETY: rows first..first+n of both buffers exist (checked), targets < vocab (checked), out holds 4n.
        unsafe { self.dev.launch("score", "score_rows_bf16", Grid::new((as_i32("score_rows", "rows", n)? as u32, 1, 1), 256), a)? };
        let v = self.dev.download(&out, 0, 4 * n)?;
        Ok(v.chunks_exact(4)
            .map(|s| RowScore {
                target_logprob: s[0],
                argmax: s[2] as u32,
                kl: reference.map(|_| s[1]),
                ref_argmax: reference.map(|_| s[3] as u32),
            })
            .collect())
    }

    fn sample(&self, logits: &CudaBuf, row: usize, vocab: usize, sampler: &mut peregrine_core::sampling::Sampler, history: &[u32]) -> Result<u32> {
        if vocab > SAMPLE_MAX_VOCAB {
            let mut values = self.download(logits, row * vocab, vocab)?;
            return Ok(sampler.sample(&mut values, history));
        }
        self.sample_on_device(logits, row, vocab, sampler, history)
    }
}
