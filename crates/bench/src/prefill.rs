//! The warm prefill measurement of `peregrine bench --prefill-tokens N`: after a
//! configuration's generation runs, one warm-up prefill and then `runs` timed prefills of
//! N deterministic synthetic ids, each one forward (logits of the last row only) followed
//! by a device synchronize, with the host clock around it.
//!
//! Design choice: as for generation, the runner holds the clock and the target only does
//! the work. `BenchTarget::with_prefill` allocates the cache and workspace once and hands
//! the runner a closure that runs one prefill; so no timed run pays for allocation, and
//! the warm-up run takes the first-call costs (new GEMM shapes, clocks) that make a prefill
//! timed inside `peregrine generate` a cold figure. The FLOP count that turns the median
//! into TFLOPS lives here, next to the dimensions it needs (`ModelShape`).

use std::time::Instant;

use peregrine_core::{Error, Result};

use crate::runner::BenchTarget;
use crate::schema::PrefillResult;

/// The dimensions of a Falcon model that the prefill ids, the context check and the FLOP
/// count need. Legend: V vocab, D hidden, F MLP width, H query heads, G KV groups,
/// Hd head dim, L layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    /// V.
    pub vocab: usize,
    /// D.
    pub hidden: usize,
    /// F.
    pub ffn: usize,
    /// H.
    pub n_head: usize,
    /// G (1 for multi-query, H for plain multi-head).
    pub n_kv: usize,
    /// Hd.
    pub head_dim: usize,
    /// L.
    pub n_layer: usize,
    /// Positions the model supports (`max_position_embeddings`).
    pub context: usize,
}

impl ModelShape {
    /// Weights of the matmuls of all decoder blocks (biases and norms left out):
    /// L x (D x (H + 2G) Hd [query_key_value] + H Hd x D [dense] + 2 D F [h->4h, 4h->h]).
    pub fn block_linear_params(&self) -> u64 {
        let (d, f, hd) = (self.hidden as u64, self.ffn as u64, self.head_dim as u64);
        let qkv = (self.n_head + 2 * self.n_kv) as u64 * hd;
        let per_layer = d * qkv + self.n_head as u64 * hd * d + 2 * d * f;
        self.n_layer as u64 * per_layer
    }

    /// Floating-point operations of one prefill of `n` tokens with logits for the last row:
    ///
    /// `2 P N` (every block linear, P = `block_linear_params`, one multiply-add per weight
    /// per token) `+ 4 (N^2 / 2) H Hd L` (causal attention: QK^T and PV, 2 FLOPs per
    /// multiply-add each, over the half of the N x N score matrix at or below the diagonal)
    /// `+ 2 D V` (the head, last row only). Embedding lookups, norms, rotary, softmax and
    /// GELU are left out (they are O(N D), noise beside the matmuls), as in the usual
    /// "2 x parameters x tokens" accounting.
    pub fn prefill_flops(&self, n: usize) -> f64 {
        let n = n as f64;
        let linear = 2.0 * self.block_linear_params() as f64 * n;
        let attention = 4.0 * (n * n / 2.0) * (self.n_head * self.head_dim * self.n_layer) as f64;
        let head = 2.0 * (self.hidden * self.vocab) as f64;
        linear + attention + head
    }
}

/// The `n` synthetic prompt ids a prefill runs: `100 + (i x 7919) mod (V - 100)`, spread
/// over the vocabulary and clear of the special tokens at the bottom of Falcon's
/// (`i mod V` for a vocabulary of 100 or fewer).
pub fn prefill_ids(n: usize, vocab: usize) -> Vec<u32> {
    let vocab = vocab.max(1) as u64;
    (0..n as u64)
        .map(|i| match vocab > 100 {
            true => 100 + (i * 7919) % (vocab - 100),
            false => i % vocab,
        } as u32)
        .collect()
}

/// Timed prefills per configuration for `--runs R`: R, but never fewer than 3, so the
/// median is of at least three values.
pub fn prefill_runs(runs: usize) -> usize {
    runs.max(3)
}

