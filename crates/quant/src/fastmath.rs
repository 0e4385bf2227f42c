//! The floating-point semantics of the GPU code bitsandbytes' results come from, emulated
//! exactly on the CPU:
//! - its kernels are built with `--use_fast_math`: subnormals are flushed to zero, and
//!   `1.0f / x` and `__fdividef(127.0f, x)` become `MUFU.RCP` (+ `FMUL.FTZ`), a reciprocal
//!   that differs from the correctly rounded one in 13% of inputs (by one ulp);
//! - the double-quantization offset is torch's f32 CUDA `mean`, whose summation order is
//!   that of ATen's `Reduce.cuh`.
//!
//! Key design choice: `MUFU.RCP` is reproduced from a measured table rather than a model.
//! On an H200 (sm_90) it returns, for every input, one of the two f32 neighbours of the
//! exact reciprocal, depends only on the mantissa (it scales exactly by powers of two over
//! the normal range), and picks the neighbour other than round-to-nearest for 1,108,522 of
//! the 2^23 mantissas; `rcp_approx_sm90.bin` is that 2^23-bit set (bit m, LSB first, set
//! when the reciprocal of 1 + m/2^23 is not the round-to-nearest one). Other GPU
//! generations may differ; the shared checkpoints were made on an H200.

/// The measured `MUFU.RCP` table (see the module doc).
static RCP_DIFFERS: &[u8; 1 << 20] = include_bytes!("rcp_approx_sm90.bin");

/// SMs of the GPU whose torch reductions are emulated (H100/H200 SXM: 132). It only
/// matters for sums of more than 4.3 M values (see `torch_cuda_sum`).
pub const TORCH_NUM_SMS: usize = 132;

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

/// `1.0f / x` under `--use_fast_math` (`rcp.approx.ftz.f32`, `MUFU.RCP`), bit for bit:
/// zero or a subnormal gives a same-signed infinity, results below the normal range
/// flush to zero.
pub fn rcp(x: f32) -> f32 {
    let x = ftz(x);
    if x.is_nan() {
        return x;
    }
    if x == 0.0 {
        return f32::INFINITY.copysign(x);
    }
    if x.is_infinite() {
        return 0.0f32.copysign(x);
    }
    let bits = x.to_bits();
    let exponent = ((bits >> 23) & 0xFF) as i32 - 127; // |x| = (1 + m/2^23) * 2^exponent
    let r = rcp_of_mantissa(bits & 0x7F_FFFF) as f64 * 2f64.powi(-exponent);
    ftz(r as f32).copysign(x)
}

/// `MUFU.RCP(1 + m / 2^23)`, in (0.5, 1].
fn rcp_of_mantissa(m: u32) -> f32 {
    // 1 / (1 + m/2^23) = 2^47 / d * 2^-24, with d = 2^23 + m; q = floor(2^47 / d) in [2^23, 2^24].
    let d = (1u64 << 23) + m as u64;
    let (q, rem) = ((1u64 << 47) / d, (1u64 << 47) % d);
    let rounds_up = 2 * rem > d || (2 * rem == d && q % 2 == 1);
    let differs = RCP_DIFFERS[(m >> 3) as usize] >> (m & 7) & 1 == 1;
    let units = if rem == 0 { q } else if rounds_up != differs { q + 1 } else { q };
    units as f32 * (1.0 / (1u64 << 24) as f32)
}

/// `__fdividef(a, b)` as compiled under `--use_fast_math`: `FMUL.FTZ(a, MUFU.RCP(b))`.
#[inline]
pub fn fdividef(a: f32, b: f32) -> f32 {
    mul_ftz(a, rcp(b))
}

/// `__float2int_rn`: round half to even; NaN gives 0 and out-of-range values saturate.
#[inline]
pub fn float2int_rn(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds |x| < 2^22 to an integer, ties to even
    if x.abs() < 4_194_304.0 {
        ((x + MAGIC) - MAGIC) as i32
    } else {
        x.round_ties_even() as i32
    }
}

/// torch's `Tensor.mean()` of a contiguous 1-D f32 CUDA tensor: `torch_cuda_sum(values)`
/// times the f32 factor `1.0f / n` (ATen's `MeanOps` multiplies, it does not divide).
pub fn torch_mean(values: &[f32]) -> f32 {
    torch_cuda_sum(values) * (1.0f32 / values.len() as f32)
}

/// The f32 sum of a contiguous 1-D tensor in the order of ATen's CUDA reduction
/// (`Reduce.cuh`: `setReduceConfig`, `thread_reduce`, `block_x_reduce`, `global_reduce`):
/// one block row of `bw` lanes (the largest power of two <= n, or n/4 when n > 128 and
/// loads are vectorised by 4, at most 512); each lane keeps 4 accumulators; lanes are
/// combined by a shared-memory tree down to 32 and then warp shuffles with decreasing
/// offsets; large inputs are split over several blocks whose partial sums the last block
/// combines the same way. Verified bit for bit against torch 2.11 on an H200 for n from 1
/// to 2^20.
pub fn torch_cuda_sum(x: &[f32]) -> f32 {
    let n = x.len();
    let vectorized = n > 128;
    let dim0 = if vectorized { n / 4 } else { n };
    let bw = if dim0 < 512 { last_pow2(dim0) } else { 512 };
    let values_per_thread = n.div_ceil(bw);
    let mut ctas = 1;
    if values_per_thread >= 256 {
        // The block is split across warps (values_per_thread >= 16), and across CTAs.
        let target_grid = TORCH_NUM_SMS * (2048 / bw);
        ctas = target_grid.min(values_per_thread.div_ceil(16)).max(values_per_thread.div_ceil(256));
    }
    let stride = bw * ctas;
    let partials: Vec<f32> = (0..ctas)
        .map(|cta| {
            let lanes: Vec<f32> = (0..bw)
                .map(|lane| {
                    let start = lane + cta * bw;
                    if start >= n {
                        0.0
                    } else if vectorized {
                        lane_sum_vectorized(x, start, stride, lane, cta == 0)
                    } else {
                        lane_sum_strided(x, start, stride)
                    }
                })
                .collect();
            block_x_reduce(lanes)
        })
        .collect();
    if ctas == 1 {
        return partials[0];
    }
    // global_reduce: thread t of the last block sums partials t, t + bw, ... then the tree.
    let lanes = (0..bw).map(|t| partials.iter().skip(t).step_by(bw).fold(0.0f32, |a, &p| a + p)).collect();
    block_x_reduce(lanes)
}

