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
