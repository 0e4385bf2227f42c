//! Shared test helpers: the backends (CUDA skipped visibly without a driver, the CPU oracle),
//! a seeded host RNG, bf16 rounding of inputs, NaN poisoning, and the error report
//! (max |diff| and ||out - ref|| / ||ref|| per op, asserted against a named tolerance).
#![allow(dead_code)]

use peregrine_core::{Backend, DType, Epilogue, HostTensor, LinearInput, LinearWeight, PairNorms, PairSide};
use peregrine_cpu::CpuBackend;
use peregrine_cuda::{driver_available, CudaBackend};

/// bf16 storage with f32 compute: one or two roundings of 2^-9 relative per op.
pub const TOL_BF16: f64 = 1e-2;
/// Ops whose inputs pass through several bf16 stores (attention after rotary, LLM.int8).
pub const TOL_BF16_CHAIN: f64 = 2e-2;

/// Write a line to the real stderr, past libtest's capture, so it shows in CI logs.
pub fn visible(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The CUDA backend, or None after printing a visible SKIPPED line.
pub fn cuda(test: &str) -> Option<CudaBackend> {
    if !driver_available() {
        visible(&format!("SKIPPED: {test}: no CUDA driver"));
        return None;
    }
    Some(CudaBackend::new(0).expect("CUDA driver present but the backend failed to start"))
}

pub fn cpu() -> CpuBackend {
    CpuBackend::new()
}

/// xorshift64*: deterministic host inputs, a fresh stream per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Normal(0, 1) by Box-Muller.
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
    /// `n` values normal(0, std), rounded to bf16 (both backends then see the same inputs).
    pub fn bf16_vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| round_bf16(self.normal() * std)).collect()
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

pub fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// A (rows, cols) bf16 host tensor.
pub fn bf16_tensor(rows: usize, cols: usize, values: &[f32]) -> HostTensor {
    HostTensor::from_f32(vec![rows, cols], values).cast(DType::BF16)
}

/// A 1-D bf16 host tensor.
pub fn bf16_vector(values: &[f32]) -> HostTensor {
    HostTensor::from_f32(vec![values.len()], values).cast(DType::BF16)
}

/// A buffer of `len` NaNs: any element an op forgets to write stays NaN and fails the check.
pub fn poisoned<B: Backend>(b: &B, len: usize) -> B::Buf {
    b.upload(&vec![f32::NAN; len]).expect("upload")
}

/// Max |got - want| and ||got - want|| / ||want||, printed as one table row; panics on NaN
/// or when the relative error exceeds `tol`.
pub fn check(op: &str, got: &[f32], want: &[f32], tol: f64) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "{op}: lengths differ");
    let nan = got.iter().filter(|v| !v.is_finite()).count();
    assert_eq!(nan, 0, "{op}: {nan} outputs are NaN/inf (unwritten or overflowed)");
    let (mut num, mut den, mut max) = (0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let d = (g as f64 - w as f64).abs();
        num += d * d;
        den += (w as f64) * (w as f64);
        max = max.max(d);
    }
    let rel = (num / den.max(1e-30)).sqrt();
    println!("| {op:<44} | max diff {max:>10.3e} | rel err {rel:>10.3e} | tol {tol:.0e} |");
    assert!(rel <= tol, "{op}: relative error {rel:.3e} > {tol:.0e} (max diff {max:.3e})");
    (max, rel)
}

/// The epilogue and bias used for activation row count `t` (all combinations appear over 1..=8).
pub fn epilogue_for(t: usize) -> (Epilogue, bool) {
    let epi = [Epilogue::Store, Epilogue::Gelu, Epilogue::Accumulate][t % 3];
    (epi, t % 2 == 1)
}

/// Activation row counts the linear checks cover: every T of the one-launch GEMVs (1..=8), then
/// short prompts around the tensor-core tiers (16 and 32 rows) and the 8-row chunks.
pub const GEMV_CHECK_ROWS: [usize; 14] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17, 24, 32];

/// A loaded (n, k) linear on both backends against each other for each T of GEMV_CHECK_ROWS,
/// each T with its epilogue and bias (`epilogue_for`), fresh random inputs, within TOL_BF16.
/// Accumulate starts from random values; the other epilogues from NaNs they must overwrite.
#[allow(clippy::too_many_arguments)]
pub fn check_gemv_rows(
    gpu: &CudaBackend,
    cpu: &CpuBackend,
    rng: &mut Rng,
    gw: &<CudaBackend as Backend>::Linear,
    cw: &<CpuBackend as Backend>::Linear,
    (n, k): (usize, usize),
    label: &str,
) {
    let bias = rng.bf16_vec(n, 0.1);
    let (gb, cb) = (gpu.upload(&bias).unwrap(), cpu.upload(&bias).unwrap());
    for t in GEMV_CHECK_ROWS {
        let (epi, with_bias) = epilogue_for(t);
        let x = rng.bf16_vec(t * k, 1.0);
        let start = if epi == Epilogue::Accumulate { rng.bf16_vec(t * n, 1.0) } else { vec![f32::NAN; t * n] };
        let mut go = gpu.upload(&start).unwrap();
        gpu.linear_fused(&gpu.upload(&x).unwrap(), t, gw, with_bias.then_some(&gb), epi, &mut go).unwrap();
        let mut co = cpu.upload(&start).unwrap();
        cpu.linear_fused(&cpu.upload(&x).unwrap(), t, cw, with_bias.then_some(&cb), epi, &mut co).unwrap();
        let name = format!("{label} ({n}x{k}) T={t} {epi:?} bias={with_bias}");
        check(&name, &gpu.download(&go, 0, t * n).unwrap(), &co[..t * n], TOL_BF16);
    }
}

