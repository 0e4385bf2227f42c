//! `peregrine tokenize`, `peregrine detokenize` and `peregrine logits`: the verification tools.

use peregrine_core::{Backend, Result};
use peregrine_engine::{all_logits, Tokenizer};

use crate::args::{DetokenizeArgs, LogitsArgs, TokenizeArgs};
use crate::device::{dispatch, OnBackend};
use crate::load::{check_ids, load_model, model_dir, parse_ids, FormatSpec};

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let tok = Tokenizer::from_dir(&model_dir(&args.model)?)?;
    println!("{}", serde_json::json!({ "ids": tok.encode(&args.text)? }));
    Ok(())
}

pub fn detokenize(args: DetokenizeArgs) -> Result<()> {
    let tok = Tokenizer::from_dir(&model_dir(&args.model)?)?;
    let text = tok.decode(&parse_ids(&args.ids)?)?;
    match args.json {
        true => println!("{}", serde_json::json!({ "text": text })),
        false => println!("{text}"),
    }
    Ok(())
}

pub fn logits(args: LogitsArgs) -> Result<()> {
    let fmt = FormatSpec::from_load_args(&args.model.load)?;
    dispatch(args.model.load.device, LogitsJob { args, fmt })
}

struct LogitsJob {
    args: LogitsArgs,
    fmt: FormatSpec,
}

impl OnBackend for LogitsJob {
    type Output = ();
    fn run<B: Backend>(self, backend: &B) -> Result<()> {
        let a = &self.args;
        let loaded = load_model(backend, &a.model.model, &self.fmt, a.model.load.dummy_weights)?;
        let ids = match (&a.prompt_ids, &a.prompt, &loaded.dir) {
            (Some(ids), _, _) => parse_ids(ids)?,
            (None, Some(text), Some(dir)) => Tokenizer::from_dir(dir)?.encode(text)?,
            _ => return Err(peregrine_core::Error::input("--prompt needs a model with a tokenizer.json; use --prompt-ids")),
        };
        let v = loaded.model.config.vocab_size;
        check_ids(&ids, v)?;
        let logits = all_logits(backend, &loaded.model, &ids)?;
        let rows: Vec<&[f32]> = logits.chunks(v).collect();
        println!("{}", serde_json::json!({ "ids": ids, "logits": rows }));
        Ok(())
    }
}
