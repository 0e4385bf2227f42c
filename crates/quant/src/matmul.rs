//! CPU reference matmuls `out (T, N) = x (T, K) · W^T` for every weight format: the oracle
//! the CUDA kernels and the CPU backend are tested against.
//!
//! Legend: T = rows of x (tokens), K = input features, N = output features.
//!
//! Key design choice: one driver for all formats. Work is split over chunks of weight rows
//! (rayon); each chunk decodes its rows to f32 once (exactly as `dequantize` does) and then
//! takes f32 dot products with every row of x, so 4-bit and int8 weights cost one decode
//! per call and no (N, K) f32 copy is ever materialised.
//!
//! Int8 weights with `threshold: None` are weight-only: `(CB * SCB) * (1/127)` in f32, then
//! an f32 matmul. With `Some(t)` this follows bitsandbytes 0.50's `MatMul8bitLt.forward` /
//! `int8_mixed_scaled_mm` on CUDA (`t <= 0` is bitsandbytes' `threshold=0.0`: int8
//! activations with no outlier columns):
//! 1. x is rounded to f16; columns holding any |x| >= t are outlier columns.
//! 2. Row-wise int8 quantization of x (`crate::int8::quantize_rows`): per-row absmax over
//!    the values below t, codes `round_half_even(x * 127/absmax)`, outlier columns zeroed.
//! 3. An exact i32 product of those codes with CB, rescaled as `kdequant_mm_int32_fp16`
//!    does: `(acc * SCA[t] * SCB[n]) * 6.200012e-5` in f32.
//! 4. Plus the outlier columns in float: x (as given, not f16-rounded) times the
//!    dequantized weight columns `(CB * SCB) * (1/127)`.
//!
//! Where this reference differs on purpose: the result stays f32 (bitsandbytes rounds the
//! int8 part to f16 and then to the activation dtype, and its outlier weight columns to the
//! activation dtype), and the f32 sums are taken in this code's own order.

use crate::blockwise::{dequantize_4bit_range, restore_absmax};
use crate::int8::{dequant_product, dequant_value, quantize_rows};
use peregrine_core::{Error, FourBitWeight, Int8Weight, LinearWeight, Result};
use rayon::prelude::*;

/// Weight rows decoded per unit of parallel work.
const ROWS_PER_CHUNK: usize = 8;

/// `out (rows, N) = x (rows, K) · W^T` in f32 for any weight format (see the module doc
/// for LLM.int8 with a threshold). Errors when the slice lengths do not match the shapes.
pub fn matmul(x: &[f32], rows: usize, w: &LinearWeight, out: &mut [f32]) -> Result<()> {
    let (n, k) = w.dims();
    if x.len() != rows * k || out.len() != rows * n {
        return Err(Error::input(format!(
            "matmul: x has {} values and out {}, expected ({rows}, {k}) and ({rows}, {n}) for a ({n}, {k}) weight",
            x.len(),
            out.len()
        )));
    }
    match w {
        LinearWeight::Int8(q) if q.threshold.is_some() => int8_mixed(x, rows, q, out),
        LinearWeight::Int8(q) => float_matmul(x, rows, n, k, out, |r0, buf| decode_int8_rows(q, r0, buf)),
        LinearWeight::FourBit(q) => {
            let absmax = restore_absmax(&q.absmax);
            float_matmul(x, rows, n, k, out, |r0, buf| decode_4bit_rows(q, &absmax, r0, buf))
        }
        LinearWeight::Dense(t) => {
            float_matmul(x, rows, n, k, out, |r0, buf| decode_dense_rows(&t.bytes, t.dtype, r0 * k, buf))
        }
    }
    Ok(())
}

/// The shared driver: `decode(first_row, buf)` fills `buf` with whole weight rows in f32.
fn float_matmul<F>(x: &[f32], rows: usize, n: usize, k: usize, out: &mut [f32], decode: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let chunks: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(ROWS_PER_CHUNK))
        .into_par_iter()
        .map(|c| {
            let r0 = c * ROWS_PER_CHUNK;
            let nr = ROWS_PER_CHUNK.min(n - r0);
            let mut wbuf = vec![0.0f32; nr * k];
            decode(r0, &mut wbuf);
            let mut part = vec![0.0f32; rows * nr]; // (T, nr)
            for t in 0..rows {
                let xr = &x[t * k..(t + 1) * k];
                for j in 0..nr {
                    part[t * nr + j] = dot(xr, &wbuf[j * k..(j + 1) * k]);
                }
            }
            (r0, part)
        })
        .collect();
    scatter(chunks, rows, n, out);
}

/// Copy per-chunk (T, nr) results into out (T, N).
fn scatter(chunks: Vec<(usize, Vec<f32>)>, rows: usize, n: usize, out: &mut [f32]) {
    for (r0, part) in chunks {
        let nr = part.len() / rows.max(1);
        for t in 0..rows {
            out[t * n + r0..t * n + r0 + nr].copy_from_slice(&part[t * nr..(t + 1) * nr]);
        }
    }
}

/// f32 dot product with eight independent accumulators (vectorises).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn decode_dense_rows(bytes: &[u8], dtype: peregrine_core::DType, start: usize, buf: &mut [f32]) {
    let size = dtype.size();
    let slice = &bytes[start * size..(start + buf.len()) * size];
    buf.copy_from_slice(&peregrine_core::dtype::to_f32(dtype, slice));
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

/// LLM.int8 mixed decomposition (module doc, steps 1-4).
fn int8_mixed(x: &[f32], rows: usize, q: &Int8Weight, out: &mut [f32]) {
    let (n, k) = (q.rows, q.cols);
    let xq = quantize_rows(x, rows, k, q.threshold);
    let outliers = &xq.outlier_cols;
    let chunks: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(ROWS_PER_CHUNK))
        .into_par_iter()
        .map(|c| {
            let r0 = c * ROWS_PER_CHUNK;
            let nr = ROWS_PER_CHUNK.min(n - r0);
            let mut part = vec![0.0f32; rows * nr];
            for j in 0..nr {
                let cb = &q.cb[(r0 + j) * k..(r0 + j + 1) * k];
                let scb = q.scb[r0 + j];
                let w_out: Vec<f32> = outliers.iter().map(|&col| dequant_value(cb[col], scb)).collect();
                for t in 0..rows {
                    let acc = int_dot(&xq.codes[t * k..(t + 1) * k], cb);
                    let xr = &x[t * k..(t + 1) * k];
                    let outlier_part: f32 = outliers.iter().zip(&w_out).map(|(&col, &w)| xr[col] * w).sum();
                    part[t * nr + j] = dequant_product(acc, xq.stats[t], scb) + outlier_part;
                }
            }
            (r0, part)
        })
        .collect();
    scatter(chunks, rows, n, out);
}

/// Exact i32 dot product of two int8 vectors.
#[inline]
fn int_dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}
