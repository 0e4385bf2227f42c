//! Where a model's parameters come from: a checkpoint on disk (quantized on load, tensor
//! by tensor) or synthetic values (for benchmarking full-size shapes without a download).
//! The model asks for each parameter by name and shape through [`ParamSource`]; it never
//! knows which source answers.

use std::collections::BTreeSet;

use peregrine_core::{Backend, DType, Error, HostTensor, LinearWeight, QuantKind, Result};
use peregrine_quant::QuantOptions;

use crate::checkpoint::Checkpoint;

/// What a linear layer is for: embeddings and the output head stay dense (as
/// transformers + bitsandbytes leave them); block linears take the requested format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Embedding,
    LmHead,
    Block,
}

/// What a vector parameter is, so a synthetic source can fill it sensibly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorKind {
    NormWeight,
    NormBias,
    LinearBias,
}

/// Answers the model's requests for parameters.
pub trait ParamSource<B: Backend> {
    /// The (rows, cols) = (N, K) linear `name` (a `.weight` tensor name).
    fn linear(&mut self, backend: &B, name: &str, dims: (usize, usize), role: Role) -> Result<B::Linear>;
    /// The vector `name` of `len` elements.
    fn vector(&mut self, backend: &B, name: &str, len: usize, kind: VectorKind) -> Result<B::Buf>;
    /// Called after the last parameter: a checkpoint source rejects tensors nobody asked for.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The dense dtype embeddings, the head and norms keep for a requested format.
pub fn dense_dtype(kind: QuantKind) -> DType {
    match kind {
        QuantKind::F32 => DType::F32,
        QuantKind::F16 => DType::F16,
        _ => DType::BF16,
    }
}

/// Parameters read from a checkpoint, quantized on load as requested.
pub struct CheckpointSource<'a> {
    ckpt: &'a Checkpoint,
    kind: QuantKind,
    opts: QuantOptions,
    used: BTreeSet<String>,
    /// Names that may be present and unused (a tied head saved anyway).
    ignorable: BTreeSet<String>,
    /// Called after each parameter with its name (progress bars).
    on_param: Box<dyn FnMut(&str) + 'a>,
}

impl<'a> CheckpointSource<'a> {
    pub fn new(ckpt: &'a Checkpoint, kind: QuantKind, opts: QuantOptions) -> Self {
        CheckpointSource {
            ckpt,
            kind,
            opts,
            used: BTreeSet::new(),
            ignorable: BTreeSet::new(),
            on_param: Box::new(|_| {}),
        }
    }

    /// Report each parameter as it is loaded.
    pub fn with_progress(mut self, f: impl FnMut(&str) + 'a) -> Self {
        self.on_param = Box::new(f);
        self
    }

    /// Allow `name` to be present and unused.
    pub fn ignore(&mut self, name: &str) {
        self.ignorable.insert(name.to_string());
    }

    /// A pre-quantized (bitsandbytes) linear at `prefix`, if the checkpoint holds one.
    fn prequantized(&mut self, prefix: &str) -> Result<Option<LinearWeight>> {
        let ckpt = self.ckpt;
        let get = |n: &str| ckpt.info(n).and_then(|_| ckpt.read(n).ok());
        let found = peregrine_quant::read_bnb_linear(prefix, &get)
            .map_err(|e| Error::tensor(ckpt.file_of(&format!("{prefix}.weight")), prefix, e.to_string()))?;
        if found.is_some() {
            let aux: Vec<String> = ckpt
                .names()
                .filter(|n| n.starts_with(&format!("{prefix}.weight")) || *n == format!("{prefix}.SCB"))
                .map(String::from)
                .collect();
            self.used.extend(aux);
        }
        Ok(found)
    }

