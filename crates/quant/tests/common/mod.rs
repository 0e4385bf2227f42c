//! Helpers shared by the integration tests: shared-asset paths, a safetensors reader
//! into `HostTensor`s, and a small deterministic random generator.
#![allow(dead_code)]

use peregrine_core::{DType, HostTensor};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A path under the shared assets (`../shared/assets` beside the checkout).
pub fn asset(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/assets/")).join(rel)
}

/// Every tensor of a safetensors file, by name. Panics naming the file when it is absent.
pub fn load_safetensors(path: &std::path::Path) -> BTreeMap<String, HostTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (shared assets missing?)", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::I8 => DType::I8,
                safetensors::Dtype::U8 => DType::U8,
                safetensors::Dtype::I32 => DType::I32,
                safetensors::Dtype::I64 => DType::I64,
                safetensors::Dtype::F64 => DType::F64,
                other => panic!("{}: tensor `{name}` has unsupported dtype {other:?}", path.display()),
            };
            (name, HostTensor::new(view.shape().to_vec(), dtype, view.data().to_vec()))
        })
        .collect()
}

/// SplitMix64: deterministic test inputs without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Approximately normal (sum of 4 uniforms), mean 0, std about `std`.
    pub fn normal(&mut self, std: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0;
        s * std * 1.732
    }
}
