//! Every reference checkpoint in reference/checkpoints (tiny random Falcons of each variant
//! written by transformers, with float64 logits; see scripts/make_reference_checkpoints.py)
//! on the CPU backend in f32: logits within 1e-4 x max|logit| of transformers', and greedy
//! tokens identical wherever the reference's top-2 margin is not a near tie.

mod common;

use std::path::Path;

use peregrine_core::{KvCache, QuantKind};
use peregrine_cpu::CpuBackend;
use peregrine_engine::all_logits;
use peregrine_models::LogitRows;
use peregrine_quant::QuantOptions;
use safetensors::SafeTensors;

/// Logits must agree within this share of the largest reference logit.
const LOGIT_REL_TOL: f64 = 1e-4;
/// A greedy step whose reference top-2 margin is below this may pick the other token.
const NEAR_TIE: f64 = 1e-3;

struct Reference {
    input_ids: Vec<u32>,
    logits: Vec<f64>,
    prompt: Vec<u32>,
    greedy: Vec<u32>,
    margins: Vec<f64>,
}

fn read_reference(dir: &Path) -> Reference {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let i64s = |n: &str| -> Vec<u32> {
        st.tensor(n).unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect()
    };
    let f64s = |n: &str| -> Vec<f64> {
        st.tensor(n).unwrap().data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
    };
    Reference {
        input_ids: i64s("input_ids"),
        logits: f64s("logits"),
        prompt: i64s("greedy_prompt_ids"),
        greedy: i64s("greedy_ids"),
        margins: f64s("greedy_margins"),
    }
}

fn variants() -> Vec<std::path::PathBuf> {
    let root = common::reference("checkpoints");
    let mut dirs: Vec<_> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert!(dirs.len() >= 9, "expected at least 9 reference variants, found {}", dirs.len());
    dirs
}

/// Greedy decode over the KV cache, one token at a time, as the engine does.
fn greedy(cpu: &CpuBackend, model: &peregrine_models::Falcon<CpuBackend>, prompt: &[u32], n: usize) -> Vec<u32> {
    let c = &model.config;
    let mut cache = KvCache::new(cpu, c.n_layer, prompt.len() + n, c.n_kv, c.head_dim).unwrap();
    let mut ws = model.workspace(cpu, prompt.len(), 1).unwrap();
    let positions: Vec<u32> = (0..prompt.len() as u32).collect();
    let mut out = Vec::new();
    model.forward(cpu, prompt, &positions, &mut cache, &mut ws, LogitRows::Last).unwrap();
    for step in 0..n {
        let next = peregrine_core::sampling::argmax(&ws.logits[..c.vocab_size]) as u32;
        out.push(next);
        let pos = (prompt.len() + step) as u32;
        model.forward(cpu, &[next], &[pos], &mut cache, &mut ws, LogitRows::Last).unwrap();
    }
    out
}

#[test]
fn logits_and_greedy_tokens_match_transformers_for_every_variant() {
    let cpu = CpuBackend::new();
    for dir in variants() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let r = read_reference(&dir);
        let model = peregrine_models::load_checkpoint(&cpu, &dir, QuantKind::F32, QuantOptions::default(), |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = all_logits(&cpu, &model, &r.input_ids).unwrap();
        let max_ref = r.logits.iter().fold(0f64, |m, v| m.max(v.abs()));
        let max_diff = got.iter().zip(&r.logits).fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        println!("{name}: max|logit| {max_ref:.3}, max diff {max_diff:.3e} ({:.2e} relative)", max_diff / max_ref);
        assert!(max_diff <= LOGIT_REL_TOL * max_ref, "{name}: logits differ by {max_diff:e} (max|logit| {max_ref})");

        let ours = greedy(&cpu, &model, &r.prompt, r.greedy.len());
        if let Some(i) = ours.iter().zip(&r.greedy).position(|(a, b)| a != b) {
            assert!(r.margins[i] < NEAR_TIE, "{name}: greedy token {i} differs ({} vs {}) at margin {}", ours[i], r.greedy[i], r.margins[i]);
            println!("{name}: greedy parts at step {i}, a near tie (margin {:.2e})", r.margins[i]);
        }
    }
}
