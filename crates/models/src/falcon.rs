//! The Falcon model, read top to bottom: parameters -> attention -> MLP -> block -> model.
//! Every variant (7B multi-query, 40B/180B grouped KV with two norms, Falcon2-11B with one
//! norm, rw-1b with ALiBi and sequential blocks) is a case of [`FalconConfig`], not a file.
//!
//! The model says *what* is computed; the backend says *how* (every op writes into a
//! buffer of the [`Workspace`]), and the engine says *when* (it owns the KV cache and
//! calls [`Falcon::forward`] for prefill and each decode step).
//!
//! Legend: T tokens in this forward, D hidden, H query heads, G KV groups, Hd head dim,
//! F MLP width, V vocab, R logit rows.

use peregrine_core::{AttentionParams, Backend, Epilogue, KvCache, LinearInput, PairNorms, PairSide, Result};

use crate::config::{alibi_slopes, BlockKind, FalconConfig};
use crate::params::{ParamSource, Role, VectorKind};

/// A LayerNorm's weight and bias, each (D,).
pub struct Norm<B: Backend> {
    pub weight: B::Buf,
    pub bias: B::Buf,
}

/// A linear layer: weight (N, K) in the backend's format, optional bias (N,).
pub struct Linear<B: Backend> {
    pub weight: B::Linear,
    pub bias: Option<B::Buf>,
}

/// The layernorms of one block, by architecture.
pub enum BlockNorms<B: Backend> {
    /// `input_layernorm` before attention, `post_attention_layernorm` before the MLP.
    Sequential { input: Norm<B>, post_attention: Norm<B> },
    /// One `input_layernorm` feeding both branches.
    Shared { input: Norm<B> },
    /// `ln_attn` and `ln_mlp`.
    Two { attn: Norm<B>, mlp: Norm<B> },
}

/// One decoder block.
pub struct Block<B: Backend> {
    pub norms: BlockNorms<B>,
    /// (G*(H/G+2)*Hd, D)
    pub query_key_value: Linear<B>,
    /// (D, H*Hd)
    pub dense: Linear<B>,
    /// (F, D)
    pub dense_h_to_4h: Linear<B>,
    /// (D, F)
    pub dense_4h_to_h: Linear<B>,
}

/// Which rows of the final hidden states become logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitRows {
    /// Only the last token (generation).
    Last,
    /// Every token (perplexity, the `logits` tool).
    All,
}

/// Activation buffers for up to `max_tokens` tokens per forward, allocated once.
pub struct Workspace<B: Backend> {
    pub max_tokens: usize,
    /// (T, D) the residual stream.
    x: B::Buf,
    /// (T, D) normalised input of attention (and of the MLP when shared).
    ln_a: B::Buf,
    /// (T, D) normalised input of the MLP.
    ln_b: B::Buf,
    /// (T, G*(H/G+2)*Hd)
    qkv: B::Buf,
    /// (T, H*Hd)
    attn: B::Buf,
    /// (T, F)
    mlp_h: B::Buf,
    /// (1, D) the last row of x, on its way to the head.
    last_x: B::Buf,
    /// (T, D) the rows that become logits.
    head_in: B::Buf,
    /// (R, V)
    pub logits: B::Buf,
}

/// A loaded Falcon model on backend `B`.
pub struct Falcon<B: Backend> {
    pub config: FalconConfig,
    /// (V, D)
    embedding: B::Linear,
    blocks: Vec<Block<B>>,
    ln_f: Norm<B>,
    /// (V, D); None when tied to the embedding.
    lm_head: Option<B::Linear>,
    /// (H,) bf16-rounded slopes when the model uses ALiBi.
    alibi: Option<Vec<f32>>,
    weight_bytes: u64,
}

