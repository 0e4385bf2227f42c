//! `peregrine quantize`: read a checkpoint tensor by tensor, quantize every block linear
//! (embeddings, head and norms stay as stored), and write a bitsandbytes-layout checkpoint
//! (sharded safetensors + config.json with `quantization_config`) that transformers and
//! Peregrine both load. The output directory must be new or empty: nothing is overwritten,
//! and a failed run removes what it wrote.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use peregrine_core::{Error, HostTensor, Result};
use peregrine_models::{checkpoint::write_safetensors, Checkpoint, FalconConfig};

use crate::args::{FormatArgs, QuantizeArgs};
use crate::load::{model_dir, FormatSpec};

/// Bytes per output shard.
const SHARD_BYTES: usize = 4 << 30;
/// Files copied along when present.
const SIDE_FILES: [&str; 4] = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"];
/// The linears of a block that get quantized (transformers + bitsandbytes quantize these).
const BLOCK_LINEARS: [&str; 4] =
    ["self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"];

pub fn run(args: QuantizeArgs) -> Result<()> {
    let format = FormatArgs {
        int8_threshold: Some(args.int8_threshold),
        blocksize: args.blocksize,
        no_double_quant: args.no_double_quant,
    };
    let fmt = FormatSpec::from_args(&args.quant, &format)?;
    let quant = fmt.quant.filter(|q| q.is_quantized()).ok_or_else(|| {
        Error::input(format!("--quant {}: `peregrine quantize` writes int8, nf4 or fp4", args.quant))
    })?;
    let src = model_dir(&args.model)?;
    let config = FalconConfig::from_dir(&src)?;
    if config.quantization_config.is_some() {
        return Err(Error::file(src.join("config.json"), "is already quantized (has quantization_config)"));
    }
    let created = claim_out_dir(&args.out)?;
    let result = write_all(&src, &args.out, quant, &fmt);
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(&args.out);
    }
    let (tensors, bytes) = result?;
    eprintln!("peregrine: wrote {tensors} tensors ({:.2} GB) to {}", bytes as f64 / 1e9, args.out.display());
    Ok(())
}

/// Make sure `out` is ours to write: absent (create it) or an empty directory.
fn claim_out_dir(out: &Path) -> Result<bool> {
    match std::fs::read_dir(out) {
        Ok(mut entries) => match entries.next() {
            None => Ok(false),
            Some(_) => Err(Error::file(out, "exists and is not empty; choose a new --out directory")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
            Ok(true)
        }
        Err(e) => Err(Error::io(out, e)),
    }
}

fn write_all(src: &Path, out: &Path, quant: peregrine_core::QuantKind, fmt: &FormatSpec) -> Result<(usize, usize)> {
    let ckpt = Checkpoint::open(src)?;
    let mut shards = ShardWriter::new(out);
    for name in ckpt.names().map(String::from).collect::<Vec<_>>() {
        let t = ckpt.read(&name)?;
        match block_linear_prefix(&name) {
            Some(prefix) => {
                let w = peregrine_quant::quantize_linear(&t, quant, &fmt.opts)?;
                shards.add_all(peregrine_quant::bnb_linear_tensors(prefix, &w)?)?;
            }
            None => shards.add(name, t)?,
        }
    }
    let (count, bytes) = shards.finish()?;
    write_config(src, out, quant, fmt)?;
    for f in SIDE_FILES {
        if src.join(f).exists() {
            std::fs::copy(src.join(f), out.join(f)).map_err(|e| Error::io(out.join(f), e))?;
        }
    }
    Ok((count, bytes))
}

/// `transformer.h.N.<linear>` for a quantizable block weight.
fn block_linear_prefix(name: &str) -> Option<&str> {
    let prefix = name.strip_suffix(".weight")?;
    let rest = prefix.strip_prefix("transformer.h.")?;
    let (_, module) = rest.split_once('.')?;
    BLOCK_LINEARS.contains(&module).then_some(prefix)
}

fn write_config(src: &Path, out: &Path, quant: peregrine_core::QuantKind, fmt: &FormatSpec) -> Result<()> {
    let path = src.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, e.to_string()))?;
    let qc = peregrine_quant::BnbConfig::new(quant, &fmt.opts, peregrine_core::DType::BF16)?.to_json()?;
    v.as_object_mut().ok_or_else(|| Error::file(&path, "expected a JSON object"))?.insert("quantization_config".into(), qc);
    let dst = out.join("config.json");
    let pretty = serde_json::to_string_pretty(&v).map_err(|e| Error::msg(e.to_string()))?;
    std::fs::write(&dst, pretty + "\n").map_err(|e| Error::io(&dst, e))
}

/// Collects tensors into shards of about `SHARD_BYTES`, then writes the index.
struct ShardWriter {
    out: PathBuf,
    pending: Vec<(String, HostTensor)>,
    pending_bytes: usize,
    shards: Vec<Vec<String>>,
    total: usize,
    count: usize,
}

impl ShardWriter {
    fn new(out: &Path) -> Self {
        ShardWriter { out: out.to_path_buf(), pending: vec![], pending_bytes: 0, shards: vec![], total: 0, count: 0 }
    }

    fn add_all(&mut self, tensors: Vec<(String, HostTensor)>) -> Result<()> {
        tensors.into_iter().try_for_each(|(n, t)| self.add(n, t))
    }

    fn add(&mut self, name: String, t: HostTensor) -> Result<()> {
        self.pending_bytes += t.bytes.len();
        self.total += t.bytes.len();
        self.count += 1;
        self.pending.push((name, t));
        if self.pending_bytes >= SHARD_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self.out.join(format!("shard-{}.tmp", self.shards.len()));
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(&path, &self.pending, Some(meta))?;
        self.shards.push(self.pending.drain(..).map(|(n, _)| n).collect());
        self.pending_bytes = 0;
        Ok(())
    }

    /// Name the shards as transformers does (one file: model.safetensors) and write the index.
    fn finish(mut self) -> Result<(usize, usize)> {
        self.flush()?;
        let n = self.shards.len();
        let mut map = BTreeMap::new();
        for (i, names) in self.shards.iter().enumerate() {
            let file = if n == 1 { "model.safetensors".to_string() } else { format!("model-{:05}-of-{:05}.safetensors", i + 1, n) };
            let from = self.out.join(format!("shard-{i}.tmp"));
            std::fs::rename(&from, self.out.join(&file)).map_err(|e| Error::io(&from, e))?;
            names.iter().for_each(|t| {
                map.insert(t.clone(), file.clone());
            });
        }
        if n > 1 {
            let index = serde_json::json!({ "metadata": { "total_size": self.total }, "weight_map": map });
            let path = self.out.join("model.safetensors.index.json");
            std::fs::write(&path, index.to_string()).map_err(|e| Error::io(&path, e))?;
        }
        Ok((self.count, self.total))
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_block_linears_are_quantized() {
        assert_eq!(block_linear_prefix("transformer.h.3.mlp.dense_h_to_4h.weight"), Some("transformer.h.3.mlp.dense_h_to_4h"));
        assert_eq!(block_linear_prefix("transformer.h.3.self_attention.query_key_value.weight"), Some("transformer.h.3.self_attention.query_key_value"));
        assert_eq!(block_linear_prefix("transformer.h.3.self_attention.query_key_value.bias"), None);
        assert_eq!(block_linear_prefix("transformer.word_embeddings.weight"), None);
        assert_eq!(block_linear_prefix("lm_head.weight"), None);
        assert_eq!(block_linear_prefix("transformer.h.0.ln_attn.weight"), None);
    }
}
