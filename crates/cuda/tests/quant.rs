//! Quantized linears on the GPU against peregrine-quant, the CPU oracle of bitsandbytes:
//! dequantized values (bit for bit after the bf16 rounding the kernels store), the fused GEMV
//! (T <= 8) and the dequantize + cuBLAS path (T > 8), LLM.int8 with outlier columns, and the
//! synthetic weights made and quantized on the device.

mod common;

use common::*;
use peregrine_core::{Backend, LinearWeight, QuantKind};
use peregrine_cuda::{synthetic, SyntheticOptions};
use peregrine_quant::QuantOptions;

/// (label, kind, options) for every stored format.
fn formats() -> Vec<(&'static str, QuantKind, QuantOptions)> {
    let plain = QuantOptions { double_quant: false, ..QuantOptions::default() };
    let dq = QuantOptions::default();
    let weight_only = QuantOptions { int8_threshold: None, ..QuantOptions::default() };
    vec![
        ("nf4", QuantKind::Nf4, plain),
        ("nf4 double-quant", QuantKind::Nf4, dq),
        ("fp4", QuantKind::Fp4, plain),
        ("fp4 double-quant", QuantKind::Fp4, dq),
        ("nf4 blocksize 128 double-quant", QuantKind::Nf4, QuantOptions { blocksize: 128, ..dq }),
        ("int8 weight-only", QuantKind::Int8, weight_only),
        ("int8 threshold 6 (LLM.int8)", QuantKind::Int8, dq),
    ]
}

fn host_weight(rng: &mut Rng, n: usize, k: usize, kind: QuantKind, opts: &QuantOptions) -> LinearWeight {
    let w = bf16_tensor(n, k, &rng.bf16_vec(n * k, 0.05));
    peregrine_quant::quantize_linear(&w, kind, opts).expect("quantize")
}

#[test]
fn dequantized_weights_are_bitsandbytes_values() {
    let Some(gpu) = cuda("dequantized_weights_are_bitsandbytes_values") else { return };
    let mut rng = Rng::new(20);
    let (n, k) = (96, 320);
    for (label, kind, opts) in formats() {
        let lw = host_weight(&mut rng, n, k, kind, &opts);
        let want: Vec<f32> = peregrine_quant::dequantize(&lw).iter().map(|&v| round_bf16(v)).collect();
        let gw = gpu.load_linear(lw.clone()).unwrap();
        let (resident, stored) = (gpu.linear_bytes(&gw), lw.stored_bytes());
        assert!(resident.abs_diff(stored) <= 4, "{label}: {resident} bytes resident for {stored} stored");
        let got = gpu.dequantize_linear(&gw).unwrap();
        // Values, not bits: FP4's code 8 is -0 in the quant map and +0 in the kernel's table.
        let mismatches = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        check(&format!("dequantize {label} ({n}x{k})"), &got, &want, 0.0);
        assert_eq!(mismatches, 0, "{label}: {mismatches} dequantized values differ from bitsandbytes'");
        // Embedding rows through the same kernels.
        let ids = [3u32, 0, (n - 1) as u32];
        let mut out = poisoned(&gpu, ids.len() * k);
        gpu.embedding(&gw, &ids, &mut out).unwrap();
        let rows: Vec<f32> = ids.iter().flat_map(|&i| want[i as usize * k..(i as usize + 1) * k].to_vec()).collect();
        check(&format!("embedding rows of {label}"), &gpu.download(&out, 0, ids.len() * k).unwrap(), &rows, 0.0);
    }
}

#[test]
fn quantized_linears_match_the_oracle() {
    let Some(gpu) = cuda("quantized_linears_match_the_oracle") else { return };
    let mut rng = Rng::new(21);
    let (n, k) = (264, 512);
    for (label, kind, opts) in formats() {
        let lw = host_weight(&mut rng, n, k, kind, &opts);
        let gw = gpu.load_linear(lw.clone()).unwrap();
        let bias = rng.bf16_vec(n, 0.1);
        let gb = gpu.upload(&bias).unwrap();
        for rows in [1, 3, 8, 9, 19, 33] {
            let mut x = rng.bf16_vec(rows * k, 1.0);
            if label.contains("LLM.int8") {
                // Outlier columns (|x| >= 6 in some row) exercise the mixed-precision split.
                for &c in &[5usize, 77, 300] {
                    x[(rows / 2) * k + c] = round_bf16(8.0 + c as f32 / 100.0);
                }
            }
            let mut want = vec![0f32; rows * n];
            peregrine_quant::matmul(&x, rows, &lw, &mut want).unwrap();
            for (r, w) in want.iter_mut().enumerate() {
                *w += bias[r % n];
            }
            let gx = gpu.upload(&x).unwrap();
            let mut go = poisoned(&gpu, rows * n);
            gpu.linear(&gx, rows, &gw, Some(&gb), &mut go).unwrap();
            let path = if label.contains("LLM") {
                "int8 dp4a"
            } else if rows <= peregrine_cuda::linear::GEMV_MAX_ROWS {
                "gemv"
            } else if rows <= peregrine_cuda::linear::GEMV_CHUNKED_MAX_ROWS {
                "short-prompt gemv: int8 one pass, 4-bit chunks"
            } else {
                "dequant+cuBLAS"
            };
            let tol = if label.contains("LLM") { TOL_BF16_CHAIN } else { TOL_BF16 };
            check(&format!("linear {label} T={rows} [{path}]"), &gpu.download(&go, 0, rows * n).unwrap(), &want, tol);
        }
    }
}