impl<B: Backend> Falcon<B> {
    /// Build the model, asking `source` for each parameter in checkpoint order.
    pub fn load(backend: &B, config: FalconConfig, source: &mut dyn ParamSource<B>) -> Result<Self> {
        let c = &config;
        let (d, v) = (c.hidden_size, c.vocab_size);
        let embedding = source.linear(backend, "transformer.word_embeddings.weight", (v, d), Role::Embedding)?;
        let blocks = (0..c.n_layer).map(|i| load_block(backend, c, i, source)).collect::<Result<Vec<_>>>()?;
        let ln_f = load_norm(backend, "transformer.ln_f", d, source)?;
        let lm_head = match c.tie_word_embeddings {
            true => None,
            false => Some(source.linear(backend, "lm_head.weight", (v, d), Role::LmHead)?),
        };
        source.finish()?;
        let alibi = matches!(c.position, crate::config::PositionKind::Alibi).then(|| alibi_slopes(c.n_head));
        let mut model = Falcon { config, embedding, blocks, ln_f, lm_head, alibi, weight_bytes: 0 };
        model.weight_bytes = model.count_weight_bytes(backend);
        Ok(model)
    }

    /// Bytes of linear weights resident on the backend (embedding and head included).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Bytes of the block linears resident on the backend (the quantized part of a model).
    pub fn block_weight_bytes(&self, backend: &B) -> u64 {
        self.blocks.iter().map(|b| block_linear_bytes(backend, b)).sum()
    }

    /// Bytes one decode step must read: every block linear, the head, one embedding row.
    pub fn decode_read_bytes(&self, backend: &B) -> u64 {
        let head = self.lm_head.as_ref().unwrap_or(&self.embedding);
        let blocks: u64 = self.blocks.iter().map(|b| block_linear_bytes(backend, b)).sum();
        blocks + backend.linear_bytes(head) as u64
    }

    fn count_weight_bytes(&self, backend: &B) -> u64 {
        let blocks: u64 = self.blocks.iter().map(|b| block_linear_bytes(backend, b)).sum();
        let head = self.lm_head.as_ref().map_or(0, |h| backend.linear_bytes(h) as u64);
        blocks + head + backend.linear_bytes(&self.embedding) as u64
    }

    /// Activation buffers for forwards of up to `max_tokens` tokens with `logit_rows` rows of logits.
    pub fn workspace(&self, backend: &B, max_tokens: usize, logit_rows: usize) -> Result<Workspace<B>> {
        let c = &self.config;
        let (t, d) = (max_tokens, c.hidden_size);
        Ok(Workspace {
            max_tokens,
            x: backend.alloc(t * d)?,
            ln_a: backend.alloc(t * d)?,
            ln_b: backend.alloc(t * d)?,
            qkv: backend.alloc(t * c.qkv_width())?,
            attn: backend.alloc(t * c.n_head * c.head_dim)?,
            mlp_h: backend.alloc(t * c.ffn_hidden_size)?,
            last_x: backend.alloc(d)?,
            head_in: backend.alloc(logit_rows.max(1) * d)?,
            logits: backend.alloc(logit_rows.max(1) * c.vocab_size)?,
        })
    }

    /// Run `ids` at `positions` (T each) through the model, appending their K/V to `cache`,
    /// and leave logits for `rows` in `ws.logits` ((1, V) for Last, (T, V) for All).
    pub fn forward(
        &self,
        backend: &B,
        ids: &[u32],
        positions: &[u32],
        cache: &mut KvCache<B>,
        ws: &mut Workspace<B>,
        rows: LogitRows,
    ) -> Result<()> {
        let t = ids.len();
        debug_assert!(t > 0 && t <= ws.max_tokens && positions.len() == t);
        backend.embedding(&self.embedding, ids, &mut ws.x)?;
        for (i, block) in self.blocks.iter().enumerate() {
            self.block_forward(backend, block, t, positions, &mut cache.layers[i], ws)?;
        }
        cache.len = cache.len.max(positions[t - 1] as usize + 1);
        self.head(backend, t, rows, ws)
    }