/// `linear_pair` of two weights (a: Store with bias, b: Gelu without) on both backends: T = 1 twice
/// with fresh inputs (the GPU's one-launch pair where both weights allow it) and T = 2 (the
/// one-after-the-other fallback), each output within TOL_BF16 of the CPU oracle.
pub fn check_pair(gpu: &CudaBackend, cpu: &CpuBackend, rng: &mut Rng, (lwa, na, ka): (&LinearWeight, usize, usize), (lwb, nb, kb): (&LinearWeight, usize, usize), label: &str) {
    let (ga, gb) = (gpu.load_linear(lwa.clone()).unwrap(), gpu.load_linear(lwb.clone()).unwrap());
    let (ca, cb) = (cpu.load_linear(lwa.clone()).unwrap(), cpu.load_linear(lwb.clone()).unwrap());
    let bias = rng.bf16_vec(na, 0.1);
    let (g_bias, c_bias) = (gpu.upload(&bias).unwrap(), cpu.upload(&bias).unwrap());
    for t in [1, 1, 2] {
        let name = format!("{label} ({na}x{ka}, {nb}x{kb}) T={t}");
        let (xa, xb) = (rng.bf16_vec(t * ka, 1.0), rng.bf16_vec(t * kb, 1.0));
        let (gxa, gxb) = (gpu.upload(&xa).unwrap(), gpu.upload(&xb).unwrap());
        let (cxa, cxb) = (cpu.upload(&xa).unwrap(), cpu.upload(&xb).unwrap());
        let (mut goa, mut gob) = (poisoned(gpu, t * na), poisoned(gpu, t * nb));
        let (mut coa, mut cob) = (poisoned(cpu, t * na), poisoned(cpu, t * nb));
        let (a, b) = (LinearInput { x: &gxa, w: &ga, bias: Some(&g_bias) }, LinearInput { x: &gxb, w: &gb, bias: None });
        gpu.linear_pair(t, a, Epilogue::Store, &mut goa, b, Epilogue::Gelu, &mut gob).unwrap();
        let (a, b) = (LinearInput { x: &cxa, w: &ca, bias: Some(&c_bias) }, LinearInput { x: &cxb, w: &cb, bias: None });
        cpu.linear_pair(t, a, Epilogue::Store, &mut coa, b, Epilogue::Gelu, &mut cob).unwrap();
        check(&format!("{name} a Store"), &gpu.download(&goa, 0, t * na).unwrap(), &coa[..t * na], TOL_BF16);
        check(&format!("{name} b Gelu"), &gpu.download(&gob, 0, t * nb).unwrap(), &cob[..t * nb], TOL_BF16);
    }
}

