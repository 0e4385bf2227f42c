//! `quantization_config` of a transformers `config.json` for bitsandbytes checkpoints
//! (`BitsAndBytesConfig`), resolved once into a `QuantKind` plus `QuantOptions`.
//!
//! Key design choice: missing keys take transformers' defaults (`bnb_4bit_quant_type`
//! "fp4", no double quantization, compute dtype float32, threshold 6.0); combinations
//! Peregrine cannot load (8-bit with fp16 weights kept, a non-uint8 quant storage, both or
//! neither of 4-bit and 8-bit) fail here with the field's name.

use crate::bnb::{dtype_from_torch_name, torch_dtype_name};
use crate::QuantOptions;
use peregrine_core::{DType, Error, FourBitFormat, LinearWeight, QuantKind, Result};
use serde_json::{json, Value};
use std::path::Path;

/// A resolved bitsandbytes `quantization_config`.
#[derive(Clone, Debug, PartialEq)]
pub struct BnbConfig {
    /// `Int8`, `Nf4` or `Fp4`.
    pub kind: QuantKind,
    /// `bnb_4bit_use_double_quant` (4-bit only).
    pub double_quant: bool,
    /// `bnb_4bit_compute_dtype`: the dtype bitsandbytes multiplies 4-bit weights in.
    pub compute_dtype: DType,
    /// `llm_int8_threshold` (0: bitsandbytes keeps int8 activations without outlier columns;
    /// Peregrine runs such weights weight-only, see `options`).
    pub llm_int8_threshold: f64,
    /// `llm_int8_skip_modules`: module names left unquantized (None = transformers' default).
    pub skip_modules: Option<Vec<String>>,
}

impl BnbConfig {
    /// The config to write for weights quantized as `kind` with `opts` (bitsandbytes'
    /// transformers integration always uses blocksize 64 and nested blocksize 256).
    pub fn new(kind: QuantKind, opts: &QuantOptions, compute_dtype: DType) -> Result<Self> {
        if !kind.is_quantized() {
            return Err(Error::input(format!("{kind} is not a bitsandbytes format")));
        }
        if kind != QuantKind::Int8 && (opts.blocksize != 64 || (opts.double_quant && opts.nested_blocksize != 256)) {
            return Err(Error::input(format!(
                "transformers' bitsandbytes config cannot express blocksize {} / nested blocksize {} (only 64 / 256)",
                opts.blocksize, opts.nested_blocksize
            )));
        }
        Ok(BnbConfig {
            kind,
            double_quant: opts.double_quant,
            compute_dtype,
            // Weight-only int8 (`None`) is written as threshold 0, the closest transformers has.
            llm_int8_threshold: opts.int8_threshold.map_or(0.0, f64::from),
            skip_modules: None,
        })
    }

    /// The quantization options these weights were made with.
    pub fn options(&self) -> QuantOptions {
        QuantOptions {
            double_quant: self.double_quant,
            // bitsandbytes' threshold 0 (int8 activations, no outliers) runs weight-only here.
            int8_threshold: (self.llm_int8_threshold > 0.0).then_some(self.llm_int8_threshold as f32),
            ..QuantOptions::default()
        }
    }

    /// Set the int8 outlier threshold (not stored with the tensors) on a loaded weight.
    pub fn apply_threshold(&self, w: &mut LinearWeight) {
        if let LinearWeight::Int8(q) = w {
            q.threshold = self.options().int8_threshold;
        }
    }

    /// Read `quantization_config` from a whole model `config.json` value; `Ok(None)` when
    /// it has none. `path` names the file in errors.
    pub fn from_model_config(config: &Value, path: &Path) -> Result<Option<Self>> {
        match config.get("quantization_config") {
            None | Some(Value::Null) => Ok(None),
            Some(qc) => Self::parse(qc, path).map(Some),
        }
    }