/// One warm-up and `runs` timed prefills of `tokens` ids on `target`.
pub fn measure_prefill<T: BenchTarget + ?Sized>(target: &mut T, tokens: usize, runs: usize) -> Result<PrefillResult> {
    let shape = target.model_shape().ok_or_else(|| Error::msg("this bench target cannot measure prefill"))?;
    check_prefill_tokens(tokens, &shape)?;
    let ids = prefill_ids(tokens, shape.vocab);
    let mut warmup_s = 0.0;
    let mut runs_s = Vec::with_capacity(runs);
    target.with_prefill(&ids, &mut |prefill| {
        warmup_s = timed(prefill)?;
        for _ in 0..runs {
            runs_s.push(timed(prefill)?);
        }
        Ok(())
    })?;
    if runs_s.len() != runs {
        return Err(Error::msg(format!("bench target ran {} of {runs} prefills", runs_s.len())));
    }
    PrefillResult::from_runs(tokens, warmup_s, runs_s, shape.prefill_flops(tokens))
}

/// `--prefill-tokens N` against a model: at least 1, at most its context.
pub fn check_prefill_tokens(tokens: usize, shape: &ModelShape) -> Result<()> {
    if tokens == 0 {
        return Err(Error::input("--prefill-tokens must be at least 1"));
    }
    if tokens > shape.context {
        return Err(Error::input(format!(
            "--prefill-tokens {tokens} exceeds the model's context of {} positions",
            shape.context
        )));
    }
    Ok(())
}

/// Host seconds around one call.
fn timed(f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed().as_secs_f64())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Falcon-40B's published shape (tiiuae/falcon-40b config.json).
    pub(crate) const FALCON_40B: ModelShape = ModelShape {
        vocab: 65024,
        hidden: 8192,
        ffn: 32768,
        n_head: 128,
        n_kv: 8,
        head_dim: 64,
        n_layer: 60,
        context: 2048,
    };

    #[test]
    fn falcon_40b_prefill_flops() {
        // Per layer: qkv 8192 x 9216 = 75_497_472, dense 8192 x 8192 = 67_108_864,
        // MLP 2 x 8192 x 32768 = 536_870_912; sum 679_477_248, x 60 layers.
        assert_eq!(FALCON_40B.block_linear_params(), 40_768_634_880);
        let linear = 2.0 * 40_768_634_880.0 * 2048.0; // 1.669881285e14
        let attention = 4.0 * (2048.0 * 2048.0 / 2.0) * 8192.0 * 60.0; // 4.123168604e12
        let head = 2.0 * 8192.0 * 65024.0; // 1.065353216e9
        let flops = FALCON_40B.prefill_flops(2048);
        assert_eq!(flops, linear + attention + head);
        // 171.11 TFLOP: at the 0.30 s target that is 570 TFLOPS sustained.
        const TFLOP_TOL: f64 = 0.005;
        assert!((flops / 1e12 - 171.1123).abs() < TFLOP_TOL, "{}", flops / 1e12);
    }

    #[test]
    fn ids_are_deterministic_and_in_range() {
        let ids = prefill_ids(2048, 65024);
        assert_eq!(&ids[..4], &[100, 8019, 15938, 23857]);
        assert!(ids.iter().all(|&i| (100..65024).contains(&i)));
        assert_eq!(ids, prefill_ids(2048, 65024));
        assert!(prefill_ids(10, 50).iter().all(|&i| i < 50));
        assert_eq!(prefill_runs(1), 3);
        assert_eq!(prefill_runs(5), 5);
    }

    #[test]
    fn tokens_beyond_the_context_are_one_line_errors() {
        let e = check_prefill_tokens(4096, &FALCON_40B).unwrap_err().to_string();
        assert!(e.contains("4096") && e.contains("context of 2048") && e.lines().count() == 1, "{e}");
        assert!(check_prefill_tokens(0, &FALCON_40B).is_err());
        assert!(check_prefill_tokens(2048, &FALCON_40B).is_ok());
    }
}
