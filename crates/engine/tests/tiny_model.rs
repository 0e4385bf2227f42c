//! The trained tiny Falcon (../shared/assets/models/peregrine-tiny-falcon) on the CPU
//! backend: greedy continuations must match the ones transformers produced.

mod common;

use peregrine_core::{QuantKind, SamplingParams};
use peregrine_cpu::CpuBackend;
use peregrine_engine::{GenerateRequest, Session, Tokenizer};
use peregrine_quant::QuantOptions;

fn continuation(prompt: &str, new_tokens: usize) -> String {
    let dir = common::shared("models/peregrine-tiny-falcon");
    let cpu = CpuBackend::new();
    let model = peregrine_models::load_checkpoint(&cpu, &dir, QuantKind::Bf16, QuantOptions::default(), |_| {}).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let ids = tok.encode(prompt).unwrap();
    let req = GenerateRequest {
        max_new_tokens: new_tokens,
        sampling: SamplingParams::default(),
        stop_strings: vec![],
        eos_ids: model.config.eos_token_ids.clone(),
        prompt_ids: ids.clone(),
    };
    let mut session = Session::new(&cpu, &model, ids.len() + new_tokens, ids.len()).unwrap();
    let mut streamed = String::new();
    let out = session.generate(&req, Some(&tok), &mut |p| streamed.push_str(p)).unwrap();
    assert_eq!(streamed, out.text, "streamed pieces must add up to the text");
    assert_eq!(out.ids.len(), new_tokens);
    format!("{prompt}{}", out.text)
}

#[test]
fn once_upon_a_time_continues_as_in_transformers() {
    assert_eq!(
        continuation("Once upon a time", 40),
        "Once upon a time, there was a little girl named Lily. She loved to play outside and play with her toys. \
         One day, Lily's mom asked her to play with her toys. Lily was very happy and"
    );
}

/// transformers computed these in bf16; an f32 engine may take the other branch only where
/// the two candidates' logits are this close (bf16 rounding of a logit near 10 is ~0.03).
const NEAR_TIE_LOGITS: f32 = 0.15;

/// Our greedy text must equal `expected` until, at most, a step whose top-2 margin is a near tie.
fn assert_follows_until_a_near_tie(prompt: &str, expected: &str) {
    let dir = common::shared("models/peregrine-tiny-falcon");
    let cpu = CpuBackend::new();
    let model = peregrine_models::load_checkpoint(&cpu, &dir, QuantKind::Bf16, QuantOptions::default(), |_| {}).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let mut ids = tok.encode(prompt).unwrap();
    let p = ids.len();
    while ids.len() < p + 40 {
        let logits = peregrine_engine::all_logits(&cpu, &model, &ids).unwrap();
        let last = &logits[(ids.len() - 1) * model.config.vocab_size..];
        let mut sorted = last.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        ids.push(peregrine_core::sampling::argmax(last) as u32);
        let text = tok.decode(&ids).unwrap();
        if !expected.starts_with(&text) && !text.starts_with(expected) {
            let margin = sorted[0] - sorted[1];
            println!("{prompt:?}: parts from transformers at step {} (top-2 margin {margin:.4})", ids.len() - p - 1);
            assert!(margin < NEAR_TIE_LOGITS, "{prompt:?}: {text:?} parts from {expected:?} at a margin of {margin}");
            return;
        }
    }
}

#[test]
fn austen_and_genesis_prompts_continue_as_in_transformers() {
    assert_follows_until_a_near_tie(
        "It is a truth universally acknowledged",
        "It is a truth universally acknowledged,\nand that the truth of the world is not so much the world, and that\n\
         themselves, in the world, in the world, is not the only man who\nhas,",
    );
    assert_follows_until_a_near_tie(
        "And God said",
        "And God said, I am sure.\n\nLADY CAPULET:\nWhat, that is, that is a fool, that is,\nTo be a fool, that is a fool to be a",
    );
}
