//! The prompts a benchmark runs: the seed's five, built in, or one per line of a file.
//!
//! Design choice: the seed's prompts are a Rust constant (not an `include_str!` of the
//! shared anchors file) so the binary carries them and the crate builds without ../shared;
//! a test checks they still equal the anchors file when it is present.

use std::path::Path;

use peregrine_core::{Error, Result};

/// The seed experiment's five prompts (../shared/anchors/prompts.txt), in its order.
pub const SEED_PROMPTS: [&str; 5] = [
    "Write a story about a magical object that grants wishes, but with unpredictable consequences.",
    "Describe your ideal vacation destination and why it is your top choice.",
    "Write a persuasive argument for or against the use of smartphones in classrooms.",
    "Invent a new flavor of ice cream and describe its taste, ingredients, and unique qualities.",
    "What are the steps to perform an A/B test?",
];

/// The seed's prompts as owned strings.
pub fn seed_prompts() -> Vec<String> {
    SEED_PROMPTS.iter().map(|s| s.to_string()).collect()
}

/// One prompt per line; surrounding whitespace trimmed, blank lines ignored.
pub fn parse_prompts(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// Read a prompt file (`--prompts FILE`): a clear error when it is missing, unreadable,
/// not UTF-8, or holds no prompt.
pub fn read_prompt_file(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| Error::file(path, "prompt file is not UTF-8 text"))?;
    let prompts = parse_prompts(&text);
    if prompts.is_empty() {
        return Err(Error::file(path, "prompt file holds no prompt (one prompt per line, blank lines ignored)"));
    }
    Ok(prompts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR_PROMPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/anchors/prompts.txt");

    #[test]
    fn seed_prompts_equal_the_anchor_file() {
        let path = Path::new(ANCHOR_PROMPTS);
        let prompts = read_prompt_file(path).unwrap_or_else(|e| panic!("shared anchor missing: {e}"));
        assert_eq!(prompts, seed_prompts());
    }

    #[test]
    fn blank_lines_are_ignored_and_lines_trimmed() {
        let p = parse_prompts("\n  first prompt \r\n\n\t\nsecond\n");
        assert_eq!(p, vec!["first prompt".to_string(), "second".to_string()]);
    }

    #[test]
    fn missing_or_empty_files_fail_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.txt");
        let e = read_prompt_file(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.txt"), "{e}");
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "\n  \n").unwrap();
        let e = read_prompt_file(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.txt") && e.contains("no prompt"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }
}
