//! Tokenizer, generation loop, streaming and perplexity.
