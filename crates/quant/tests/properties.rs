//! Properties on fresh random inputs: round-trip error bounds for every format (NF4 and
//! FP4, with and without double quantization, partial last blocks, odd sizes, several
//! block sizes; int8), serialization round trips, the reference matmuls against a plain
//! f64 product, and the config and error paths.

mod common;

use common::Rng;
use peregrine_core::{Absmax, DType, HostTensor, LinearWeight, QuantKind};
use peregrine_quant::{
    blockwise, bnb_linear_tensors, codebooks, dequantize, matmul, quantize_linear, read_bnb_linear, BnbConfig,
    QuantOptions,
};
use std::collections::BTreeMap;
use std::path::Path;

/// Slack on the half-code-step bound for f32 rounding of `w * (1/absmax)` and the product.
const ROUND_TRIP_SLACK: f64 = 1e-5;
/// Allowed |matmul - f64 product of x and dequantize(w)| relative to sqrt(K) * max|x| * max|w|.
const MATMUL_TOL: f64 = 1e-5;

fn random_weight(rng: &mut Rng, rows: usize, cols: usize, dtype: DType) -> HostTensor {
    let v: Vec<f32> = (0..rows * cols).map(|_| rng.normal(0.05)).collect();
    HostTensor::from_f32(vec![rows, cols], &v).cast(dtype)
}

/// Sorted code values of a 4-bit format and, for each code, half the gap to its
/// farther neighbour: the most a value that picked this code can be from it.
fn half_steps(kind: QuantKind) -> (Vec<f32>, [f64; 16]) {
    let values: Vec<f32> = (0..16u8)
        .map(|c| if kind == QuantKind::Nf4 { codebooks::nf4_value(c) } else { codebooks::fp4_value(c) })
        .collect();
    let mut sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    let half = std::array::from_fn(|c| {
        let v = values[c] as f64;
        let i = sorted.iter().position(|&s| s == v).unwrap();
        let below = if i > 0 { v - sorted[i - 1] } else { 0.0 };
        let above = if i + 1 < sorted.len() { sorted[i + 1] - v } else { 0.0 };
        below.max(above) / 2.0
    });
    (values, half)
}

/// |w - dequantize(quantize(w))| <= half a code step * absmax (plus the error of the
/// double-quantized absmax itself), element by element.
fn check_four_bit_round_trip(kind: QuantKind, rows: usize, cols: usize, opts: QuantOptions, dtype: DType, seed: u64) {
    let mut rng = Rng(seed);
    let w = random_weight(&mut rng, rows, cols, dtype);
    let values = w.to_f32();
    let q = quantize_linear(&w, kind, &opts).unwrap();
    let LinearWeight::FourBit(fb) = &q else { panic!("expected a 4-bit weight") };
    assert_eq!(fb.packed.len(), (rows * cols).div_ceil(2));
    let exact_absmax = blockwise::block_absmax(&values, opts.blocksize);
    let restored = blockwise::restore_absmax(&fb.absmax);
    assert_eq!(restored.len(), (rows * cols).div_ceil(opts.blocksize));
    if !opts.double_quant {
        assert_eq!(restored, exact_absmax);
    }
    let (_, half) = half_steps(kind);
    let deq = dequantize(&q);
    for (i, (&x, &d)) in values.iter().zip(&deq).enumerate() {
        let b = i / opts.blocksize;
        let byte = fb.packed[i / 2];
        let code = if i % 2 == 0 { byte >> 4 } else { byte & 0xF };
        let bound = half[code as usize] * exact_absmax[b] as f64
            + (restored[b] - exact_absmax[b]).abs() as f64
            + ROUND_TRIP_SLACK * exact_absmax[b] as f64;
        let err = (x as f64 - d as f64).abs();
        assert!(err <= bound, "{kind} {rows}x{cols} {opts:?} element {i}: |{x} - {d}| = {err} > {bound}");
    }
}

#[test]
fn four_bit_round_trips_are_within_half_a_code_step() {
    let plain = QuantOptions { double_quant: false, ..Default::default() };
    for kind in [QuantKind::Nf4, QuantKind::Fp4] {
        for (i, (rows, cols)) in [(64, 64), (7, 50), (5, 13), (33, 129), (1, 1)].into_iter().enumerate() {
            for dtype in [DType::BF16, DType::F16, DType::F32] {
                let seed = 100 + i as u64;
                check_four_bit_round_trip(kind, rows, cols, QuantOptions::default(), dtype, seed);
                check_four_bit_round_trip(kind, rows, cols, plain, dtype, seed);
            }
        }
        for blocksize in [32, 128, 256, 4096] {
            check_four_bit_round_trip(kind, 96, 200, QuantOptions { blocksize, ..Default::default() }, DType::BF16, 7);
        }
    }
}

