//! The `Backend` trait: the list of operations a Falcon forward pass needs, each writing
//! into a buffer it is given. The CPU backend (f32) is the oracle; the CUDA backend
//! implements the same list with kernels and is tested against it.
//!
//! Legend: T = tokens in this forward, D = hidden size, H = query heads, G = KV groups,
//! Hd = head dim, P = KV-cache capacity in positions, N/K = linear out/in features.

use crate::{sampling::Sampler, HostTensor, LinearWeight, Result};

/// How the fused `query_key_value` output of one token is laid out: for each KV group,
/// its `q_per_kv` query heads, then its K head, then its V head (`[G, q_per_kv + 2, Hd]`).
/// Multi-query (falcon-7b) is G = 1; falcon-rw-1b's per-head `[q, k, v]` is G = H.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QkvLayout {
    pub n_head: usize,
    pub n_kv: usize,
    pub head_dim: usize,
}

impl QkvLayout {
    pub fn q_per_kv(&self) -> usize {
        self.n_head / self.n_kv
    }
    /// Elements of one token's fused qkv row: G * (q_per_kv + 2) * Hd.
    pub fn row_width(&self) -> usize {
        self.n_kv * (self.q_per_kv() + 2) * self.head_dim
    }
    /// The KV group query head `h` reads.
    pub fn group_of(&self, h: usize) -> usize {
        h / self.q_per_kv()
    }
    /// Offset of query head `h` within a qkv row.
    pub fn q_offset(&self, h: usize) -> usize {
        let g = self.group_of(h);
        (g * (self.q_per_kv() + 2) + h % self.q_per_kv()) * self.head_dim
    }
    /// Offset of group `g`'s K head within a qkv row.
    pub fn k_offset(&self, g: usize) -> usize {
        (g * (self.q_per_kv() + 2) + self.q_per_kv()) * self.head_dim
    }
    /// Offset of group `g`'s V head within a qkv row.
    pub fn v_offset(&self, g: usize) -> usize {
        self.k_offset(g) + self.head_dim
    }
}

/// One layer's cache: K and V, each (P, G, Hd). Holds the KV groups only; query heads
/// of a group share them (transformers broadcasts to every head; we do not).
pub struct LayerKv<B: Backend + ?Sized> {
    pub k: B::Buf,
    pub v: B::Buf,
}

/// The KV cache of one sequence. Allocated by the engine, written by the backend.
pub struct KvCache<B: Backend + ?Sized> {
    pub layers: Vec<LayerKv<B>>,
    /// P: positions each layer can hold.
    pub capacity: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    /// Positions filled so far.
    pub len: usize,
}

impl<B: Backend> KvCache<B> {
    /// Allocate `n_layers` layers of (capacity, n_kv, head_dim) for K and V.
    pub fn new(backend: &B, n_layers: usize, capacity: usize, n_kv: usize, head_dim: usize) -> Result<Self> {
        let per = capacity * n_kv * head_dim;
        let layers = (0..n_layers)
            .map(|_| Ok(LayerKv { k: backend.alloc(per)?, v: backend.alloc(per)? }))
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache { layers, capacity, n_kv, head_dim, len: 0 })
    }

    /// Where position `pos` of the sequence lives in each layer's buffers (its row).
    /// One function, so a paged cache can replace the identity later.
    pub fn slot(&self, pos: usize) -> usize {
        pos
    }

    /// Forget everything (a new sequence).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Everything attention needs besides the buffers.
#[derive(Clone, Debug)]
pub struct AttentionParams<'a> {
    pub layout: QkvLayout,
    /// (T,) the position of each query row; row t attends cache slots 0..=positions[t].
    pub positions: &'a [u32],
    /// 1 / sqrt(Hd).
    pub scale: f32,
    /// (H,) ALiBi slopes (already rounded as transformers rounds them), or None for rotary.
    pub alibi_slopes: Option<&'a [f32]>,
}

/// Rotary embedding settings (GPT-NeoX style over the whole head).
#[derive(Clone, Copy, Debug)]
pub struct RotaryParams {
    pub theta: f32,
    /// Positions are divided by this (linear RoPE scaling); 1.0 = none.
    pub position_scale: f32,
}

