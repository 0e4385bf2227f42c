//! Token selection from a row of logits: repetition penalty, temperature, top-k, top-p,
//! in the order transformers' `generate` applies them, with a seeded generator so a run
//! can be repeated exactly. Greedy when the temperature is 0.
//!
//! Key design choice: the arithmetic is defined so that a GPU can reproduce it bit for bit
//! without sorting (peregrine-cuda's `sample.cu`). Candidates are ordered by value, descending
//! (`total_cmp`), ties by ascending token id; each kept candidate's mass is
//! `exp(value - max)` from `deterministic_exp` (a fixed sequence of unfused f32 operations),
//! truncated to an integer in units of 2^-40 (`MASS_SCALE`), so every sum is an exact u64
//! whatever order it is added in. Cumulative masses are compared with the top-p threshold and
//! with `r * nucleus` in f64. Tokens whose mass is below 2^-40 of the maximum (logit more than
//! about 27.7 below it after temperature) can therefore never be drawn; their total probability
//! is below vocab * 2^-40 (6e-8 for 65,024 tokens).

use rand::{rngs::StdRng, Rng, SeedableRng};

/// What the user asked for. `temperature == 0` means greedy.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1.0 = off.
    pub top_p: f32,
    /// 1.0 = off.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingParams {
    /// Reject values that have no meaning, naming the flag.
    pub fn validate(&self) -> crate::Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(crate::Error::input(format!("--temperature must be >= 0, got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(crate::Error::input(format!("--top-p must be in (0, 1], got {}", self.top_p)));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(crate::Error::input(format!(
                "--repetition-penalty must be > 0, got {}",
                self.repetition_penalty
            )));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// A seeded sampler. One per generated sequence.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Sampler { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Choose the next token from `logits` (modified in place), given the ids seen so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        apply_repetition_penalty(logits, history, self.params.repetition_penalty);
        if self.params.is_greedy() {
            return argmax(logits) as u32;
        }
        let r = self.next_uniform();
        choose(&self.params, logits, r)
    }

    /// The uniform draw in [0, 1) that picks a token, from the seeded generator. `sample` makes
    /// exactly one draw per non-greedy token (none when greedy); a backend that samples on a
    /// device calls this instead, so the same seed gives the same tokens on every backend.
    pub fn next_uniform(&mut self) -> f32 {
        self.rng.gen()
    }

    /// (token, probability) pairs left after temperature, top-k and top-p, in candidate order.
    #[cfg(test)]
    fn filtered_probabilities(&self, logits: &[f32]) -> Vec<(u32, f32)> {
        let (cand, masses) = candidates(&self.params, logits);
        let cum = cumulative(&masses);
        let keep = nucleus_len(&cum, self.params.top_p);
        let total = cum[keep - 1] as f64;
        cand[..keep].iter().zip(&masses).map(|(c, &m)| (c.0, (m as f64 / total) as f32)).collect()
    }
}

/// Units of candidate mass per unit of probability weight: `exp(value - max) * 2^40`, truncated.
pub const MASS_SCALE: f32 = 1_099_511_627_776.0;

/// exp(x) for -30 <= x <= 0, 0 outside (also for NaN): Cody-Waite reduction by ln 2 and a
/// degree-7 Taylor polynomial, every operation a separately rounded f32 multiply or add, so the
/// CUDA kernel computes the same bits (about 2 ulp from the true value). Below -30 the result
/// is under 2^-43 and its mass would truncate to 0 anyway.
pub fn deterministic_exp(x: f32) -> f32 {
    if !(-30.0..=0.0).contains(&x) {
        return 0.0;
    }
    let log2e = f32::from_bits(0x3fb8_aa3b);
    let (ln2_hi, ln2_lo) = (f32::from_bits(0x3f31_7200), f32::from_bits(0x35bf_be8e));
    let k = (x * log2e + 0.5).floor();
    let r = (x - k * ln2_hi) - k * ln2_lo;
    let c = [0x3950_0d01u32, 0x3ab6_0b61, 0x3c08_8889, 0x3d2a_aaab, 0x3e2a_aaab, 0x3f00_0000, 0x3f80_0000, 0x3f80_0000];
    let mut p = f32::from_bits(c[0]);
    for &ci in &c[1..] {
        p = p * r + f32::from_bits(ci);
    }
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// The integer mass of a candidate `x = value - max` (see `MASS_SCALE`).
pub fn candidate_mass(x: f32) -> u64 {
    (deterministic_exp(x) * MASS_SCALE) as u64
}

/// The sampled token for penalised `logits`, the sampler's parameters and a uniform `r` in [0, 1).
fn choose(params: &SamplingParams, logits: &[f32], r: f32) -> u32 {
    let (cand, masses) = candidates(params, logits);
    let cum = cumulative(&masses);
    if cum.last().copied().unwrap_or(0) == 0 {
        // Only when the largest value is NaN or +inf: no mass anywhere, take the first candidate.
        return cand.first().map(|c| c.0).unwrap_or(0);
    }
    let keep = nucleus_len(&cum, params.top_p);
    let target = r as f64 * cum[keep - 1] as f64;
    let j = cum[..keep].iter().position(|&c| c as f64 > target).unwrap_or(keep - 1);
    cand[j].0
}

/// Candidates after temperature and top-k, in order (value descending, then id ascending), and
/// their integer masses.
fn candidates(params: &SamplingParams, logits: &[f32]) -> (Vec<(u32, f32)>, Vec<u64>) {
    let t = params.temperature;
    let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l / t)).collect();
    cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if params.top_k > 0 && params.top_k < cand.len() {
        cand.truncate(params.top_k);
    }
    let max = cand.first().map(|c| c.1).unwrap_or(0.0);
    let masses = cand.iter().map(|c| candidate_mass(c.1 - max)).collect();
    (cand, masses)
}

