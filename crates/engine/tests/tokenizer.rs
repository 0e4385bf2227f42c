//! The real Falcon tokenizer against llama.cpp's 47 Falcon test vectors, and the streaming
//! decoder against whole-sequence decoding on text that splits UTF-8 characters.

mod common;

use peregrine_engine::{StreamDecoder, Tokenizer};

fn falcon() -> Tokenizer {
    Tokenizer::from_file(&common::shared("tokenizer/falcon/tokenizer.json")).unwrap()
}

fn vectors() -> Vec<(String, Vec<u32>)> {
    let dir = common::shared("tokenizer/llamacpp-vectors");
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-falcon.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(dir.join("ggml-vocab-falcon.gguf.out")).unwrap();
    let inputs: Vec<String> = inp.split("\n__ggml_vocab_test__\n").map(String::from).collect();
    let ids: Vec<Vec<u32>> =
        out.split('\n').map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(inputs.len(), ids.len(), "vector files disagree on the number of cases");
    inputs.into_iter().zip(ids).collect()
}

#[test]
fn llamacpp_falcon_vectors_encode_exactly() {
    let tok = falcon();
    let cases = vectors();
    assert_eq!(cases.len(), 47);
    let failures: Vec<String> = cases
        .iter()
        .filter(|(text, want)| &tok.encode(text).unwrap() != want)
        .map(|(text, want)| format!("{text:?}: want {want:?}, got {:?}", tok.encode(text).unwrap()))
        .collect();
    assert!(failures.is_empty(), "{} of 47 cases differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn decoding_the_vectors_gives_the_text_back() {
    let tok = falcon();
    for (text, ids) in vectors() {
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}

#[test]
fn special_tokens_in_text_map_to_their_ids() {
    let tok = falcon();
    assert_eq!(tok.encode("<|endoftext|>").unwrap(), vec![11]);
    assert_eq!(tok.encode(">>QUESTION<<").unwrap(), vec![6]);
    assert_eq!(tok.vocab_size(), 65024);
}

#[test]
fn streaming_never_splits_a_character_and_adds_up() {
    let tok = falcon();
    let text = "Führer 🦙 нещо 你好世界 ½ — ok";
    let ids = tok.encode(text).unwrap();
    let mut dec = StreamDecoder::new();
    let mut pieces = String::new();
    for &id in &ids {
        let piece = dec.push(&tok, id).unwrap();
        assert!(!piece.contains('\u{FFFD}'), "piece {piece:?} holds a broken character");
        pieces.push_str(&piece);
    }
    pieces.push_str(&dec.finish(&tok).unwrap());
    assert_eq!(pieces, text);
}

#[test]
fn ids_outside_the_vocabulary_are_an_error() {
    let e = falcon().decode(&[1, 70000]).unwrap_err().to_string();
    assert!(e.contains("70000") && e.contains("65024"), "{e}");
}