/// `input_vectorized_thread_reduce_impl`: 4-wide loads at vector index `start`,
/// `start + stride`, ...; the n % 4 tail goes to lane `t`'s first accumulator (first CTA only).
fn lane_sum_vectorized(x: &[f32], start: usize, stride: usize, lane: usize, first_cta: bool) -> f32 {
    let n = x.len();
    let mut acc = [0.0f32; 4];
    let mut idx = start;
    while idx * 4 + 3 < n {
        for (i, a) in acc.iter_mut().enumerate() {
            *a += x[idx * 4 + i];
        }
        idx += stride;
    }
    let tail = n - n % 4 + lane;
    if first_cta && tail < n {
        acc[0] += x[tail];
    }
    ((acc[0] + acc[1]) + acc[2]) + acc[3]
}

/// `thread_reduce_impl` (contiguous, not vectorised): the k-th value a lane visits goes
/// to accumulator k % 4.
fn lane_sum_strided(x: &[f32], start: usize, stride: usize) -> f32 {
    let mut acc = [0.0f32; 4];
    for (k, i) in (start..x.len()).step_by(stride).enumerate() {
        acc[k % 4] += x[i];
    }
    ((acc[0] + acc[1]) + acc[2]) + acc[3]
}

/// `block_x_reduce`: shared-memory halving down to 32 lanes, then `shfl_down` with
/// offsets 16, 8, 4, 2, 1; lane 0's value.
fn block_x_reduce(mut v: Vec<f32>) -> f32 {
    let mut width = v.len();
    if width > 32 {
        let mut offset = width / 2;
        while offset >= 32 {
            for t in 0..offset {
                v[t] += v[t + offset];
            }
            offset /= 2;
        }
        width = 32;
    }
    let mut offset = width / 2;
    while offset > 0 {
        for l in 0..offset {
            v[l] += v[l + offset];
        }
        offset /= 2;
    }
    v[0]
}

/// The largest power of two <= n (1 for n = 0).
fn last_pow2(n: usize) -> usize {
    if n == 0 { 1 } else { 1 << (usize::BITS - 1 - n.leading_zeros()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcp_is_a_neighbour_of_the_exact_reciprocal_and_scales_by_powers_of_two() {
        for bits in (0x3F80_0000u32..0x4000_0000).step_by(4099) {
            let x = f32::from_bits(bits);
            let (r, exact) = (rcp(x), 1.0 / x as f64);
            let ulp = (f32::from_bits(r.to_bits() + 1) - r) as f64;
            assert!((r as f64 - exact).abs() < ulp, "{x}: {r} vs {exact}");
            assert_eq!(rcp(x * 1024.0), r / 1024.0);
            assert_eq!(rcp(-x / 4096.0), -r * 4096.0);
        }
        // The table's share of mantissas where MUFU.RCP is not round-to-nearest.
        let differing: u32 = RCP_DIFFERS.iter().map(|b| b.count_ones()).sum();
        assert_eq!(differing, 1_108_522);
    }

    #[test]
    fn rcp_special_values_match_the_gpu() {
        assert_eq!(rcp(0.0), f32::INFINITY);
        assert_eq!(rcp(-0.0), f32::NEG_INFINITY);
        assert_eq!(rcp(1e-40), f32::INFINITY, "subnormal input is flushed");
        assert_eq!(rcp(1e38), 0.0, "subnormal result is flushed");
        assert_eq!(rcp(f32::INFINITY), 0.0);
        assert_eq!(rcp(1.0), 1.0);
        assert_eq!(rcp(2f32.powi(126)), 2f32.powi(-126));
        assert_eq!(fdividef(127.0, 0.0), f32::INFINITY);
    }

    #[test]
    fn float2int_rn_rounds_half_to_even() {
        for (x, want) in [(0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (63.5, 64), (-63.5, -64), (126.49, 126)] {
            assert_eq!(float2int_rn(x), want, "{x}");
        }
        assert_eq!((float2int_rn(f32::NAN), float2int_rn(1e10), float2int_rn(-5e6 - 0.5)), (0, i32::MAX, -5_000_000));
        for i in 0..100_000 {
            let x = (i as f32 - 50_000.0) * 0.013;
            assert_eq!(float2int_rn(x), x.round_ties_even() as i32, "{x}");
        }
    }

    #[test]
    fn torch_sum_of_exact_values_is_exact() {
        for n in [1usize, 3, 100, 129, 1000, 4097, 200_000] {
            let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
            let exact: usize = (0..n).map(|i| i % 7).sum();
            assert_eq!(torch_cuda_sum(&x), exact as f32, "n = {n}");
        }
    }
}
