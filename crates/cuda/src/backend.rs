//! `CudaBackend`: the `peregrine_core::Backend` operations on one NVIDIA GPU.
//!
//! Precision (design choice): every activation buffer, the KV cache and dense weights are bf16,
//! as transformers runs Falcon in bf16; every kernel computes in f32 (LayerNorm statistics,
//! softmax, GEMM accumulation, GELU, rotary) and rounds once when it stores. So results match a
//! bf16 reference closely and an f32 reference to about 1e-2 relative.
//!
//! Host-side arguments (token ids, positions, ALiBi slopes) are uploaded per call into small
//! stream-ordered allocations; every size is checked on the host before a launch, so user input
//! can never make a kernel read or write out of bounds.
//!
//! Legend: T = tokens, D = hidden, H = query heads, G = KV groups, Hd = head dim, P = cache
//! positions, N/K = linear out/in features.

use half::bf16;
use peregrine_core::{AttentionParams, Backend, Epilogue, Error, HostTensor, LayerKv, LinearWeight, MemoryStats, QkvLayout, QuantKind, Result, RotaryParams};

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

/// The CUDA backend on one device.
pub struct CudaBackend {
    dev: Device,
    /// PrefillAttention as a flag (true = TensorCore), switchable at run time for tests.
    tc_prefill: std::sync::atomic::AtomicBool,
}

fn check_len(op: &str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::input(format!("{op}: {what} holds {have} elements, needs {need}")));
    }
    Ok(())
}

/// i32 for a kernel argument, or an error naming it.
fn as_i32(op: &str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::input(format!("{op}: {what} = {v} exceeds the kernels' 32-bit range")))
}

impl CudaBackend {
    /// Open GPU `ordinal`. One clear `Error::Device` line when there is no driver, no such GPU,
    /// no NVRTC or no cuBLAS.
    pub fn new(ordinal: usize) -> Result<Self> {
        Ok(CudaBackend { dev: Device::new(ordinal)?, tc_prefill: std::sync::atomic::AtomicBool::new(true) })
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
}

impl CudaBackend {
    /// Attention for head dims without a specialised kernel (none of the real Falcons):
    /// one block per (row, head), the row's scores held in shared memory.
    fn attention_generic(&self, a: Args, l: QkvLayout, params: &AttentionParams<'_>, out: &mut CudaBuf) -> Result<()> {
        let t = params.positions.len();
        let max_pos = *params.positions.iter().max().unwrap_or(&0) as usize;
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
        let hist = self.upload_u32(history)?;
        let keys = self.dev.alloc_uninit::<u32>(vocab)?;
        let out = self.dev.alloc_uninit::<u32>(1)?;
        let a = Args::new().ptr(logits.ptr_at(row * vocab)).i32(vocab as i32).ptr(hist.ptr()).i32(history.len() as i32);
        let a = a.ptr(keys.ptr()).ptr(out.ptr()).f32(p.temperature).i32(top_k as i32).f32(p.top_p);
        let a = a.f32(p.repetition_penalty).f32(r);
        // SAFETY: the row lies inside `logits` (checked), keys holds vocab u32 and out one; history
        // ids are bounds-checked in the kernel; one block, as the kernel requires.
        unsafe { self.dev.launch("sample", "sample_token_bf16", Grid::new((1, 1, 1), 1024), a)? };
        let token = self.dev.download(&out, 0, 1)?[0];
        if token as usize >= vocab {
            return Err(Error::device(format!("sample: the kernel returned token {token} for a vocabulary of {vocab}")));
        }
        Ok(token)
    }
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Linear = CudaLinear;

    fn name(&self) -> String {
        format!("cuda:{} {} (sm_{})", self.dev.ctx.ordinal(), self.dev.name, self.dev.arch)
    }

