//! Blockwise quantization as bitsandbytes' CUDA kernels do it: 4-bit (NF4/FP4) codes with
//! one f32 absmax per block, the 8-bit dynamic-map quantization of those absmax values
//! (double quantization) and the inverse of both.
//!
//! Legend: n = number of elements of the flattened (N, K) weight, B = blocks = ceil(n / blocksize).
//!
//! Key design choice: every step repeats the kernel's arithmetic in f32, including its
//! `--use_fast_math` behaviour (subnormals flushed to zero in `fabsf`, `fmaxf` and the
//! multiplies) and its scaling by a reciprocal (`x * (1/absmax)`, never `x / absmax`);
//! the reciprocal itself is computed as `crate::fastmath::rcp` does.

use crate::codebooks::{dynamic_map, nf4_value, fp4_value, quantize_dynamic, quantize_fp4, quantize_nf4};
use crate::fastmath::{abs_ftz, mul_ftz, rcp, torch_mean};
use peregrine_core::{Absmax, FourBitFormat};
use rayon::prelude::*;

/// Per-block absmax as `kQuantizeBlockwise` computes it: `fmaxf` over `fabsf` of the
/// block's values (a partial last block is padded with zeros, which cannot raise it).
pub fn block_absmax(values: &[f32], blocksize: usize) -> Vec<f32> {
    values
        .par_chunks(blocksize)
        .with_min_len(MIN_BLOCKS_PER_TASK)
        .map(|block| block.iter().fold(0.0f32, |m, &v| m.max(abs_ftz(v))))
        .collect()
}

/// Blocks per unit of parallel work (rayon).
const MIN_BLOCKS_PER_TASK: usize = 256;

/// Quantize `values` (n,) to packed 4-bit codes ((n+1)/2 bytes, first element in the high
/// nibble) and per-block absmax (B,). An odd n gets a final low nibble that encodes 0.0,
/// exactly as the kernel's zero padding does. `blocksize` must be even.
pub fn quantize_4bit(values: &[f32], blocksize: usize, format: FourBitFormat) -> (Vec<u8>, Vec<f32>) {
    assert!(blocksize & 1 == 0, "4-bit blocks hold whole bytes");
    let absmax = block_absmax(values, blocksize);
    let quantize: fn(f32) -> u8 = match format {
        FourBitFormat::Nf4 => quantize_nf4,
        FourBitFormat::Fp4 => quantize_fp4,
    };
    let mut packed = vec![0u8; values.len().div_ceil(2)];
    packed
        .par_chunks_mut(blocksize / 2)
        .zip(values.par_chunks(blocksize))
        .zip(absmax.par_iter())
        .with_min_len(MIN_BLOCKS_PER_TASK)
        .for_each(|((bytes, block), &absmax)| {
            let inv = rcp(absmax);
            let code = |v: f32| quantize(mul_ftz(v, inv));
            for (byte, pair) in bytes.iter_mut().zip(block.chunks(2)) {
                // The kernel loads the missing partner of an odd last element as 0.0.
                *byte = (code(pair[0]) << 4) | code(pair.get(1).copied().unwrap_or(0.0));
            }
        });
    (packed, absmax)
}

/// 8-bit blockwise quantization against the signed dynamic map (`quantize_blockwise`
/// with `code=None`): codes (n,) and per-block absmax (B,).
pub fn quantize_blockwise_8bit(values: &[f32], blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let code = dynamic_map();
    let absmax = block_absmax(values, blocksize);
    let mut out = Vec::with_capacity(values.len());
    for (b, block) in values.chunks(blocksize).enumerate() {
        let inv = rcp(absmax[b]);
        out.extend(block.iter().map(|&v| quantize_dynamic(&code, mul_ftz(v, inv))));
    }
    (out, absmax)
}

/// `quantize_4bit(compress_statistics=True)`'s second stage: `offset = absmax.mean()`
/// (torch's f32 CUDA mean), then `absmax - offset` quantized blockwise against the
/// dynamic map.
pub fn double_quantize(absmax: &[f32], nested_blocksize: usize) -> Absmax {
    let offset = torch_mean(absmax);
    let centred: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let (quantized, nested_absmax) = quantize_blockwise_8bit(&centred, nested_blocksize);
    Absmax::Double { quantized, code: dynamic_map().to_vec(), nested_absmax, nested_blocksize, offset }
}

