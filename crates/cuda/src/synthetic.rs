//! Synthetic weights made on the device, so a Falcon-40B or -180B shape can be benchmarked
//! without a download and without host memory: a counter-based normal generator in a kernel
//! (value i of a tensor depends only on (seed, i)), rounded to bf16 like a bf16 checkpoint, then
//! quantized on the device with bitsandbytes semantics (int8 row absmax; NF4/FP4 blockwise
//! absmax with nearest-code rounding; optional double quantization of the 4-bit scales with the
//! signed dynamic 8-bit map, blocks of 256, mean offset). 4-bit weights are then repacked into the
//! tensor-core tiles on the device, as loaded checkpoints are (`linear::four_bit`).

use half::bf16;
use peregrine_core::{DType, Error, FourBitFormat, QuantKind, Result};

use crate::alloc::DeviceBuffer;
use crate::device::{Args, Device, Grid};
use crate::linear::{CudaLinear, DeviceAbsmax, FourBitLinear};

/// How quantized synthetic weights are stored (defaults: the shared bitsandbytes checkpoints').
#[derive(Clone, Copy, Debug)]
pub struct SyntheticOptions {
    /// 4-bit block size (bitsandbytes default 64).
    pub blocksize: usize,
    /// Double-quantize the 4-bit scales (`bnb_4bit_use_double_quant`).
    pub double_quant: bool,
    /// LLM.int8 outlier threshold (transformers' default 6.0); None = weight-only.
    pub int8_threshold: Option<f32>,
}

impl Default for SyntheticOptions {
    fn default() -> Self {
        SyntheticOptions { blocksize: 64, double_quant: true, int8_threshold: Some(6.0) }
    }
}

/// The code book of a 4-bit format (bitsandbytes' `quant_map`, from peregrine-quant).
pub fn four_bit_code(format: FourBitFormat) -> Vec<f32> {
    peregrine_quant::bnb::quant_map(format)
}

/// The signed dynamic 8-bit map of the double-quantized scales (bitsandbytes' `nested_quant_map`).
pub fn dynamic_map_signed() -> Vec<f32> {
    peregrine_quant::bnb::nested_quant_map()
}

/// A bf16 buffer of `len` values normal(mean, std) from stream `seed`.
pub fn random_bf16(dev: &Device, len: usize, mean: f32, std: f32, seed: u64) -> Result<DeviceBuffer<bf16>> {
    let out = dev.alloc_uninit::<bf16>(len)?;
    let g = Grid::new((dev.blocks_for(len, 256), 1, 1), 256);
    // SAFETY: `out` holds `len` bf16.
    unsafe { dev.launch("random", "fill_normal_bf16", g, Args::new().ptr(out.ptr()).i64(len as i64).u64(seed).f32(mean).f32(std))? };
    Ok(out)
}

/// An (n, k) linear of normal(0, std) weights stored as `kind`.
pub fn random_linear(dev: &Device, kind: QuantKind, n: usize, k: usize, std: f32, seed: u64, opts: SyntheticOptions) -> Result<CudaLinear> {
    match kind {
        QuantKind::F32 | QuantKind::F16 | QuantKind::Bf16 => Ok(CudaLinear::Dense { w: random_bf16(dev, n * k, 0.0, std, seed)?, n, k }),
        QuantKind::Int8 => random_int8(dev, n, k, std, seed, opts.int8_threshold),
        QuantKind::Nf4 => random_four_bit(dev, FourBitFormat::Nf4, n, k, std, seed, opts),
        QuantKind::Fp4 => random_four_bit(dev, FourBitFormat::Fp4, n, k, std, seed, opts),
    }
}

fn random_int8(dev: &Device, n: usize, k: usize, std: f32, seed: u64, threshold: Option<f32>) -> Result<CudaLinear> {
    let cb = dev.alloc_uninit::<i8>(n * k)?;
    let scb = dev.alloc_uninit::<f32>(n)?;
    if n > 0 {
        let g = Grid::new((n as u32, 1, 1), 256);
        // SAFETY: cb holds n*k, scb n values; one block per row.
        unsafe { dev.launch("random", "random_int8", g, Args::new().ptr(cb.ptr()).ptr(scb.ptr()).i32(k as i32).u64(seed).f32(std))? };
    }
    Ok(CudaLinear::Int8 { cb, scb, threshold, n, k })
}

