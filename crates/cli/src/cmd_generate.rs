//! `peregrine generate`: stream a continuation of a prompt, or print one JSON object.

use std::io::Write;

use peregrine_core::{Backend, Result, SamplingParams};
use peregrine_engine::{plan_new_tokens, GenerateOutput, GenerateRequest, Session, Tokenizer};

use crate::args::{GenerateArgs, SamplingArgs};
use crate::device::{dispatch, OnBackend};
use crate::load::{check_ids, load_model, parse_ids, FormatSpec};

pub fn run(args: GenerateArgs) -> Result<()> {
    let fmt = FormatSpec::from_load_args(&args.model.load)?;
    sampling_params(&args.sampling).validate()?;
    dispatch(args.model.load.device, Job { args, fmt })
}

struct Job {
    args: GenerateArgs,
    fmt: FormatSpec,
}

impl OnBackend for Job {
    type Output = ();
    fn run<B: Backend>(self, backend: &B) -> Result<()> {
        let a = &self.args;
        let loaded = load_model(backend, &a.model.model, &self.fmt, a.model.load.dummy_weights)?;
        let model = &loaded.model;
        let tokenizer = match (&a.prompt, &loaded.dir) {
            (Some(_), Some(dir)) => Some(Tokenizer::from_dir(dir)?),
            (Some(_), None) => return Err(peregrine_core::Error::input("--prompt needs a model with a tokenizer.json; use --prompt-ids")),
            (None, Some(dir)) if dir.join("tokenizer.json").exists() => Some(Tokenizer::from_dir(dir)?),
            _ => None,
        };
        let prompt_ids = match (&a.prompt, &a.prompt_ids) {
            (Some(text), _) => tokenizer.as_ref().expect("checked above").encode(text)?,
            (None, Some(ids)) => parse_ids(ids)?,
            (None, None) => unreachable!("clap requires one of --prompt and --prompt-ids"),
        };
        check_ids(&prompt_ids, model.config.vocab_size)?;
        let req = request(&a.sampling, prompt_ids, model)?;
        let mut session = Session::new(backend, model, req.prompt_ids.len() + req.max_new_tokens, req.prompt_ids.len())?;
        session.set_graphs(!a.no_graph);
        let out = if a.json {
            session.generate(&req, tokenizer.as_ref(), &mut |_| {})?
        } else {
            stream(&mut session, &req, tokenizer.as_ref(), a.prompt.as_deref())?
        };
        report(&out, a.json, backend, &loaded)
    }
}

/// Reconcile the flags into a generation request.
pub fn request<B: Backend>(s: &SamplingArgs, prompt_ids: Vec<u32>, model: &peregrine_models::Falcon<B>) -> Result<GenerateRequest> {
    let c = &model.config;
    let max_new = plan_new_tokens(prompt_ids.len(), s.max_new_tokens, s.max_length, c.max_position_embeddings)?;
    Ok(GenerateRequest {
        prompt_ids,
        max_new_tokens: max_new,
        sampling: sampling_params(s),
        stop_strings: s.stop.clone(),
        eos_ids: if s.ignore_eos { vec![] } else { c.eos_token_ids.clone() },
    })
}

pub fn sampling_params(s: &SamplingArgs) -> SamplingParams {
    SamplingParams {
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        repetition_penalty: s.repetition_penalty,
        seed: s.seed,
    }
}

/// Print the prompt, then each piece of the continuation as soon as it is complete.
fn stream<B: Backend>(session: &mut Session<'_, B>, req: &GenerateRequest, tok: Option<&Tokenizer>, prompt: Option<&str>) -> Result<GenerateOutput> {
    let mut stdout = std::io::stdout().lock();
    if let Some(p) = prompt {
        let _ = write!(stdout, "{p}");
        let _ = stdout.flush();
    }
    let out = session.generate(req, tok, &mut |piece| {
        let _ = write!(stdout, "{piece}");
        let _ = stdout.flush();
    })?;
    if tok.is_none() {
        let ids: Vec<String> = out.ids.iter().map(u32::to_string).collect();
        let _ = write!(stdout, "{}", ids.join(","));
    }
    let _ = writeln!(stdout);
    Ok(out)
}

fn report<B: Backend>(out: &GenerateOutput, json: bool, backend: &B, loaded: &crate::load::Loaded<B>) -> Result<()> {
    if json {
        let v = serde_json::json!({
            "weights": loaded.weights_json(backend),
            "peak_memory_bytes": backend.memory().peak_bytes,
            "ids": out.ids,
            "text": out.text,
            "prompt_tokens": out.prompt_tokens,
            "generated_tokens": out.ids.len(),
            "finish_reason": out.finish_reason,
            "timings": out.timings,
            "device": backend.name(),
        });
        println!("{v}");
    } else {
        let t = &out.timings;
        eprintln!(
            "[{} prompt + {} new tokens on {}; first token {:.1} ms; decode {:.1} tok/s; total {:.2} s]",
            out.prompt_tokens,
            out.ids.len(),
            backend.name(),
            1e3 * t.time_to_first_token_s,
            t.decode_tokens_per_s,
            t.total_s
        );
    }
    Ok(())
}