/// `norm_linear_pair` (LayerNorm(s) of one row x, then a: Store with bias on the first norm, b:
/// Gelu on the second, or on the first when `two_norms` is false) on both backends: T = 1 twice with
/// fresh inputs (the GPU's _ln pair kernel, every block normalising x itself, where both weights
/// allow it) and T = 2 (separate norm and pair launches), each output within TOL_BF16 of the CPU.
#[allow(clippy::too_many_arguments)]
pub fn check_norm_pair(gpu: &CudaBackend, cpu: &CpuBackend, rng: &mut Rng, (lwa, na): (&LinearWeight, usize), (lwb, nb): (&LinearWeight, usize), k: usize, two_norms: bool, label: &str) {
    let (ga, gb) = (gpu.load_linear(lwa.clone()).unwrap(), gpu.load_linear(lwb.clone()).unwrap());
    let (ca, cb) = (cpu.load_linear(lwa.clone()).unwrap(), cpu.load_linear(lwb.clone()).unwrap());
    let bias = rng.bf16_vec(na, 0.1);
    let (g_bias, c_bias) = (gpu.upload(&bias).unwrap(), cpu.upload(&bias).unwrap());
    // Norm parameters as Falcon's: weights near 1, small biases.
    let params: Vec<Vec<f32>> = (0..4).map(|i| rng.bf16_vec(k, 0.2).iter().map(|v| if i % 2 == 0 { round_bf16(1.0 + v) } else { *v }).collect()).collect();
    let g: Vec<_> = params.iter().map(|p| gpu.upload(p).unwrap()).collect();
    let c: Vec<_> = params.iter().map(|p| cpu.upload(p).unwrap()).collect();
    let eps = 1e-5;
    for t in [1, 1, 2] {
        let name = format!("{label} ({na}x{k}, {nb}x{k}, {} norms) T={t}", if two_norms { "two" } else { "shared" });
        let x: Vec<f32> = rng.bf16_vec(t * k, 1.0).iter().map(|v| round_bf16(v * 3.0 + 0.5)).collect();
        let (gx, cx) = (gpu.upload(&x).unwrap(), cpu.upload(&x).unwrap());
        let (mut goa, mut gob) = (poisoned(gpu, t * na), poisoned(gpu, t * nb));
        let (mut coa, mut cob) = (poisoned(cpu, t * na), poisoned(cpu, t * nb));
        let (mut gla, mut glb) = (gpu.alloc(t * k).unwrap(), gpu.alloc(t * k).unwrap());
        let (mut cla, mut clb) = (cpu.alloc(t * k).unwrap(), cpu.alloc(t * k).unwrap());
        let norms = PairNorms { a: (&g[0], &g[1]), b: two_norms.then_some((&g[2], &g[3])), eps };
        let (a, b) = (PairSide { w: &ga, bias: Some(&g_bias), epi: Epilogue::Store }, PairSide { w: &gb, bias: None, epi: Epilogue::Gelu });
        gpu.norm_linear_pair(&gx, t, k, norms, &mut gla, &mut glb, a, &mut goa, b, &mut gob).unwrap();
        let norms = PairNorms { a: (&c[0], &c[1]), b: two_norms.then_some((&c[2], &c[3])), eps };
        let (a, b) = (PairSide { w: &ca, bias: Some(&c_bias), epi: Epilogue::Store }, PairSide { w: &cb, bias: None, epi: Epilogue::Gelu });
        cpu.norm_linear_pair(&cx, t, k, norms, &mut cla, &mut clb, a, &mut coa, b, &mut cob).unwrap();
        check(&format!("{name} a Store"), &gpu.download(&goa, 0, t * na).unwrap(), &coa[..t * na], TOL_BF16);
        check(&format!("{name} b Gelu"), &gpu.download(&gob, 0, t * nb).unwrap(), &cob[..t * nb], TOL_BF16);
    }
}

/// `linear_sum` (out += a + b, both with a bias) on both backends from the same random out: T = 1
/// twice with fresh inputs (the GPU's one-pass dual GEMV where both weights allow it) and T = 2 (two
/// Accumulate launches), within TOL_BF16 of the CPU oracle.
pub fn check_sum(gpu: &CudaBackend, cpu: &CpuBackend, rng: &mut Rng, (lwa, ka): (&LinearWeight, usize), (lwb, kb): (&LinearWeight, usize), n: usize, label: &str) {
    let (ga, gb) = (gpu.load_linear(lwa.clone()).unwrap(), gpu.load_linear(lwb.clone()).unwrap());
    let (ca, cb) = (cpu.load_linear(lwa.clone()).unwrap(), cpu.load_linear(lwb.clone()).unwrap());
    let (bias_a, bias_b) = (rng.bf16_vec(n, 0.1), rng.bf16_vec(n, 0.1));
    let (gba, gbb) = (gpu.upload(&bias_a).unwrap(), gpu.upload(&bias_b).unwrap());
    let (cba, cbb) = (cpu.upload(&bias_a).unwrap(), cpu.upload(&bias_b).unwrap());
    for t in [1, 1, 2] {
        let name = format!("{label} ({n}x{ka} + {n}x{kb}) T={t}");
        let (xa, xb, x0) = (rng.bf16_vec(t * ka, 1.0), rng.bf16_vec(t * kb, 1.0), rng.bf16_vec(t * n, 2.0));
        let (gxa, gxb, mut go) = (gpu.upload(&xa).unwrap(), gpu.upload(&xb).unwrap(), gpu.upload(&x0).unwrap());
        let (cxa, cxb, mut co) = (cpu.upload(&xa).unwrap(), cpu.upload(&xb).unwrap(), cpu.upload(&x0).unwrap());
        let (a, b) = (LinearInput { x: &gxa, w: &ga, bias: Some(&gba) }, LinearInput { x: &gxb, w: &gb, bias: Some(&gbb) });
        gpu.linear_sum(t, a, b, &mut go).unwrap();
        let (a, b) = (LinearInput { x: &cxa, w: &ca, bias: Some(&cba) }, LinearInput { x: &cxb, w: &cb, bias: Some(&cbb) });
        cpu.linear_sum(t, a, b, &mut co).unwrap();
        check(&format!("{name} out += a + b"), &gpu.download(&go, 0, t * n).unwrap(), &co[..t * n], TOL_BF16);
    }
}