    fn block_forward(
        &self,
        backend: &B,
        block: &Block<B>,
        t: usize,
        positions: &[u32],
        kv: &mut peregrine_core::LayerKv<B>,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        let c = &self.config;
        let d = c.hidden_size;
        let eps = c.layer_norm_eps;
        let (qkv, dense) = (&block.query_key_value, &block.dense);
        let (h_to_4h, h4_to_h) = (&block.dense_h_to_4h, &block.dense_4h_to_h);
        let norms = match &block.norms {
            BlockNorms::Sequential { input, post_attention } => {
                // x += dense(attention(norm(x))); then the MLP reads the norm of the updated x.
                norm(backend, &ws.x, t, d, input, eps, &mut ws.ln_a)?;
                linear(backend, &ws.ln_a, t, qkv, &mut ws.qkv)?;
                self.attend(backend, positions, kv, ws)?;
                linear_fused(backend, &ws.attn, t, dense, Epilogue::Accumulate, &mut ws.x)?;
                norm(backend, &ws.x, t, d, post_attention, eps, &mut ws.ln_b)?;
                linear_fused(backend, &ws.ln_b, t, h_to_4h, Epilogue::Gelu, &mut ws.mlp_h)?;
                return linear_fused(backend, &ws.mlp_h, t, h4_to_h, Epilogue::Accumulate, &mut ws.x);
            }
            BlockNorms::Two { attn, mlp } => PairNorms { a: (&attn.weight, &attn.bias), b: Some((&mlp.weight, &mlp.bias)), eps },
            BlockNorms::Shared { input } => PairNorms { a: (&input.weight, &input.bias), b: None, eps },
        };
        // Parallel block: attention and MLP both read norms of the same x, so the norms, qkv and
        // h->4h go together (one launch where the backend can), then x += dense(attention) + 4h->h.
        let a = PairSide { w: &qkv.weight, bias: qkv.bias.as_ref(), epi: Epilogue::Store };
        let b = PairSide { w: &h_to_4h.weight, bias: h_to_4h.bias.as_ref(), epi: Epilogue::Gelu };
        backend.norm_linear_pair(&ws.x, t, d, norms, &mut ws.ln_a, &mut ws.ln_b, a, &mut ws.qkv, b, &mut ws.mlp_h)?;
        self.attend(backend, positions, kv, ws)?;
        let a = LinearInput { x: &ws.attn, w: &dense.weight, bias: dense.bias.as_ref() };
        let b = LinearInput { x: &ws.mlp_h, w: &h4_to_h.weight, bias: h4_to_h.bias.as_ref() };
        backend.linear_sum(t, a, b, &mut ws.x)
    }

    /// attn = attention(rotary(qkv)), writing this step's K/V into the cache.
    fn attend(&self, backend: &B, positions: &[u32], kv: &mut peregrine_core::LayerKv<B>, ws: &mut Workspace<B>) -> Result<()> {
        let c = &self.config;
        let params = AttentionParams {
            layout: c.qkv_layout(),
            positions,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            alibi_slopes: self.alibi.as_deref(),
        };
        backend.append_attend(&mut ws.qkv, kv, c.rotary(), &params, &mut ws.attn)
    }

    /// logits = lm_head(ln_f(x)) for the requested rows.
    fn head(&self, backend: &B, t: usize, rows: LogitRows, ws: &mut Workspace<B>) -> Result<()> {
        let d = self.config.hidden_size;
        let head = self.lm_head.as_ref().unwrap_or(&self.embedding);
        match rows {
            LogitRows::Last => {
                backend.copy_rows(&ws.x, t - 1, 1, d, &mut ws.last_x)?;
                norm(backend, &ws.last_x, 1, d, &self.ln_f, self.config.layer_norm_eps, &mut ws.head_in)?;
                backend.linear(&ws.head_in, 1, head, None, &mut ws.logits)
            }
            LogitRows::All => {
                norm(backend, &ws.x, t, d, &self.ln_f, self.config.layer_norm_eps, &mut ws.head_in)?;
                backend.linear(&ws.head_in, t, head, None, &mut ws.logits)
            }
        }
    }
}