#[test]
fn double_quantized_absmax_is_close_and_offset_is_the_mean() {
    let mut rng = Rng(3);
    let w = random_weight(&mut rng, 256, 320, DType::BF16);
    let LinearWeight::FourBit(fb) = quantize_linear(&w, QuantKind::Nf4, &QuantOptions::default()).unwrap() else {
        unreachable!()
    };
    let exact = blockwise::block_absmax(&w.to_f32(), 64);
    let Absmax::Double { offset, nested_absmax, quantized, .. } = &fb.absmax else { panic!("double quant") };
    let mean = exact.iter().map(|&a| a as f64).sum::<f64>() / exact.len() as f64;
    assert!((*offset as f64 - mean).abs() <= 1e-6 * mean, "offset {offset} vs mean {mean}");
    assert_eq!((quantized.len(), nested_absmax.len()), (1280, 5));
    // The 8-bit dynamic map's coarsest step is 1/64 near +-1: half of it, relative to the nested absmax.
    for (i, (r, e)) in blockwise::restore_absmax(&fb.absmax).iter().zip(&exact).enumerate() {
        let bound = nested_absmax[i / 256] / 128.0 + 1e-6;
        assert!((r - e).abs() <= bound, "block {i}: restored {r} vs {e}");
    }
}

#[test]
fn int8_round_trip_is_within_half_a_step_of_the_f16_weight() {
    let mut rng = Rng(11);
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let w = random_weight(&mut rng, 37, 91, dtype);
        let q = quantize_linear(&w, QuantKind::Int8, &QuantOptions::default()).unwrap();
        let LinearWeight::Int8(iw) = &q else { unreachable!() };
        let deq = dequantize(&q);
        for (i, (&x, &d)) in w.to_f32().iter().zip(&deq).enumerate() {
            let scb = iw.scb[i / 91] as f64;
            let f16_err = (x as f64).abs() * 2f64.powi(-11);
            let bound = 0.5 * scb / 127.0 * (1.0 + ROUND_TRIP_SLACK) + f16_err;
            assert!((x as f64 - d as f64).abs() <= bound, "{dtype} element {i}: {x} vs {d}");
        }
        assert!(iw.cb.iter().all(|&c| c != -128), "codes stay in [-127, 127]");
    }
}

#[test]
fn serialization_round_trips_for_every_format() {
    let mut rng = Rng(5);
    let w = random_weight(&mut rng, 9, 27, DType::F16);
    let plain = QuantOptions { double_quant: false, ..Default::default() };
    for (kind, opts) in [
        (QuantKind::Nf4, QuantOptions::default()),
        (QuantKind::Fp4, plain),
        (QuantKind::Fp4, QuantOptions { blocksize: 128, ..Default::default() }),
        (QuantKind::Int8, QuantOptions::default()),
    ] {
        let q = quantize_linear(&w, kind, &opts).unwrap();
        let tensors: BTreeMap<String, HostTensor> = bnb_linear_tensors("m.lin", &q).unwrap().into_iter().collect();
        let get = |name: &str| tensors.get(name).cloned();
        let back = read_bnb_linear("m.lin", &get).unwrap().expect("quantized");
        let again: BTreeMap<String, HostTensor> = bnb_linear_tensors("m.lin", &back).unwrap().into_iter().collect();
        assert_eq!(tensors.keys().collect::<Vec<_>>(), again.keys().collect::<Vec<_>>(), "{kind}");
        for (name, t) in &tensors {
            assert_eq!((&t.bytes, &t.shape, t.dtype), (&again[name].bytes, &again[name].shape, again[name].dtype), "{name}");
        }
        assert_eq!(dequantize(&q), dequantize(&back), "{kind}");
    }
    let dense = quantize_linear(&w, QuantKind::Bf16, &plain).unwrap();
    let tensors: BTreeMap<String, HostTensor> = bnb_linear_tensors("m.lin", &dense).unwrap().into_iter().collect();
    assert!(read_bnb_linear("m.lin", &|n| tensors.get(n).cloned()).unwrap().is_none());
}

