//! `peregrine ppl`: perplexity per weight format over a text file, and KL divergence /
//! top-token agreement against the first format listed (llama.cpp's perplexity tool).

use peregrine_core::{Backend, Error, Result};
use peregrine_engine::{quality_report, QualityRow, Tokenizer, WindowPlan};

use crate::args::PplArgs;
use crate::device::{dispatch, OnBackend};
use crate::load::{load_model, model_dir, FormatSpec};

pub fn run(args: PplArgs) -> Result<()> {
    let formats = parse_formats(&args.quant, &args)?;
    let text = std::fs::read_to_string(&args.file).map_err(|e| Error::io(&args.file, e))?;
    let dir = model_dir(&args.model)?;
    let tokens = Tokenizer::from_dir(&dir)?.encode(&text)?;
    let plan = WindowPlan { ctx: args.ctx, stride: args.stride.unwrap_or(args.ctx), chunks: args.chunks };
    plan.starts(tokens.len())?;
    let rows = dispatch(args.device, Job { dir: dir.to_string_lossy().into_owned(), formats, tokens, plan })?;
    print_rows(&rows, &args)
}

fn parse_formats(list: &str, a: &PplArgs) -> Result<Vec<FormatSpec>> {
    let formats = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|q| FormatSpec::from_args(q, &a.format))
        .collect::<Result<Vec<_>>>()?;
    if formats.is_empty() {
        return Err(Error::input("--quant lists no configuration"));
    }
    Ok(formats)
}

struct Job {
    dir: String,
    formats: Vec<FormatSpec>,
    tokens: Vec<u32>,
    plan: WindowPlan,
}

impl OnBackend for Job {
    type Output = Vec<QualityRow>;
    fn run<B: Backend>(self, backend: &B) -> Result<Vec<QualityRow>> {
        let models = self
            .formats
            .iter()
            .map(|f| load_model(backend, &self.dir, f, false).map(|l| (l.quant.to_string(), l.model)))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<(String, &peregrine_models::Falcon<B>)> = models.iter().map(|(l, m)| (l.clone(), m)).collect();
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        let rows = quality_report(backend, &refs, &self.tokens, self.plan, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        Ok(rows)
    }
}

fn print_rows(rows: &[QualityRow], a: &PplArgs) -> Result<()> {
    if a.json {
        println!("{}", serde_json::json!({ "model": a.model, "ctx": a.ctx, "file": a.file, "results": rows }));
        return Ok(());
    }
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |x| format!("{x:.digits$}"));
    let share = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.2} %", 100.0 * x));
    println!("| config | perplexity | tokens | mean KL | KL p99 | same top token |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {:.4} | {} | {} | {} | {} |",
            r.label,
            r.perplexity,
            r.tokens,
            opt(r.kl_mean, 6),
            opt(r.kl_p99, 6),
            share(r.top1_agree)
        );
    }
    Ok(())
}
