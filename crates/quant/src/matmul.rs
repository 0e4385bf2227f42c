//! CPU reference matmuls `out (T, N) = x (T, K) · W^T` for every weight format: the oracle
//! the CUDA kernels and the CPU backend are tested against.
//!
//! Legend: T = rows of x (tokens), K = input features, N = output features, R = weight rows
//! in one chunk.
//!
//! Key design choice: one driver for all formats. Work is split over chunks of R weight
//! rows (rayon); each chunk decodes its rows to f32 exactly as `dequantize` does and
//! multiplies them with the `gemm` crate, so 4-bit and int8 weights cost one decode per
//! call and no (N, K) f32 copy is ever materialised.
//!
//! Int8 weights with `threshold: None` (or `Some(t)` with `t <= 0`, as in the CUDA backend)
//! are weight-only: `(CB * SCB) * (1/127)` in f32, then an f32 matmul. With `Some(t)`,
//! `t > 0`, `matmul` runs `int8_mixed_matmul`, which follows bitsandbytes 0.50's
//! `MatMul8bitLt.forward` / `int8_mixed_scaled_mm` on CUDA (called directly with `t <= 0` it
//! is bitsandbytes' `threshold=0.0`: int8 activations with no outlier columns):
//! 1. x is rounded to f16; columns holding any |x| >= t are outlier columns.
//! 2. Row-wise int8 quantization of x (`crate::int8::quantize_rows`): per-row absmax over
//!    the values below t, codes `round_half_even(x * 127/absmax)` with bitsandbytes'
//!    fast-math division, outlier columns zeroed.
//! 3. The exact integer product of those codes with CB (computed as an f64 GEMM, which is
//!    exact for integers below 2^53), rescaled as `kdequant_mm_int32_fp16` does:
//!    `(acc * SCA[t] * SCB[n]) * 6.200012e-5` in f32.
//! 4. Plus the outlier columns in float: x (as given, not f16-rounded) times the
//!    dequantized weight columns `(CB * SCB) * (1/127)`.
//!
//! Where this reference differs on purpose: the result stays f32 (bitsandbytes rounds the
//! int8 part to f16 and then to the activation dtype, its outlier weight columns to the
//! activation dtype, and multiplies 4-bit weights after casting them to the compute
//! dtype), and f32 sums are taken in `gemm`'s order.

use crate::blockwise::{dequantize_4bit_range, restore_absmax};
use crate::int8::{dequant_product, dequant_value, quantize_rows};
use peregrine_core::{DType, Error, FourBitWeight, Int8Weight, LinearWeight, Result};
use rayon::prelude::*;

/// Decoded weight values per unit of parallel work (about 256 KiB of f32).
const CHUNK_VALUES: usize = 1 << 16;

/// `out (rows, N) = x (rows, K) · W^T` in f32 for any weight format (see the module doc
/// for int8). Errors when the slice lengths do not match the shapes.
pub fn matmul(x: &[f32], rows: usize, w: &LinearWeight, out: &mut [f32]) -> Result<()> {
    let (n, k) = w.dims();
    if x.len() != rows * k || out.len() != rows * n {
        return Err(Error::input(format!(
            "matmul: x has {} values and out {}, expected ({rows}, {k}) and ({rows}, {n}) for a ({n}, {k}) weight",
            x.len(),
            out.len()
        )));
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    match w {
        LinearWeight::Int8(q) if q.threshold.is_some_and(|t| t > 0.0) => {
            int8_mixed_matmul(x, rows, q, q.threshold.unwrap_or(0.0), out)
        }
        LinearWeight::Int8(q) => float_matmul(x, rows, n, k, out, |r0, buf| decode_int8_rows(q, r0, buf)),
        LinearWeight::FourBit(q) => {
            let absmax = restore_absmax(&q.absmax);
            float_matmul(x, rows, n, k, out, |r0, buf| decode_4bit_rows(q, &absmax, r0, buf))
        }
        LinearWeight::Dense(t) => float_matmul(x, rows, n, k, out, |r0, buf| decode_dense(&t.bytes, t.dtype, r0 * k, buf)),
    }
    Ok(())
}

/// Weight rows per chunk for inner dimension k.
fn rows_per_chunk(k: usize) -> usize {
    (CHUNK_VALUES / k.max(1)).clamp(4, 256)
}

/// The shared driver: `decode(first_row, buf)` fills `buf` (R, K) with whole weight rows in f32.
fn float_matmul<F>(x: &[f32], rows: usize, n: usize, k: usize, out: &mut [f32], decode: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let per = rows_per_chunk(k);
    let parts: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(per))
        .into_par_iter()
        .map(|c| {
            let r0 = c * per;
            let nr = per.min(n - r0);
            let mut wbuf = vec![0.0f32; nr * k];
            decode(r0, &mut wbuf);
            let mut part = vec![0.0f32; rows * nr]; // (T, R)
            gemm_xwt(x, rows, k, &wbuf, nr, &mut part);
            (r0, part)
        })
        .collect();
    scatter(parts, rows, n, out);
}

