//! Falcon configuration: read a Hugging Face `config.json` (new `falcon` names or the old
//! remote-code `RefinedWeb` / `RefinedWebModel` names) and resolve it once into one
//! validated [`FalconConfig`]. Absent keys take transformers' `FalconConfig` defaults, so
//! any file transformers accepts resolves to the same model here; a combination
//! transformers cannot run fails with the field's name.

use std::path::{Path, PathBuf};

use peregrine_core::{backend::RotaryParams, Error, Result};
use serde_json::{Map, Value};

/// How a decoder block arranges its layernorms and its two branches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum BlockKind {
    /// falcon-rw-1b: `input_layernorm` -> attention -> add -> `post_attention_layernorm` -> MLP -> add.
    Sequential,
    /// falcon-7b and falcon2-11b: one `input_layernorm` feeds attention and MLP in parallel.
    ParallelSharedNorm,
    /// falcon-40b/180b: `ln_attn` feeds attention, `ln_mlp` feeds the MLP, in parallel.
    ParallelTwoNorms,
}

/// Position information: rotary (with its parameters) or ALiBi.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub enum PositionKind {
    Rotary { theta: f32, position_scale: f32 },
    Alibi,
}

/// A resolved, validated Falcon configuration.
/// Legend: V vocab, D hidden, H query heads, G KV groups, Hd head dim, F MLP width, L layers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FalconConfig {
    /// The `model_type` as written ("falcon", "RefinedWeb", "RefinedWebModel").
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub n_head: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    pub n_layer: usize,
    pub ffn_hidden_size: usize,
    pub layer_norm_eps: f32,
    /// Linear layers carry biases.
    pub bias: bool,
    pub block: BlockKind,
    pub position: PositionKind,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// config.json's `quantization_config`, when the checkpoint is pre-quantized.
    #[serde(skip)]
    pub quantization_config: Option<Value>,
}

impl FalconConfig {
    /// Read and resolve `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::file(&path, "not found: a Falcon model directory needs its config.json"),
            _ => Error::io(&path, e),
        })?;
        Self::from_json_str(&text, &path)
    }

    /// Read and resolve a config file at `path`.
    pub fn from_dir_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Resolve the JSON text of a config file; `path` names it in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| Error::file(path, "expected a JSON object"))?;
        Resolver { path: path.to_path_buf(), obj }.resolve()
    }

    /// Elements of one token's fused query_key_value output.
    pub fn qkv_width(&self) -> usize {
        (self.n_head + 2 * self.n_kv) * self.head_dim
    }

    /// The fused-qkv layout the backends use.
    pub fn qkv_layout(&self) -> peregrine_core::QkvLayout {
        peregrine_core::QkvLayout { n_head: self.n_head, n_kv: self.n_kv, head_dim: self.head_dim }
    }

    /// Rotary parameters, or None for ALiBi.
    pub fn rotary(&self) -> Option<RotaryParams> {
        match self.position {
            PositionKind::Rotary { theta, position_scale } => Some(RotaryParams { theta, position_scale }),
            PositionKind::Alibi => None,
        }
    }

    /// Parameters of the whole model (embedding counted once when tied).
    pub fn parameter_count(&self) -> u64 {
        let (d, f, v) = (self.hidden_size as u64, self.ffn_hidden_size as u64, self.vocab_size as u64);
        let qkv = self.qkv_width() as u64;
        let b = self.bias as u64;
        let norms = match self.block {
            BlockKind::ParallelSharedNorm => 2 * d,
            _ => 4 * d,
        };
        let per_layer = d * qkv + qkv * b + d * d + d * b + 2 * d * f + f * b + d * b + norms;
        let head = if self.tie_word_embeddings { 0 } else { v * d };
        v * d + self.n_layer as u64 * per_layer + 2 * d + head
    }
}

/// Reads fields with transformers' defaults and names the field in every error.
struct Resolver<'a> {
    path: PathBuf,
    obj: &'a Map<String, Value>,
}

