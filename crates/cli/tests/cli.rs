//! The `peregrine` binary as a user runs it (CPU): real outputs on the tiny model and the
//! reference checkpoints, and one clear error line with a non-zero exit for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn peregrine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peregrine")).args(args).output().expect("run peregrine")
}

fn shared(rel: &str) -> String {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/assets")).join(rel);
    assert!(p.exists(), "missing shared test data {} (tests need ../shared/assets)", p.display());
    p.to_string_lossy().into_owned()
}

fn reference(rel: &str) -> String {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../reference")).join(rel);
    assert!(p.exists(), "missing reference data {}", p.display());
    p.to_string_lossy().into_owned()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Exactly one stderr line, `peregrine: error: ...` containing `needle`, and a non-zero exit.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("peregrine: no CUDA")).collect();
    assert!(!o.status.success(), "expected failure, got success: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(lines.len(), 1, "expected one line, got:\n{err}");
    assert!(lines[0].starts_with("peregrine: error: "), "{err}");
    assert!(lines[0].contains(needle), "expected `{needle}` in: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

#[test]
fn generate_prints_the_tiny_models_continuation() {
    let model = shared("models/peregrine-tiny-falcon");
    let o = peregrine(&["generate", "--device", "cpu", "--model", &model, "--prompt", "Once upon a time", "--max-new-tokens", "40"]);
    assert_eq!(
        stdout(&o),
        "Once upon a time, there was a little girl named Lily. She loved to play outside and play with her toys. \
         One day, Lily's mom asked her to play with her toys. Lily was very happy and\n"
    );
}

#[test]
fn generate_json_reports_ids_text_and_timings() {
    let model = shared("models/peregrine-tiny-falcon");
    let o = peregrine(&["generate", "--device", "cpu", "--model", &model, "--prompt", "Once upon a time", "--max-length", "10", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["prompt_tokens"], 4);
    assert_eq!(v["ids"].as_array().unwrap().len(), 6, "max_length counts the prompt");
    assert!(v["text"].as_str().unwrap().starts_with(", there was a little girl"));
    assert!(v["timings"]["time_to_first_token_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn stop_strings_end_generation_before_they_print() {
    let model = shared("models/peregrine-tiny-falcon");
    let o = peregrine(&["generate", "--device", "cpu", "--model", &model, "--prompt", "Once upon a time", "--max-new-tokens", "40", "--stop", "Lily"]);
    assert_eq!(stdout(&o), "Once upon a time, there was a little girl named \n");
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let model = shared("models/peregrine-tiny-falcon");
    let o = peregrine(&["tokenize", "--model", &model, "Hello, world! 1234 <|endoftext|>"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let ids: Vec<String> = v["ids"].as_array().unwrap().iter().map(|i| i.to_string()).collect();
    assert_eq!(ids.last().unwrap(), "11");
    let o = peregrine(&["detokenize", "--model", &model, &ids.join(",")]);
    assert_eq!(stdout(&o), "Hello, world! 1234 <|endoftext|>\n");
}

#[test]
fn logits_rows_match_the_reference() {
    let dir = reference("checkpoints/falcon-40b-style");
    let o = peregrine(&["logits", "--device", "cpu", "--model", &dir, "--prompt-ids", "1,2,3"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = v["logits"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].as_array().unwrap().len(), 1000);
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("peregrine-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_model(src: &str, dst: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn bad_model_directories_get_one_clear_line() {
    let empty = temp_dir("empty");
    assert_one_line_error(&peregrine(&["logits", "--device", "cpu", "--model", empty.to_str().unwrap(), "--prompt-ids", "1"]), "config.json");

    let truncated = temp_dir("truncated");
    copy_model(&reference("checkpoints/falcon-40b-style"), &truncated);
    let st = truncated.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(&peregrine(&["logits", "--device", "cpu", "--model", truncated.to_str().unwrap(), "--prompt-ids", "1"]), "model.safetensors");

    let reshaped = temp_dir("reshaped");
    copy_model(&reference("checkpoints/falcon-40b-style"), &reshaped);
    let cfg = reshaped.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["ffn_hidden_size"] = serde_json::json!(96);
    std::fs::write(&cfg, v.to_string()).unwrap();
    assert_one_line_error(&peregrine(&["logits", "--device", "cpu", "--model", reshaped.to_str().unwrap(), "--prompt-ids", "1"]), "dense_h_to_4h.weight");

    let pickle = temp_dir("pickle");
    std::fs::copy(reshaped.join("config.json"), pickle.join("config.json")).unwrap();
    std::fs::write(pickle.join("pytorch_model.bin"), b"not really").unwrap();
    assert_one_line_error(&peregrine(&["logits", "--device", "cpu", "--model", pickle.to_str().unwrap(), "--prompt-ids", "1"]), "safe_serialization");
    for d in [empty, truncated, reshaped, pickle] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn bad_prompts_and_flags_get_one_clear_line() {
    let tiny = shared("models/peregrine-tiny-falcon");
    let dir = reference("checkpoints/falcon-7b-style");
    assert_one_line_error(&peregrine(&["logits", "--device", "cpu", "--model", &dir, "--prompt-ids", "1,5000"]), "outside the vocabulary");
    assert_one_line_error(&peregrine(&["generate", "--device", "cpu", "--model", &tiny, "--prompt", ""]), "empty");
    let long: Vec<String> = (0..300).map(|i| (i % 900).to_string()).collect();
    assert_one_line_error(&peregrine(&["generate", "--device", "cpu", "--model", &dir, "--prompt-ids", &long.join(",")]), "longer than the model's context");
    assert_one_line_error(&peregrine(&["generate", "--device", "cpu", "--model", &dir, "--prompt-ids", "1,x"]), "`x` is not a token id");
    assert_one_line_error(&peregrine(&["generate", "--device", "cpu", "--model", &tiny, "--prompt", "hi", "--quant", "int3"]), "unknown quantization");
    assert_one_line_error(&peregrine(&["generate", "--device", "cpu", "--model", "/no/such/model", "--prompt", "hi"]), "no such directory");
    assert_one_line_error(&peregrine(&["generate", "--device", "cpu", "--model", &tiny]), "--prompt");
    assert_one_line_error(&peregrine(&["detokenize", "--model", &tiny, "1,99999"]), "outside the vocabulary");
}

#[test]
fn quantize_writes_a_checkpoint_that_round_trips_to_identical_logits() {
    let tiny = shared("models/peregrine-tiny-falcon");
    for quant in ["nf4", "int8"] {
        let out = temp_dir(&format!("quantized-{quant}"));
        std::fs::remove_dir(&out).unwrap();
        stdout(&peregrine(&["quantize", "--model", &tiny, "--quant", quant, "--out", out.to_str().unwrap()]));
        let ids = "7,1000,2000,3000,40000";
        let on_load = stdout(&peregrine(&["logits", "--device", "cpu", "--model", &tiny, "--quant", quant, "--prompt-ids", ids]));
        let saved = stdout(&peregrine(&["logits", "--device", "cpu", "--model", out.to_str().unwrap(), "--prompt-ids", ids]));
        assert_eq!(on_load, saved, "{quant}: the saved checkpoint must give identical logits");
        let again = peregrine(&["quantize", "--model", &tiny, "--quant", quant, "--out", out.to_str().unwrap()]);
        assert_one_line_error(&again, "not empty");
        let _ = std::fs::remove_dir_all(out);
    }
}

#[test]
fn bench_writes_the_whole_report_and_never_overwrites_it() {
    let tiny = shared("models/peregrine-tiny-falcon");
    let dir = temp_dir("bench");
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "Once upon a time\n\nAnd God said\n").unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, std::fs::read_to_string(shared("text/tinymix-valid.txt")).unwrap().chars().take(4000).collect::<String>()).unwrap();
    let out = dir.join("report");
    let args = ["bench", "--device", "cpu", "--model", &tiny, "--quant", "bf16,nf4", "--prompts", prompts.to_str().unwrap(),
        "--max-new-tokens", "6", "--runs", "2", "--warmup", "0", "--ppl-file", text.to_str().unwrap(), "--ppl-ctx", "32",
        "--ppl-chunks", "3", "--out", out.to_str().unwrap(), "--json"];
    let report: serde_json::Value = serde_json::from_str(&stdout(&peregrine(&args))).unwrap();
    let configs = report["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 2);
    for c in configs {
        assert_eq!(c["runs"].as_array().unwrap().len(), 4, "2 prompts x 2 runs");
        for r in c["runs"].as_array().unwrap() {
            assert_eq!(r["generated_tokens"], 6);
            assert!(r["peak_memory_bytes"].as_u64().unwrap() > 0);
        }
        assert!(c["ppl"]["perplexity"].as_f64().unwrap() > 1.0);
    }
    assert!(configs[1]["ppl"]["kl_mean"].as_f64().unwrap() > 0.0, "nf4 differs from bf16");
    for f in ["results.json", "results.csv", "outputs.md", "comparison.png", "seed-bf16.png", "seed-nf4.png"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows = csv.lines().filter(|l| l.starts_with("bf16,bf16,") || l.starts_with("nf4,nf4,")).count();
    assert_eq!(rows, 8, "one row per run");
    assert_one_line_error(&peregrine(&args), "--force");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bench_rejects_bad_arguments_with_one_line() {
    let tiny = shared("models/peregrine-tiny-falcon");
    let dir = temp_dir("bench-bad");
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let base = ["bench", "--device", "cpu", "--model", &tiny];
    let with = |extra: &[&str]| peregrine(&[&base[..], extra].concat());
    assert_one_line_error(&with(&["--quant", "bf16,int3"]), "unknown quantization");
    assert_one_line_error(&with(&["--prompts", "/no/such/prompts.txt"]), "prompts.txt");
    assert_one_line_error(&with(&["--runs", "0"]), "--runs");
    assert_one_line_error(&with(&["--out", dir.to_str().unwrap()]), "notes.txt");
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine", "a user's file is never touched");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cuda_without_a_driver_is_one_clear_line() {
    if peregrine_cuda_driver_present() {
        eprintln!("SKIPPED: cuda_without_a_driver_is_one_clear_line: this machine has a CUDA driver");
        return;
    }
    let tiny = shared("models/peregrine-tiny-falcon");
    assert_one_line_error(&peregrine(&["generate", "--device", "cuda", "--model", &tiny, "--prompt", "hi"]), "no CUDA driver");
    let o = peregrine(&["generate", "--device", "auto", "--model", &tiny, "--prompt", "Once", "--max-new-tokens", "2"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("running on the CPU"));
}

fn peregrine_cuda_driver_present() -> bool {
    ["/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1"]
        .iter()
        .any(|p| Path::new(p).exists())
}
