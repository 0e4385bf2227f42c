//! bitsandbytes-compatible int8, NF4 and FP4 quantization: pack, unpack, CPU reference
//! matmuls, and the checkpoint format transformers writes.
//!
//! The target is bitsandbytes 0.50.2 as it runs on CUDA, bit for bit:
//! - 4-bit (`Params4bit` / `quantize_4bit`): blocks of `blocksize` over the row-major
//!   flattened (N, K) weight; `absmax = max |w|` per block; each code is chosen by the
//!   CUDA kernel's decision tree on `w * (1/absmax)` computed in f32 from the weight's
//!   stored values (bf16 in a bf16 model); two codes per byte, first in the high nibble.
//!   Double quantization: `offset = mean(absmax)`, then `absmax - offset` in blocks of 256
//!   against the signed dynamic 8-bit map (`codebooks`, `blockwise`).
//! - int8 (`Int8Params`): the weight is cast to f16, `SCB = max |w_row|`,
//!   `CB = round_half_even(w * 127/SCB)` (`int8`).
//! - `dequantize` gives the f32 values bitsandbytes' dequantization computes before its
//!   cast to the compute dtype; `matmul` is the CPU reference (`matmul` module doc).
//!
//! Bit-exactness needs the GPU's arithmetic, emulated in `fastmath`: bitsandbytes' kernels
//! are built with `--use_fast_math`, so `1/absmax` and `127/absmax` use `MUFU.RCP`, which
//! is not correctly rounded (reproduced from a table measured on an H200), subnormals
//! flush to zero, and the double-quantization offset is torch's CUDA `mean` with its own
//! summation order. All of it is checked against real bitsandbytes output (tests/).
//!
//! Module map: `codebooks` (code books, code selection), `fastmath` (the GPU arithmetic
//! emulated), `blockwise` (4-bit and 8-bit blockwise), `int8` (LLM.int8 row quantization),
//! `matmul` (reference matmuls), `bnb` (checkpoint tensors), `config` (`quantization_config`).
//! `LinearWeight::stored_bytes` (core) is the resident size of every format as bitsandbytes
//! keeps it (codes, scales, maps and offset), so this crate adds no `resident_bytes`.

pub mod blockwise;
pub mod bnb;
pub mod codebooks;
pub mod config;
pub mod fastmath;
pub mod int8;
pub mod matmul;

pub use bnb::{bnb_linear_tensors, read_bnb_linear};
pub use config::BnbConfig;
pub use matmul::{int8_mixed_matmul, matmul};

use peregrine_core::{Absmax, DType, Error, FourBitFormat, FourBitWeight, HostTensor, Int8Weight, LinearWeight, QuantKind, Result};

/// How to quantize (bitsandbytes' defaults, as transformers uses them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantOptions {
    /// Elements per 4-bit block (bitsandbytes allows 32..=4096, powers of two). Default 64.
    pub blocksize: usize,
    /// Quantize the 4-bit absmax again (`compress_statistics`). Default true.
    pub double_quant: bool,
    /// Block size of that second quantization. Default 256 (fixed in bitsandbytes).
    pub nested_blocksize: usize,
    /// LLM.int8 outlier threshold for int8 matmuls (`Int8Weight::threshold`): `None` (or
    /// `t <= 0`) = weight-only int8 (f32 activations), `Some(t)` = bitsandbytes' int8
    /// activations with outlier columns at |x| >= t. Default `Some(6.0)`, transformers'
    /// `llm_int8_threshold`.
    pub int8_threshold: Option<f32>,
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions { blocksize: 64, double_quant: true, nested_blocksize: 256, int8_threshold: Some(6.0) }
    }
}

/// The block sizes bitsandbytes' CUDA kernels accept.
const VALID_BLOCKSIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Quantize a (N, K) float weight to `kind`: a dense cast for f32/f16/bf16, otherwise the
/// bitsandbytes result, bit for bit.
pub fn quantize_linear(w: &HostTensor, kind: QuantKind, opts: &QuantOptions) -> Result<LinearWeight> {
    if !w.dtype.is_float() || w.shape.len() != 2 || w.numel() == 0 {
        return Err(Error::input(format!(
            "quantize_linear needs a non-empty 2-D float weight, got {} {:?}",
            w.dtype, w.shape
        )));
    }
    Ok(match kind {
        QuantKind::F32 => LinearWeight::Dense(w.cast(DType::F32)),
        QuantKind::F16 => LinearWeight::Dense(w.cast(DType::F16)),
        QuantKind::Bf16 => LinearWeight::Dense(w.cast(DType::BF16)),
        QuantKind::Int8 => LinearWeight::Int8(quantize_int8(w, opts.int8_threshold)),
        QuantKind::Nf4 => LinearWeight::FourBit(quantize_four_bit(w, FourBitFormat::Nf4, opts)?),
        QuantKind::Fp4 => LinearWeight::FourBit(quantize_four_bit(w, FourBitFormat::Fp4, opts)?),
    })
}

fn quantize_int8(w: &HostTensor, threshold: Option<f32>) -> Int8Weight {
    let (rows, cols) = w.dims2();
    let q = int8::quantize_rows(&w.to_f32(), rows, cols, None);
    Int8Weight { rows, cols, cb: q.codes, scb: q.stats, threshold }
}

fn quantize_four_bit(w: &HostTensor, format: FourBitFormat, opts: &QuantOptions) -> Result<FourBitWeight> {
    let check = |what: &str, bs: usize| {
        if VALID_BLOCKSIZES.contains(&bs) {
            Ok(())
        } else {
            Err(Error::input(format!("{what} {bs} is not one of bitsandbytes' {VALID_BLOCKSIZES:?}")))
        }
    };
    check("blocksize", opts.blocksize)?;
    if opts.double_quant {
        check("nested blocksize", opts.nested_blocksize)?;
    }
    let (rows, cols) = w.dims2();
    let (packed, absmax) = blockwise::quantize_4bit(&w.to_f32(), opts.blocksize, format);
    let absmax = if opts.double_quant {
        blockwise::double_quantize(&absmax, opts.nested_blocksize)
    } else {
        Absmax::Plain(absmax)
    };
    Ok(FourBitWeight {
        rows,
        cols,
        format,
        dtype: w.dtype,
        blocksize: opts.blocksize,
        packed,
        absmax,
        code: bnb::quant_map(format),
    })
}

/// The (N*K) f32 values of `w`, row-major: dense weights converted, int8 as
/// `(CB * SCB) * (1/127)`, 4-bit as `code_value * absmax_block` with the absmax restored
/// from double quantization as bitsandbytes does (see `blockwise::restore_absmax`).
pub fn dequantize(w: &LinearWeight) -> Vec<f32> {
    match w {
        LinearWeight::Dense(t) => t.to_f32(),
        LinearWeight::Int8(q) => q
            .cb
            .iter()
            .enumerate()
            .map(|(i, &c)| int8::dequant_value(c, q.scb[i / q.cols.max(1)]))
            .collect(),
        LinearWeight::FourBit(q) => {
            let absmax = blockwise::restore_absmax(&q.absmax);
            let mut out = vec![0.0f32; q.rows * q.cols];
            blockwise::dequantize_4bit_range(&q.packed, &absmax, q.blocksize, q.format, 0, &mut out);
            out
        }
    }
}