#[test]
fn read_errors_name_the_tensor_and_the_expectation() {
    let mut rng = Rng(6);
    let w = random_weight(&mut rng, 4, 64, DType::BF16);
    let q = quantize_linear(&w, QuantKind::Nf4, &QuantOptions::default()).unwrap();
    let mut tensors: BTreeMap<String, HostTensor> = bnb_linear_tensors("l", &q).unwrap().into_iter().collect();
    tensors.remove("l.weight.nested_absmax");
    let err = read_bnb_linear("l", &|n| tensors.get(n).cloned()).unwrap_err().to_string();
    assert!(err.contains("l.weight.nested_absmax") && err.contains("missing"), "{err}");
    tensors.insert("l.weight.absmax".into(), HostTensor::from_f32(vec![4], &[1.0; 4]));
    let err = read_bnb_linear("l", &|n| tensors.get(n).cloned()).unwrap_err().to_string();
    assert!(err.contains("l.weight.absmax") && err.contains("expected u8 with 4 elements"), "{err}");
    let int8_weight = HostTensor::new(vec![2, 2], DType::I8, vec![1, 2, 3, 4]);
    let err = read_bnb_linear("x", &|n| (n == "x.weight").then(|| int8_weight.clone())).unwrap_err().to_string();
    assert!(err.contains("x.weight") && err.contains("quantization state"), "{err}");
}

/// out = x · dequantize(w)^T in f64.
fn reference_product(x: &[f32], rows: usize, w: &LinearWeight) -> Vec<f64> {
    let (n, k) = w.dims();
    let wd = dequantize(w);
    (0..rows)
        .flat_map(|t| {
            let (x, wd) = (&x, &wd);
            (0..n).map(move |j| (0..k).map(|c| x[t * k + c] as f64 * wd[j * k + c] as f64).sum())
        })
        .collect()
}

#[test]
fn matmuls_equal_the_product_with_the_dequantized_weight() {
    let mut rng = Rng(9);
    let (n, k) = (37, 200);
    let w = random_weight(&mut rng, n, k, DType::BF16);
    for rows in [1, 5] {
        let x: Vec<f32> = (0..rows * k).map(|_| rng.normal(1.0)).collect();
        for kind in [QuantKind::F32, QuantKind::Bf16, QuantKind::F16, QuantKind::Nf4, QuantKind::Fp4, QuantKind::Int8] {
            let opts = QuantOptions { int8_threshold: None, ..Default::default() };
            let q = quantize_linear(&w, kind, &opts).unwrap();
            let mut out = vec![0.0f32; rows * n];
            matmul(&x, rows, &q, &mut out).unwrap();
            let want = reference_product(&x, rows, &q);
            let scale = (k as f64).sqrt() * 4.0 * 0.2;
            for (i, (&o, &r)) in out.iter().zip(&want).enumerate() {
                assert!((o as f64 - r).abs() <= MATMUL_TOL * scale, "{kind} rows {rows} out {i}: {o} vs {r}");
            }
        }
    }
    let q = quantize_linear(&w, QuantKind::Nf4, &QuantOptions::default()).unwrap();
    assert!(matmul(&[0.0; 10], 1, &q, &mut [0.0; 37]).unwrap_err().to_string().contains("(1, 200)"));
}

#[test]
fn llm_int8_splits_outlier_columns_into_a_float_product() {
    let mut rng = Rng(12);
    let (n, k, rows) = (24, 64, 3);
    let w = random_weight(&mut rng, n, k, DType::F16);
    let mut x: Vec<f32> = (0..rows * k).map(|_| rng.normal(1.0).clamp(-3.0, 3.0)).collect();
    x[k + 17] = -9.25; // column 17 becomes an outlier column because of row 1
    let mixed = quantize_linear(&w, QuantKind::Int8, &QuantOptions { int8_threshold: Some(6.0), ..Default::default() }).unwrap();
    let LinearWeight::Int8(q) = &mixed else { unreachable!() };
    let mut out = vec![0.0f32; rows * n];
    matmul(&x, rows, &mixed, &mut out).unwrap();

    // The same computation written out directly (bitsandbytes' int8_mixed_scaled_mm).
    let xq = peregrine_quant::int8::quantize_rows(&x, rows, k, Some(6.0));
    assert_eq!(xq.outlier_cols, vec![17]);
    for t in 0..rows {
        assert_eq!(xq.codes[t * k + 17], 0);
        for j in 0..n {
            let acc: i32 = (0..k).map(|c| xq.codes[t * k + c] as i32 * q.cb[j * k + c] as i32).sum();
            let int_part = (acc as f32 * xq.stats[t] * q.scb[j]) * peregrine_quant::int8::MM_DEQUANT_CONST;
            let outlier = x[t * k + 17] * peregrine_quant::int8::dequant_value(q.cb[j * k + 17], q.scb[j]);
            assert_eq!(out[t * n + j], int_part + outlier, "row {t} out {j}");
        }
    }
    // And it stays close to the float product with the dequantized weight.
    let want = reference_product(&x, rows, &mixed);
    let bound = 0.02 * want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(out.iter().zip(&want).all(|(&o, &r)| (o as f64 - r).abs() <= bound));
}

