//! What perplexity and KL divergence need of one row of logits, computed in f64 on the host:
//! the target's log-probability, the top token and, against a reference row of the same
//! position, KL(reference || row) and the reference's top token (llama.cpp's
//! `perplexity --kl-divergence` figures). `Backend::score_rows` defaults to this; a GPU backend
//! computes the same numbers on the device so that only they cross to the host.

use crate::sampling::argmax;

/// The scores of one row (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowScore {
    /// log p(target) under this row's softmax.
    pub target_logprob: f64,
    /// The top token (the lowest index among equal maxima).
    pub argmax: u32,
    /// KL(reference || this row), when a reference row was given.
    pub kl: Option<f64>,
    /// The reference row's top token, when a reference row was given.
    pub ref_argmax: Option<u32>,
}

/// log-sum-exp of a row, in f64.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln()
}

/// Score `row` against `target` (and `reference`, the reference configuration's row).
pub fn score_row(row: &[f32], reference: Option<&[f32]>, target: u32) -> RowScore {
    let lse = log_sum_exp(row);
    let (kl, ref_argmax) = match reference {
        Some(r) => {
            let lse_r = log_sum_exp(r);
            let kl: f64 = r
                .iter()
                .zip(row)
                .map(|(&p, &q)| {
                    let lp = p as f64 - lse_r;
                    lp.exp() * (lp - (q as f64 - lse))
                })
                .sum();
            (Some(kl.max(0.0)), Some(argmax(r) as u32))
        }
        None => (None, None),
    };
    RowScore { target_logprob: row[target as usize] as f64 - lse, argmax: argmax(row) as u32, kl, ref_argmax }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_rows_score_as_expected() {
        let s = score_row(&[0.0; 4], Some(&[0.0; 4]), 2);
        assert!((s.target_logprob + (4f64).ln()).abs() < 1e-12);
        assert!(s.kl.unwrap().abs() < 1e-12);
        assert_eq!((s.argmax, s.ref_argmax), (0, Some(0)));
    }

    #[test]
    fn kl_of_a_shifted_row_is_positive() {
        let s = score_row(&[0.0, 1.0], Some(&[1.0, 0.0]), 1);
        // p = softmax([1, 0]), q = softmax([0, 1]): KL = (p0 - p1) * 1 * 2 / 2 ... = tanh(0.5)
        assert!((s.kl.unwrap() - 0.5f64.tanh()).abs() < 1e-12, "{:?}", s.kl);
        assert_eq!((s.argmax, s.ref_argmax), (1, Some(0)));
    }
}