/// Inclusive running sums (exact: integers).
fn cumulative(masses: &[u64]) -> Vec<u64> {
    masses
        .iter()
        .scan(0u64, |acc, &m| {
            *acc += m;
            Some(*acc)
        })
        .collect()
}

/// Top-p: the length of the smallest prefix whose mass reaches `top_p` of the total; at least 1.
fn nucleus_len(cum: &[u64], top_p: f32) -> usize {
    let total = cum.last().copied().unwrap_or(0);
    if top_p >= 1.0 || total == 0 {
        return cum.len().max(1);
    }
    let need = top_p as f64 * total as f64;
    cum.iter().position(|&c| c as f64 >= need).map_or(cum.len(), |j| j + 1)
}

/// transformers' `RepetitionPenaltyLogitsProcessor`: divide positive logits of seen tokens
/// by the penalty, multiply negative ones.
pub fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; logits.len()];
    for &id in history {
        let i = id as usize;
        if i < logits.len() && !seen[i] {
            seen[i] = true;
            let l = logits[i];
            logits[i] = if l < 0.0 { l * penalty } else { l / penalty };
        }
    }
}

/// Index of the largest value (the first on ties, as torch.argmax).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_follows_transformers() {
        let mut l = [2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 1], 2.0);
        assert_eq!(l, [1.0, -4.0, 1.0]);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_repeats() {
        let p = SamplingParams { temperature: 0.7, top_k: 1, seed: 5, ..Default::default() };
        let mut s = Sampler::new(p);
        assert_eq!(s.sample(&mut [0.0, 1.0, 5.0, 2.0], &[]), 2);
        let p = SamplingParams { temperature: 1.0, seed: 9, ..Default::default() };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..20).map(|_| s.sample(&mut [0.0, 0.5, 1.0, 0.2], &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(&p), draw(&p));
        assert!(draw(&p).iter().collect::<std::collections::HashSet<_>>().len() > 1);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let p = SamplingParams { temperature: 1.0, top_p: 0.5, seed: 1, ..Default::default() };
        let s = Sampler::new(p);
        let probs = s.filtered_probabilities(&[10.0, 0.0, 0.0]);
        assert_eq!(probs.len(), 1);
        assert_eq!(probs[0].0, 0);
    }

    #[test]
    fn deterministic_exp_is_close_to_exp() {
        let mut worst = 0f64;
        for i in 0..=300_000 {
            let x = -30.0 * i as f32 / 300_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((deterministic_exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 4e-7, "relative error {worst:e}");
        assert_eq!(deterministic_exp(0.0), 1.0);
        assert_eq!(deterministic_exp(-30.5), 0.0);
        assert_eq!(deterministic_exp(f32::NAN), 0.0);
        assert_eq!(candidate_mass(0.0), 1 << 40);
    }

    #[test]
    fn ties_are_ordered_by_token_id() {
        // Five equal values and one draw: the cumulative masses are 1/5, 2/5, ... in id order.
        let p = SamplingParams { temperature: 1.0, ..Default::default() };
        let logits = [1.0f32; 5];
        for (r, want) in [(0.1f32, 0u32), (0.3, 1), (0.5, 2), (0.7, 3), (0.9, 4)] {
            assert_eq!(choose(&p, &logits, r), want);
        }
        // top-k 2 of four equal values keeps the two smallest ids.
        let p = SamplingParams { temperature: 1.0, top_k: 2, ..Default::default() };
        assert_eq!(choose(&p, &[0.5, 2.0, 2.0, 2.0, 2.0], 0.99), 2);
    }

    #[test]
    fn sample_draws_one_uniform_per_token() {
        let p = SamplingParams { temperature: 0.8, top_p: 0.9, top_k: 3, repetition_penalty: 1.3, seed: 11 };
        let (mut a, mut b) = (Sampler::new(p.clone()), Sampler::new(p.clone()));
        for step in 0..50 {
            let logits: Vec<f32> = (0..7).map(|i| ((i * 37 + step * 11) % 13) as f32 * 0.3).collect();
            let hist = [1u32, 5, 5];
            let got = a.sample(&mut logits.clone(), &hist);
            let mut pen = logits.clone();
            apply_repetition_penalty(&mut pen, &hist, p.repetition_penalty);
            assert_eq!(got, choose(&p, &pen, b.next_uniform()));
        }
    }
}
