//! The Falcon tokenizer (`tokenizer.json` through the `tokenizers` crate, pure Rust) and a
//! streaming decoder that never splits a UTF-8 character: text is released only once the
//! bytes decoded so far form complete characters.

use std::path::{Path, PathBuf};

use peregrine_core::{Error, Result};

/// A loaded `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Load `dir/tokenizer.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("tokenizer.json"))
    }

    /// Load a tokenizer file.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::file(path, "not found (use --prompt-ids for a checkpoint without a tokenizer)"));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::file(path, format!("not a valid tokenizer.json: {e}")))?;
        Ok(Tokenizer { inner, path: path.to_path_buf() })
    }

    /// Ids of `text`, without adding special tokens (Falcon adds none; special-token text
    /// such as `<|endoftext|>` in the input still maps to its id).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::file(&self.path, format!("encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens included. Fails naming an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let size = self.vocab_size() as u32;
        if let Some(bad) = ids.iter().find(|&&id| id >= size) {
            return Err(Error::input(format!("token id {bad} is outside the vocabulary (size {size})")));
        }
        self.inner.decode(ids, false).map_err(|e| Error::file(&self.path, format!("decoding failed: {e}")))
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string (e.g. `<|endoftext|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Turns a growing list of ids into text pieces, releasing only complete characters.
/// The pieces concatenate to exactly `decode(all ids)`.
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Bytes of text already released.
    emitted: usize,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder { ids: Vec::new(), emitted: 0 }
    }

    /// Add one id; return the newly complete text (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }

    /// Whatever is left (an incomplete character at the very end is released as decoded).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        let text = tok.decode(&self.ids)?;
        let piece = text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = text.len();
        Ok(piece)
    }

    /// The full text so far.
    pub fn text(&self, tok: &Tokenizer) -> Result<String> {
        tok.decode(&self.ids)
    }
}
