//! The CPU backend: f32 compute (weights upcast from bf16/f16; quantized weights
//! dequantized exactly as bitsandbytes does), multithreaded with rayon and the `gemm`
//! crate. It is the oracle every other backend is tested against, so every op is written
//! for clarity first and speed second.
//!
//! Legend: T tokens, D hidden, H query heads, G KV groups, Hd head dim, N/K linear out/in.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use peregrine_core::{
    backend::{MemoryStats, RotaryParams},
    AttentionParams, Backend, DType, Epilogue, Error, HostTensor, LayerKv, LinearWeight, QkvLayout, Result,
};
use rayon::prelude::*;

/// Bytes held by the backend's buffers and weights, now and at the high-water mark.
#[derive(Default)]
struct Counters {
    current: AtomicU64,
    peak: AtomicU64,
}

/// Counts `bytes` in while alive and out when dropped, so memory figures follow frees.
struct MemGuard {
    counters: Arc<Counters>,
    bytes: u64,
}

impl MemGuard {
    fn new(counters: &Arc<Counters>, bytes: usize) -> Self {
        let bytes = bytes as u64;
        let now = counters.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        counters.peak.fetch_max(now, Ordering::Relaxed);
        MemGuard { counters: counters.clone(), bytes }
    }
}

impl Drop for MemGuard {
    fn drop(&mut self) {
        self.counters.current.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// An f32 activation buffer; derefs to its `Vec<f32>`.
pub struct CpuBuf {
    data: Vec<f32>,
    _mem: MemGuard,
}

impl Deref for CpuBuf {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.data
    }
}

impl DerefMut for CpuBuf {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.data
    }
}

/// A linear layer on the CPU.
pub struct CpuLinear {
    pub weight: CpuWeight,
    /// Counts the weight's bytes while it lives.
    mem: MemGuard,
}

/// Dense (N, K) values as stored, or a quantized format kept as stored.
pub enum CpuWeight {
    Dense { rows: usize, cols: usize, data: DenseData },
    Quantized(LinearWeight),
}

/// Dense weights in their stored precision: f32, or 16-bit (bf16/f16) bits widened to f32
/// chunk by chunk when multiplied, so resident bytes equal the format's (the values, and
/// so the f32 arithmetic, are the same either way).
pub enum DenseData {
    F32(Vec<f32>),
    Half { dtype: DType, bits: Vec<u16> },
}

impl DenseData {
    fn from_tensor(t: &HostTensor) -> Self {
        match t.dtype {
            DType::BF16 | DType::F16 => DenseData::Half {
                dtype: t.dtype,
                bits: t.bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
            },
            _ => DenseData::F32(t.to_f32()),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            DenseData::F32(v) => 4 * v.len(),
            DenseData::Half { bits, .. } => 2 * bits.len(),
        }
    }

    /// Values [start, start + out.len()) widened to f32.
    fn widen_into(&self, start: usize, out: &mut [f32]) {
        match self {
            DenseData::F32(v) => out.copy_from_slice(&v[start..start + out.len()]),
            DenseData::Half { dtype, bits } => {
                let src = &bits[start..start + out.len()];
                let widen = |b: u16| match dtype {
                    DType::BF16 => f32::from_bits((b as u32) << 16),
                    _ => half::f16::from_bits(b).to_f32(),
                };
                out.par_chunks_mut(4096).zip(src.par_chunks(4096)).for_each(|(o, s)| {
                    o.iter_mut().zip(s).for_each(|(o, &b)| *o = widen(b));
                });
            }
        }
    }
}

/// Weight elements widened per chunk of a 16-bit dense matmul.
const WIDEN_CHUNK: usize = 1 << 20;

/// The f32 CPU backend.
#[derive(Default)]
pub struct CpuBackend {
    counters: Arc<Counters>,
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn buf(&self, data: Vec<f32>) -> CpuBuf {
        let mem = MemGuard::new(&self.counters, 4 * data.len());
        CpuBuf { data, _mem: mem }
    }
}

impl Backend for CpuBackend {
    type StepGraph = ();
    type Buf = CpuBuf;
    type Linear = CpuLinear;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn alloc(&self, len: usize) -> Result<CpuBuf> {
        Ok(self.buf(vec![0.0; len]))
    }

