//! A tensor in host memory: a shape, an element type and little-endian bytes. This is
//! what the checkpoint loader hands to a backend, one tensor at a time.

use crate::dtype::{self, DType};

/// A host tensor holding raw bytes in its stored dtype (no upcast until asked).
#[derive(Clone, Debug)]
pub struct HostTensor {
    /// Dimensions, outermost first (row-major).
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// `numel * dtype.size()` little-endian bytes.
    pub bytes: Vec<u8>,
}

impl HostTensor {
    /// A tensor from raw bytes; `bytes.len()` must equal `numel * dtype.size()`.
    pub fn new(shape: Vec<usize>, dtype: DType, bytes: Vec<u8>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>() * dtype.size(), bytes.len());
        HostTensor { shape, dtype, bytes }
    }

    /// An f32 tensor from values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        HostTensor::new(shape, DType::F32, dtype::from_f32(DType::F32, values))
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values converted to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        dtype::to_f32(self.dtype, &self.bytes)
    }

    /// The same values stored as `dtype` (floating types only).
    pub fn cast(&self, dtype: DType) -> HostTensor {
        if dtype == self.dtype {
            return self.clone();
        }
        HostTensor::new(self.shape.clone(), dtype, dtype::from_f32(dtype, &self.to_f32()))
    }

    /// (rows, cols) of a 2-D tensor.
    pub fn dims2(&self) -> (usize, usize) {
        match self.shape.as_slice() {
            [r, c] => (*r, *c),
            _ => (self.numel(), 1),
        }
    }
}