    fn device_memory(&self) -> Option<(u64, u64)> {
        let (free, total) = self.free_device_memory();
        Some((free as u64, total as u64))
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
        let ids_dev = self.upload_u32(ids)?;
        // SAFETY: ids < V checked; out holds T*D.
        unsafe { linear::dequantize_rows(&self.dev, table, Some(ids_dev.ptr()), 0, ids.len(), out.ptr()) }
    }

    fn layer_norm(&self, x: &CudaBuf, rows: usize, dim: usize, weight: &CudaBuf, bias: &CudaBuf, eps: f32, out: &mut CudaBuf) -> Result<()> {
        check_len("layer_norm", "x", x.len(), rows * dim)?;
        check_len("layer_norm", "out", out.len(), rows * dim)?;
        check_len("layer_norm", "weight", weight.len(), dim)?;
        check_len("layer_norm", "bias", bias.len(), dim)?;
        if rows == 0 {
            return Ok(());
        }
        let g = Grid::new((as_i32("layer_norm", "rows", rows)? as u32, 1, 1), 256);
        let a = Args::new().ptr(x.ptr()).ptr(weight.ptr()).ptr(bias.ptr()).ptr(out.ptr()).i32(as_i32("layer_norm", "dim", dim)?).f32(eps);
        // SAFETY: lengths checked above; one block per row.
        unsafe { self.dev.launch("layernorm", "layernorm_bf16", g, a) }
    }

    fn linear(&self, x: &CudaBuf, rows: usize, w: &CudaLinear, bias: Option<&CudaBuf>, out: &mut CudaBuf) -> Result<()> {
        self.linear_fused(x, rows, w, bias, Epilogue::Store, out)
    }

    fn linear_fused(&self, x: &CudaBuf, rows: usize, w: &CudaLinear, bias: Option<&CudaBuf>, epilogue: Epilogue, out: &mut CudaBuf) -> Result<()> {
        let (n, k) = w.dims();
        check_len("linear", "x", x.len(), rows * k)?;
        check_len("linear", "out", out.len(), rows * n)?;
        if let Some(b) = bias {
            check_len("linear", "bias", b.len(), n)?;
        }
        as_i32("linear", "N", n)?;
        as_i32("linear", "K", k)?;
        // SAFETY: lengths checked above.
        unsafe { linear::matmul(&self.dev, x.ptr(), rows, w, bias.map(|b| b.ptr()), epilogue, out.ptr()) }
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
        let pos = self.upload_u32(positions)?;
        let g = Grid::new((t as u32, (layout.n_head + layout.n_kv) as u32, 1), (layout.head_dim / 2).clamp(32, 256) as u32);
        let a = Args::new().ptr(qkv.ptr()).ptr(pos.ptr()).i32(layout.n_head as i32).i32(layout.n_kv as i32);
        let a = a.i32(layout.head_dim as i32).i32(layout.row_width() as i32).f32(rope.theta).f32(rope.position_scale);
        // SAFETY: qkv holds T rows of row_width; heads addressed through the checked layout.
        unsafe { self.dev.launch("rotary", "rotary_bf16", g, a) }
    }

    fn append_kv(&self, qkv: &CudaBuf, layout: QkvLayout, positions: &[u32], cache: &mut LayerKv<Self>) -> Result<()> {
        Self::check_layout("append_kv", layout)?;
        let t = positions.len();
        check_len("append_kv", "qkv", qkv.len(), t * layout.row_width())?;
        self.check_positions("append_kv", cache, layout, positions)?;
        if t == 0 {
            return Ok(());
        }
        let pos = self.upload_u32(positions)?;
        let g = Grid::new((t as u32, layout.n_kv as u32, 1), layout.head_dim.clamp(32, 256) as u32);
        let a = Args::new().ptr(qkv.ptr()).ptr(pos.ptr()).ptr(cache.k.ptr()).ptr(cache.v.ptr());
        let a = a.i32(layout.n_head as i32).i32(layout.n_kv as i32).i32(layout.head_dim as i32).i32(layout.row_width() as i32);
        // SAFETY: positions < capacity checked; qkv length checked.
        unsafe { self.dev.launch("rotary", "append_kv_bf16", g, a) }
    }