fn linear<B: Backend>(backend: &B, x: &B::Buf, t: usize, l: &Linear<B>, out: &mut B::Buf) -> Result<()> {
    backend.linear(x, t, &l.weight, l.bias.as_ref(), out)
}

fn linear_fused<B: Backend>(backend: &B, x: &B::Buf, t: usize, l: &Linear<B>, epi: Epilogue, out: &mut B::Buf) -> Result<()> {
    backend.linear_fused(x, t, &l.weight, l.bias.as_ref(), epi, out)
}

fn norm<B: Backend>(backend: &B, x: &B::Buf, t: usize, d: usize, n: &Norm<B>, eps: f32, out: &mut B::Buf) -> Result<()> {
    backend.layer_norm(x, t, d, &n.weight, &n.bias, eps, out)
}

fn block_linear_bytes<B: Backend>(backend: &B, b: &Block<B>) -> u64 {
    [&b.query_key_value, &b.dense, &b.dense_h_to_4h, &b.dense_4h_to_h]
        .iter()
        .map(|l| backend.linear_bytes(&l.weight) as u64)
        .sum()
}

fn load_norm<B: Backend>(backend: &B, prefix: &str, d: usize, source: &mut dyn ParamSource<B>) -> Result<Norm<B>> {
    Ok(Norm {
        weight: source.vector(backend, &format!("{prefix}.weight"), d, VectorKind::NormWeight)?,
        bias: source.vector(backend, &format!("{prefix}.bias"), d, VectorKind::NormBias)?,
    })
}

fn load_linear<B: Backend>(
    backend: &B,
    c: &FalconConfig,
    prefix: &str,
    dims: (usize, usize),
    source: &mut dyn ParamSource<B>,
) -> Result<Linear<B>> {
    let weight = source.linear(backend, &format!("{prefix}.weight"), dims, Role::Block)?;
    let bias = match c.bias {
        true => Some(source.vector(backend, &format!("{prefix}.bias"), dims.0, VectorKind::LinearBias)?),
        false => None,
    };
    Ok(Linear { weight, bias })
}

fn load_block<B: Backend>(backend: &B, c: &FalconConfig, i: usize, source: &mut dyn ParamSource<B>) -> Result<Block<B>> {
    let p = format!("transformer.h.{i}");
    let d = c.hidden_size;
    let norms = match c.block {
        BlockKind::Sequential => BlockNorms::Sequential {
            input: load_norm(backend, &format!("{p}.input_layernorm"), d, source)?,
            post_attention: load_norm(backend, &format!("{p}.post_attention_layernorm"), d, source)?,
        },
        BlockKind::ParallelSharedNorm => {
            BlockNorms::Shared { input: load_norm(backend, &format!("{p}.input_layernorm"), d, source)? }
        }
        BlockKind::ParallelTwoNorms => BlockNorms::Two {
            attn: load_norm(backend, &format!("{p}.ln_attn"), d, source)?,
            mlp: load_norm(backend, &format!("{p}.ln_mlp"), d, source)?,
        },
    };
    let attn_width = c.n_head * c.head_dim;
    Ok(Block {
        norms,
        query_key_value: load_linear(backend, c, &format!("{p}.self_attention.query_key_value"), (c.qkv_width(), d), source)?,
        dense: load_linear(backend, c, &format!("{p}.self_attention.dense"), (d, attn_width), source)?,
        dense_h_to_4h: load_linear(backend, c, &format!("{p}.mlp.dense_h_to_4h"), (c.ffn_hidden_size, d), source)?,
        dense_4h_to_h: load_linear(backend, c, &format!("{p}.mlp.dense_4h_to_h"), (d, c.ffn_hidden_size), source)?,
    })
}