/// The format synthetic weights are quantized to (the subset of the quantization options
/// a device-side generator needs).
#[derive(Clone, Copy, Debug)]
pub struct SyntheticFormat {
    pub kind: crate::QuantKind,
    /// 4-bit block size.
    pub blocksize: usize,
    /// 4-bit: double-quantize the block scales.
    pub double_quant: bool,
    /// int8: the outlier threshold (None = weight-only).
    pub int8_threshold: Option<f32>,
}

/// What a linear does with its result `y = x @ W^T + bias` as it stores it (fusing the next
/// element-wise op into the matmul saves a pass over the activations and a kernel launch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// out = y
    Store,
    /// out = GELU(y), the exact erf form (Falcon's MLP).
    Gelu,
    /// out = out + y (a residual add).
    Accumulate,
}

impl Epilogue {
    /// The code the GPU kernels take (0 store, 1 GELU, 2 accumulate).
    pub fn code(self) -> i32 {
        match self {
            Epilogue::Store => 0,
            Epilogue::Gelu => 1,
            Epilogue::Accumulate => 2,
        }
    }
}

/// Bytes on a device: now and the high-water mark since the last reset.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MemoryStats {
    pub current_bytes: u64,
    pub peak_bytes: u64,
}

/// One product of a grouped linear call (`Backend::linear_pair`):
/// x (T, K) @ W^T (+ bias).
pub struct LinearInput<'a, B: Backend + ?Sized> {
    pub x: &'a B::Buf,
    pub w: &'a B::Linear,
    pub bias: Option<&'a B::Buf>,
}

impl<B: Backend + ?Sized> Clone for LinearInput<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend + ?Sized> Copy for LinearInput<'_, B> {}

/// The LayerNorms in front of a parallel block's pair (`Backend::norm_linear_pair`): (weight,
/// bias) of the norm product a reads, of the one b reads when the block has two (None: b reads a's
/// output too), and eps.
pub struct PairNorms<'a, B: Backend + ?Sized> {
    pub a: (&'a B::Buf, &'a B::Buf),
    pub b: Option<(&'a B::Buf, &'a B::Buf)>,
    pub eps: f32,
}

impl<B: Backend + ?Sized> Clone for PairNorms<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend + ?Sized> Copy for PairNorms<'_, B> {}

/// One product of `Backend::norm_linear_pair`: weights, bias and epilogue (its x is a norm's output).
pub struct PairSide<'a, B: Backend + ?Sized> {
    pub w: &'a B::Linear,
    pub bias: Option<&'a B::Buf>,
    pub epi: Epilogue,
}

/// The operations of a Falcon forward pass.
pub trait Backend {
    /// An activation buffer (f32 on the CPU, bf16 or f32 on a GPU).
    type Buf;
    /// A linear layer's weights in the backend's own layout (dense or quantized).
    type Linear;

    /// A recorded decode step (a CUDA graph); `()` on backends that do not record.
    type StepGraph;

    /// A short description ("cpu (16 threads)", "cuda:0 NVIDIA H200").
    fn name(&self) -> String;

    /// A zero-initialised buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    /// A buffer holding `values`.
    fn upload(&self, values: &[f32]) -> Result<Self::Buf>;
    /// `len` values starting at `offset`, as f32.
    fn download(&self, buf: &Self::Buf, offset: usize, len: usize) -> Result<Vec<f32>>;
    /// A vector parameter (layernorm weight or bias, linear bias).
    fn load_vector(&self, t: &HostTensor) -> Result<Self::Buf>;
    /// Prepare a linear layer's weights (repacking them if the backend wants).
    fn load_linear(&self, w: LinearWeight) -> Result<Self::Linear>;
    /// (N, K) of a loaded linear.
    fn linear_dims(&self, w: &Self::Linear) -> (usize, usize);
    /// Bytes a loaded linear keeps resident.
    fn linear_bytes(&self, w: &Self::Linear) -> usize;