#[test]
fn bnb_config_defaults_writes_and_errors() {
    let p = Path::new("config.json");
    let minimal = serde_json::json!({ "quant_method": "bitsandbytes", "load_in_4bit": true });
    let c = BnbConfig::parse(&minimal, p).unwrap();
    assert_eq!((c.kind, c.double_quant, c.compute_dtype, c.llm_int8_threshold), (QuantKind::Fp4, false, DType::F32, 6.0));
    let opts = c.options();
    assert_eq!((opts.blocksize, opts.double_quant, opts.nested_blocksize), (64, false, 256));

    let nf4 = BnbConfig::new(QuantKind::Nf4, &QuantOptions::default(), DType::BF16).unwrap();
    assert_eq!(BnbConfig::parse(&nf4.to_json().unwrap(), p).unwrap(), nf4);
    assert!(BnbConfig::new(QuantKind::Nf4, &QuantOptions { blocksize: 128, ..Default::default() }, DType::BF16).is_err());

    let private_keys = serde_json::json!({ "_load_in_8bit": true, "llm_int8_threshold": 0.0 });
    assert_eq!(BnbConfig::parse(&private_keys, p).unwrap().options().int8_threshold, None);
    for (bad, field) in [
        (serde_json::json!({ "load_in_4bit": true, "load_in_8bit": true }), "load_in_4bit"),
        (serde_json::json!({ "load_in_4bit": true, "bnb_4bit_quant_type": "int4" }), "bnb_4bit_quant_type"),
        (serde_json::json!({ "load_in_4bit": true, "bnb_4bit_quant_storage": "bfloat16" }), "bnb_4bit_quant_storage"),
        (serde_json::json!({ "load_in_8bit": true, "llm_int8_has_fp16_weight": true }), "llm_int8_has_fp16_weight"),
        (serde_json::json!({ "quant_method": "gptq", "load_in_4bit": true }), "quant_method"),
    ] {
        let err = BnbConfig::parse(&bad, p).unwrap_err().to_string();
        assert!(err.contains(&format!("quantization_config.{field}")) && err.starts_with("config.json"), "{err}");
    }
    assert!(BnbConfig::from_model_config(&serde_json::json!({ "hidden_size": 4 }), p).unwrap().is_none());
}

#[test]
fn quantize_rejects_bad_inputs() {
    let w = HostTensor::from_f32(vec![2, 64], &[0.5; 128]);
    assert!(quantize_linear(&w, QuantKind::Nf4, &QuantOptions { blocksize: 48, ..Default::default() }).is_err());
    let ints = HostTensor::new(vec![2, 2], DType::I8, vec![0; 4]);
    assert!(quantize_linear(&ints, QuantKind::Int8, &QuantOptions::default()).is_err());
    let flat = HostTensor::from_f32(vec![4], &[1.0; 4]);
    assert!(quantize_linear(&flat, QuantKind::Fp4, &QuantOptions::default()).is_err());
}

/// torch 2.11's f32 CUDA `mean` on an H200, measured by `tests/data/torch_mean_h200.json`'s
/// maker (SplitMix64 uniforms, the generator of `common::Rng`): the double-quantization
/// offset must be bit-identical, including the multi-block sums of large layers (n >= 2^17)
/// and the SM-count-dependent split (n = 5,000,000).
#[test]
fn torch_mean_emulation_matches_torch_cuda_bit_for_bit() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/torch_mean_h200.json");
    let data: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for case in data["cases"].as_array().unwrap() {
        let n = case["n"].as_u64().unwrap() as usize;
        let mut rng = Rng(case["seed"].as_u64().unwrap());
        let x: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        // serde_json parses floats to within an ulp of f64; the f32 value is exact.
        assert_eq!(x[0], case["first"].as_f64().unwrap() as f32, "generator mismatch at n = {n}");
        let mean = peregrine_quant::fastmath::torch_mean(&x);
        assert_eq!(mean.to_bits() as u64, case["mean_bits"].as_u64().unwrap(), "n = {n}: {mean}");
    }
}