    /// Bring a linear into the requested format.
    fn convert(&self, w: LinearWeight, role: Role) -> Result<LinearWeight> {
        let target = if role == Role::Block { self.kind } else { dense_kind(self.kind) };
        match (&w, target.is_quantized()) {
            (LinearWeight::Dense(t), true) => peregrine_quant::quantize_linear(t, target, &self.opts),
            (LinearWeight::Dense(t), false) => Ok(LinearWeight::Dense(t.cast(dense_dtype(target)))),
            (_, true) if same_format(&w, target) => Ok(with_threshold(w, self.opts.int8_threshold)),
            _ => {
                // A pre-quantized weight asked for in another format: dequantize first.
                let (n, k) = w.dims();
                let dense = HostTensor::from_f32(vec![n, k], &peregrine_quant::dequantize(&w)).cast(DType::BF16);
                self.convert(LinearWeight::Dense(dense), role)
            }
        }
    }
}

/// The int8 outlier threshold is a run-time choice, not part of the stored weights.
fn with_threshold(w: LinearWeight, threshold: Option<f32>) -> LinearWeight {
    match w {
        LinearWeight::Int8(mut q) => {
            q.threshold = threshold;
            LinearWeight::Int8(q)
        }
        other => other,
    }
}

fn dense_kind(kind: QuantKind) -> QuantKind {
    match kind {
        QuantKind::F32 | QuantKind::F16 => kind,
        _ => QuantKind::Bf16,
    }
}

fn same_format(w: &LinearWeight, kind: QuantKind) -> bool {
    use peregrine_core::FourBitFormat as F;
    matches!(
        (w, kind),
        (LinearWeight::Int8(_), QuantKind::Int8)
            | (LinearWeight::FourBit(peregrine_core::FourBitWeight { format: F::Nf4, .. }), QuantKind::Nf4)
            | (LinearWeight::FourBit(peregrine_core::FourBitWeight { format: F::Fp4, .. }), QuantKind::Fp4)
    )
}

impl<B: Backend> ParamSource<B> for CheckpointSource<'_> {
    fn linear(&mut self, backend: &B, name: &str, dims: (usize, usize), role: Role) -> Result<B::Linear> {
        let prefix = name.strip_suffix(".weight").unwrap_or(name);
        let stored = match self.prequantized(prefix)? {
            Some(q) => check_quant_dims(self.ckpt, name, &q, dims)?,
            None => {
                self.used.insert(name.to_string());
                LinearWeight::Dense(self.ckpt.read_shaped(name, &[dims.0, dims.1])?)
            }
        };
        let w = self.convert(stored, role)?;
        let loaded = backend.load_linear(w)?;
        (self.on_param)(name);
        Ok(loaded)
    }

    fn vector(&mut self, backend: &B, name: &str, len: usize, _kind: VectorKind) -> Result<B::Buf> {
        self.used.insert(name.to_string());
        let t = self.ckpt.read_shaped(name, &[len])?;
        let buf = backend.load_vector(&t)?;
        (self.on_param)(name);
        Ok(buf)
    }

    fn finish(&mut self) -> Result<()> {
        let extra = self
            .ckpt
            .names()
            .find(|n| !self.used.contains(*n) && !self.ignorable.contains(*n) && !n.ends_with("inv_freq"));
        match extra {
            Some(n) => Err(Error::tensor(self.ckpt.file_of(n), n, "unexpected tensor: not part of this Falcon configuration")),
            None => Ok(()),
        }
    }
}

fn check_quant_dims(ckpt: &Checkpoint, name: &str, w: &LinearWeight, dims: (usize, usize)) -> Result<LinearWeight> {
    if w.dims() != dims {
        return Err(Error::tensor(
            ckpt.file_of(name),
            name,
            format!("quantized weight has shape {:?}, expected {:?}", w.dims(), dims),
        ));
    }
    Ok(w.clone())
}

/// Synthetic parameters for `--dummy-weights`: N(0, std) linears quantized as requested,
/// norm weights near 1, small biases. Made on the device when the backend can (no host
/// copy, seconds for a 40B shape), else on the host and loaded like a checkpoint.
pub struct RandomSource {
    kind: QuantKind,
    opts: QuantOptions,
    rng: rand::rngs::StdRng,
    std: f32,
    seed: u64,
    count: u64,
}

