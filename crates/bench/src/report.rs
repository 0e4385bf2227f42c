//! Writing a finished report to its directory: results.json, results.csv, prefill.csv (when
//! there are prefill figures), outputs.md, comparison.png and one seed-<label>.png per
//! configuration; and reading results.json back.
//!
//! Design choice: every file is created with `create_new` (or checked absent before a plot
//! is drawn), so even a caller that skipped `prepare_out_dir` can never overwrite a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use peregrine_core::{Error, Result};

use crate::csv::{render_csv, render_prefill_csv};
use crate::outdir::{seed_chart_name, COMPARISON_PNG, OUTPUTS_MD, PREFILL_CSV, RESULTS_CSV, RESULTS_JSON};
use crate::outputs::render_outputs_md;
use crate::plots::{plot_comparison, plot_seed_chart};
use crate::schema::BenchReport;

/// Write every file of `report` into `dir` (which `prepare_out_dir` made ready) and return
/// their paths in the order written. Configurations without a measured run get no seed chart.
pub fn write_report(dir: &Path, report: &BenchReport) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, text) in [
        (RESULTS_JSON, report.to_json() + "\n"),
        (RESULTS_CSV, render_csv(report)),
        (OUTPUTS_MD, render_outputs_md(report)),
    ] {
        written.push(write_new(&dir.join(name), &text)?);
    }
    if report.configs.iter().any(|c| c.prefill.is_some()) {
        written.push(write_new(&dir.join(PREFILL_CSV), &render_prefill_csv(report))?);
    }
    for config in report.configs.iter().filter(|c| c.summary.runs > 0) {
        let path = absent(dir.join(seed_chart_name(&config.label)))?;
        plot_seed_chart(report, config, &path)?;
        written.push(path);
    }
    let path = absent(dir.join(COMPARISON_PNG))?;
    plot_comparison(report, &path)?;
    written.push(path);
    Ok(written)
}

/// Read a results.json written by `write_report` (or `--json`).
pub fn read_report(path: &Path) -> Result<BenchReport> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    BenchReport::from_json(&text, path)
}

/// `path`, or an error if something is already there.
fn absent(path: PathBuf) -> Result<PathBuf> {
    if path.exists() {
        return Err(Error::file(&path, "already exists; refusing to overwrite it"));
    }
    Ok(path)
}

