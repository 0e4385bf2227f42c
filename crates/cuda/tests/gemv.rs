//! The decode linears of kernels/gemv8.cu against the CPU oracle (`peregrine_cpu`, whose quantized
//! linears are `peregrine_quant`'s bitsandbytes matmul): every T in 1..=8 and short prompts up to 32
//! rows (common::GEMV_CHECK_ROWS; bf16: the GEMV at T = 1, the tensor-core GEMV from 2 to 32 when
//! K % 32 == 0, else cuBLAS; LLM.int8 weight-only: the CUDA-core GEMV at T = 1, the tensor-core one
//! with 1, 2 or 4 n-tiles from 2 to 32, the CUDA-core tN kernels and 8-row chunks when K % 64 != 0),
//! every epilogue, with and without bias, over shape classes
//! that exercise the kernels' edges: N not a multiple of the row groups, fewer rows than one per
//! block, K not a multiple of a block's K stride (lanes with no word; no tensor-core k-block), long
//! K (several chunks per row group), and N large enough that blocks own many row groups. Skips
//! visibly without a CUDA driver.

mod common;

use common::*;
use peregrine_core::{Backend, LinearWeight, QuantKind};
use peregrine_quant::QuantOptions;

/// (label, N, K): the shape classes.
const SHAPES: [(&str, usize, usize); 5] = [
    ("tiny N < one group", 3, 64),
    ("odd N, K with idle lanes", 257, 528),
    ("K = several chunks a group", 130, 8192),
    ("many groups a block", 2100, 256),
    ("square 1024", 1024, 1024),
];

/// The weight of `kind` for (n, k): bf16 Dense, or int8 without threshold (weight-only).
fn weight(rng: &mut Rng, kind: QuantKind, n: usize, k: usize) -> LinearWeight {
    let w = bf16_tensor(n, k, &rng.bf16_vec(n * k, 0.05));
    match kind {
        QuantKind::Bf16 => LinearWeight::Dense(w),
        _ => peregrine_quant::quantize_linear(&w, kind, &QuantOptions { int8_threshold: None, ..QuantOptions::default() }).expect("quantize"),
    }
}

fn gemv_matches_cpu(kind: QuantKind, seed: u64) {
    let test = format!("gemv_{kind}_matches_cpu");
    let Some(gpu) = cuda(&test) else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed);
    for (label, n, k) in SHAPES {
        let lw = weight(&mut rng, kind, n, k);
        let (gw, cw) = (gpu.load_linear(lw.clone()).unwrap(), cpu.load_linear(lw.clone()).unwrap());
        assert_eq!(gpu.linear_bytes(&gw), lw.stored_bytes(), "{label}: resident bytes differ from the format's");
        check_gemv_rows(&gpu, &cpu, &mut rng, &gw, &cw, (n, k), &format!("gemv {kind} {label}"));
    }
}

#[test]
fn gemv_bf16_matches_cpu() {
    gemv_matches_cpu(QuantKind::Bf16, 60);
}

#[test]
fn gemv_int8_weight_only_matches_cpu() {
    gemv_matches_cpu(QuantKind::Int8, 61);
}

/// Falcon-like activations through the int8 CUDA-core kernels, which take the weights as w + 32896
/// and subtract 32896 * (x sum) once per 8 weights (kernels/gemv8.cu, GEMV8_BIASED): x ~ N(0, 1)
/// with one column in 64 an outlier of magnitude 50-200, the longest Falcon K (32,768: T = 1) and a K
/// that is not whole tensor-core k-blocks (32,784: the t2 and t4 kernels), within TOL_BF16 of the
/// CPU oracle (the dequantized weights (CB * SCB) / 127 in f32 times x, an f32 matmul).
#[test]
fn gemv_int8_holds_outlier_activations() {
    let Some(gpu) = cuda("gemv_int8_holds_outlier_activations") else { return };
    let cpu = cpu();
    let mut rng = Rng::new(67);
    for (k, rows) in [(32768usize, 1usize), (32784, 2), (32784, 4)] {
        let n = 256;
        let lw = weight(&mut rng, QuantKind::Int8, n, k);
        let (gw, cw) = (gpu.load_linear(lw.clone()).unwrap(), cpu.load_linear(lw).unwrap());
        let mut x = rng.bf16_vec(rows * k, 1.0);
        for (i, v) in x.iter_mut().enumerate() {
            if (i % k) % 64 == 17 {
                let sign = if rng.below(2) == 0 { -1.0 } else { 1.0 };
                *v = round_bf16(sign * (50.0 + 150.0 * rng.uniform()));
            }
        }
        let mut go = poisoned(&gpu, rows * n);
        gpu.linear(&gpu.upload(&x).unwrap(), rows, &gw, None, &mut go).unwrap();
        let mut co = poisoned(&cpu, rows * n);
        cpu.linear(&cpu.upload(&x).unwrap(), rows, &cw, None, &mut co).unwrap();
        let name = format!("int8 outlier x ({n}x{k}) T={rows}");
        check(&name, &gpu.download(&go, 0, rows * n).unwrap(), &cpu.download(&co, 0, rows * n).unwrap(), TOL_BF16);
    }
}