    fn attention(&self, qkv: &CudaBuf, cache: &LayerKv<Self>, params: &AttentionParams<'_>, out: &mut CudaBuf) -> Result<()> {
        let l = params.layout;
        Self::check_layout("attention", l)?;
        let t = params.positions.len();
        check_len("attention", "qkv", qkv.len(), t * l.row_width())?;
        check_len("attention", "out", out.len(), t * l.n_head * l.head_dim)?;
        self.check_positions("attention", cache, l, params.positions)?;
        if let Some(s) = params.alibi_slopes {
            check_len("attention", "alibi slopes", s.len(), l.n_head)?;
        }
        if t == 0 {
            return Ok(());
        }
        let pos = self.upload_u32(params.positions)?;
        let slopes = params.alibi_slopes.map(|s| self.dev.upload(s)).transpose()?;
        let hd = l.head_dim;
        let a = Args::new().ptr(qkv.ptr()).ptr(cache.k.ptr()).ptr(cache.v.ptr()).ptr(pos.ptr()).opt(slopes.as_ref().map(|s| s.ptr()));
        if !ATTENTION_HEAD_DIMS.contains(&hd) {
            return self.attention_generic(a, l, params, out);
        }
        if t <= DECODE_MAX_ROWS {
            // Flash-decoding: S splits of DECODE_SPLIT keys, then a merge.
            let max_pos = *params.positions.iter().max().unwrap_or(&0) as usize;
            let splits = (max_pos + 1).div_ceil(DECODE_SPLIT);
            let part_o = self.dev.alloc_uninit::<f32>(t * l.n_head * splits * hd)?;
            let part_ml = self.dev.alloc_uninit::<f32>(t * l.n_head * splits * 2)?;
            let name = if hd == 64 { "attention_decode_bf16_hd64" } else { "attention_decode_bf16_hd128" };
            let a = a.ptr(part_o.ptr()).ptr(part_ml.ptr()).i32(l.n_head as i32).i32(l.n_kv as i32).i32(l.row_width() as i32).f32(params.scale);
            let g = Grid::new((t as u32, l.n_head as u32, splits as u32), 128);
            // SAFETY: every length and position checked above; partials sized (T, H, S, Hd) and (T, H, S, 2).
            unsafe {
                self.dev.launch("attention", name, g, a)?;
                let a = Args::new().ptr(part_o.ptr()).ptr(part_ml.ptr()).ptr(out.ptr()).i32(l.n_head as i32).i32(hd as i32).i32(splits as i32);
                self.dev.launch("attention", "attention_combine_bf16", Grid::new((t as u32, l.n_head as u32, 1), hd as u32), a)
            }
        } else if self.prefill_attention() == PrefillAttention::TensorCore {
            let name = if hd == 64 { "attention_prefill_tc_bf16_hd64" } else { "attention_prefill_tc_bf16_hd128" };
            let smem = ((64 * (hd + 8) + hd * 72) * 2) as u32;
            let a = a.ptr(out.ptr()).i32(t as i32).i32(l.n_head as i32).i32(l.n_kv as i32).i32(l.row_width() as i32).f32(params.scale);
            let g = Grid::new((t.div_ceil(64) as u32, l.n_head as u32, 1), 128).with_smem(smem);
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

    fn sample(&self, logits: &CudaBuf, row: usize, vocab: usize, sampler: &mut peregrine_core::sampling::Sampler, history: &[u32]) -> Result<u32> {
        if vocab > SAMPLE_MAX_VOCAB {
            let mut values = self.download(logits, row * vocab, vocab)?;
            return Ok(sampler.sample(&mut values, history));
        }
        self.sample_on_device(logits, row, vocab, sampler, history)
    }
}
