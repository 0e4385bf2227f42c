//! Token selection from a row of logits: repetition penalty, temperature, top-k, top-p,
//! in the order transformers' `generate` applies them, with a seeded generator so a run
//! can be repeated exactly. Greedy when the temperature is 0.

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
        let probs = self.filtered_probabilities(logits);
        let r: f32 = self.rng.gen();
        pick(&probs, r)
    }

    /// (token, probability) pairs left after temperature, top-k and top-p, summing to 1.
    fn filtered_probabilities(&self, logits: &[f32]) -> Vec<(u32, f32)> {
        let t = self.params.temperature;
        let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l / t)).collect();
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if self.params.top_k > 0 && self.params.top_k < cand.len() {
            cand.truncate(self.params.top_k);
        }
        softmax_pairs(&mut cand);
        if self.params.top_p < 1.0 {
            truncate_top_p(&mut cand, self.params.top_p);
            let total: f32 = cand.iter().map(|c| c.1).sum();
            cand.iter_mut().for_each(|c| c.1 /= total);
        }
        cand
    }
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

fn softmax_pairs(cand: &mut [(u32, f32)]) {
    let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for c in cand.iter_mut() {
        c.1 = (c.1 - max).exp();
        sum += c.1;
    }
    cand.iter_mut().for_each(|c| c.1 /= sum);
}

/// Keep the smallest prefix (sorted descending) whose mass reaches `top_p`; at least one.
fn truncate_top_p(cand: &mut Vec<(u32, f32)>, top_p: f32) {
    let mut mass = 0.0;
    let mut keep = cand.len();
    for (i, c) in cand.iter().enumerate() {
        mass += c.1;
        if mass >= top_p {
            keep = i + 1;
            break;
        }
    }
    cand.truncate(keep.max(1));
}

fn pick(probs: &[(u32, f32)], r: f32) -> u32 {
    let mut acc = 0.0;
    for &(id, p) in probs {
        acc += p;
        if r < acc {
            return id;
        }
    }
    probs.last().map(|c| c.0).unwrap_or(0)
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
}
