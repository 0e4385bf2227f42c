//! Bit-exact checks against real bitsandbytes 0.50.2 output on disk: the tiny Falcon in
//! bf16 and the same model quantized by bitsandbytes on an H200 (NF4 with double
//! quantization, blocksize 64; LLM.int8). Quantizing every linear of the bf16 model must
//! reproduce every stored tensor byte for byte, and read -> write must round-trip.

mod common;

use common::{asset, load_safetensors};
use peregrine_core::{HostTensor, QuantKind};
use peregrine_quant::{bnb_linear_tensors, quantize_linear, read_bnb_linear, BnbConfig, QuantOptions};
use std::collections::BTreeMap;

type Tensors = BTreeMap<String, HostTensor>;

/// Linear prefixes of a quantized checkpoint, found from the tensor that marks the format.
fn prefixes(tensors: &Tensors, marker: &str) -> Vec<String> {
    tensors.keys().filter_map(|k| k.strip_suffix(marker)).map(String::from).collect()
}

/// The stored tensors of one layer (everything under `<prefix>.`).
fn stored_layer<'a>(tensors: &'a Tensors, prefix: &str) -> BTreeMap<&'a str, &'a HostTensor> {
    let dot = format!("{prefix}.");
    tensors.iter().filter(|(k, _)| k.starts_with(&dot)).map(|(k, v)| (k.as_str(), v)).collect()
}

/// Compare produced tensors with the stored ones; returns one line per difference.
fn diff_layer(stored: &BTreeMap<&str, &HostTensor>, produced: &[(String, HostTensor)]) -> Vec<String> {
    let mut problems = Vec::new();
    let names: Vec<&str> = produced.iter().map(|(n, _)| n.as_str()).collect();
    for name in stored.keys() {
        if !names.contains(name) {
            problems.push(format!("{name}: stored but not produced"));
        }
    }
    for (name, t) in produced {
        let Some(s) = stored.get(name.as_str()) else {
            problems.push(format!("{name}: produced but not stored"));
            continue;
        };
        if s.dtype != t.dtype || s.shape != t.shape {
            problems.push(format!("{name}: {} {:?} vs stored {} {:?}", t.dtype, t.shape, s.dtype, s.shape));
        } else if s.bytes != t.bytes {
            let size = s.dtype.size();
            let bad = s.bytes.chunks(size).zip(t.bytes.chunks(size)).filter(|(a, b)| a != b).count();
            let first = s.bytes.chunks(size).zip(t.bytes.chunks(size)).position(|(a, b)| a != b).unwrap();
            problems.push(format!("{name}: {bad} of {} elements differ (first at {first})", s.numel()));
        }
    }
    problems
}

fn check_model(dir: &str, marker: &str, kind: QuantKind) {
    let base = load_safetensors(&asset("models/peregrine-tiny-falcon/model.safetensors"));
    let quant = load_safetensors(&asset(&format!("models/{dir}/model.safetensors")));
    let config_path = asset(&format!("models/{dir}/config.json"));
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    let bnb = BnbConfig::from_model_config(&config, &config_path).unwrap().expect("quantization_config");
    assert_eq!(bnb.kind, kind);
    assert_eq!(bnb.to_json().unwrap(), config["quantization_config"], "quantization_config round trip");
    let opts = bnb.options();

    let layers = prefixes(&quant, marker);
    assert_eq!(layers.len(), 32, "8 layers x 4 linears in {dir}");
    let mut problems = Vec::new();
    for prefix in &layers {
        let stored = stored_layer(&quant, prefix);
        let weight = &base[&format!("{prefix}.weight")];
        let ours = quantize_linear(weight, kind, &opts).unwrap();
        problems.extend(diff_layer(&stored, &bnb_linear_tensors(prefix, &ours).unwrap()));

        let get = |name: &str| quant.get(name).cloned();
        let read = read_bnb_linear(prefix, &get).unwrap().expect("a quantized layer");
        let rewritten = bnb_linear_tensors(prefix, &read).unwrap();
        problems.extend(diff_layer(&stored, &rewritten).into_iter().map(|p| format!("round trip: {p}")));
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn nf4_double_quant_matches_bitsandbytes_bit_for_bit() {
    check_model("peregrine-tiny-falcon-bnb-nf4", ".weight.quant_state.bitsandbytes__nf4", QuantKind::Nf4);
}

#[test]
fn int8_matches_bitsandbytes_bit_for_bit() {
    check_model("peregrine-tiny-falcon-bnb-int8", ".SCB", QuantKind::Int8);
}

#[test]
fn dense_layers_read_as_none() {
    let quant = load_safetensors(&asset("models/peregrine-tiny-falcon-bnb-nf4/model.safetensors"));
    let get = |name: &str| quant.get(name).cloned();
    assert!(read_bnb_linear("transformer.word_embeddings", &get).unwrap().is_none());
    let opts = QuantOptions::default();
    assert_eq!(opts.blocksize, 64);
}