/// The per-block f32 absmax a 4-bit weight is dequantized with: plain, or restored from
/// the double quantization as `dequantize_blockwise(...) + offset` (one f32 multiply in
/// the kernel, then one f32 add in torch).
pub fn restore_absmax(absmax: &Absmax) -> Vec<f32> {
    match absmax {
        Absmax::Plain(v) => v.clone(),
        Absmax::Double { quantized, code, nested_absmax, nested_blocksize, offset } => quantized
            .iter()
            .enumerate()
            .map(|(i, &q)| mul_ftz(code[q as usize], nested_absmax[i / nested_blocksize]) + offset)
            .collect(),
    }
}

/// The value of 4-bit `code` as the CUDA dequantization kernel decodes it (before scaling).
#[inline]
pub fn code_value(format: FourBitFormat, code: u8) -> f32 {
    match format {
        FourBitFormat::Nf4 => nf4_value(code),
        FourBitFormat::Fp4 => fp4_value(code),
    }
}

/// Dequantize elements `[start, start + out.len())` of a packed 4-bit weight into `out`:
/// `value(code) * absmax[block]` in f32, as `kDequantizeBlockwise` computes before its
/// cast to the output dtype. `absmax` is the restored per-block f32 absmax. Each block's
/// 16 scaled values are computed once and looked up (same products, fewer multiplies).
pub fn dequantize_4bit_range(
    packed: &[u8],
    absmax: &[f32],
    blocksize: usize,
    format: FourBitFormat,
    start: usize,
    out: &mut [f32],
) {
    let codes: [f32; 16] = std::array::from_fn(|c| code_value(format, c as u8));
    let (mut i, end) = (start, start + out.len());
    let mut out = out;
    while i < end {
        let block = i / blocksize;
        let block_end = ((block + 1) * blocksize).min(end);
        let scaled = codes.map(|c| mul_ftz(c, absmax[block]));
        let (seg, rest) = out.split_at_mut(block_end - i);
        decode_segment(packed, &scaled, i, seg);
        out = rest;
        i = block_end;
    }
}

/// Elements `[i, i + seg.len())` of one block through its scaled table.
fn decode_segment(packed: &[u8], scaled: &[f32; 16], i: usize, seg: &mut [f32]) {
    let mut seg = seg;
    let mut byte = i / 2;
    if i % 2 == 1 {
        seg[0] = scaled[(packed[byte] & 0xF) as usize];
        seg = &mut seg[1..];
        byte += 1;
    }
    let last_byte = byte + seg.len() / 2;
    let mut pairs = seg.chunks_exact_mut(2);
    for (pair, &b) in (&mut pairs).zip(&packed[byte..]) {
        pair[0] = scaled[(b >> 4) as usize];
        pair[1] = scaled[(b & 0xF) as usize];
    }
    if let [last] = pairs.into_remainder() {
        *last = scaled[(packed[last_byte] >> 4) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_length_pads_low_nibble_with_code_of_zero() {
        let (packed, absmax) = quantize_4bit(&[1.0, -1.0, 0.5], 64, FourBitFormat::Nf4);
        assert_eq!(absmax, vec![1.0]);
        assert_eq!(packed, vec![0xF0, (quantize_nf4(0.5) << 4) | 0b0111]);
        let (packed, _) = quantize_4bit(&[0.0, 0.0, 0.0], 64, FourBitFormat::Nf4);
        assert_eq!(packed, vec![0x00, 0x00], "an all-zero block scales by 1/0 and encodes NaN as code 0");
    }

    #[test]
    fn decoding_any_range_equals_decoding_everything() {
        let values: Vec<f32> = (0..301).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
        let (packed, absmax) = quantize_4bit(&values, 32, FourBitFormat::Fp4);
        let mut all = vec![0.0; 301];
        dequantize_4bit_range(&packed, &absmax, 32, FourBitFormat::Fp4, 0, &mut all);
        for (start, len) in [(0, 301), (1, 300), (31, 2), (33, 64), (300, 1), (63, 0)] {
            let mut part = vec![0.0; len];
            dequantize_4bit_range(&packed, &absmax, 32, FourBitFormat::Fp4, start, &mut part);
            assert_eq!(part, all[start..start + len], "start {start} len {len}");
        }
        for (i, v) in all.iter().enumerate() {
            let code = if i % 2 == 0 { packed[i / 2] >> 4 } else { packed[i / 2] & 0xF };
            assert_eq!(*v, mul_ftz(fp4_value(code), absmax[i / 32]));
        }
    }

    #[test]
    fn partial_last_block_has_its_own_absmax() {
        let values: Vec<f32> = (0..70).map(|i| i as f32).collect();
        let (_, absmax) = quantize_4bit(&values, 64, FourBitFormat::Fp4);
        assert_eq!(absmax, vec![63.0, 69.0]);
    }
}
