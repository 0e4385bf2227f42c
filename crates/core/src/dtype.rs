//! Element types found in checkpoints and used by backends, with their byte sizes and
//! the conversions to f32 the CPU oracle computes in.

use half::{bf16, f16};

/// An element type as stored in a checkpoint or a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I8,
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::U8 => 1,
        }
    }

    /// The name safetensors and transformers use ("BF16", "F32", ...).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I8 => "I8",
            DType::U8 => "U8",
        }
    }

    /// True for the floating-point types weights may be stored in.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.safetensors_name().to_ascii_lowercase())
    }
}

/// Decode little-endian `bytes` of element type `dtype` into f32 values.
/// Integer types convert by value. Panics only if `bytes.len()` is not a multiple of the
/// element size, which callers have already checked against the shape.
pub fn to_f32(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / dtype.size();
    let mut out = Vec::with_capacity(n);
    match dtype {
        DType::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()))),
        DType::F64 => out.extend(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)),
        DType::BF16 => out.extend(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        DType::F16 => out.extend(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
        DType::I64 => out.extend(bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)),
        DType::I32 => out.extend(bytes.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)),
        DType::I8 => out.extend(bytes.iter().map(|&b| b as i8 as f32)),
        DType::U8 => out.extend(bytes.iter().map(|&b| b as f32)),
    }
    out
}

/// Round an f32 to the nearest bf16 value (round to nearest even), returned as f32.
pub fn round_bf16(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

/// Encode f32 values as little-endian bytes of `dtype` (floating types only).
pub fn from_f32(dtype: DType, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    for &v in values {
        match dtype {
            DType::F32 => out.extend_from_slice(&v.to_le_bytes()),
            DType::F64 => out.extend_from_slice(&(v as f64).to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
            DType::F16 => out.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
            other => panic!("from_f32: {other} is not a floating type"),
        }
    }
    out
}