impl Resolver<'_> {
    fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::config(&self.path, field, msg)
    }

    /// The first present key among `names` (new name first, then old remote-code names).
    fn get<'n>(&self, names: &[&'n str]) -> Option<(&'n str, &Value)> {
        names.iter().find_map(|n| self.obj.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    }

    fn usize_or(&self, names: &[&str], default: Option<usize>) -> Result<usize> {
        match self.get(names) {
            Some((name, v)) => match v.as_u64() {
                Some(n) if n > 0 => Ok(n as usize),
                _ => Err(self.err(name, format!("expected a positive integer, found {v}"))),
            },
            None => default.ok_or_else(|| self.err(names[0], "missing")),
        }
    }

    fn opt_usize(&self, names: &[&str]) -> Result<Option<usize>> {
        match self.get(names) {
            Some(_) => self.usize_or(names, None).map(Some),
            None => Ok(None),
        }
    }

    fn bool_or(&self, name: &str, default: bool) -> Result<bool> {
        match self.get(&[name]) {
            Some((_, v)) => v.as_bool().ok_or_else(|| self.err(name, format!("expected true or false, found {v}"))),
            None => Ok(default),
        }
    }

    fn f64_or(&self, name: &str, default: f64) -> Result<f64> {
        match self.get(&[name]) {
            Some((_, v)) => v.as_f64().ok_or_else(|| self.err(name, format!("expected a number, found {v}"))),
            None => Ok(default),
        }
    }

    /// A token id or a list of them (`eos_token_id` may be either).
    fn token_ids(&self, name: &str, default: Option<u32>) -> Result<Vec<u32>> {
        let bad = || self.err(name, "expected a token id or a list of token ids");
        match self.get(&[name]) {
            None => Ok(default.into_iter().collect()),
            Some((_, Value::Array(items))) => {
                items.iter().map(|v| v.as_u64().map(|n| n as u32).ok_or_else(bad)).collect()
            }
            Some((_, v)) => v.as_u64().map(|n| vec![n as u32]).ok_or_else(bad),
        }
    }

    fn resolve(&self) -> Result<FalconConfig> {
        let model_type = self.model_type()?;
        let old_40b = model_type == "RefinedWeb";
        let new_decoder = self.bool_or("new_decoder_architecture", old_40b)?;
        let hidden_size = self.usize_or(&["hidden_size", "n_embd"], Some(4544))?;
        let n_head = self.usize_or(&["num_attention_heads", "n_head"], Some(71))?;
        let n_layer = self.usize_or(&["num_hidden_layers", "n_layer"], Some(32))?;
        if hidden_size % n_head != 0 {
            return Err(self.err("hidden_size", format!("{hidden_size} is not divisible by num_attention_heads {n_head}")));
        }
        let head_dim = hidden_size / n_head;
        let parallel_attn = self.bool_or("parallel_attn", true)?;
        let alibi = self.bool_or("alibi", false)?;
        if head_dim % 2 != 0 && !alibi {
            return Err(self.err("hidden_size", format!("head dim {head_dim} must be even for rotary embeddings")));
        }
        let n_kv = self.n_kv(new_decoder, n_head)?;
        let block = self.block_kind(new_decoder, parallel_attn)?;
        let position = if alibi { PositionKind::Alibi } else { self.rotary()? };
        let eps = self.f64_or("layer_norm_epsilon", 1e-5)?;
        Ok(FalconConfig {
            model_type,
            vocab_size: self.usize_or(&["vocab_size"], Some(65024))?,
            hidden_size,
            n_head,
            n_kv,
            head_dim,
            n_layer,
            ffn_hidden_size: self.usize_or(&["ffn_hidden_size"], Some(4 * hidden_size))?,
            layer_norm_eps: eps as f32,
            bias: self.bool_or("bias", false)?,
            block,
            position,
            tie_word_embeddings: self.bool_or("tie_word_embeddings", true)?,
            max_position_embeddings: self.usize_or(&["max_position_embeddings"], Some(2048))?,
            bos_token_id: self.token_ids("bos_token_id", Some(11))?.first().copied(),
            eos_token_ids: self.token_ids("eos_token_id", Some(11))?,
            quantization_config: self.obj.get("quantization_config").cloned(),
        })
    }

    fn model_type(&self) -> Result<String> {
        let mt = match self.get(&["model_type"]) {
            Some((_, v)) => v.as_str().ok_or_else(|| self.err("model_type", "expected a string"))?.to_string(),
            None => "falcon".to_string(),
        };
        match mt.as_str() {
            "falcon" | "RefinedWeb" | "RefinedWebModel" => Ok(mt),
            other => Err(self.err(
                "model_type",
                format!("`{other}` is not a Falcon model (expected falcon, RefinedWeb or RefinedWebModel)"),
            )),
        }
    }

    /// KV groups: `num_kv_heads` for the new decoder, 1 for multi-query, H otherwise.
    fn n_kv(&self, new_decoder: bool, n_head: usize) -> Result<usize> {
        let given = self.opt_usize(&["num_kv_heads", "n_head_kv"])?;
        let field = if self.obj.contains_key("n_head_kv") { "n_head_kv" } else { "num_kv_heads" };
        if new_decoder {
            let n_kv = given.unwrap_or(n_head);
            if n_head % n_kv != 0 {
                return Err(self.err(field, format!("{n_kv} does not divide num_attention_heads {n_head}")));
            }
            return Ok(n_kv);
        }
        if self.bool_or("multi_query", true)? {
            return Ok(1);
        }
        match given {
            Some(g) if g != n_head => Err(self.err(
                field,
                format!("{g} KV heads without new_decoder_architecture or multi_query; this layout needs {n_head}"),
            )),
            _ => Ok(n_head),
        }
    }

    fn block_kind(&self, new_decoder: bool, parallel_attn: bool) -> Result<BlockKind> {
        let n_ln = self.opt_usize(&["num_ln_in_parallel_attn"])?;
        match (new_decoder, parallel_attn, n_ln) {
            (true, false, _) => Err(self.err(
                "parallel_attn",
                "new_decoder_architecture requires parallel_attn: true (transformers cannot run this combination)",
            )),
            (true, true, None | Some(2)) => Ok(BlockKind::ParallelTwoNorms),
            (true, true, Some(1)) | (false, true, None | Some(1)) => Ok(BlockKind::ParallelSharedNorm),
            (false, false, _) => Ok(BlockKind::Sequential),
            (_, true, Some(n)) => Err(self.err(
                "num_ln_in_parallel_attn",
                format!("{n} is not supported here (expected 1, or 2 with new_decoder_architecture)"),
            )),
        }
    }

    /// Rotary theta from `rope_theta` or `rope_parameters.rope_theta`; scaling from
    /// `rope_scaling` / `rope_parameters` ("default" or "linear").
    fn rotary(&self) -> Result<PositionKind> {
        let params = self.get(&["rope_parameters"]).and_then(|(_, v)| v.as_object());
        let theta = match params.and_then(|p| p.get("rope_theta")) {
            Some(v) => v.as_f64().ok_or_else(|| self.err("rope_parameters.rope_theta", "expected a number"))?,
            None => self.f64_or("rope_theta", 10000.0)?,
        };
        if theta.is_nan() || theta <= 0.0 {
            return Err(self.err("rope_theta", format!("must be positive, found {theta}")));
        }
        let (field, scaling) = match (params, self.get(&["rope_scaling"])) {
            (Some(p), _) => ("rope_parameters", Some(p)),
            (None, Some((_, v))) => ("rope_scaling", v.as_object()),
            (None, None) => ("rope_scaling", None),
        };
        let position_scale = match scaling {
            None => 1.0,
            Some(s) => self.rope_scale(field, s)?,
        };
        Ok(PositionKind::Rotary { theta: theta as f32, position_scale })
    }

    fn rope_scale(&self, field: &str, s: &Map<String, Value>) -> Result<f32> {
        let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
        match kind {
            "default" => Ok(1.0),
            "linear" => s
                .get("factor")
                .and_then(|v| v.as_f64())
                .filter(|f| *f >= 1.0)
                .map(|f| f as f32)
                .ok_or_else(|| self.err(&format!("{field}.factor"), "linear scaling needs a factor >= 1")),
            other => Err(self.err(
                &format!("{field}.rope_type"),
                format!("`{other}` rotary scaling is not supported (expected default or linear)"),
            )),
        }
    }
}

