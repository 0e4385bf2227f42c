//! The bitsandbytes checkpoint format transformers writes to the hub, for one linear layer.
//!
//! 4-bit (`Params4bit`, `QuantState.as_dict(packed=True)`):
//! - `<p>.weight` U8 [(n+1)/2, 1]: packed codes
//! - `<p>.weight.absmax` U8 [B] under double quantization, else F32 [B]
//! - `<p>.weight.quant_map` F32 [16]
//! - `<p>.weight.nested_absmax` F32 [ceil(B/256)], `<p>.weight.nested_quant_map` F32 [256]
//! - `<p>.weight.quant_state.bitsandbytes__nf4` (or `__fp4`) U8 [len]: the UTF-8 bytes of
//!   `json.dumps({"quant_type", "blocksize", "dtype", "shape", "nested_blocksize",
//!   "nested_dtype", "nested_offset"})`.
//!
//! 8-bit (`Linear8bitLt._save_to_state_dict`): `<p>.weight` I8 [N, K], `<p>.SCB` F32 [N],
//! `<p>.weight_format` U8 [] (0 = row-major, the only layout bitsandbytes 0.50 writes).
//!
//! Key design choice: the JSON is written by hand, byte for byte as Python's `json.dumps`
//! writes it (", " and ": " separators, Python's float repr), so a round trip reproduces
//! the checkpoint exactly.

use crate::codebooks::{dynamic_map, fp4_quant_map, NF4_CODE};
use peregrine_core::{Absmax, DType, Error, FourBitFormat, FourBitWeight, HostTensor, Int8Weight, LinearWeight, Result};
use serde_json::Value;

/// How a linear layer's tensors are looked up: full tensor name -> tensor, if present.
pub type TensorGetter<'a> = &'a dyn Fn(&str) -> Option<HostTensor>;

/// Read the bitsandbytes tensors of the linear layer `prefix` (e.g.
/// `transformer.h.0.mlp.dense_h_to_4h`). `Ok(None)` when the layer holds a plain dense
/// weight. The int8 threshold is not stored with the tensors: it stays `None` here; see
/// `BnbConfig::apply_threshold`.
pub fn read_bnb_linear(prefix: &str, get: TensorGetter) -> Result<Option<LinearWeight>> {
    for format in [FourBitFormat::Nf4, FourBitFormat::Fp4] {
        let state_name = format!("{prefix}.weight.quant_state.bitsandbytes__{}", format.as_str());
        if let Some(state) = get(&state_name) {
            return read_four_bit(prefix, format, &state_name, &state, get).map(Some);
        }
    }
    if get(&format!("{prefix}.SCB")).is_some() {
        return read_int8(prefix, get).map(Some);
    }
    let name = format!("{prefix}.weight");
    match get(&name) {
        Some(t) if !t.dtype.is_float() => Err(tensor_error(
            &name,
            format!("is {} but has no bitsandbytes quantization state (`.SCB` or `.weight.quant_state.*`)", t.dtype),
        )),
        _ => Ok(None),
    }
}

/// The tensors bitsandbytes (via transformers) saves for `w` under `prefix`, in the order
/// above. A dense weight gives just `<prefix>.weight`.
pub fn bnb_linear_tensors(prefix: &str, w: &LinearWeight) -> Result<Vec<(String, HostTensor)>> {
    let name = |suffix: &str| format!("{prefix}.{suffix}");
    Ok(match w {
        LinearWeight::Dense(t) => vec![(name("weight"), t.clone())],
        LinearWeight::Int8(q) => vec![
            (name("weight"), HostTensor::new(vec![q.rows, q.cols], DType::I8, q.cb.iter().map(|&v| v as u8).collect())),
            (name("SCB"), HostTensor::from_f32(vec![q.rows], &q.scb)),
            (name("weight_format"), HostTensor::new(vec![], DType::U8, vec![0])),
        ],
        LinearWeight::FourBit(q) => four_bit_tensors(prefix, q)?,
    })
}

fn four_bit_tensors(prefix: &str, q: &FourBitWeight) -> Result<Vec<(String, HostTensor)>> {
    let w = format!("{prefix}.weight");
    let mut out = vec![(w.clone(), HostTensor::new(vec![q.packed.len(), 1], DType::U8, q.packed.clone()))];
    let nested = match &q.absmax {
        Absmax::Plain(a) => {
            out.push((format!("{w}.absmax"), HostTensor::from_f32(vec![a.len()], a)));
            None
        }
        Absmax::Double { quantized, code, nested_absmax, nested_blocksize, offset } => {
            out.push((format!("{w}.absmax"), HostTensor::new(vec![quantized.len()], DType::U8, quantized.clone())));
            Some((code, nested_absmax, *nested_blocksize, *offset))
        }
    };
    out.push((format!("{w}.quant_map"), HostTensor::from_f32(vec![q.code.len()], &q.code)));
    if let Some((code, nested_absmax, _, _)) = nested {
        out.push((format!("{w}.nested_absmax"), HostTensor::from_f32(vec![nested_absmax.len()], nested_absmax)));
        out.push((format!("{w}.nested_quant_map"), HostTensor::from_f32(vec![code.len()], code)));
    }
    let json = quant_state_json(q, nested.map(|(_, _, bs, off)| (bs, off)))?;
    let state_name = format!("{w}.quant_state.bitsandbytes__{}", q.format.as_str());
    out.push((state_name, HostTensor::new(vec![json.len()], DType::U8, json.into_bytes())));
    Ok(out)
}

