//! Built-in Falcon shapes for synthetic-weight runs (`--dummy-weights --model falcon-40b`),
//! so the full-size models can be benchmarked on a fresh machine without a download. The
//! values are the published architectures of each model (the same fields their hub
//! `config.json` files carry).

use std::path::Path;

use peregrine_core::Result;

use crate::FalconConfig;

/// Preset names, smallest first.
pub const PRESETS: [&str; 5] = ["falcon-rw-1b", "falcon-7b", "falcon2-11b", "falcon-40b", "falcon-180b"];

/// The config.json text of a preset.
fn preset_json(name: &str) -> Option<&'static str> {
    Some(match name {
        "falcon-rw-1b" => r#"{"model_type":"falcon","alibi":true,"bias":true,"hidden_size":2048,"num_attention_heads":32,
            "num_hidden_layers":24,"multi_query":false,"new_decoder_architecture":false,"parallel_attn":false,
            "vocab_size":50304,"bos_token_id":1,"eos_token_id":2,"max_position_embeddings":2048}"#,
        "falcon-7b" => r#"{"model_type":"falcon","hidden_size":4544,"num_attention_heads":71,"num_hidden_layers":32,
            "multi_query":true,"new_decoder_architecture":false,"parallel_attn":true,"vocab_size":65024,
            "bos_token_id":11,"eos_token_id":11,"max_position_embeddings":2048}"#,
        "falcon2-11b" => r#"{"model_type":"falcon","hidden_size":4096,"num_attention_heads":32,"num_kv_heads":8,
            "num_hidden_layers":60,"new_decoder_architecture":true,"num_ln_in_parallel_attn":1,"parallel_attn":true,
            "rope_theta":500042.0,"tie_word_embeddings":false,"vocab_size":65024,"bos_token_id":11,"eos_token_id":11,
            "max_position_embeddings":8192}"#,
        "falcon-40b" => r#"{"model_type":"falcon","hidden_size":8192,"num_attention_heads":128,"num_kv_heads":8,
            "num_hidden_layers":60,"new_decoder_architecture":true,"parallel_attn":true,"vocab_size":65024,
            "bos_token_id":11,"eos_token_id":11,"max_position_embeddings":2048}"#,
        "falcon-180b" => r#"{"model_type":"falcon","hidden_size":14848,"num_attention_heads":232,"num_kv_heads":8,
            "num_hidden_layers":80,"new_decoder_architecture":true,"parallel_attn":true,"vocab_size":65024,
            "bos_token_id":11,"eos_token_id":11,"max_position_embeddings":2048}"#,
        _ => return None,
    })
}

/// The resolved config of preset `name`, if it is one.
pub fn preset(name: &str) -> Option<Result<FalconConfig>> {
    let short = name.strip_prefix("tiiuae/").unwrap_or(name);
    let short = short.strip_suffix("-instruct").unwrap_or(short);
    preset_json(short).map(|json| FalconConfig::from_json_str(json, Path::new(&format!("<preset {short}>"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_resolves_and_40b_is_the_seed_model() {
        for p in PRESETS {
            preset(p).unwrap().unwrap();
        }
        let c = preset("tiiuae/falcon-40b-instruct").unwrap().unwrap();
        assert_eq!((c.n_layer, c.n_kv, c.ffn_hidden_size), (60, 8, 32768));
    }

    #[test]
    fn presets_agree_with_the_real_configs() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/assets/configs");
        for p in PRESETS {
            let path = Path::new(dir).join(format!("{p}.json"));
            let real = FalconConfig::from_dir_file(&path).unwrap_or_else(|e| panic!("{e} (needs ../shared/assets/configs)"));
            let ours = preset(p).unwrap().unwrap();
            assert_eq!(format!("{:?}", (real.parameter_count(), real.block, real.n_kv, real.head_dim)),
                       format!("{:?}", (ours.parameter_count(), ours.block, ours.n_kv, ours.head_dim)), "{p}");
        }
    }
}