/// Every byte value decodes exactly: a weight row holding each of the 256 int8 codes, with x = 1
/// in one column at a time, returns code * scb / 127 for that column.
#[test]
fn gemv_int8_decodes_every_byte() {
    let Some(gpu) = cuda("gemv_int8_decodes_every_byte") else { return };
    let (n, k) = (4, 256);
    let cb: Vec<i8> = (0..n * k).map(|i| (i % 256) as u8 as i8).collect();
    let scb = vec![127.0f32, 63.5, 254.0, 1.0];
    let lw = LinearWeight::Int8(peregrine_core::Int8Weight { rows: n, cols: k, cb: cb.clone(), scb: scb.clone(), threshold: None });
    let gw = gpu.load_linear(lw).unwrap();
    let rows = 8;
    let mut x = vec![0f32; rows * k];
    let cols = [0usize, 127, 128, 255, 1, 200, 129, 77];
    for (t, &c) in cols.iter().enumerate() {
        x[t * k + c] = 1.0;
    }
    let mut go = poisoned(&gpu, rows * n);
    gpu.linear(&gpu.upload(&x).unwrap(), rows, &gw, None, &mut go).unwrap();
    let got = gpu.download(&go, 0, rows * n).unwrap();
    for (t, &c) in cols.iter().enumerate() {
        for r in 0..n {
            let code = cb[r * k + c] as f32;
            let want = round_bf16((code * scb[r]) * (1.0f32 / 127.0));
            assert_eq!(got[t * n + r], want, "row {r}, column {c} (code {code}): got {}", got[t * n + r]);
        }
    }
}

/// (N_a, K_a, N_b, K_b) of the pair launches: a parallel block's qkv and h->4h in miniature, odd
/// sizes (idle lanes, a few rows), different K, and many rows a block.
const PAIR_SHAPES: [(usize, usize, usize, usize); 4] = [(96, 64, 256, 64), (3, 528, 257, 528), (130, 8192, 130, 256), (1024, 1024, 1024, 4096)];

/// `linear_pair` (one launch at T = 1: kernels/gemv8.cu GEMV8_PAIR_KERNEL) against the CPU oracle.
fn pair_matches_cpu(kind: QuantKind, seed: u64) {
    let test = format!("gemv_pair_{kind}_matches_cpu");
    let Some(gpu) = cuda(&test) else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed);
    for (na, ka, nb, kb) in PAIR_SHAPES {
        let (lwa, lwb) = (weight(&mut rng, kind, na, ka), weight(&mut rng, kind, nb, kb));
        check_pair(&gpu, &cpu, &mut rng, (&lwa, na, ka), (&lwb, nb, kb), &format!("{kind} pair"));
    }
}

/// (N_a, N_b, K) of the norm + pair tests: one row of x, K shared (the last: K % 16 != 0, which the
/// int8 pair does not serve: the separate launches).
const NORM_PAIR_SHAPES: [(usize, usize, usize); 5] = [(96, 256, 64), (3, 257, 528), (130, 300, 8192), (1024, 4096, 1024), (8, 24, 72)];

/// `norm_linear_pair` (one launch at T = 1 that also normalises: GEMV8_PAIR_KERNEL _ln) against the CPU.
fn norm_pair_matches_cpu(kind: QuantKind, seed: u64) {
    let test = format!("gemv_norm_pair_{kind}_matches_cpu");
    let Some(gpu) = cuda(&test) else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed);
    for (na, nb, k) in NORM_PAIR_SHAPES {
        let (lwa, lwb) = (weight(&mut rng, kind, na, k), weight(&mut rng, kind, nb, k));
        for two in [true, false] {
            check_norm_pair(&gpu, &cpu, &mut rng, (&lwa, na), (&lwb, nb), k, two, &format!("{kind} norm pair"));
        }
    }
}

/// (N, K_a, K_b) of the sum tests (the last: K % 16 != 0, which the int8 dual GEMV does not serve).
const SUM_SHAPES: [(usize, usize, usize); 5] = [(96, 64, 256), (3, 528, 1056), (130, 8192, 256), (1024, 1024, 4096), (8, 72, 24)];

/// `linear_sum` (one pass over both weights at T = 1: GEMV8_DUAL_KERNEL) against the CPU oracle.
fn sum_matches_cpu(kind: QuantKind, seed: u64) {
    let test = format!("gemv_sum_{kind}_matches_cpu");
    let Some(gpu) = cuda(&test) else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed);
    for (n, ka, kb) in SUM_SHAPES {
        let (lwa, lwb) = (weight(&mut rng, kind, n, ka), weight(&mut rng, kind, n, kb));
        check_sum(&gpu, &cpu, &mut rng, (&lwa, ka), (&lwb, kb), n, &format!("{kind} sum"));
    }
}

#[test]
fn gemv_sum_bf16_matches_cpu() {
    sum_matches_cpu(QuantKind::Bf16, 66);
}

#[test]
fn gemv_sum_int8_weight_only_matches_cpu() {
    sum_matches_cpu(QuantKind::Int8, 67);
}

#[test]
fn gemv_norm_pair_bf16_matches_cpu() {
    norm_pair_matches_cpu(QuantKind::Bf16, 64);
}

#[test]
fn gemv_norm_pair_int8_weight_only_matches_cpu() {
    norm_pair_matches_cpu(QuantKind::Int8, 65);
}

#[test]
fn gemv_pair_bf16_matches_cpu() {
    pair_matches_cpu(QuantKind::Bf16, 62);
}

#[test]
fn gemv_pair_int8_weight_only_matches_cpu() {
    pair_matches_cpu(QuantKind::Int8, 63);
}