/// `json.dumps` of the non-tensor part of `QuantState.as_dict()`, keys in its order.
fn quant_state_json(q: &FourBitWeight, nested: Option<(usize, f32)>) -> Result<String> {
    let dtype = torch_dtype_name(q.dtype)?;
    let mut s = format!(
        "{{\"quant_type\": \"{}\", \"blocksize\": {}, \"dtype\": \"{dtype}\", \"shape\": [{}, {}]",
        q.format.as_str(),
        q.blocksize,
        q.rows,
        q.cols
    );
    if let Some((nested_blocksize, offset)) = nested {
        s += &format!(
            ", \"nested_blocksize\": {nested_blocksize}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
            python_float_repr(offset as f64)
        );
    }
    s.push('}');
    Ok(s)
}

/// torch's dtype name as `str(dtype).strip("torch.")` gives it.
pub fn torch_dtype_name(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::BF16 => Ok("bfloat16"),
        DType::F16 => Ok("float16"),
        DType::F32 => Ok("float32"),
        other => Err(Error::input(format!("bitsandbytes 4-bit weights come from a float dtype, not {other}"))),
    }
}

/// The inverse of `torch_dtype_name`.
pub fn dtype_from_torch_name(name: &str) -> Option<DType> {
    match name.trim_start_matches("torch.") {
        "bfloat16" => Some(DType::BF16),
        "float16" | "half" => Some(DType::F16),
        "float32" | "float" => Some(DType::F32),
        _ => None,
    }
}

/// Python's `repr(float)` (as `json.dumps` writes floats): shortest round-trip digits,
/// positional for decimal exponents in [-4, 16), scientific (`1.5e-05`) otherwise.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // Shortest round-trip length from Rust, then the digits of that length correctly
    // rounded with ties to even (CPython's choice; Rust's shortest form rounds ties up).
    let shortest = format!("{:e}", x.abs());
    let len = shortest.split_once('e').map_or(1, |(m, _)| m.chars().filter(char::is_ascii_digit).count());
    let sci = format!("{:.*e}", len - 1, x.abs()); // e.g. "7.453107833862305e-2"
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp always writes an exponent");
    let exp: i32 = exp.parse().expect("LowerExp writes an integer exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x < 0.0 { "-" } else { "" };
    let body = if (-4..16).contains(&exp) {
        positional(&digits, exp)
    } else {
        let frac = if digits.len() > 1 { format!(".{}", &digits[1..]) } else { String::new() };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{}{frac}e{esign}{:02}", &digits[..1], exp.abs())
    };
    format!("{sign}{body}")
}

/// `digits` (d1 d2 ...) times 10^(exp - len + 1), written positionally with at least ".0".
fn positional(digits: &str, exp: i32) -> String {
    if exp < 0 {
        return format!("0.{}{digits}", "0".repeat((-exp - 1) as usize));
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
    } else {
        format!("{}.{}", &digits[..int_len], &digits[int_len..])
    }
}

fn tensor_error(name: &str, msg: impl Into<String>) -> Error {
    Error::msg(format!("tensor `{name}`: {}", msg.into()))
}

/// Fetch `name` and check its dtype and element count.
fn fetch(get: TensorGetter, name: &str, dtype: DType, numel: usize) -> Result<HostTensor> {
    let t = get(name).ok_or_else(|| tensor_error(name, "missing"))?;
    if t.dtype != dtype || t.numel() != numel {
        return Err(tensor_error(
            name,
            format!("expected {dtype} with {numel} elements, found {} with shape {:?}", t.dtype, t.shape),
        ));
    }
    Ok(t)
}

fn read_int8(prefix: &str, get: TensorGetter) -> Result<LinearWeight> {
    let name = format!("{prefix}.weight");
    let w = get(&name).ok_or_else(|| tensor_error(&name, "missing (the layer has an `.SCB`)"))?;
    let (rows, cols) = match (w.dtype, w.shape.as_slice()) {
        (DType::I8, [r, c]) => (*r, *c),
        _ => return Err(tensor_error(&name, format!("expected I8 [N, K], found {} {:?}", w.dtype, w.shape))),
    };
    let scb = fetch(get, &format!("{prefix}.SCB"), DType::F32, rows)?.to_f32();
    let format_name = format!("{prefix}.weight_format");
    if let Some(f) = get(&format_name) {
        if f.dtype != DType::U8 || f.bytes.as_slice() != [0] {
            return Err(tensor_error(&format_name, "only the row-major layout (a U8 scalar 0) is supported"));
        }
    }
    let cb = w.bytes.iter().map(|&b| b as i8).collect();
    Ok(LinearWeight::Int8(Int8Weight { rows, cols, cb, scb, threshold: None }))
}