    /// Parse a `quantization_config` object.
    pub fn parse(qc: &Value, path: &Path) -> Result<Self> {
        let field = |name: &str| format!("quantization_config.{name}");
        let err = |name: &str, msg: String| Error::config(path, field(name), msg);
        let get = |name: &str| qc.get(name).or_else(|| qc.get(format!("_{name}"))).filter(|v| !v.is_null());
        let flag = |name: &str| -> Result<bool> {
            get(name).map_or(Ok(false), |v| v.as_bool().ok_or_else(|| err(name, format!("expected true or false, found {v}"))))
        };
        if let Some(m) = get("quant_method") {
            if m.as_str() != Some("bitsandbytes") {
                return Err(err("quant_method", format!("{m} is not \"bitsandbytes\"")));
            }
        }
        let kind = match (flag("load_in_4bit")?, flag("load_in_8bit")?) {
            (true, false) => match get("bnb_4bit_quant_type").map(|v| v.as_str()) {
                None | Some(Some("fp4")) => QuantKind::Fp4,
                Some(Some("nf4")) => QuantKind::Nf4,
                _ => return Err(err("bnb_4bit_quant_type", format!("{} is not \"nf4\" or \"fp4\"", qc["bnb_4bit_quant_type"]))),
            },
            (false, true) => QuantKind::Int8,
            (a, _) => {
                let msg = if a { "both load_in_4bit and load_in_8bit are set" } else { "neither load_in_4bit nor load_in_8bit is set" };
                return Err(err("load_in_4bit", msg.into()));
            }
        };
        let compute_dtype = match get("bnb_4bit_compute_dtype") {
            None => DType::F32,
            Some(v) => v.as_str().and_then(dtype_from_torch_name).ok_or_else(|| {
                err("bnb_4bit_compute_dtype", format!("{v} is not bfloat16, float16 or float32"))
            })?,
        };
        if let Some(s) = get("bnb_4bit_quant_storage") {
            if s.as_str().map(|s| s.trim_start_matches("torch.")) != Some("uint8") {
                return Err(err("bnb_4bit_quant_storage", format!("{s} is not supported (only uint8)")));
            }
        }
        if flag("llm_int8_has_fp16_weight")? {
            return Err(err("llm_int8_has_fp16_weight", "fp16 master weights are not supported".into()));
        }
        let llm_int8_threshold = match get("llm_int8_threshold") {
            None => 6.0,
            Some(v) => v.as_f64().filter(|t| *t >= 0.0).ok_or_else(|| err("llm_int8_threshold", format!("{v} is not a non-negative number")))?,
        };
        let skip_modules = match get("llm_int8_skip_modules") {
            None => None,
            Some(v) => Some(
                v.as_array()
                    .and_then(|a| a.iter().map(|s| s.as_str().map(String::from)).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| err("llm_int8_skip_modules", format!("{v} is not a list of strings")))?,
            ),
        };
        Ok(BnbConfig { kind, double_quant: flag("bnb_4bit_use_double_quant")?, compute_dtype, llm_int8_threshold, skip_modules })
    }

    /// The `quantization_config` object, with the keys transformers writes.
    pub fn to_json(&self) -> Result<Value> {
        let mut v = json!({
            "quant_method": "bitsandbytes",
            "load_in_4bit": self.kind != QuantKind::Int8,
            "load_in_8bit": self.kind == QuantKind::Int8,
            "llm_int8_threshold": self.llm_int8_threshold,
            "llm_int8_skip_modules": self.skip_modules,
            "llm_int8_has_fp16_weight": false,
        });
        if let Some(format) = self.four_bit_format() {
            v["bnb_4bit_quant_type"] = json!(format.as_str());
            v["bnb_4bit_use_double_quant"] = json!(self.double_quant);
            v["bnb_4bit_compute_dtype"] = json!(torch_dtype_name(self.compute_dtype)?);
            v["bnb_4bit_quant_storage"] = json!("uint8");
        }
        Ok(v)
    }

    fn four_bit_format(&self) -> Option<FourBitFormat> {
        match self.kind {
            QuantKind::Nf4 => Some(FourBitFormat::Nf4),
            QuantKind::Fp4 => Some(FourBitFormat::Fp4),
            _ => None,
        }
    }
}