#[test]
fn synthetic_weights_are_quantized_on_the_device() {
    let Some(gpu) = cuda("synthetic_weights_are_quantized_on_the_device") else { return };
    let (n, k, std, seed) = (128, 512, 0.02f32, 77u64);
    let original: Vec<f32> = (0..n * k).map(|i| round_bf16(synthetic::normal_at(seed, i as u64) * std)).collect();
    let mean = original.iter().map(|&v| v as f64).sum::<f64>() / original.len() as f64;
    let var = original.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / original.len() as f64;
    println!("synthetic normal: mean {mean:.2e}, std {:.4} (want 0, {std})", var.sqrt());
    assert!(mean.abs() < 1e-3 && (var.sqrt() - std as f64).abs() < 1e-3);
    let cases = [
        (QuantKind::Bf16, 1e-2, SyntheticOptions::default()),
        (QuantKind::Int8, 2e-2, SyntheticOptions::default()),
        (QuantKind::Nf4, 0.15, SyntheticOptions::default()),
        (QuantKind::Nf4, 0.15, SyntheticOptions { double_quant: false, ..SyntheticOptions::default() }),
        (QuantKind::Fp4, 0.2, SyntheticOptions::default()),
    ];
    let mut rng = Rng::new(22);
    for (kind, tol, opts) in cases {
        let label = format!("{kind} double_quant={}", opts.double_quant);
        let gw = gpu.random_linear_with(kind, n, k, std, seed, opts).unwrap();
        let host = gpu.linear_to_host(&gw).unwrap();
        let deq = peregrine_quant::dequantize(&host);
        check(&format!("synthetic {label}: dequantized vs generated"), &deq, &original, tol);
        // Bit-level agreement with quantizing the same values on the host.
        let qopts = QuantOptions { blocksize: opts.blocksize, double_quant: opts.double_quant, int8_threshold: opts.int8_threshold, ..QuantOptions::default() };
        let href = peregrine_quant::quantize_linear(&bf16_tensor(n, k, &original), kind, &qopts).unwrap();
        let (same, total) = code_agreement(&host, &href);
        println!("  {label}: {same}/{total} stored codes equal to host quantization");
        assert!(same as f64 >= 0.999 * total as f64, "{label}: only {same}/{total} codes agree");
        // The device product with these weights equals the oracle's on the downloaded weights.
        let rows = 2;
        let x = rng.bf16_vec(rows * k, 1.0);
        let mut want = vec![0f32; rows * n];
        peregrine_quant::matmul(&x, rows, &host, &mut want).unwrap();
        let gx = gpu.upload(&x).unwrap();
        let mut go = poisoned(&gpu, rows * n);
        gpu.linear(&gx, rows, &gw, None, &mut go).unwrap();
        check(&format!("synthetic {label}: linear T=2"), &gpu.download(&go, 0, rows * n).unwrap(), &want, TOL_BF16_CHAIN);
    }
    let v = gpu.random_vector(1000, 1.0, 0.1, 5).unwrap();
    let host = gpu.download(&v, 0, 1000).unwrap();
    let m = host.iter().sum::<f32>() / 1000.0;
    println!("random_vector(1000, mean 1, std 0.1): mean {m:.4}");
    assert!((m - 1.0).abs() < 0.02);
}

/// How many stored codes (bytes of cb / packed) agree between two quantized weights.
fn code_agreement(a: &LinearWeight, b: &LinearWeight) -> (usize, usize) {
    match (a, b) {
        (LinearWeight::Int8(x), LinearWeight::Int8(y)) => (x.cb.iter().zip(&y.cb).filter(|(p, q)| p == q).count(), x.cb.len()),
        (LinearWeight::FourBit(x), LinearWeight::FourBit(y)) => {
            (x.packed.iter().zip(&y.packed).filter(|(p, q)| p == q).count(), x.packed.len())
        }
        (LinearWeight::Dense(x), LinearWeight::Dense(y)) => (x.bytes.iter().zip(&y.bytes).filter(|(p, q)| p == q).count(), x.bytes.len()),
        _ => (0, 1),
    }
}