    fn upload(&self, values: &[f32]) -> Result<CpuBuf> {
        Ok(self.buf(values.to_vec()))
    }

    fn download(&self, buf: &CpuBuf, offset: usize, len: usize) -> Result<Vec<f32>> {
        buf.get(offset..offset + len)
            .map(<[f32]>::to_vec)
            .ok_or_else(|| Error::msg(format!("download of {len} values at {offset} past a buffer of {}", buf.len())))
    }

    fn load_vector(&self, t: &HostTensor) -> Result<CpuBuf> {
        self.upload(&t.to_f32())
    }

    fn load_linear(&self, w: LinearWeight) -> Result<CpuLinear> {
        let weight = match w {
            LinearWeight::Dense(t) => {
                let (rows, cols) = t.dims2();
                CpuWeight::Dense { rows, cols, data: DenseData::from_tensor(&t) }
            }
            q => CpuWeight::Quantized(q),
        };
        let bytes = match &weight {
            CpuWeight::Dense { data, .. } => data.bytes(),
            CpuWeight::Quantized(q) => q.stored_bytes(),
        };
        Ok(CpuLinear { weight, mem: MemGuard::new(&self.counters, bytes) })
    }

    fn linear_dims(&self, w: &CpuLinear) -> (usize, usize) {
        match &w.weight {
            CpuWeight::Dense { rows, cols, .. } => (*rows, *cols),
            CpuWeight::Quantized(q) => q.dims(),
        }
    }

    fn linear_bytes(&self, w: &CpuLinear) -> usize {
        w.mem.bytes as usize
    }

