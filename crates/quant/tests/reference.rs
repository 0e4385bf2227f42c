//! Every case of `reference/bnb/manifest.json` (vectors made by bitsandbytes 0.50.2 on an
//! H200 by `scripts/make_bnb_vectors.py`): quantized bytes, scales, maps, offsets and the
//! quant-state JSON must be identical; dequantized values identical after bitsandbytes'
//! final cast to the input dtype; matmuls within the named tolerances below.

mod common;

use common::load_safetensors;
use peregrine_core::{dtype, DType, HostTensor, LinearWeight, QuantKind};
use peregrine_quant::{
    blockwise, bnb_linear_tensors, dequantize, int8, int8_mixed_matmul, matmul, quantize_linear, QuantOptions,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// bitsandbytes rounds 4-bit matmul outputs to bf16 and multiplies bf16-rounded weights;
/// this reference stays f32. Allowed |ours - bnb| relative to max |bnb output|.
const FOUR_BIT_MATMUL_REL_TOL: f32 = 1e-2;
/// LLM.int8: bitsandbytes rounds the int8 part to f16 and adds the outlier part in f16.
/// Allowed |ours - bnb| relative to max |bnb output|.
const INT8_MATMUL_REL_TOL: f32 = 2e-3;

fn reference_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../reference/bnb"))
}

fn f32_bits(t: &HostTensor) -> Vec<u32> {
    t.to_f32().iter().map(|v| v.to_bits()).collect()
}

/// Values rounded to `dtype` (bitsandbytes' cast of its f32 result), as f32 bit patterns.
fn rounded_bits(values: &[f32], dtype: DType) -> Vec<u32> {
    dtype::to_f32(dtype, &dtype::from_f32(dtype, values)).iter().map(|v| v.to_bits()).collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let diff = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / max_abs(b).max(f32::MIN_POSITIVE)
}

fn run_matmul(x: &HostTensor, w: &LinearWeight) -> Vec<f32> {
    let rows = x.shape[0];
    let mut out = vec![0.0f32; rows * w.dims().0];
    matmul(&x.to_f32(), rows, w, &mut out).unwrap();
    out
}

fn check_four_bit(case: &Value, t: &BTreeMap<String, HostTensor>, failures: &mut Vec<String>) {
    let name = case["name"].as_str().unwrap();
    let dq = case["compress_statistics"].as_bool().unwrap();
    let kind = if case["quant_type"] == "nf4" { QuantKind::Nf4 } else { QuantKind::Fp4 };
    let opts = QuantOptions { blocksize: case["blocksize"].as_u64().unwrap() as usize, double_quant: dq, ..Default::default() };
    let input = &t["input"];
    let w = quantize_linear(input, kind, &opts).unwrap();
    let LinearWeight::FourBit(q) = &w else { unreachable!() };
    let mut expect = |what: &str, ok: bool| {
        if !ok {
            failures.push(format!("{name}: {what} differs"));
        }
    };
    expect("packed", q.packed == t["packed"].bytes);
    expect("code (quant_map)", q.code.iter().map(|v| v.to_bits()).collect::<Vec<_>>() == f32_bits(&t["code"]));
    match &q.absmax {
        peregrine_core::Absmax::Plain(a) => expect("absmax", a.iter().map(|v| v.to_bits()).collect::<Vec<_>>() == f32_bits(&t["absmax"])),
        peregrine_core::Absmax::Double { quantized, code, nested_absmax, offset, .. } => {
            expect("absmax (8-bit)", *quantized == t["absmax"].bytes);
            expect("nested_absmax", nested_absmax.iter().map(|v| v.to_bits()).collect::<Vec<_>>() == f32_bits(&t["nested_absmax"]));
            expect("nested_code", code.iter().map(|v| v.to_bits()).collect::<Vec<_>>() == f32_bits(&t["nested_code"]));
            expect("offset", offset.to_bits() == t["offset"].to_f32()[0].to_bits());
            let restored = blockwise::restore_absmax(&q.absmax);
            expect("absmax_dequant", restored.iter().map(|v| v.to_bits()).collect::<Vec<_>>() == f32_bits(&t["absmax_dequant"]));
        }
    }
    let deq = dequantize(&w);
    expect("dequant (cast to the input dtype)", rounded_bits(&deq, input.dtype) == f32_bits(&t["dequant"]));
    let tensors = bnb_linear_tensors("layer", &w).unwrap();
    let state = tensors.iter().find(|(n, _)| n.contains("quant_state")).unwrap();
    expect("state_json", state.1.bytes == t["state_json"].bytes);
    if case.get("matmul").and_then(Value::as_bool) == Some(true) {
        let y = run_matmul(&t["x"], &w);
        let err = rel_err(&y, &t["y"].to_f32());
        println!("{name}: matmul max |ours - bnb| / max |bnb| = {err:.2e} (tolerance {FOUR_BIT_MATMUL_REL_TOL:.0e})");
        expect("matmul", err <= FOUR_BIT_MATMUL_REL_TOL);
        let y1 = run_matmul(&HostTensor::new(vec![1, t["x"].shape[1]], t["x"].dtype, t["x"].bytes[..t["x"].bytes.len() / t["x"].shape[0]].to_vec()), &w);
        expect("single-row matmul", rel_err(&y1, &t["y1"].to_f32()) <= FOUR_BIT_MATMUL_REL_TOL);
    }
}

