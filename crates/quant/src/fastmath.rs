//! The floating-point semantics of the GPU code bitsandbytes' results come from, emulated
//! on the CPU: its kernels are built with `--use_fast_math` (subnormals flushed to zero,
//! approximate reciprocal and division) and the double-quantization offset is torch's f32
//! CUDA `mean`.
//!
//! Key design choice: each emulation is one small function, so that if a measurement on
//! the GPU shows a difference the fix lives in one place; the tests against real
//! bitsandbytes output are what pin these down.

/// Flush a subnormal to a zero of the same sign, as `.ftz` instructions do.
#[inline]
pub fn ftz(x: f32) -> f32 {
    if x.is_subnormal() { 0.0f32.copysign(x) } else { x }
}

/// `fabsf` under `-ftz=true`.
#[inline]
pub fn abs_ftz(x: f32) -> f32 {
    ftz(x.abs())
}

/// `a * b` under `-ftz=true` (inputs and result flushed).
#[inline]
pub fn mul_ftz(a: f32, b: f32) -> f32 {
    ftz(ftz(a) * ftz(b))
}

/// `1.0f / x` under `--use_fast_math` (`rcp.approx.ftz.f32`). Emulated as the correctly
/// rounded reciprocal, with zero (or a flushed subnormal) giving a same-signed infinity.
#[inline]
pub fn rcp(x: f32) -> f32 {
    1.0 / ftz(x)
}

/// `__fdividef(a, b)`: CUDA's fast division, emulated as the correctly rounded quotient
/// (b = 0 gives an infinity, as on the GPU).
#[inline]
pub fn fdividef(a: f32, b: f32) -> f32 {
    a / ftz(b)
}

/// torch's `Tensor.mean()` of a contiguous f32 CUDA tensor: an f32 sum, then a multiply by
/// the f32 factor `1.0f / n` (not a division by n). The sum is computed exactly and
/// rounded once to f32.
pub fn torch_mean(values: &[f32]) -> f32 {
    let sum: f64 = values.iter().map(|&v| v as f64).sum();
    let factor = 1.0f32 / values.len() as f32;
    (sum as f32) * factor
}

/// `__float2int_rn`: round half to even; NaN gives 0 and out-of-range values saturate.
#[inline]
pub fn float2int_rn(x: f32) -> i32 {
    x.round_ties_even() as i32
}