    fn embedding(&self, table: &CpuLinear, ids: &[u32], out: &mut CpuBuf) -> Result<()> {
        let CpuWeight::Dense { rows, cols, data } = &table.weight else {
            return Err(Error::msg("the embedding table must be dense"));
        };
        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= *rows {
                return Err(Error::input(format!("token id {id} is outside the vocabulary (size {rows})")));
            }
            let cols = *cols;
            data.widen_into(id * cols, &mut out[t * cols..(t + 1) * cols]);
        }
        Ok(())
    }

    fn layer_norm(
        &self,
        x: &CpuBuf,
        rows: usize,
        dim: usize,
        weight: &CpuBuf,
        bias: &CpuBuf,
        eps: f32,
        out: &mut CpuBuf,
    ) -> Result<()> {
        out[..rows * dim].par_chunks_mut(dim).zip(x[..rows * dim].par_chunks(dim)).for_each(|(o, xr)| {
            layer_norm_row(xr, weight, bias, eps, o);
        });
        Ok(())
    }

    fn linear(&self, x: &CpuBuf, rows: usize, w: &CpuLinear, bias: Option<&CpuBuf>, out: &mut CpuBuf) -> Result<()> {
        let (n, k) = self.linear_dims(w);
        let (x, out) = (&x[..rows * k], &mut out[..rows * n]);
        match &w.weight {
            CpuWeight::Dense { data: DenseData::F32(w), .. } => matmul_transposed(x, rows, w, n, k, out),
            CpuWeight::Dense { data, .. } => matmul_widened(x, rows, data, n, k, out),
            CpuWeight::Quantized(q) => peregrine_quant::matmul(x, rows, q, out)?,
        }
        if let Some(b) = bias {
            out.par_chunks_mut(n).for_each(|row| row.iter_mut().zip(b.iter()).for_each(|(o, b)| *o += b));
        }
        Ok(())
    }

    fn linear_fused(&self, x: &CpuBuf, rows: usize, w: &CpuLinear, bias: Option<&CpuBuf>, epilogue: Epilogue, out: &mut CpuBuf) -> Result<()> {
        let n = self.linear_dims(w).0 * rows;
        match epilogue {
            Epilogue::Store => self.linear(x, rows, w, bias, out),
            Epilogue::Gelu => {
                self.linear(x, rows, w, bias, out)?;
                self.gelu(out, n)
            }
            Epilogue::Accumulate => {
                let mut y = self.alloc(n)?;
                self.linear(x, rows, w, bias, &mut y)?;
                self.add(out, &y, n)
            }
        }
    }

    fn rotary(&self, qkv: &mut CpuBuf, layout: QkvLayout, positions: &[u32], rope: RotaryParams) -> Result<()> {
        let hd = layout.head_dim;
        let inv_freq = rotary_inv_freq(hd, rope);
        let width = layout.row_width();
        qkv[..positions.len() * width].par_chunks_mut(width).zip(positions).for_each(|(row, &pos)| {
            let (cos, sin) = rotary_cos_sin(&inv_freq, pos);
            for h in 0..layout.n_head {
                rotate_half(&mut row[layout.q_offset(h)..][..hd], &cos, &sin);
            }
            for g in 0..layout.n_kv {
                rotate_half(&mut row[layout.k_offset(g)..][..hd], &cos, &sin);
            }
        });
        Ok(())
    }

    fn append_kv(&self, qkv: &CpuBuf, layout: QkvLayout, positions: &[u32], cache: &mut LayerKv<Self>) -> Result<()> {
        let (hd, g_n) = (layout.head_dim, layout.n_kv);
        let width = layout.row_width();
        let capacity = cache.k.len() / (g_n * hd);
        for (t, &pos) in positions.iter().enumerate() {
            let pos = pos as usize;
            if pos >= capacity {
                return Err(Error::input(format!("position {pos} is past the KV cache capacity {capacity}")));
            }
            let row = &qkv[t * width..(t + 1) * width];
            for g in 0..g_n {
                let dst = (pos * g_n + g) * hd;
                cache.k[dst..dst + hd].copy_from_slice(&row[layout.k_offset(g)..][..hd]);
                cache.v[dst..dst + hd].copy_from_slice(&row[layout.v_offset(g)..][..hd]);
            }
        }
        Ok(())
    }

    fn attention(&self, qkv: &CpuBuf, cache: &LayerKv<Self>, p: &AttentionParams<'_>, out: &mut CpuBuf) -> Result<()> {
        let l = p.layout;
        let (hd, width) = (l.head_dim, l.row_width());
        let t_n = p.positions.len();
        out[..t_n * l.n_head * hd].par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
            let (t, h) = (i / l.n_head, i % l.n_head);
            let q = &qkv[t * width + l.q_offset(h)..][..hd];
            let slope = p.alibi_slopes.map(|s| s[h]);
            attend_one(q, cache, l, l.group_of(h), p.positions[t] as usize, p.scale, slope, o);
        });
        Ok(())
    }

    fn gelu(&self, x: &mut CpuBuf, len: usize) -> Result<()> {
        x[..len].par_iter_mut().for_each(|v| *v = gelu_erf(*v));
        Ok(())
    }

    fn add(&self, dst: &mut CpuBuf, src: &CpuBuf, len: usize) -> Result<()> {
        dst[..len].par_iter_mut().zip(&src[..len]).for_each(|(d, s)| *d += s);
        Ok(())
    }

    fn copy_rows(&self, src: &CpuBuf, src_row: usize, n_rows: usize, dim: usize, dst: &mut CpuBuf) -> Result<()> {
        dst[..n_rows * dim].copy_from_slice(&src[src_row * dim..(src_row + n_rows) * dim]);
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn memory(&self) -> MemoryStats {
        let c = &self.counters;
        MemoryStats { current_bytes: c.current.load(Ordering::Relaxed), peak_bytes: c.peak.load(Ordering::Relaxed) }
    }

    fn reset_peak_memory(&self) {
        let c = &self.counters;
        c.peak.store(c.current.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Host memory: MemAvailable and MemTotal from /proc/meminfo.
    fn device_memory(&self) -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
        };
        Some((field("MemAvailable:")?, field("MemTotal:")?))
    }
}

