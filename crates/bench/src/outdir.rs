//! The output directory (`--out DIR`): created if absent, used if empty, and never
//! silently overwritten.
//!
//! Design choice: a directory may be replaced only when it holds nothing but a previous
//! peregrine report (files with our names, results.json carrying our schema tag) *and*
//! the user asked for it (`--force`); then only our files are removed. Anything else
//! in the directory (a stray file, a subdirectory) is refused with one line naming it,
//! so a typo in `--out` can never delete someone's work.

use std::path::{Path, PathBuf};

use peregrine_core::{Error, Result};

use crate::schema::BenchReport;

/// The flag that allows replacing a previous report; named in error messages.
pub const OVERWRITE_FLAG: &str = "--force";

/// Names of the files a report consists of (besides `seed-<label>.png`).
pub const RESULTS_JSON: &str = "results.json";
pub const RESULTS_CSV: &str = "results.csv";
/// Written only when some configuration has prefill figures (`--prefill-tokens`).
pub const PREFILL_CSV: &str = "prefill.csv";
pub const OUTPUTS_MD: &str = "outputs.md";
pub const COMPARISON_PNG: &str = "comparison.png";

/// The seed chart's file name for configuration `label`.
pub fn seed_chart_name(label: &str) -> String {
    format!("seed-{}.png", sanitize_label(label))
}

/// A label as a file-name part: ASCII letters, digits, `-`, `_` and `.` kept, the rest `_`.
pub fn sanitize_label(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// True for a file name a report writes.
fn is_report_file(name: &str) -> bool {
    [RESULTS_JSON, RESULTS_CSV, PREFILL_CSV, OUTPUTS_MD, COMPARISON_PNG].contains(&name)
        || (name.starts_with("seed-") && name.ends_with(".png"))
}

/// Make `dir` ready to receive a report. Creates it if absent; accepts it if empty; if it
/// holds only a previous peregrine report, removes that report when `overwrite` is true
/// and refuses otherwise; refuses a directory holding anything else.
pub fn prepare_out_dir(dir: &Path, overwrite: bool) -> Result<()> {
    if !dir.exists() {
        return std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e));
    }
    if !dir.is_dir() {
        return Err(Error::file(dir, "exists and is not a directory; give a new or empty directory to --out"));
    }
    let entries = list_entries(dir)?;
    if entries.is_empty() {
        return Ok(());
    }
    if let Some(foreign) = entries.iter().find(|(name, is_file)| !is_file || !is_report_file(name)) {
        return Err(Error::file(
            dir,
            format!("exists and holds other files (e.g. `{}`); give a new or empty directory to --out", foreign.0),
        ));
    }
    if !overwrite {
        return Err(Error::file(dir, format!("{}; pass {OVERWRITE_FLAG} to replace it", describe_previous(dir))));
    }
    remove_report_files(dir, &entries)
}

/// (file name, is a plain file) of every entry of `dir`.
fn list_entries(dir: &Path) -> Result<Vec<(String, bool)>> {
    let read = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        out.push((entry.file_name().to_string_lossy().into_owned(), is_file));
    }
    out.sort();
    Ok(out)
}

/// "holds a previous report (model M, date D)" when results.json is ours, a vaguer line otherwise.
fn describe_previous(dir: &Path) -> String {
    let path = dir.join(RESULTS_JSON);
    match std::fs::read_to_string(&path).ok().and_then(|t| BenchReport::from_json(&t, &path).ok()) {
        Some(r) => format!("holds a previous peregrine bench report (model {}, {})", r.model, r.date),
        None => "holds files of an earlier peregrine bench report".to_string(),
    }
}

fn remove_report_files(dir: &Path, entries: &[(String, bool)]) -> Result<()> {
    for (name, _) in entries {
        let path: PathBuf = dir.join(name);
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_absent_and_accepts_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        prepare_out_dir(&dir, false).unwrap();
        assert!(dir.is_dir());
        prepare_out_dir(&dir, false).unwrap();
    }

    #[test]
    fn refuses_foreign_files_even_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        std::fs::write(tmp.path().join(RESULTS_JSON), "{}").unwrap();
        for force in [false, true] {
            let e = prepare_out_dir(tmp.path(), force).unwrap_err().to_string();
            assert!(e.contains("notes.txt") && e.contains("other files"), "{e}");
            assert_eq!(e.lines().count(), 1);
        }
        assert!(tmp.path().join("notes.txt").exists());
        assert!(tmp.path().join(RESULTS_JSON).exists());
    }

    #[test]
    fn refuses_a_subdirectory_and_a_plain_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("seed-x.png")).unwrap();
        assert!(prepare_out_dir(tmp.path(), true).unwrap_err().to_string().contains("seed-x.png"));
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(prepare_out_dir(&file, true).unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn previous_report_needs_force_then_only_ours_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join(RESULTS_CSV), "a,b\n").unwrap();
        std::fs::write(dir.join(seed_chart_name("nf4")), "png").unwrap();
        let e = prepare_out_dir(dir, false).unwrap_err().to_string();
        assert!(e.contains(OVERWRITE_FLAG) && e.contains("earlier peregrine bench report"), "{e}");
        assert!(dir.join(RESULTS_CSV).exists());
        prepare_out_dir(dir, true).unwrap();
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    }

    #[test]
    fn labels_become_safe_file_names() {
        assert_eq!(seed_chart_name("nf4"), "seed-nf4.png");
        assert_eq!(seed_chart_name("nf4 dq/bf16"), "seed-nf4_dq_bf16.png");
    }
}