#[test]
fn malformed_quantized_weights_are_errors() {
    let Some(gpu) = cuda("malformed_quantized_weights_are_errors") else { return };
    let mut rng = Rng::new(23);
    let LinearWeight::FourBit(mut w) = host_weight(&mut rng, 8, 64, QuantKind::Nf4, &QuantOptions::default()) else { unreachable!() };
    w.packed.pop();
    let err = gpu.load_linear(LinearWeight::FourBit(w)).err().expect("a short packed buffer must be rejected");
    println!("short packed buffer: {err}");
}

/// (label, N, K, kind, options): every 4-bit layout and GEMV kernel (kernels/quant4.cu):
/// tiles with the fast kernel (nested absmax hoisted per row, or switching once per row),
/// tiles with the generic kernel (blocks not matching the nested blocks, blocksize > 64),
/// and the bitsandbytes layout kept for shapes the tiles do not fit.
fn four_bit_cases() -> Vec<(&'static str, usize, usize, QuantKind, QuantOptions)> {
    let dq = QuantOptions::default();
    let plain = QuantOptions { double_quant: false, ..dq };
    vec![
        ("tiles fast, a row in one nested block, last group partial", 272, 512, QuantKind::Nf4, dq),
        ("tiles fast, two nested blocks a row (K 32768)", 48, 32768, QuantKind::Nf4, dq),
        ("tiles fast, plain f32 scales", 272, 512, QuantKind::Nf4, plain),
        ("tiles fast, FP4", 160, 1024, QuantKind::Fp4, dq),
        ("tiles fast, more groups than blocks, idle warps (K 128)", 9216, 128, QuantKind::Nf4, dq),
        ("tiles fast, plain, more groups than blocks (K 128)", 9216, 128, QuantKind::Fp4, plain),
        ("tiles fast, groups cut between blocks (288 groups of 2 steps)", 9216, 2048, QuantKind::Nf4, dq),
        ("tiles generic, K/64 and nested blocks coprime", 96, 320, QuantKind::Nf4, dq),
        ("tiles generic, blocksize 128", 64, 640, QuantKind::Nf4, QuantOptions { blocksize: 128, ..dq }),
        ("tiles generic, blocksize 256, plain, FP4", 32, 768, QuantKind::Fp4, QuantOptions { blocksize: 256, ..plain }),
        ("bnb layout, N % 16 != 0", 264, 512, QuantKind::Nf4, dq),
        ("bnb layout, K % 64 != 0", 40, 96, QuantKind::Fp4, dq),
    ]
}

/// The 4-bit decode GEMV against the CPU backend (peregrine_quant's bitsandbytes matmul) for every
/// T in 1..=8, short prompts in 8-row chunks (common::GEMV_CHECK_ROWS) and every epilogue, with and without bias; also: resident bytes are the format's,
/// and the weight comes back from the device in bitsandbytes' layout byte for byte. Tolerance:
/// the GEMV multiplies bf16-rounded codes and scales the f32 partial sum of each 64-k block, where
/// bitsandbytes rounds code * absmax to bf16: the results differ by rounding only (TOL_BF16).
#[test]
fn four_bit_gemv_matches_the_oracle() {
    let Some(gpu) = cuda("four_bit_gemv_matches_the_oracle") else { return };
    let cpu = cpu();
    let mut rng = Rng::new(24);
    for (label, n, k, kind, opts) in four_bit_cases() {
        let lw = host_weight(&mut rng, n, k, kind, &opts);
        let (gw, cw) = (gpu.load_linear(lw.clone()).unwrap(), cpu.load_linear(lw.clone()).unwrap());
        // The double-quant offset (4 bytes of the format) is a kernel argument on the device.
        let (resident, stored) = (gpu.linear_bytes(&gw), lw.stored_bytes());
        assert!(resident.abs_diff(stored) <= 4, "{label}: {resident} bytes resident for {stored} stored");
        let (LinearWeight::FourBit(back), LinearWeight::FourBit(orig)) = (gpu.linear_to_host(&gw).unwrap(), &lw) else { unreachable!() };
        assert!(back.packed == orig.packed, "{label}: packed bytes do not round-trip through the device layout");
        assert_eq!(peregrine_quant::blockwise::restore_absmax(&back.absmax), peregrine_quant::blockwise::restore_absmax(&orig.absmax), "{label}: scales do not round-trip");
        check_gemv_rows(&gpu, &cpu, &mut rng, &gw, &cw, (n, k), &format!("gemv4 {label}"));
    }
}