/// out (T, N) = x (T, K) @ W^T for row-major W (N, K), through the `gemm` crate.
pub fn matmul_transposed(x: &[f32], t: usize, w: &[f32], n: usize, k: usize, out: &mut [f32]) {
    assert!(x.len() >= t * k && w.len() >= n * k && out.len() >= t * n);
    // SAFETY: the asserts above bound every index gemm touches: dst (t, n) with row stride
    // n, lhs (t, k) with row stride k, rhs = W^T (k, n) read from W with column stride k.
    unsafe {
        gemm::gemm(
            t,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// out (T, N) = x (T, K) @ W^T for 16-bit W, widening W a chunk of rows at a time.
fn matmul_widened(x: &[f32], t: usize, w: &DenseData, n: usize, k: usize, out: &mut [f32]) {
    let rows_per_chunk = (WIDEN_CHUNK / k.max(1)).clamp(1, n);
    let mut chunk = vec![0f32; rows_per_chunk * k];
    if rows_per_chunk == n {
        // The whole weight fits one chunk: multiply straight into `out`.
        w.widen_into(0, &mut chunk);
        return matmul_transposed(x, t, &chunk, n, k, out);
    }
    let mut part = vec![0f32; t * rows_per_chunk];
    for n0 in (0..n).step_by(rows_per_chunk) {
        let nc = rows_per_chunk.min(n - n0);
        w.widen_into(n0 * k, &mut chunk[..nc * k]);
        matmul_transposed(x, t, &chunk[..nc * k], nc, k, &mut part[..t * nc]);
        for r in 0..t {
            out[r * n + n0..r * n + n0 + nc].copy_from_slice(&part[r * nc..(r + 1) * nc]);
        }
    }
}

fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps as f64).sqrt();
    for i in 0..x.len() {
        out[i] = ((x[i] as f64 - mean) * inv) as f32 * w[i] + b[i];
    }
}

/// inv_freq[i] = 1 / theta^(2i / Hd) in f32, as transformers computes it, divided by the
/// linear scaling factor.
pub fn rotary_inv_freq(hd: usize, rope: RotaryParams) -> Vec<f32> {
    (0..hd / 2).map(|i| 1.0 / rope.theta.powf((2 * i) as f32 / hd as f32) / rope.position_scale).collect()
}

fn rotary_cos_sin(inv_freq: &[f32], pos: u32) -> (Vec<f32>, Vec<f32>) {
    inv_freq.iter().map(|&f| ((pos as f32 * f).cos(), (pos as f32 * f).sin())).unzip()
}

/// GPT-NeoX rotation: (x[i], x[i + Hd/2]) -> (x[i] cos - x[i+Hd/2] sin, x[i+Hd/2] cos + x[i] sin).
fn rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = b * cos[i] + a * sin[i];
    }
}

/// One query head against keys 0..=pos of group g: softmax(scores) @ V into `out` (Hd,).
#[allow(clippy::too_many_arguments)]
fn attend_one(
    q: &[f32],
    cache: &LayerKv<CpuBackend>,
    l: QkvLayout,
    g: usize,
    pos: usize,
    scale: f32,
    slope: Option<f32>,
    out: &mut [f32],
) {
    let hd = l.head_dim;
    let at = |j: usize| (j * l.n_kv + g) * hd;
    let scores: Vec<f32> = (0..=pos)
        .map(|j| {
            let dot: f32 = q.iter().zip(&cache.k[at(j)..at(j) + hd]).map(|(a, b)| a * b).sum();
            match slope {
                Some(s) => (dot + peregrine_core::dtype::round_bf16(s * j as f32)) * scale,
                None => dot * scale,
            }
        })
        .collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = weights.iter().sum();
    out.iter_mut().for_each(|o| *o = 0.0);
    for (j, w) in weights.iter().enumerate() {
        let v = &cache.v[at(j)..at(j) + hd];
        out.iter_mut().zip(v).for_each(|(o, v)| *o += w / sum * v);
    }
}

/// Exact GELU: x/2 (1 + erf(x / sqrt 2)).
pub fn gelu_erf(x: f32) -> f32 {
    (0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2))) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_a_naive_loop() {
        let (t, n, k) = (3, 5, 7);
        let x: Vec<f32> = (0..t * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut out = vec![0.0; t * n];
        matmul_transposed(&x, t, &w, n, k, &mut out);
        for r in 0..t {
            for c in 0..n {
                let want: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum();
                assert!((out[r * n + c] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn gelu_matches_known_values() {
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu_erf(-0.5) + 0.154_268_7).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_normalises() {
        let mut out = vec![0.0; 4];
        layer_norm_row(&[1.0, 2.0, 3.0, 4.0], &[1.0; 4], &[0.5; 4], 0.0, &mut out);
        let expect = [-1.341_640_8, -0.447_213_6, 0.447_213_6, 1.341_640_8].map(|v: f32| v + 0.5);
        out.iter().zip(expect).for_each(|(a, b)| assert!((a - b).abs() < 1e-6));
    }
}
