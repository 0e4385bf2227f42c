//! The stored formats of a linear layer's weights, as data. The algorithms that produce
//! and undo them (bitsandbytes-compatible quantization) live in `peregrine-quant`; the
//! backends consume these structs in `Backend::load_linear`.
//!
//! Legend: N = output features (rows), K = input features (cols).

use std::str::FromStr;

/// What `--quant` asks for: a dense dtype or a quantized format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantKind {
    F32,
    F16,
    Bf16,
    Int8,
    Nf4,
    Fp4,
}

impl QuantKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [QuantKind; 6] =
        [QuantKind::Bf16, QuantKind::F16, QuantKind::F32, QuantKind::Int8, QuantKind::Nf4, QuantKind::Fp4];

    /// The flag spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantKind::F32 => "f32",
            QuantKind::F16 => "f16",
            QuantKind::Bf16 => "bf16",
            QuantKind::Int8 => "int8",
            QuantKind::Nf4 => "nf4",
            QuantKind::Fp4 => "fp4",
        }
    }

    /// True for int8, nf4 and fp4.
    pub fn is_quantized(self) -> bool {
        matches!(self, QuantKind::Int8 | QuantKind::Nf4 | QuantKind::Fp4)
    }
}

impl std::fmt::Display for QuantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QuantKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        QuantKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| crate::Error::input(format!("unknown quantization `{s}`: expected one of bf16, f16, f32, int8, nf4, fp4")))
    }
}

/// LLM.int8 weights as bitsandbytes stores them: per output row `scb = max|W_row|`,
/// `cb = round(W * 127 / scb)`.
#[derive(Clone, Debug)]
pub struct Int8Weight {
    pub rows: usize,
    pub cols: usize,
    /// (N, K) row-major.
    pub cb: Vec<i8>,
    /// (N,) per-row absmax.
    pub scb: Vec<f32>,
    /// Outlier threshold for the mixed-precision decomposition; `None` = weight-only.
    pub threshold: Option<f32>,
}

/// The two 4-bit code books of bitsandbytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FourBitFormat {
    Nf4,
    Fp4,
}

impl FourBitFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            FourBitFormat::Nf4 => "nf4",
            FourBitFormat::Fp4 => "fp4",
        }
    }
}

/// Per-block scales of a 4-bit weight: plain f32, or double-quantized (bitsandbytes'
/// `compress_statistics`): `absmax[i] = code[q[i]] * nested_absmax[i / nested_blocksize] + offset`.
#[derive(Clone, Debug)]
pub enum Absmax {
    Plain(Vec<f32>),
    Double {
        /// (blocks,) 8-bit indices into `code`.
        quantized: Vec<u8>,
        /// (256,) bitsandbytes' signed dynamic map.
        code: Vec<f32>,
        /// (blocks / nested_blocksize rounded up,) f32.
        nested_absmax: Vec<f32>,
        nested_blocksize: usize,
        /// The mean subtracted before quantizing.
        offset: f32,
    },
}

impl Absmax {
    /// Number of blocks described.
    pub fn len(&self) -> usize {
        match self {
            Absmax::Plain(v) => v.len(),
            Absmax::Double { quantized, .. } => quantized.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes these scales occupy.
    pub fn bytes(&self) -> usize {
        match self {
            Absmax::Plain(v) => 4 * v.len(),
            Absmax::Double { quantized, code, nested_absmax, .. } => {
                quantized.len() + 4 * code.len() + 4 * nested_absmax.len() + 4
            }
        }
    }
}

/// A bitsandbytes 4-bit weight (NF4 or FP4): the row-major flattened (N, K) weight in
/// blocks of `blocksize`, two codes per byte, first element in the high nibble.
#[derive(Clone, Debug)]
pub struct FourBitWeight {
    pub rows: usize,
    pub cols: usize,
    pub format: FourBitFormat,
    /// The dtype of the weight that was quantized (bitsandbytes' `quant_state.dtype`:
    /// "bfloat16" for a bf16 model); bitsandbytes dequantizes back to it.
    pub dtype: crate::DType,
    pub blocksize: usize,
    /// (N*K/2,) packed codes.
    pub packed: Vec<u8>,
    pub absmax: Absmax,
    /// (16,) the code book (`quant_map`).
    pub code: Vec<f32>,
}

/// A linear layer's weights in the form the loader produced.
#[derive(Clone, Debug)]
pub enum LinearWeight {
    /// (N, K) in its stored float dtype.
    Dense(crate::HostTensor),
    Int8(Int8Weight),
    FourBit(FourBitWeight),
}

impl LinearWeight {
    /// (N, K).
    pub fn dims(&self) -> (usize, usize) {
        match self {
            LinearWeight::Dense(t) => t.dims2(),
            LinearWeight::Int8(w) => (w.rows, w.cols),
            LinearWeight::FourBit(w) => (w.rows, w.cols),
        }
    }

    /// The bytes this format stores (what a backend keeps resident).
    pub fn stored_bytes(&self) -> usize {
        match self {
            LinearWeight::Dense(t) => t.bytes.len(),
            LinearWeight::Int8(w) => w.cb.len() + 4 * w.scb.len(),
            LinearWeight::FourBit(w) => w.packed.len() + w.absmax.bytes() + 4 * w.code.len(),
        }
    }
}