/// Create `path` (failing if it exists) and write `text` to it.
fn write_new(path: &Path, text: &str) -> Result<PathBuf> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::file(path, "already exists; refusing to overwrite it")
        } else {
            Error::io(path, e)
        }
    })?;
    file.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::baseline::{Baseline, BaselineConfig, BaselineRun};
    use crate::csv::{tests::parse_csv, CSV_COLUMNS};
    use crate::outdir::prepare_out_dir;
    use crate::outputs::SYNTHETIC_BANNER;
    use crate::runner::BenchPlan;
    use crate::schema::*;
    use peregrine_core::QuantKind;

    /// An answer with everything that could break a CSV or markdown writer.
    const NASTY: &str = "Once, a \"lamp\" said:\n```\nwish\n``` and, then\r\nended";

    /// A deterministic report shaped like the seed's experiment on a 40B model: five
    /// prompts, three configurations, one warm-up and two rounds each, with a baseline and
    /// quality figures.
    pub(crate) fn sample_report() -> BenchReport {
        let plan = BenchPlan::new(crate::prompts::seed_prompts(), 2, 1, GenerationLimit::MaxLength(100)).unwrap();
        let device = DeviceInfo {
            name: "cuda:0 NVIDIA H200".into(),
            memory_bandwidth_gbps: Some(4800.0),
            total_memory_bytes: Some(150_000_000_000),
        };
        let mut report = BenchReport::new("tiiuae/falcon-40b-instruct", device, &plan);
        report.commit = Some("d3d390a-dirty".into());
        report.synthetic_weights = true;
        report.ppl_file = Some("wiki.test.raw".into());
        let specs = [(QuantKind::Bf16, 82.6, 40.0), (QuantKind::Int8, 41.8, 60.0), (QuantKind::Nf4, 22.1, 95.0)];
        for (k, &(quant, weights_gb, tok_s)) in specs.iter().enumerate() {
            report.configs.push(sample_config(&plan, quant, weights_gb, tok_s, k));
        }
        report.baseline = Some(sample_baseline());
        report
    }

    fn sample_config(plan: &BenchPlan, quant: QuantKind, weights_gb: f64, tok_s: f64, k: usize) -> ConfigResult {
        let weight_bytes = (weights_gb * 1e9) as u64;
        let mut runs = Vec::new();
        for (p, r, warmup) in plan.schedule() {
            let prompt_tokens = 11 + 2 * p;
            let generated = 100 - prompt_tokens;
            let rate = tok_s * (1.0 + 0.02 * r as f64 - 0.01 * p as f64) * if warmup { 0.5 } else { 1.0 };
            let ttft_s = 0.05 + 0.01 * p as f64;
            let total_s = ttft_s + (generated - 1) as f64 / rate;
            let text = if k == 2 && p == 0 {
                NASTY.to_string()
            } else {
                format!("Answer {p}: the same words for all, then {quant}")
            };
            runs.push(RunRecord {
                prompt_index: p,
                run_index: r,
                warmup,
                prompt: plan.prompts[p].clone(),
                prompt_tokens,
                generated_tokens: generated,
                total_s,
                ttft_s,
                decode_tok_s: decode_tok_s(generated, total_s, ttft_s),
                peak_memory_bytes: weight_bytes + 400_000_000 + 10_000_000 * p as u64,
                weight_bytes,
                achieved_gbps: achieved_gbps(weight_bytes, decode_tok_s(generated, total_s, ttft_s)),
                output_text: text,
            });
        }
        let nll: Vec<f64> = (0..64).map(|i| 1.5 + 0.01 * (k * i % 7) as f64).collect();
        let kl: Vec<f64> = (0..64).map(|i| 0.001 * (k * i % 5) as f64).collect();
        let top1: Vec<bool> = (0..64).map(|i| k == 0 || i % 9 != 0).collect();
        let mut c = ConfigResult {
            label: quant.to_string(),
            quant,
            weight_bytes,
            load_s: Some(30.0 / (k + 1) as f64),
            runs,
            summary: Summary::default(),
            ppl: Some(QualityResult::from_tokens(&nll, Some(("bf16", &kl, &top1))).unwrap()),
            prefill: Some(sample_prefill(k)),
            error: None,
            clocks: Some(sample_clocks(k)),
        };
        c.resummarize();
        c
    }

    /// Readings at the power limit, a lower clock for later configurations.
    fn sample_clocks(k: usize) -> crate::clocks::ClockSummary {
        let sm = 1980.0 - 60.0 * k as f64;
        let sample = |i: usize| crate::clocks::ClockSample {
            sm_mhz: sm - i as f64,
            power_w: 690.0 + (i % 3) as f64,
            power_capped: i % 4 != 0,
        };
        let v: Vec<_> = (0..20).map(sample).collect();
        crate::clocks::ClockSummary::of(&v, Some(700.0)).unwrap()
    }

    /// Three warm prefills of 2048 tokens on Falcon-40B, slower for later configurations.
    fn sample_prefill(k: usize) -> PrefillResult {
        let base = 0.30 + 0.05 * k as f64;
        let flops = crate::prefill::tests::FALCON_40B.prefill_flops(2048);
        PrefillResult::from_runs(2048, base + 0.09, vec![base + 0.01, base, base + 0.02], flops).unwrap()
    }

    fn sample_baseline() -> Baseline {
        let cfg = |label: &str, s: f64, gb: f64| BaselineConfig {
            label: label.into(),
            kind: None,
            runs: (0..5)
                .map(|i| BaselineRun {
                    prompt_tokens: 15,
                    generated_tokens: 85,
                    total_s: s * (1.0 + 0.03 * i as f64),
                    peak_memory_gb: gb,
                    ttft_s: None,
                    warmup: i == 0,
                })
                .collect(),
            summary: Summary::default(),
        };
        let mut b = Baseline {
            source: "transformers 5.17 + bitsandbytes 0.50.2".into(),
            device: Some("NVIDIA H200".into()),
            configs: vec![cfg("bf16", 4.9, 82.9), cfg("int8", 12.6, 42.1), cfg("nf4", 5.2, 22.8)],
        };
        b.resummarize();
        b
    }

    /// Copy the written files to $PEREGRINE_BENCH_KEEP/<name> when set, to look at the plots.
    fn keep(name: &str, files: &[PathBuf]) {
        if let Ok(dir) = std::env::var("PEREGRINE_BENCH_KEEP") {
            let dir = Path::new(&dir).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for f in files {
                std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
            }
        }
    }

    #[test]
    fn writes_every_file_and_they_parse_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let report = sample_report();
        prepare_out_dir(&dir, false).unwrap();
        let files = write_report(&dir, &report).unwrap();
        keep("full", &files);
        let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        let expected = [
            "results.json",
            "results.csv",
            "outputs.md",
            "prefill.csv",
            "seed-bf16.png",
            "seed-int8.png",
            "seed-nf4.png",
            "comparison.png",
        ];
        assert_eq!(names, expected);
        for png in files.iter().filter(|f| f.extension().is_some_and(|e| e == "png")) {
            let bytes = std::fs::read(png).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", png.display());
        }
        assert_eq!(read_report(&dir.join(RESULTS_JSON)).unwrap(), report);
        check_csv(&std::fs::read_to_string(dir.join(RESULTS_CSV)).unwrap(), &report);
        check_prefill_csv(&std::fs::read_to_string(dir.join(crate::outdir::PREFILL_CSV)).unwrap(), &report);
        let md = std::fs::read_to_string(dir.join(OUTPUTS_MD)).unwrap();
        assert!(md.contains(SYNTHETIC_BANNER));
        assert!(report.prompts.iter().all(|p| md.contains(p.as_str())));
        assert!(md.contains("````text\nOnce, a \"lamp\" said:\n```\nwish\n```"), "{md}");
    }

    fn check_csv(text: &str, report: &BenchReport) {
        let rows = parse_csv(text);
        assert_eq!(rows[0], CSV_COLUMNS);
        let runs: Vec<(&ConfigResult, &RunRecord)> =
            report.configs.iter().flat_map(|c| c.runs.iter().map(move |r| (c, r))).collect();
        assert_eq!(rows.len() - 1, runs.len());
        for (row, (c, r)) in rows[1..].iter().zip(runs) {
            assert_eq!(row.len(), CSV_COLUMNS.len());
            assert_eq!((row[0].as_str(), row[6].as_str()), (c.label.as_str(), if r.warmup { "true" } else { "false" }));
            assert_eq!(row[9].parse::<f64>().unwrap(), r.total_s);
            assert_eq!(row[11].parse::<f64>().ok(), r.decode_tok_s);
            assert_eq!(row[12].parse::<u64>().unwrap(), r.peak_memory_bytes);
            assert_eq!(row[16], r.output_text);
        }
    }

    fn check_prefill_csv(text: &str, report: &BenchReport) {
        let rows = parse_csv(text);
        assert_eq!(rows[0], crate::csv::PREFILL_CSV_COLUMNS);
        assert_eq!(rows.len() - 1, 3 * 4, "a warm-up and three timed rows per configuration");
        let bf16 = report.configs[0].prefill.as_ref().unwrap();
        assert_eq!(rows[1][..7], ["bf16", "bf16", report.model.as_str(), report.device.name.as_str(), "2048", "0", "true"]);
        assert_eq!(rows[1][7].parse::<f64>().unwrap(), bf16.warmup_s);
        assert_eq!(rows[3][5..8], ["1", "false", &bf16.runs_s[1].to_string()]);
        let tflops: f64 = rows[3][9].parse().unwrap();
        assert!((tflops - bf16.flops / 0.30 / 1e12).abs() < 1e-9, "{tflops}");
    }

    #[test]
    fn a_second_report_never_overwrites_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let report = sample_report();
        write_report(tmp.path(), &report).unwrap();
        let e = write_report(tmp.path(), &report).unwrap_err().to_string();
        assert!(e.contains("results.json") && e.contains("refusing to overwrite"), "{e}");
        let e = prepare_out_dir(tmp.path(), false).unwrap_err().to_string();
        assert!(e.contains("previous peregrine bench report") && e.contains("falcon-40b-instruct"), "{e}");
        prepare_out_dir(tmp.path(), true).unwrap();
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn table_shows_every_config_and_the_baseline() {
        let t = crate::table::render_table(&sample_report());
        println!("{t}");
        for needle in [
            "| bf16 ",
            "| nf4 ",
            "nf4 (baseline)",
            "baseline: transformers 5.17 + bitsandbytes 0.50.2 on NVIDIA H200",
            "% of BW",
            "PPL",
            "±",
            "synthetic weights",
        ] {
            assert!(t.contains(needle), "missing `{needle}` in\n{t}");
        }
        // Three tables, each a block of `|` lines of one width: the matrix, the prefill, the clocks.
        let tables: Vec<Vec<&str>> = t
            .split("\n\n")
            .map(|block| block.lines().filter(|l| l.starts_with('|')).collect::<Vec<_>>())
            .filter(|lines| !lines.is_empty())
            .collect();
        assert_eq!(tables.iter().map(Vec::len).collect::<Vec<_>>(), [2 + 3 + 3, 2 + 3, 2 + 3], "{t}");
        for lines in &tables {
            assert!(lines.iter().all(|l| l.chars().count() == lines[0].chars().count()), "{t}");
        }
        // bf16: median 0.31 s of 171.11 TFLOP.
        let bf16: Vec<&str> = tables[1][2].split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(bf16, ["bf16", "2048", "0.310", "0.300", "0.320", "3", "6606", "552.0", "0.390"]);
        // nf4 (the third configuration): SM 1860 - 0..19 MHz, 690-692 W, 15 of 20 readings capped.
        let nf4: Vec<&str> = tables[2][4].split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(nf4, ["nf4", "1850", "1841", "1860", "691.0", "692.0", "700.0", "75%", "20"]);
        assert!(t.contains("clocks: the device's SM clock"), "{t}");
    }

    /// A tiny CPU model: one run per prompt, no bandwidth, no baseline, one config failed.
    fn partial_report() -> BenchReport {
        let plan =
            BenchPlan::new(vec!["Hello".into(), "Two words".into()], 1, 0, GenerationLimit::MaxNewTokens(16)).unwrap();
        let device =
            DeviceInfo { name: "cpu (2 threads)".into(), memory_bandwidth_gbps: None, total_memory_bytes: None };
        let mut report = BenchReport::new("/work/shared/assets/models/peregrine-tiny-falcon/", device, &plan);
        let mut ok = sample_config(&plan, QuantKind::F32, 0.012, 350.0, 0);
        ok.ppl = None;
        ok.prefill = None;
        let failed = ConfigResult {
            label: "nf4".into(),
            quant: QuantKind::Nf4,
            weight_bytes: 0,
            load_s: None,
            runs: Vec::new(),
            summary: Summary::default(),
            ppl: None,
            prefill: None,
            error: Some("load failed: nf4 needs a CUDA device".into()),
            clocks: None,
        };
        report.configs = vec![ok, failed];
        report
    }

    #[test]
    fn a_partial_report_still_writes_and_says_what_failed() {
        let tmp = tempfile::tempdir().unwrap();
        let report = partial_report();
        let files = write_report(tmp.path(), &report).unwrap();
        keep("partial", &files);
        assert!(!tmp.path().join("seed-nf4.png").exists());
        assert!(tmp.path().join("seed-f32.png").exists());
        let t = crate::table::render_table(&report);
        assert!(t.contains("nf4 (failed)") && t.contains("nf4 failed: load failed: nf4 needs a CUDA device"), "{t}");
        assert!(!t.contains("% of BW") && !t.contains("PPL") && !t.contains("prefill tokens"), "{t}");
        assert!(!tmp.path().join(crate::outdir::PREFILL_CSV).exists(), "no prefill figures, no prefill.csv");
        let md = std::fs::read_to_string(tmp.path().join(OUTPUTS_MD)).unwrap();
        assert!(md.contains("_No answer: load failed: nf4 needs a CUDA device._") && !md.contains("Synthetic"), "{md}");
    }

    #[test]
    fn plots_survive_edge_cases() {
        // No configuration at all, and zero memory figures (a backend that does not track).
        let tmp = tempfile::tempdir().unwrap();
        let mut empty = partial_report();
        empty.configs.clear();
        assert!(write_report(&tmp.path().join("empty"), &empty).is_err()); // the directory is absent
        std::fs::create_dir(tmp.path().join("empty")).unwrap();
        write_report(&tmp.path().join("empty"), &empty).unwrap();
        // Many runs: 6 prompts x 8 rounds on one chart.
        let plan =
            BenchPlan::new((0..6).map(|i| format!("prompt {i}")).collect(), 8, 2, GenerationLimit::MaxLength(100))
                .unwrap();
        let mut many = partial_report();
        let mut c = sample_config(&plan, QuantKind::Fp4, 23.3, 11.0, 1);
        c.runs.iter_mut().for_each(|r| r.peak_memory_bytes = 0);
        c.resummarize();
        many.prompts = plan.prompts.clone();
        many.configs = vec![c];
        let dir = tmp.path().join("many");
        std::fs::create_dir(&dir).unwrap();
        let files = write_report(&dir, &many).unwrap();
        keep("many", &files);
        assert_eq!(files.len(), 6, "3 text files, prefill.csv, 2 plots");
    }
}