/// ALiBi slopes exactly as transformers' `build_alibi_tensor` computes them: powers of a
/// base in f32, then rounded to bf16 (transformers multiplies `slopes.bfloat16()` by the
/// positions, so the product is rounded to bf16 too; the backends do that part).
pub fn alibi_slopes(n_head: usize) -> Vec<f32> {
    let closest = 1usize << (usize::BITS - 1 - n_head.leading_zeros());
    let base = |n: usize| 2f32.powf(-(2f32.powf(-((n as f32).log2() - 3.0))));
    let mut slopes: Vec<f32> = (1..=closest).map(|p| base(closest).powi(p as i32)).collect();
    if closest != n_head {
        let remaining = (n_head - closest).min(closest);
        let extra = base(2 * closest);
        slopes.extend((0..remaining).map(|i| extra.powi((1 + 2 * i) as i32)));
    }
    slopes.into_iter().map(peregrine_core::dtype::round_bf16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(json: &str) -> Result<FalconConfig> {
        FalconConfig::from_json_str(json, Path::new("config.json"))
    }

    fn shared_config(name: &str) -> FalconConfig {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/assets/configs");
        let path = Path::new(dir).join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (these tests need ../shared/assets/configs)", path.display()));
        FalconConfig::from_json_str(&text, &path).unwrap()
    }

    #[test]
    fn real_configs_resolve_to_their_architectures() {
        let c7 = shared_config("falcon-7b.json");
        assert_eq!((c7.n_head, c7.n_kv, c7.head_dim, c7.block), (71, 1, 64, BlockKind::ParallelSharedNorm));
        let c40 = shared_config("falcon-40b.json");
        assert_eq!((c40.n_head, c40.n_kv, c40.head_dim, c40.block), (128, 8, 64, BlockKind::ParallelTwoNorms));
        assert_eq!(c40.ffn_hidden_size, 32768);
        let c180 = shared_config("falcon-180b.json");
        assert_eq!((c180.n_layer, c180.n_kv, c180.hidden_size), (80, 8, 14848));
        let c11 = shared_config("falcon2-11b.json");
        assert_eq!(c11.block, BlockKind::ParallelSharedNorm);
        assert!(!c11.tie_word_embeddings);
        assert!(matches!(c11.position, PositionKind::Rotary { theta, .. } if theta == 500042.0));
        let rw = shared_config("falcon-rw-1b.json");
        assert_eq!((rw.n_head, rw.n_kv, rw.block, rw.bias), (32, 32, BlockKind::Sequential, true));
        assert!(matches!(rw.position, PositionKind::Alibi));
        assert_eq!(rw.eos_token_ids, vec![2]);
    }

    #[test]
    fn falcon_40b_has_about_41_billion_parameters() {
        let p = shared_config("falcon-40b.json").parameter_count() as f64;
        assert!((p / 1e9 - 41.3).abs() < 0.05, "{p}");
    }

    #[test]
    fn old_refinedweb_names_resolve_like_the_new_ones() {
        let old = resolve(r#"{"model_type":"RefinedWeb","n_head":8,"n_head_kv":2,"n_layer":3,"hidden_size":64}"#).unwrap();
        assert_eq!((old.n_head, old.n_kv, old.n_layer, old.block), (8, 2, 3, BlockKind::ParallelTwoNorms));
        let old7 = resolve(r#"{"model_type":"RefinedWebModel","n_head":4,"n_layer":2,"hidden_size":64,"multi_query":true}"#)
            .unwrap();
        assert_eq!((old7.n_kv, old7.block), (1, BlockKind::ParallelSharedNorm));
    }

    #[test]
    fn rope_theta_is_read_from_rope_parameters() {
        let c = resolve(r#"{"hidden_size":64,"num_attention_heads":4,"rope_parameters":{"rope_theta":500042.0,"rope_type":"default"}}"#)
            .unwrap();
        assert!(matches!(c.position, PositionKind::Rotary { theta, .. } if theta == 500042.0));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"hidden_size":65,"num_attention_heads":4}"#, "hidden_size"),
            (r#"{"hidden_size":64,"num_attention_heads":4,"new_decoder_architecture":true,"num_kv_heads":3}"#, "num_kv_heads"),
            (r#"{"model_type":"llama"}"#, "model_type"),
            (r#"{"hidden_size":64,"num_attention_heads":4,"new_decoder_architecture":true,"parallel_attn":false}"#, "parallel_attn"),
            (r#"{"hidden_size":64,"num_attention_heads":4,"rope_scaling":{"type":"yarn","factor":2.0}}"#, "rope_scaling.rope_type"),
            (r#"{"hidden_size":"big"}"#, "hidden_size"),
        ];
        for (json, field) in cases {
            let msg = resolve(json).unwrap_err().to_string();
            assert!(msg.contains(&format!("`{field}`")), "{json}: {msg}");
        }
    }

    #[test]
    fn alibi_slopes_match_transformers() {
        // torch: 2**(-8/8 * k) for 8 heads, rounded to bf16 (exact powers of two).
        assert_eq!(alibi_slopes(8), (1..=8).map(|k| 0.5f32.powi(k)).collect::<Vec<_>>());
        // 6 heads: 4 slopes of base 2^-2, then 2 of base 2^-1 with odd powers.
        assert_eq!(alibi_slopes(6), vec![0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]);
    }
}
