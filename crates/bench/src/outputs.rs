//! outputs.md: every prompt's answer under every configuration, one after the other, the
//! seed's quality comparison made readable.
//!
//! Design choice: per prompt, the answers follow each other in configuration order (a
//! table would squeeze 100-token answers into unreadable columns); an agreement table at
//! the top says, per prompt, how many leading words each answer shares with the first
//! configuration's (the reference, bf16 when present), so divergence is visible at a
//! glance. Answers sit in code fences longer than any backtick run inside them, so no
//! generated text can break the markdown.

use crate::schema::{BenchReport, ConfigResult};
use crate::table::markdown_table;

/// The banner placed above everything when the weights are random.
pub const SYNTHETIC_BANNER: &str = "> **Synthetic weights.** The model's weights are random numbers, so every answer below \
is meaningless text. It shows only that each configuration runs end to end; compare the answers for agreement, not quality.";

/// The whole outputs.md text.
pub fn render_outputs_md(report: &BenchReport) -> String {
    let mut out = String::from("# Answers per prompt and configuration\n\n");
    if report.synthetic_weights {
        out.push_str(SYNTHETIC_BANNER);
        out.push_str("\n\n");
    }
    let labels: Vec<&str> = report.configs.iter().map(|c| c.label.as_str()).collect();
    out.push_str(&format!(
        "Model `{}` on {}, {}, greedy decoding; configurations: {}. Each answer is the first measured run's.\n\n",
        report.model,
        report.device.name,
        report.limit,
        labels.join(", ")
    ));
    out.push_str(&agreement_section(report));
    for (i, prompt) in report.prompts.iter().enumerate() {
        out.push_str(&prompt_section(report, i, prompt));
    }
    out
}

/// The answer of the first measured run of `prompt_index`, and how many distinct answers
/// the measured runs gave (greedy decoding should give 1).
fn answer(config: &ConfigResult, prompt_index: usize) -> Option<(&str, usize)> {
    let texts: Vec<&str> =
        config.measured_runs().filter(|r| r.prompt_index == prompt_index).map(|r| r.output_text.as_str()).collect();
    let mut distinct = texts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    texts.first().map(|t| (*t, distinct.len()))
}

/// Leading whitespace-separated words `a` and `b` share, and the word count of `b`.
pub fn common_prefix_words(a: &str, b: &str) -> (usize, usize) {
    let shared = a.split_whitespace().zip(b.split_whitespace()).take_while(|(x, y)| x == y).count();
    (shared, b.split_whitespace().count())
}

fn agreement(reference: &str, text: &str) -> String {
    if reference == text {
        return "identical".to_string();
    }
    let (shared, total) = common_prefix_words(reference, text);
    format!("{shared}/{total} words")
}

/// "Leading words shared with the reference" per prompt and configuration.
fn agreement_section(report: &BenchReport) -> String {
    let Some((reference, others)) = report.configs.split_first() else { return String::new() };
    if others.is_empty() {
        return String::new();
    }
    let mut header = vec!["prompt".to_string()];
    header.extend(others.iter().map(|c| c.label.clone()));
    let rows: Vec<Vec<String>> = (0..report.prompts.len())
        .map(|p| {
            let mut row = vec![(p + 1).to_string()];
            row.extend(others.iter().map(|c| match (answer(reference, p), answer(c, p)) {
                (Some((r, _)), Some((t, _))) => agreement(r, t),
                _ => "-".to_string(),
            }));
            row
        })
        .collect();
    let right: Vec<bool> = (0..header.len()).map(|i| i > 0).collect();
    format!(
        "## Agreement with {}\n\nLeading words each answer shares with {}'s before they diverge.\n\n{}\n",
        reference.label,
        reference.label,
        markdown_table(&header, &right, &rows)
    )
}

fn prompt_section(report: &BenchReport, index: usize, prompt: &str) -> String {
    let mut out = format!("## Prompt {}\n\n> {}\n\n", index + 1, prompt.replace('\n', " "));
    let reference = report.configs.first().and_then(|c| answer(c, index)).map(|(t, _)| t);
    for (k, config) in report.configs.iter().enumerate() {
        out.push_str(&format!("### {}", config.label));
        match answer(config, index) {
            Some((text, distinct)) => {
                if let (Some(r), true) = (reference, k > 0) {
                    out.push_str(&format!(" ({} with {})", agreement(r, text), report.configs[0].label));
                }
                out.push_str("\n\n");
                if distinct > 1 {
                    out.push_str(&format!(
                        "_The measured runs gave {distinct} different answers; this is the first._\n\n"
                    ));
                }
                out.push_str(&fenced(text));
            }
            None => out.push_str(&format!("\n\n_No answer: {}._\n\n", config.error.as_deref().unwrap_or("not run"))),
        }
    }
    out
}

/// `text` in a code fence longer than its longest run of backticks.
pub fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}text\n{}\n{fence}\n\n", text.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_outgrow_backticks_in_the_text() {
        assert!(fenced("plain").starts_with("```text\n"));
        assert!(fenced("has ```` four").starts_with("`````text\n"));
    }

    #[test]
    fn agreement_counts_leading_words() {
        assert_eq!(common_prefix_words("a b c d", "a b x d e"), (2, 5));
        assert_eq!(agreement("same words", "same words"), "identical");
        assert_eq!(agreement("a b c", "a b"), "2/2 words");
    }
}
