//! The engine: tokenizer and streaming detokenizer, the generation loop over a KV cache,
//! and the perplexity / KL-divergence quality report. It decides *when* the model runs;
//! the model decides what is computed and the backend how.

pub mod generate;
pub mod perplexity;
pub mod tokenizer;

pub use generate::{all_logits, AllLogits, plan_new_tokens, FinishReason, GenerateOutput, GenerateRequest, Session, SessionState, Timings};
pub use perplexity::{quality_report, QualityRow, WindowPlan};
pub use tokenizer::{StreamDecoder, Tokenizer};