fn check_int8(case: &Value, t: &BTreeMap<String, HostTensor>, failures: &mut Vec<String>) {
    let name = case["name"].as_str().unwrap();
    let w = quantize_linear(&t["input"], QuantKind::Int8, &QuantOptions::default()).unwrap();
    let LinearWeight::Int8(q) = &w else { unreachable!() };
    if q.cb.iter().map(|&v| v as u8).collect::<Vec<_>>() != t["CB"].bytes {
        failures.push(format!("{name}: CB differs"));
    }
    if q.scb.iter().map(|v| v.to_bits()).collect::<Vec<_>>() != f32_bits(&t["SCB"]) {
        failures.push(format!("{name}: SCB differs"));
    }
}

fn check_int8_matmul(t: &BTreeMap<String, HostTensor>, name: &str, failures: &mut Vec<String>) {
    check_int8(&serde_json::json!({ "name": name }), t, failures);
    let x = &t["x"];
    let (rows, k) = (x.shape[0], x.shape[1]);
    for (tag, threshold) in [("threshold6", 6.0f32), ("threshold0", 0.0)] {
        let w = quantize_linear(&t["input"], QuantKind::Int8, &QuantOptions::default()).unwrap();
        let LinearWeight::Int8(q) = &w else { unreachable!() };
        let xq = int8::quantize_rows(&x.to_f32(), rows, k, Some(threshold));
        if xq.codes.iter().map(|&v| v as u8).collect::<Vec<_>>() != t[&format!("CA_{tag}")].bytes {
            failures.push(format!("{name}: CA_{tag} differs"));
        }
        if xq.stats.iter().map(|v| v.to_bits()).collect::<Vec<_>>() != f32_bits(&t[&format!("SCA_{tag}")]) {
            failures.push(format!("{name}: SCA_{tag} differs"));
        }
        let mut y = vec![0.0f32; rows * q.rows];
        int8_mixed_matmul(&x.to_f32(), rows, q, threshold, &mut y);
        if threshold > 0.0 {
            let mut via_matmul = vec![0.0f32; rows * q.rows];
            matmul(&x.to_f32(), rows, &w, &mut via_matmul).unwrap();
            assert_eq!(via_matmul, y, "matmul with Some({threshold}) runs int8_mixed_matmul");
        }
        let err = rel_err(&y, &t[&format!("y_{tag}")].to_f32());
        println!("{name} {tag}: matmul max |ours - bnb| / max |bnb| = {err:.2e} (tolerance {INT8_MATMUL_REL_TOL:.0e})");
        if err > INT8_MATMUL_REL_TOL {
            failures.push(format!("{name}: y_{tag} off by {err:.2e}"));
        }
    }
}

#[test]
fn every_manifest_case_matches_bitsandbytes() {
    let dir = reference_dir();
    let manifest_path = dir.join("manifest.json");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(&manifest_path).unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display())),
    )
    .unwrap();
    let cases = manifest["cases"].as_array().expect("manifest `cases`");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let tensors = load_safetensors(&dir.join(case["file"].as_str().unwrap()));
        match case["kind"].as_str().unwrap() {
            "4bit" => check_four_bit(case, &tensors, &mut failures),
            "int8" => check_int8(case, &tensors, &mut failures),
            "int8_matmul" => check_int8_matmul(&tensors, name, &mut failures),
            other => failures.push(format!("{name}: unknown case kind `{other}`")),
        }
    }
    println!("{} cases checked", cases.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