/// The parsed `quant_state.bitsandbytes__*` JSON.
struct QuantStateJson {
    blocksize: usize,
    dtype: DType,
    rows: usize,
    cols: usize,
    nested: Option<(usize, f32)>,
}

fn parse_quant_state(name: &str, format: FourBitFormat, bytes: &[u8]) -> Result<QuantStateJson> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| tensor_error(name, format!("invalid JSON: {e}")))?;
    let field = |key: &str| v.get(key).ok_or_else(|| tensor_error(name, format!("JSON lacks `{key}`")));
    let uint = |key: &str| -> Result<usize> {
        field(key)?.as_u64().map(|u| u as usize).ok_or_else(|| tensor_error(name, format!("`{key}` is not an integer")))
    };
    if field("quant_type")?.as_str() != Some(format.as_str()) {
        return Err(tensor_error(name, format!("`quant_type` is {}, expected \"{}\"", v["quant_type"], format.as_str())));
    }
    let dtype = field("dtype")?
        .as_str()
        .and_then(dtype_from_torch_name)
        .ok_or_else(|| tensor_error(name, format!("`dtype` {} is not bfloat16, float16 or float32", v["dtype"])))?;
    let shape: Vec<usize> = field("shape")?.as_array().map(|a| a.iter().filter_map(Value::as_u64).map(|u| u as usize).collect()).unwrap_or_default();
    let [rows, cols] = shape[..] else {
        return Err(tensor_error(name, format!("`shape` {} is not a 2-D shape", v["shape"])));
    };
    let nested = match v.get("nested_offset") {
        None => None,
        Some(off) => {
            let offset = off.as_f64().ok_or_else(|| tensor_error(name, "`nested_offset` is not a number"))?;
            if v.get("nested_dtype").and_then(Value::as_str) != Some("float32") {
                return Err(tensor_error(name, "`nested_dtype` must be \"float32\""));
            }
            Some((uint("nested_blocksize")?, offset as f32))
        }
    };
    Ok(QuantStateJson { blocksize: uint("blocksize")?, dtype, rows, cols, nested })
}

fn read_four_bit(
    prefix: &str,
    format: FourBitFormat,
    state_name: &str,
    state: &HostTensor,
    get: TensorGetter,
) -> Result<LinearWeight> {
    let qs = parse_quant_state(state_name, format, &state.bytes)?;
    if qs.blocksize == 0 || qs.nested.is_some_and(|(nb, _)| nb == 0) {
        return Err(tensor_error(state_name, "block sizes must be positive"));
    }
    let w = format!("{prefix}.weight");
    let n = qs.rows * qs.cols;
    let blocks = n.div_ceil(qs.blocksize);
    let packed = fetch(get, &w, DType::U8, n.div_ceil(2))?.bytes;
    let code = fetch(get, &format!("{w}.quant_map"), DType::F32, 16)?.to_f32();
    let absmax = match qs.nested {
        None => Absmax::Plain(fetch(get, &format!("{w}.absmax"), DType::F32, blocks)?.to_f32()),
        Some((nested_blocksize, offset)) => Absmax::Double {
            quantized: fetch(get, &format!("{w}.absmax"), DType::U8, blocks)?.bytes,
            code: fetch(get, &format!("{w}.nested_quant_map"), DType::F32, 256)?.to_f32(),
            nested_absmax: fetch(get, &format!("{w}.nested_absmax"), DType::F32, blocks.div_ceil(nested_blocksize))?
                .to_f32(),
            nested_blocksize,
            offset,
        },
    };
    Ok(LinearWeight::FourBit(FourBitWeight {
        rows: qs.rows,
        cols: qs.cols,
        format,
        dtype: qs.dtype,
        blocksize: qs.blocksize,
        packed,
        absmax,
        code,
    }))
}

/// The `quant_map` bitsandbytes stores for `format`.
pub fn quant_map(format: FourBitFormat) -> Vec<f32> {
    match format {
        FourBitFormat::Nf4 => NF4_CODE.to_vec(),
        FourBitFormat::Fp4 => fp4_quant_map().to_vec(),
    }
}

/// The `nested_quant_map` bitsandbytes stores (its signed dynamic map).
pub fn nested_quant_map() -> Vec<f32> {
    dynamic_map().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_matches_cpython() {
        let cases = [
            (0.07453107833862305, "0.07453107833862305"),
            (0.076313316822052, "0.076313316822052"),
            (0.10852432250976562, "0.10852432250976562"), // a tie at 17 digits: even
            (1.0 / 3.0, "0.3333333333333333"),
            (1e-5, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123.0, "123.0"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (-2.5, "-2.5"),
            (0.0, "0.0"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float_repr(x), want, "{x}");
        }
    }
}
