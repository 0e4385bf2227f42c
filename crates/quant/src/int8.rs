//! LLM.int8 row-wise quantization as bitsandbytes 0.50 runs it on CUDA
//! (`int8_vectorwise_quant` -> `kInt8VectorQuant`), for weights (`Int8Params`) and for
//! activations (the input side of `MatMul8bitLt`), plus `int8_vectorwise_dequant`.
//!
//! Legend: R = rows (N for weights, T for activations), C = columns (K).
//!
//! Key design choice: the input is first rounded to f16 (bitsandbytes casts both weights
//! and activations with `.to(torch.float16)` before quantizing), row statistics are f16
//! values, and codes are `__float2int_rn(x * __fdividef(127, absmax))`.

use crate::fastmath::{fdividef, float2int_rn, mul_ftz};
use rayon::prelude::*;

/// `int8_vectorwise_dequant`'s constant: `7.874015718698502e-3` as an f32 (1/127).
#[allow(clippy::excessive_precision)] // bitsandbytes' literal, digit for digit
pub const INV_127: f32 = 7.874_015_718_698_502e-3;

/// `kdequant_mm_int32_fp16`'s `MM_DEQUANT_CONST` (about 1/127^2).
pub const MM_DEQUANT_CONST: f32 = 6.200_012e-5;

/// Round to the nearest f16 value, ties to even (as `.to(torch.float16)` does), returned
/// as f32; equal to `half::f16::from_f32(x).to_f32()` but branch-light on the common path.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    let a = x.abs();
    if (F16_MIN_NORMAL..F16_OVERFLOW).contains(&a) {
        // Keep 11 significant bits: add just under half an f16 ulp (plus the kept lsb for ties).
        let b = x.to_bits();
        f32::from_bits((b + 0x0FFF + ((b >> 13) & 1)) & !0x1FFF)
    } else if a < F16_MIN_NORMAL {
        // f16 subnormals are the multiples of 2^-24.
        (x * 16_777_216.0).round_ties_even() * (1.0 / 16_777_216.0)
    } else if a.is_nan() {
        x
    } else {
        f32::INFINITY.copysign(x)
    }
}

/// f16's smallest normal value, 2^-14.
const F16_MIN_NORMAL: f32 = 6.103_515_6e-5;
/// The smallest magnitude that rounds to f16 infinity (halfway between 65504 and 65536).
const F16_OVERFLOW: f32 = 65_520.0;

/// The result of row-wise int8 quantization of an (R, C) matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct RowQuant {
    /// (R, C) codes.
    pub codes: Vec<i8>,
    /// (R,) absmax of each row's f16 values (outliers excluded under a threshold).
    pub stats: Vec<f32>,
    /// Columns holding any |x| >= threshold, ascending; empty without a threshold.
    pub outlier_cols: Vec<usize>,
}

/// `int8_vectorwise_quant(A.to(float16), threshold)` for an (R, C) row-major matrix.
///
/// Without a threshold: `stats[r] = max |x|`, `codes = round(x * 127 / stats[r])`.
/// With one (`t > 0`): columns with any `|x| >= t` are outlier columns; each row's absmax
/// skips only that row's own outliers (a value of an outlier column below `t` still
/// counts, as in the kernel), and outlier columns are zeroed in every row.
pub fn quantize_rows(values: &[f32], rows: usize, cols: usize, threshold: Option<f32>) -> RowQuant {
    let xh: Vec<f32> = values.par_iter().map(|&v| round_f16(v)).collect();
    // The kernel compares in half: `absval < T(threshold)`.
    let t = threshold.filter(|&t| t > 0.0).map(round_f16);
    let keep = |v: f32| t.is_none_or(|t| v.abs() < t);
    let mut codes = vec![0i8; rows * cols];
    let mut stats = vec![0.0f32; rows];
    codes.par_chunks_mut(cols.max(1)).zip(stats.par_iter_mut()).zip(xh.par_chunks(cols.max(1))).for_each(
        |((codes, stat), row)| {
            let absmax = row.iter().filter(|&&v| keep(v)).fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = fdividef(127.0, absmax);
            for (c, &v) in codes.iter_mut().zip(row) {
                *c = if keep(v) { float2int_rn(mul_ftz(v, scale)).clamp(-128, 127) as i8 } else { 0 };
            }
            *stat = absmax;
        },
    );
    let outlier_cols = match t {
        Some(t) => outlier_columns(&xh, rows, cols, t),
        None => Vec::new(),
    };
    for r in 0..rows {
        for &c in &outlier_cols {
            codes[r * cols + c] = 0;
        }
    }
    RowQuant { codes, stats, outlier_cols }
}

/// Columns of the (R, C) matrix holding any |x| >= t.
fn outlier_columns(xh: &[f32], rows: usize, cols: usize, t: f32) -> Vec<usize> {
    (0..cols).filter(|&c| (0..rows).any(|r| xh[r * cols + c].abs() >= t)).collect()
}

/// `int8_vectorwise_dequant(CB, SCB)` for one value: `(cb * scb) * (1/127)` in f32.
#[inline]
pub fn dequant_value(cb: i8, scb: f32) -> f32 {
    (cb as f32 * scb) * INV_127
}

/// `kdequant_mm_int32_fp16` before its f16 rounding: `fmaf(acc * row * col, C, 0)`.
#[inline]
pub fn dequant_product(acc: i32, row_stat: f32, col_stat: f32) -> f32 {
    (acc as f32 * row_stat * col_stat) * MM_DEQUANT_CONST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_f16_equals_half_crate() {
        let mut probes: Vec<f32> = vec![0.0, -0.0, f32::NAN, f32::INFINITY, 65504.0, 65519.99, 65520.0, 65536.0, 1e-8];
        for edge in [F16_MIN_NORMAL, F16_OVERFLOW, 2.98e-8, 1.0, 2048.0] {
            let b = edge.to_bits();
            probes.extend((b - 5000..b + 5000).map(f32::from_bits));
        }
        probes.extend((0..1_000_000u32).map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B1))));
        for x in probes {
            let want = half::f16::from_f32(x).to_f32();
            let got = round_f16(x);
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{x:e}: {got:e} vs {want:e}");
        }
    }

    #[test]
    fn row_quant_rounds_half_to_even_and_keeps_f16_stats() {
        let q = quantize_rows(&[2.0, -1.0, 1.0 / 254.0 * 2.0, 0.0], 1, 4, None);
        assert_eq!(q.stats, vec![2.0]);
        assert_eq!(q.codes, vec![127, -64, 0, 0]); // -63.5 -> -64, 0.5 -> 0
    }

    #[test]
    fn outlier_columns_are_zeroed_in_every_row_but_counted_in_other_rows_stats() {
        // Column 1 is an outlier column because of row 0; row 1's 3.0 there still sets its absmax.
        let x = [1.0, 8.0, 0.5, 3.0];
        let q = quantize_rows(&x, 2, 2, Some(6.0));
        assert_eq!(q.outlier_cols, vec![1]);
        assert_eq!(q.stats, vec![1.0, 3.0]);
        assert_eq!(q.codes, vec![127, 0, 21, 0]);
    }
}