/// The float types the chunks are multiplied in: f32, and f64 for exact integer products.
trait GemmScalar: Copy + 'static {
    const ZERO: Self;
    const ONE: Self;
}
impl GemmScalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
impl GemmScalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// `part (T, R) = x (T, K) · w (R, K)^T`, single-threaded (the caller parallelises over
/// chunks).
fn gemm_xwt<T: GemmScalar>(x: &[T], rows: usize, k: usize, w: &[T], nr: usize, part: &mut [T]) {
    assert!(x.len() >= rows * k && w.len() >= nr * k && part.len() >= rows * nr);
    // SAFETY: the assert above bounds every index gemm touches: dst (T, R) with row stride
    // R, lhs x (T, K) with row stride K, rhs = w^T (K, R) read from w with column stride K.
    unsafe {
        gemm::gemm(
            rows,
            nr,
            k,
            part.as_mut_ptr(),
            1,
            nr as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Copy per-chunk (T, R) results into out (T, N).
fn scatter(parts: Vec<(usize, Vec<f32>)>, rows: usize, n: usize, out: &mut [f32]) {
    for (r0, part) in parts {
        let nr = part.len() / rows;
        for t in 0..rows {
            out[t * n + r0..t * n + r0 + nr].copy_from_slice(&part[t * nr..(t + 1) * nr]);
        }
    }
}

/// Dense weights from their stored dtype, `buf.len()` values from element `start`.
fn decode_dense(bytes: &[u8], dtype: DType, start: usize, buf: &mut [f32]) {
    let size = dtype.size();
    let src = &bytes[start * size..(start + buf.len()) * size];
    match dtype {
        DType::BF16 => {
            for (o, b) in buf.iter_mut().zip(src.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        DType::F32 => {
            for (o, b) in buf.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        _ => buf.copy_from_slice(&peregrine_core::dtype::to_f32(dtype, src)),
    }
}

fn decode_int8_rows(q: &Int8Weight, r0: usize, buf: &mut [f32]) {
    let k = q.cols;
    for (j, row) in buf.chunks_mut(k).enumerate() {
        let scb = q.scb[r0 + j];
        let cb = &q.cb[(r0 + j) * k..(r0 + j + 1) * k];
        for (o, &c) in row.iter_mut().zip(cb) {
            *o = dequant_value(c, scb);
        }
    }
}

fn decode_4bit_rows(q: &FourBitWeight, absmax: &[f32], r0: usize, buf: &mut [f32]) {
    dequantize_4bit_range(&q.packed, absmax, q.blocksize, q.format, r0 * q.cols, buf);
}

/// bitsandbytes' LLM.int8 matmul with outlier threshold `threshold` (module doc, steps
/// 1-4; `threshold <= 0`: int8 activations without outlier columns), whatever
/// `q.threshold` says. `x` is (rows, K), `out` (rows, N); the caller checks the lengths.
pub fn int8_mixed_matmul(x: &[f32], rows: usize, q: &Int8Weight, threshold: f32, out: &mut [f32]) {
    let (n, k) = (q.rows, q.cols);
    assert!(x.len() == rows * k && out.len() == rows * n, "int8_mixed_matmul: shapes");
    let xq = quantize_rows(x, rows, k, Some(threshold));
    let codes: Vec<f64> = xq.codes.iter().map(|&c| c as f64).collect();
    let outliers = &xq.outlier_cols;
    let per = rows_per_chunk(k);
    let parts: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(per))
        .into_par_iter()
        .map(|c| {
            let r0 = c * per;
            let nr = per.min(n - r0);
            let cb: Vec<f64> = q.cb[r0 * k..(r0 + nr) * k].iter().map(|&v| v as f64).collect();
            let mut acc = vec![0.0f64; rows * nr];
            gemm_xwt(&codes, rows, k, &cb, nr, &mut acc); // exact: integers below 2^53
            let mut part = vec![0.0f32; rows * nr];
            for j in 0..nr {
                let scb = q.scb[r0 + j];
                let w_out: Vec<f32> = outliers.iter().map(|&col| dequant_value(q.cb[(r0 + j) * k + col], scb)).collect();
                for t in 0..rows {
                    let outlier_part: f32 = outliers.iter().zip(&w_out).map(|(&col, &w)| x[t * k + col] * w).sum();
                    part[t * nr + j] = dequant_product(acc[t * nr + j] as i32, xq.stats[t], scb) + outlier_part;
                }
            }
            (r0, part)
        })
        .collect();
    scatter(parts, rows, n, out);
}