    /// out (T, D) = rows `ids` of `table` (V, D).
    fn embedding(&self, table: &Self::Linear, ids: &[u32], out: &mut Self::Buf) -> Result<()>;
    /// out (T, D) = LayerNorm(x) * weight + bias, over the last dimension.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        x: &Self::Buf,
        rows: usize,
        dim: usize,
        weight: &Self::Buf,
        bias: &Self::Buf,
        eps: f32,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// The two LayerNorms of a parallel block over the same x: out_a with (weight_a, bias_a),
    /// out_b with (weight_b, bias_b). A backend may share the statistics and the pass over x.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm2(
        &self,
        x: &Self::Buf,
        rows: usize,
        dim: usize,
        norm_a: (&Self::Buf, &Self::Buf),
        norm_b: (&Self::Buf, &Self::Buf),
        eps: f32,
        out_a: &mut Self::Buf,
        out_b: &mut Self::Buf,
    ) -> Result<()> {
        self.layer_norm(x, rows, dim, norm_a.0, norm_a.1, eps, out_a)?;
        self.layer_norm(x, rows, dim, norm_b.0, norm_b.1, eps, out_b)
    }
    /// out (T, N) = x (T, K) @ W^T + bias.
    fn linear(
        &self,
        x: &Self::Buf,
        rows: usize,
        w: &Self::Linear,
        bias: Option<&Self::Buf>,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// out (T, N) = epilogue(x (T, K) @ W^T + bias): `linear` with the next element-wise op fused.
    #[allow(clippy::too_many_arguments)]
    fn linear_fused(
        &self,
        x: &Self::Buf,
        rows: usize,
        w: &Self::Linear,
        bias: Option<&Self::Buf>,
        epilogue: Epilogue,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// Two independent linears over the same T (Falcon's parallel block: query_key_value and
    /// dense_h_to_4h): out_a = epi_a(a), out_b = epi_b(b). A backend may stream both weights in one
    /// pass; the default runs them one after the other.
    #[allow(clippy::too_many_arguments)]
    fn linear_pair(
        &self,
        rows: usize,
        a: LinearInput<'_, Self>,
        epi_a: Epilogue,
        out_a: &mut Self::Buf,
        b: LinearInput<'_, Self>,
        epi_b: Epilogue,
        out_b: &mut Self::Buf,
    ) -> Result<()> {
        linear_pair_separately(self, rows, a, epi_a, out_a, b, epi_b, out_b)
    }
    /// out += a.x @ a.w^T (+ a.bias) + b.x @ b.w^T (+ b.bias), both products N wide (Falcon's parallel
    /// block: dense and dense_4h_to_h into the residual). A backend may compute both in one pass and
    /// round once; the default adds them one after the other.
    fn linear_sum(&self, rows: usize, a: LinearInput<'_, Self>, b: LinearInput<'_, Self>, out: &mut Self::Buf) -> Result<()> {
        linear_sum_separately(self, rows, a, b, out)
    }
    /// A parallel block's entry: ln_a = LayerNorm(x) with norms.a, ln_b = LayerNorm(x) with norms.b
    /// (when there are two), then `linear_pair` of a on ln_a and b on ln_b (or ln_a). A backend that
    /// normalises inside the products may leave ln_a and ln_b unwritten.
    #[allow(clippy::too_many_arguments)]
    fn norm_linear_pair(
        &self,
        x: &Self::Buf,
        rows: usize,
        dim: usize,
        norms: PairNorms<'_, Self>,
        ln_a: &mut Self::Buf,
        ln_b: &mut Self::Buf,
        a: PairSide<'_, Self>,
        out_a: &mut Self::Buf,
        b: PairSide<'_, Self>,
        out_b: &mut Self::Buf,
    ) -> Result<()> {
        norm_then_pair(self, x, rows, dim, norms, ln_a, ln_b, a, out_a, b, out_b)
    }
    /// Rotate the Q and K heads of a fused qkv (T, row_width) in place.
    fn rotary(
        &self,
        qkv: &mut Self::Buf,
        layout: QkvLayout,
        positions: &[u32],
        rope: RotaryParams,
    ) -> Result<()>;
    /// Copy each token's K and V heads from qkv (T, row_width) into the cache at its position.
    fn append_kv(
        &self,
        qkv: &Self::Buf,
        layout: QkvLayout,
        positions: &[u32],
        cache: &mut LayerKv<Self>,
    ) -> Result<()>;
    /// `rotary` then `append_kv` (a backend may do both in one pass).
    fn rotary_append(
        &self,
        qkv: &mut Self::Buf,
        layout: QkvLayout,
        positions: &[u32],
        rope: RotaryParams,
        cache: &mut LayerKv<Self>,
    ) -> Result<()> {
        self.rotary(qkv, layout, positions, rope)?;
        self.append_kv(qkv, layout, positions, cache)
    }
    /// This step's K/V into the cache (`rotary_append` with `rope`, else `append_kv`), then
    /// `attention` over it. A backend may fuse them (CUDA does for one query row).
    fn append_attend(
        &self,
        qkv: &mut Self::Buf,
        cache: &mut LayerKv<Self>,
        rope: Option<RotaryParams>,
        params: &AttentionParams<'_>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        append_then_attend(self, qkv, cache, rope, params, out)
    }
    /// out (T, H * Hd) = causal softmax(q k^T * scale [+ alibi]) v over the cache.
    fn attention(
        &self,
        qkv: &Self::Buf,
        cache: &LayerKv<Self>,
        params: &AttentionParams<'_>,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// x = GELU(x) (the exact erf form), first `len` elements.
    fn gelu(&self, x: &mut Self::Buf, len: usize) -> Result<()>;
    /// dst += src, first `len` elements.
    fn add(&self, dst: &mut Self::Buf, src: &Self::Buf, len: usize) -> Result<()>;
    /// dst[0..n_rows] = src[src_row..src_row + n_rows], rows of `dim` elements.
    fn copy_rows(&self, src: &Self::Buf, src_row: usize, n_rows: usize, dim: usize, dst: &mut Self::Buf) -> Result<()>;
    /// Wait until all queued work is done.
    fn synchronize(&self) -> Result<()>;
    /// Device memory in use and its high-water mark (host backends report their buffers).
    fn memory(&self) -> MemoryStats;
    /// Start a new high-water mark at the current use.
    fn reset_peak_memory(&self);
    /// (free, total) bytes of device memory, when the backend knows them.
    fn device_memory(&self) -> Option<(u64, u64)> {
        None
    }
    /// A reader of the device's SM clock and power (crates/core clocks.rs), where the backend has one.
    fn clock_probe(&self) -> Option<std::sync::Arc<dyn crate::ClockProbe>> {
        None
    }

    /// A synthetic (N, K) linear filled with N(0, std) values and quantized to `format`
    /// directly on the device, with no host copy. `Ok(None)` means this backend makes
    /// synthetic weights on the host instead.
    fn synthetic_linear(
        &self,
        _format: &SyntheticFormat,
        _n: usize,
        _k: usize,
        _std: f32,
        _seed: u64,
    ) -> Result<Option<Self::Linear>> {
        Ok(None)
    }

    /// A synthetic vector of N(mean, std) values made on the device; `Ok(None)` = on the host.
    fn synthetic_vector(&self, _len: usize, _mean: f32, _std: f32, _seed: u64) -> Result<Option<Self::Buf>> {
        Ok(None)
    }

    /// Run `step` (one decode forward of `ids` at `positions`, at most 8 rows) and record the
    /// ops it queues, so that [`Backend::replay_step`] queues them all again in one launch.
    /// While `step` runs, ops read the token ids and positions from the backend's own step slot
    /// (filled here from `ids` and `positions`; the host slices the ops are given serve only
    /// their checks) and size their launch grids for up to `key_bound` keys, so a replay is
    /// valid for any position below `key_bound`. The step's results are ready when this
    /// returns. `Ok(None)`: this backend does not record (the step still ran).
    fn record_step(
        &self,
        _ids: &[u32],
        _positions: &[u32],
        _key_bound: usize,
        step: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<Self::StepGraph>> {
        step()?;
        Ok(None)
    }

    /// Queue a recorded step again with new token ids and positions (as many rows as it was
    /// recorded with; every position below the recording's `key_bound`, which the caller checks).
    fn replay_step(&self, _graph: &Self::StepGraph, _ids: &[u32], _positions: &[u32]) -> Result<()> {
        Err(crate::Error::device(format!("{} does not replay recorded steps", self.name())))
    }

    /// Perplexity figures of rows `first..first + targets.len()` of `logits` (rows of `vocab`)
    /// against `targets`, and against the same rows of `reference` when given (see
    /// `crate::scoring`). The default downloads the rows and scores them on the host; a GPU
    /// backend may score on the device so that only the scores cross.
    fn score_rows(
        &self,
        logits: &Self::Buf,
        reference: Option<&Self::Buf>,
        first: usize,
        vocab: usize,
        targets: &[u32],
    ) -> Result<Vec<crate::scoring::RowScore>> {
        let n = targets.len();
        if let Some(&t) = targets.iter().find(|&&t| t as usize >= vocab) {
            return Err(crate::Error::input(format!("score_rows: target token {t} is outside the vocabulary of {vocab}")));
        }
        let rows = self.download(logits, first * vocab, n * vocab)?;
        let refs = reference.map(|r| self.download(r, first * vocab, n * vocab)).transpose()?;
        Ok((0..n)
            .map(|i| {
                let row = &rows[i * vocab..(i + 1) * vocab];
                let r = refs.as_ref().map(|r| &r[i * vocab..(i + 1) * vocab]);
                crate::scoring::score_row(row, r, targets[i])
            })
            .collect())
    }

    /// Choose the next token from row `row` of `logits` (rows of `vocab`). The default
    /// downloads the row and samples on the host; a GPU backend may sample on the device
    /// so only the token crosses.
    fn sample(
        &self,
        logits: &Self::Buf,
        row: usize,
        vocab: usize,
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32> {
        let mut values = self.download(logits, row * vocab, vocab)?;
        Ok(sampler.sample(&mut values, history))
    }
}

/// `Backend::append_attend` as two steps: `rotary_append` (or `append_kv`), then `attention`.
pub fn append_then_attend<B: Backend + ?Sized>(
    b: &B,
    qkv: &mut B::Buf,
    cache: &mut LayerKv<B>,
    rope: Option<RotaryParams>,
    params: &AttentionParams<'_>,
    out: &mut B::Buf,
) -> Result<()> {
    match rope {
        Some(r) => b.rotary_append(qkv, params.layout, params.positions, r, cache)?,
        None => b.append_kv(qkv, params.layout, params.positions, cache)?,
    }
    b.attention(qkv, cache, params, out)
}

/// `Backend::norm_linear_pair` as separate steps: the norm(s) into ln_a (ln_b), then `linear_pair`.
#[allow(clippy::too_many_arguments)]
pub fn norm_then_pair<B: Backend + ?Sized>(
    be: &B,
    x: &B::Buf,
    rows: usize,
    dim: usize,
    norms: PairNorms<'_, B>,
    ln_a: &mut B::Buf,
    ln_b: &mut B::Buf,
    a: PairSide<'_, B>,
    out_a: &mut B::Buf,
    b: PairSide<'_, B>,
    out_b: &mut B::Buf,
) -> Result<()> {
    match norms.b {
        Some(nb) => be.layer_norm2(x, rows, dim, norms.a, nb, norms.eps, ln_a, ln_b)?,
        None => be.layer_norm(x, rows, dim, norms.a.0, norms.a.1, norms.eps, ln_a)?,
    }
    let xb: &B::Buf = if norms.b.is_some() { ln_b } else { ln_a };
    let ia = LinearInput { x: ln_a, w: a.w, bias: a.bias };
    let ib = LinearInput { x: xb, w: b.w, bias: b.bias };
    be.linear_pair(rows, ia, a.epi, out_a, ib, b.epi, out_b)
}

/// `Backend::linear_pair` as two `linear_fused` calls.
#[allow(clippy::too_many_arguments)]
pub fn linear_pair_separately<B: Backend + ?Sized>(
    be: &B,
    rows: usize,
    a: LinearInput<'_, B>,
    epi_a: Epilogue,
    out_a: &mut B::Buf,
    b: LinearInput<'_, B>,
    epi_b: Epilogue,
    out_b: &mut B::Buf,
) -> Result<()> {
    be.linear_fused(a.x, rows, a.w, a.bias, epi_a, out_a)?;
    be.linear_fused(b.x, rows, b.w, b.bias, epi_b, out_b)
}

/// `Backend::linear_sum` as two Accumulate `linear_fused` calls (out rounded after each).
pub fn linear_sum_separately<B: Backend + ?Sized>(be: &B, rows: usize, a: LinearInput<'_, B>, b: LinearInput<'_, B>, out: &mut B::Buf) -> Result<()> {
    be.linear_fused(a.x, rows, a.w, a.bias, Epilogue::Accumulate, out)?;
    be.linear_fused(b.x, rows, b.w, b.bias, Epilogue::Accumulate, out)
}