fn random_four_bit(dev: &Device, format: FourBitFormat, n: usize, k: usize, std: f32, seed: u64, opts: SyntheticOptions) -> Result<CudaLinear> {
    let bs = opts.blocksize;
    if k % 2 != 0 || bs == 0 || bs % 2 != 0 {
        return Err(Error::input(format!("synthetic {}: K ({k}) and blocksize ({bs}) must be even", format.as_str())));
    }
    let total = n * k;
    let blocks = total.div_ceil(bs);
    let code = dev.upload(&four_bit_code(format))?;
    let packed = dev.alloc_uninit::<u8>(total / 2)?;
    let absmax = dev.alloc_uninit::<f32>(blocks)?;
    let g = Grid::new((dev.blocks_for(blocks, 128), 1, 1), 128);
    let fp4 = matches!(format, FourBitFormat::Fp4) as i32;
    let a = Args::new().ptr(packed.ptr()).ptr(absmax.ptr()).ptr(code.ptr()).i64(total as i64).i32(bs as i32).u64(seed).f32(std).i32(fp4);
    // SAFETY: packed holds total/2 bytes, absmax `blocks` floats, code 16.
    unsafe { dev.launch("random", "random_quant4", g, a)? };
    let absmax = if opts.double_quant && blocks > 0 { double_quantize(dev, absmax, blocks)? } else { DeviceAbsmax::Plain(absmax) };
    // Made in bitsandbytes' layout, then repacked into tiles like a loaded checkpoint.
    Ok(CudaLinear::FourBit(FourBitLinear::from_bnb(dev, packed, absmax, code, bs, format, DType::BF16, n, k)?))
}

/// Double-quantize f32 scales: subtract their mean, then 8-bit blockwise (256) with the dynamic map.
fn double_quantize(dev: &Device, absmax: DeviceBuffer<f32>, blocks: usize) -> Result<DeviceAbsmax> {
    const NESTED: usize = 256;
    let code = dev.upload(&dynamic_map_signed())?;
    let sum = dev.alloc_zeros::<f64>(1)?;
    let q = dev.alloc_uninit::<u8>(blocks)?;
    let nested = dev.alloc_uninit::<f32>(blocks.div_ceil(NESTED))?;
    let offset = dev.alloc_uninit::<f32>(1)?;
    // SAFETY: sizes as allocated above; quantize_blockwise8 runs one 256-thread block per 256 scales.
    unsafe {
        let g = Grid::new((dev.blocks_for(blocks, 256), 1, 1), 256);
        dev.launch("random", "absmax_sum", g, Args::new().ptr(absmax.ptr()).i64(blocks as i64).ptr(sum.ptr()))?;
        let g = Grid::new((blocks.div_ceil(NESTED) as u32, 1, 1), NESTED as u32);
        let a = Args::new().ptr(absmax.ptr()).i64(blocks as i64).ptr(sum.ptr()).i64(blocks as i64);
        dev.launch("random", "quantize_blockwise8", g, a.ptr(code.ptr()).ptr(q.ptr()).ptr(nested.ptr()).ptr(offset.ptr()))?;
    }
    let offset = dev.download(&offset, 0, 1)?[0];
    Ok(DeviceAbsmax::Double { q, code, nested, nested_blocksize: NESTED, offset })
}

/// The host mirror of the device generator (prelude.cuh `normal_at`), for tests. Equal to the
/// device's value up to a few f32 ulps (logf/cospif vs Rust's ln/cos).
pub fn normal_at(seed: u64, idx: u64) -> f32 {
    fn splitmix64(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let h = splitmix64(splitmix64(seed) ^ idx);
    let u1 = ((h >> 40) + 1) as f32 * 5.960_464_5e-8;
    let u2 = (h & 0xFF_FFFF) as f32 * 5.960_464_5e-8;
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::PI * 2.0 * u2).cos()
}
