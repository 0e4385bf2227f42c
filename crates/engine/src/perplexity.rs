//! Quality of a quantization: perplexity over windows of a text, and against a reference
//! configuration the KL divergence of the next-token distributions (mean and 99th
//! percentile) and how often the top token agrees, as llama.cpp's
//! `perplexity --kl-divergence` reports them. Each row is scored by `Backend::score_rows` (on
//! the device where the backend can), so full logits need not cross to the host.
//!
//! Windows: window k covers tokens [k*stride, k*stride + ctx). The first window scores every
//! token after its first; later windows score only their last `stride` tokens (those no
//! earlier window scored), so with the default stride = ctx every window is independent.
//! A partial window at the end is dropped. All configurations run window by window in
//! lockstep: the reference's logits of the current window stay in its own workspace while the
//! others are scored against them.

use peregrine_core::scoring::RowScore;
use peregrine_core::{Backend, Error, Result};
use peregrine_models::Falcon;

use crate::generate::AllLogits;

/// Which windows to score.
#[derive(Clone, Copy, Debug)]
pub struct WindowPlan {
    pub ctx: usize,
    pub stride: usize,
    /// Only the first N windows (None = all).
    pub chunks: Option<usize>,
}

/// One configuration's quality figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QualityRow {
    pub label: String,
    pub perplexity: f64,
    /// Scored positions.
    pub tokens: usize,
    /// Against the reference configuration (None for the reference itself).
    pub kl_mean: Option<f64>,
    pub kl_p99: Option<f64>,
    pub top1_agree: Option<f64>,
}

impl WindowPlan {
    /// Window start offsets over `n` tokens.
    pub fn starts(&self, n: usize) -> Result<Vec<usize>> {
        if self.ctx < 2 || self.stride == 0 || self.stride > self.ctx {
            return Err(Error::input(format!(
                "need --ctx >= 2 and 0 < --stride <= --ctx (got ctx {}, stride {})",
                self.ctx, self.stride
            )));
        }
        if n < self.ctx {
            return Err(Error::input(format!("the text has {n} tokens, fewer than one window of --ctx {}", self.ctx)));
        }
        let all = (0..=(n - self.ctx)).step_by(self.stride);
        Ok(all.take(self.chunks.unwrap_or(usize::MAX)).collect())
    }

    /// Index within a window of the first scored logit row (row i predicts token i + 1).
    fn first_scored(&self, window: usize) -> usize {
        match window {
            0 => 0,
            _ => (self.ctx - self.stride).saturating_sub(1),
        }
    }
}

#[derive(Default)]
struct Accum {
    nll: f64,
    count: usize,
    kl: Vec<f32>,
    agree: usize,
}

/// Score `models` (the first is the KL reference) over `tokens`.
pub fn quality_report<B: Backend>(
    backend: &B,
    models: &[(String, &Falcon<B>)],
    tokens: &[u32],
    plan: WindowPlan,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<QualityRow>> {
    let starts = plan.starts(tokens.len())?;
    let mut acc: Vec<Accum> = models.iter().map(|_| Accum::default()).collect();
    let mut runners = models.iter().map(|(_, m)| AllLogits::new(backend, m, plan.ctx)).collect::<Result<Vec<_>>>()?;
    for (w, &s) in starts.iter().enumerate() {
        let window = &tokens[s..s + plan.ctx];
        let first = plan.first_scored(w);
        let targets = &window[first + 1..];
        for (i, (_, model)) in models.iter().enumerate() {
            runners[i].forward(backend, model, window)?;
            let reference = (i > 0).then(|| runners[0].logits());
            let scores = backend.score_rows(runners[i].logits(), reference, first, model.config.vocab_size, targets)?;
            score(&scores, &mut acc[i]);
        }
        progress(w + 1, starts.len());
    }
    Ok(models.iter().zip(acc).enumerate().map(|(i, ((label, _), a))| finish(label, a, i == 0)).collect())
}

fn score(scores: &[RowScore], acc: &mut Accum) {
    for s in scores {
        acc.nll -= s.target_logprob;
        acc.count += 1;
        if let (Some(kl), Some(r)) = (s.kl, s.ref_argmax) {
            acc.kl.push(kl as f32);
            acc.agree += (s.argmax == r) as usize;
        }
    }
}

fn finish(label: &str, mut a: Accum, is_reference: bool) -> QualityRow {
    let n = a.count.max(1) as f64;
    let kl_stats = (!is_reference && !a.kl.is_empty()).then(|| {
        a.kl.sort_by(f32::total_cmp);
        let mean = a.kl.iter().map(|&k| k as f64).sum::<f64>() / a.kl.len() as f64;
        let p99 = a.kl[((a.kl.len() as f64 * 0.99).ceil() as usize).clamp(1, a.kl.len()) - 1] as f64;
        (mean, p99, a.agree as f64 / a.kl.len() as f64)
    });
    QualityRow {
        label: label.to_string(),
        perplexity: (a.nll / n).exp(),
        tokens: a.count,
        kl_mean: kl_stats.map(|s| s.0),
        kl_p99: kl_stats.map(|s| s.1),
        top1_agree: kl_stats.map(|s| s.2),
    }
}

/// log softmax of one row, in f64 internally.
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    row.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use peregrine_core::scoring::score_row;

    #[test]
    fn windows_cover_the_text_without_overlap_by_default() {
        let plan = WindowPlan { ctx: 4, stride: 4, chunks: None };
        assert_eq!(plan.starts(13).unwrap(), vec![0, 4, 8]);
        assert_eq!(plan.first_scored(1), 0);
    }

    #[test]
    fn overlapping_windows_score_only_new_tokens() {
        let plan = WindowPlan { ctx: 8, stride: 4, chunks: Some(2) };
        assert_eq!(plan.starts(100).unwrap(), vec![0, 4]);
        // window 1 covers tokens 4..12; tokens 8..12 are new: rows 3..7 predict them.
        assert_eq!(plan.first_scored(1), 3);
    }

    #[test]
    fn kl_of_identical_distributions_is_zero() {
        let p = [1.0, 2.0, 3.0];
        assert!(score_row(&p, Some(&p), 0).kl.unwrap().abs() < 1e-12);
        assert!(score_row(&p, Some(&[3.0, 2.0, 1.0]), 0).kl.unwrap() > 0.1);
        let lp = log_softmax(&p);
        assert!((score_row(&p, None, 1).target_logprob - lp[1] as f64).abs() < 1e-6);
    }
}