impl RandomSource {
    pub fn new(kind: QuantKind, opts: QuantOptions, seed: u64, std: f32) -> Self {
        use rand::SeedableRng;
        RandomSource { kind, opts, rng: rand::rngs::StdRng::seed_from_u64(seed), std, seed, count: 0 }
    }

    /// A distinct seed for each parameter.
    fn next_seed(&mut self) -> u64 {
        self.count += 1;
        self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(self.count)
    }

    fn normal(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        use rand::Rng;
        (0..n)
            .map(|_| {
                // Box-Muller: enough for synthetic weights.
                let u1: f32 = self.rng.gen_range(f32::EPSILON..1.0);
                let u2: f32 = self.rng.gen();
                mean + std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect()
    }
}

impl<B: Backend> ParamSource<B> for RandomSource {
    fn linear(&mut self, backend: &B, _name: &str, dims: (usize, usize), role: Role) -> Result<B::Linear> {
        let target = if role == Role::Block { self.kind } else { dense_kind(self.kind) };
        let seed = self.next_seed();
        let format = peregrine_core::SyntheticFormat {
            kind: target,
            blocksize: self.opts.blocksize,
            double_quant: self.opts.double_quant,
            int8_threshold: self.opts.int8_threshold,
        };
        if let Some(w) = backend.synthetic_linear(&format, dims.0, dims.1, self.std, seed)? {
            return Ok(w);
        }
        let values = self.normal(dims.0 * dims.1, 0.0, self.std);
        let t = HostTensor::from_f32(vec![dims.0, dims.1], &values).cast(DType::BF16);
        let w = if target.is_quantized() {
            peregrine_quant::quantize_linear(&t, target, &self.opts)?
        } else {
            LinearWeight::Dense(t.cast(dense_dtype(target)))
        };
        backend.load_linear(w)
    }

    fn vector(&mut self, backend: &B, _name: &str, len: usize, kind: VectorKind) -> Result<B::Buf> {
        let (mean, std) = match kind {
            VectorKind::NormWeight => (1.0, 0.1),
            VectorKind::NormBias | VectorKind::LinearBias => (0.0, 0.02),
        };
        let seed = self.next_seed();
        if let Some(v) = backend.synthetic_vector(len, mean, std, seed)? {
            return Ok(v);
        }
        let values = self.normal(len, mean, std);
        backend.load_vector(&HostTensor::from_f32(vec![len], &values))
    }
}

/// The bytes the stored format of an (N, K) linear takes (what `LinearWeight::stored_bytes`
/// gives for it): the figure a backend's resident size is checked against.
pub fn linear_format_bytes(kind: QuantKind, n: usize, k: usize, opts: &QuantOptions) -> u64 {
    let (nk, n) = ((n * k) as u64, n as u64);
    match kind {
        QuantKind::F32 => 4 * nk,
        QuantKind::F16 | QuantKind::Bf16 => 2 * nk,
        QuantKind::Int8 => nk + 4 * n,
        QuantKind::Nf4 | QuantKind::Fp4 => {
            let blocks = nk.div_ceil(opts.blocksize as u64);
            let scales = match opts.double_quant {
                true => blocks + 4 * blocks.div_ceil(opts.nested_blocksize as u64) + 4 * 256 + 4,
                false => 4 * blocks,
            };
            nk.div_ceil(2) + scales + 4 * 16
        }
    }
}

/// Format bytes of every linear of a model (block linears in `kind`, embedding and head dense).
pub fn model_format_bytes(c: &crate::FalconConfig, kind: QuantKind, opts: &QuantOptions) -> (u64, u64) {
    let d = c.hidden_size;
    let shapes = [(c.qkv_width(), d), (d, c.n_head * c.head_dim), (c.ffn_hidden_size, d), (d, c.ffn_hidden_size)];
    let blocks: u64 = c.n_layer as u64 * shapes.iter().map(|&(n, k)| linear_format_bytes(kind, n, k, opts)).sum::<u64>();
    let heads = if c.tie_word_embeddings { 1 } else { 2 };
    let dense = heads * linear_format_bytes(dense_kind(kind), c.vocab_size, d, opts);
    (blocks, dense)
}
