//! The generation loop: prefill the prompt in one forward, then decode one token per
//! forward over the KV cache, sampling each token and streaming its text as soon as it
//! forms complete characters. Stops at an end-of-sequence id, at a user stop string (text
//! after it is never printed), or at the length limit. Reports the timings the benchmark
//! needs (time to first token, decode tokens/s).

use std::time::Instant;

use peregrine_core::{sampling::Sampler, Backend, Error, KvCache, Result, SamplingParams};
use peregrine_models::{Falcon, LogitRows, Workspace};

use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt_ids: Vec<u32>,
    /// New tokens at most (already reconciled with any max-length limit).
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub stop_strings: Vec<String>,
    /// Generation ends when one of these is sampled (it is not part of the output).
    pub eos_ids: Vec<u32>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    StopString,
    Length,
}

/// Wall-clock timings of one generation, in seconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timings {
    /// Prefill forward plus sampling of the first token.
    pub time_to_first_token_s: f64,
    /// Everything after the first token.
    pub decode_s: f64,
    pub total_s: f64,
    /// (generated - 1) / decode_s; 0 when fewer than two tokens were generated.
    pub decode_tokens_per_s: f64,
}

/// The result of one generation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GenerateOutput {
    /// Generated ids (an end-of-sequence id is not included).
    pub ids: Vec<u32>,
    /// Their text (empty without a tokenizer), cut before a stop string.
    pub text: String,
    pub prompt_tokens: usize,
    pub finish_reason: FinishReason,
    pub timings: Timings,
}

/// Check the prompt and reconcile the limits: `max_length` counts the prompt (as in
/// transformers' `generate(max_length=...)`), the context bounds both.
pub fn plan_new_tokens(prompt_len: usize, max_new: Option<usize>, max_length: Option<usize>, context: usize) -> Result<usize> {
    if prompt_len == 0 {
        return Err(Error::input("the prompt is empty: give at least one token"));
    }
    if prompt_len > context {
        return Err(Error::input(format!(
            "the prompt has {prompt_len} tokens, longer than the model's context of {context}"
        )));
    }
    let from_length = match max_length {
        Some(l) if l <= prompt_len => {
            return Err(Error::input(format!(
                "--max-length {l} leaves no room: the prompt already has {prompt_len} tokens"
            )))
        }
        Some(l) => Some(l - prompt_len),
        None => None,
    };
    let wanted = match (max_new, from_length) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 100usize.saturating_sub(prompt_len).max(1),
    };
    Ok(wanted.min(context - prompt_len))
}

/// Holds back text that could be the start of a stop string, and finds complete ones.
struct StopFilter<'a> {
    stops: &'a [String],
    text: String,
    released: usize,
}

impl<'a> StopFilter<'a> {
    fn new(stops: &'a [String]) -> Self {
        StopFilter { stops, text: String::new(), released: 0 }
    }

    /// Add decoded text; return what may be shown now and whether a stop string completed.
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.text.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(at);
            return (self.release(at), true);
        }
        let hold = self.longest_partial_stop();
        (self.release(self.text.len() - hold), false)
    }

    /// Length of the longest suffix of the text that begins some stop string.
    fn longest_partial_stop(&self) -> usize {
        let mut hold = 0;
        for s in self.stops {
            for len in (1..s.len().min(self.text.len() + 1)).rev() {
                if s.is_char_boundary(len) && self.text.ends_with(&s[..len]) {
                    hold = hold.max(len);
                    break;
                }
            }
        }
        hold
    }

    fn release(&mut self, upto: usize) -> String {
        let upto = upto.max(self.released);
        let out = self.text[self.released..upto].to_string();
        self.released = upto;
        out
    }

    fn flush(&mut self) -> String {
        self.release(self.text.len())
    }
}

/// One sequence's generation state on a backend: the KV cache, the workspace and, where the
/// backend records them, the decode step as a graph (recorded on the first decode step, then
/// replayed for every later one: one launch per token instead of several hundred).
pub struct Session<'m, B: Backend> {
    pub backend: &'m B,
    pub model: &'m Falcon<B>,
    cache: KvCache<B>,
    ws: Workspace<B>,
    graphs: bool,
    step_graph: Option<B::StepGraph>,
}

/// What a `Session` owns (cache, workspace, the recorded decode step), without its borrows of the
/// backend and the model, so a caller can keep it between requests: `Session::resume` continues
/// with it, and the recorded step is replayed by every later request instead of being recorded
/// again (the cache and workspace, which the graph points into, are the same buffers).
pub struct SessionState<B: Backend> {
    cache: KvCache<B>,
    ws: Workspace<B>,
    graphs: bool,
    step_graph: Option<B::StepGraph>,
}

impl<B: Backend> SessionState<B> {
    /// Whether a request of `prompt` tokens and `new` new tokens fits this state's buffers.
    pub fn fits(&self, prompt: usize, new: usize) -> bool {
        prompt <= self.ws.max_tokens && prompt + new <= self.cache.capacity + 1
    }
}

impl<'m, B: Backend> Session<'m, B> {
    /// Continue with a state a previous session of the same backend and model left (`into_state`).
    pub fn resume(backend: &'m B, model: &'m Falcon<B>, state: SessionState<B>) -> Self {
        let SessionState { cache, ws, graphs, step_graph } = state;
        Session { backend, model, cache, ws, graphs, step_graph }
    }

    /// The cache, workspace and recorded step, for `resume`.
    pub fn into_state(self) -> SessionState<B> {
        SessionState { cache: self.cache, ws: self.ws, graphs: self.graphs, step_graph: self.step_graph }
    }

    /// Allocate a cache of `capacity` positions and a workspace for prompts of up to `max_prompt` tokens.
    pub fn new(backend: &'m B, model: &'m Falcon<B>, capacity: usize, max_prompt: usize) -> Result<Self> {
        let c = &model.config;
        let cache = KvCache::new(backend, c.n_layer, capacity, c.n_kv, c.head_dim)?;
        let ws = model.workspace(backend, max_prompt.max(1), 1)?;
        Ok(Session { backend, model, cache, ws, graphs: true, step_graph: None })
    }

    /// Record and replay decode steps as graphs where the backend can (default on); off runs
    /// every op eagerly (for comparison and debugging).
    pub fn set_graphs(&mut self, enabled: bool) {
        self.graphs = enabled;
        if !enabled {
            self.step_graph = None;
        }
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.cache.capacity
    }

    /// One prefill forward of `ids` (T) from position 0 into this session's cache and
    /// workspace, leaving the last row's logits (1, V) in the workspace; nothing is sampled.
    /// The work may still be running on the device when this returns: a caller that times
    /// it calls `backend.synchronize()` after it (as `peregrine bench --prefill-tokens` does).
    pub fn prefill(&mut self, ids: &[u32]) -> Result<()> {
        let t = ids.len();
        if t == 0 {
            return Err(Error::input("prefill: no input ids"));
        }
        if t > self.ws.max_tokens || t > self.cache.capacity {
            return Err(Error::input(format!(
                "prefill of {t} ids: this session was sized for prompts of {} and a cache of {} positions",
                self.ws.max_tokens, self.cache.capacity
            )));
        }
        self.cache.clear();
        let positions: Vec<u32> = (0..t as u32).collect();
        self.model.forward(self.backend, ids, &positions, &mut self.cache, &mut self.ws, LogitRows::Last)
    }

    /// Generate for `req`, calling `on_text` with each released piece of text.
    pub fn generate(
        &mut self,
        req: &GenerateRequest,
        tokenizer: Option<&Tokenizer>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerateOutput> {
        self.generate_with(req, tokenizer, &mut |_, text| on_text(text))
    }

    /// Generate for `req`, calling `on_token(id, released_text)` as soon as each new token is
    /// known (the released text may be empty while a character or a possible stop string is
    /// incomplete; the rest comes with a final call whose id is `u32::MAX`).
    pub fn generate_with(
        &mut self,
        req: &GenerateRequest,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut dyn FnMut(u32, &str),
    ) -> Result<GenerateOutput> {
        let p = req.prompt_ids.len();
        self.check_fits(p, req.max_new_tokens)?;
        req.sampling.validate()?;
        self.cache.clear();
        let mut sampler = Sampler::new(req.sampling.clone());
        let mut history = req.prompt_ids.clone();
        let mut stream = StreamDecoder::new();
        let mut stops = StopFilter::new(&req.stop_strings);
        let start = Instant::now();
        let mut first_token_at = None;
        let mut ids = Vec::new();
        let mut finish = FinishReason::Length;
        let positions: Vec<u32> = (0..p as u32).collect();
        let mut next = self.step(&req.prompt_ids, &positions, &mut sampler, &history)?;
        while ids.len() < req.max_new_tokens {
            first_token_at.get_or_insert_with(Instant::now);
            if req.eos_ids.contains(&next) {
                finish = FinishReason::Eos;
                break;
            }
            ids.push(next);
            history.push(next);
            let (shown, stopped) = match tokenizer {
                Some(tok) => stops.push(&stream.push(tok, next)?),
                None => (String::new(), false),
            };
            on_token(next, &shown);
            if stopped {
                finish = FinishReason::StopString;
                break;
            }
            if ids.len() == req.max_new_tokens {
                break;
            }
            let pos = (p + ids.len() - 1) as u32;
            next = self.decode_step(next, pos, &mut sampler, &history)?;
        }
        if let (Some(tok), false) = (tokenizer, finish == FinishReason::StopString) {
            let (shown, _) = stops.push(&stream.finish(tok)?);
            on_token(u32::MAX, &(shown + &stops.flush()));
        }
        Ok(GenerateOutput {
            text: stops.text.clone(),
            prompt_tokens: p,
            finish_reason: finish,
            timings: timings(start, first_token_at, ids.len()),
            ids,
        })
    }

    fn check_fits(&self, prompt: usize, new: usize) -> Result<()> {
        if prompt > self.ws.max_tokens {
            return Err(Error::input(format!("the prompt has {prompt} tokens; this session was sized for {}", self.ws.max_tokens)));
        }
        if prompt + new > self.cache.capacity + 1 {
            return Err(Error::input(format!(
                "{prompt} prompt + {new} new tokens exceed the KV cache of {} positions",
                self.cache.capacity
            )));
        }
        Ok(())
    }

    /// One decode forward of token `id` at `pos` (replaying the recorded step when there is
    /// one), then sample.
    fn decode_step(&mut self, id: u32, pos: u32, sampler: &mut Sampler, history: &[u32]) -> Result<u32> {
        if !self.graphs {
            return self.step(&[id], &[pos], sampler, history);
        }
        let vocab = self.model.config.vocab_size;
        match &self.step_graph {
            Some(graph) => {
                self.backend.replay_step(graph, &[id], &[pos])?;
                self.cache.len = self.cache.len.max(pos as usize + 1);
            }
            None => {
                let Session { backend, model, cache, ws, .. } = self;
                let capacity = cache.capacity;
                let mut forward = || model.forward(*backend, &[id], &[pos], cache, ws, LogitRows::Last);
                self.step_graph = self.backend.record_step(&[id], &[pos], capacity, &mut forward)?;
                self.graphs = self.step_graph.is_some();
            }
        }
        self.backend.sample(&self.ws.logits, 0, vocab, sampler, history)
    }

    /// One forward over `ids` at `positions`, then sample from the last row.
    fn step(&mut self, ids: &[u32], positions: &[u32], sampler: &mut Sampler, history: &[u32]) -> Result<u32> {
        let vocab = self.model.config.vocab_size;
        self.model.forward(self.backend, ids, positions, &mut self.cache, &mut self.ws, LogitRows::Last)?;
        self.backend.sample(&self.ws.logits, 0, vocab, sampler, history)
    }
}

fn timings(start: Instant, first: Option<Instant>, generated: usize) -> Timings {
    let end = Instant::now();
    let total_s = (end - start).as_secs_f64();
    let first = first.unwrap_or(end);
    let ttft = (first - start).as_secs_f64();
    let decode_s = (end - first).as_secs_f64();
    let rate = if generated > 1 && decode_s > 0.0 { (generated - 1) as f64 / decode_s } else { 0.0 };
    Timings { time_to_first_token_s: ttft, decode_s, total_s, decode_tokens_per_s: rate }
}

/// A KV cache and workspace for one-forward logits of up to `tokens` ids, reused across calls
/// (perplexity scores hundreds of windows; allocating per window would dominate on a GPU).
pub struct AllLogits<B: Backend> {
    cache: KvCache<B>,
    ws: Workspace<B>,
    tokens: usize,
}

impl<B: Backend> AllLogits<B> {
    /// Buffers for forwards of up to `tokens` ids through `model`.
    pub fn new(backend: &B, model: &Falcon<B>, tokens: usize) -> Result<Self> {
        let c = &model.config;
        if tokens == 0 {
            return Err(Error::input("no input ids"));
        }
        if tokens > c.max_position_embeddings {
            return Err(Error::input(format!("{tokens} ids exceed the model's context of {}", c.max_position_embeddings)));
        }
        let cache = KvCache::new(backend, c.n_layer, tokens, c.n_kv, c.head_dim)?;
        let ws = model.workspace(backend, tokens, tokens)?;
        Ok(AllLogits { cache, ws, tokens })
    }

    /// Logits of every position of `ids` from one forward: (T, V) row-major.
    pub fn run(&mut self, backend: &B, model: &Falcon<B>, ids: &[u32]) -> Result<Vec<f32>> {
        self.forward(backend, model, ids)?;
        backend.download(&self.ws.logits, 0, ids.len() * model.config.vocab_size)
    }

    /// One forward of `ids` from position 0, leaving the (T, V) logits on the backend (`logits`).
    pub fn forward(&mut self, backend: &B, model: &Falcon<B>, ids: &[u32]) -> Result<()> {
        let t = ids.len();
        if t == 0 || t > self.tokens {
            return Err(Error::input(format!("{t} ids for buffers sized for 1..={}", self.tokens)));
        }
        self.cache.clear();
        let positions: Vec<u32> = (0..t as u32).collect();
        model.forward(backend, ids, &positions, &mut self.cache, &mut self.ws, LogitRows::All)
    }

    /// The logits the last `forward` left, (T, V) row-major.
    pub fn logits(&self) -> &B::Buf {
        &self.ws.logits
    }
}

/// Logits of every position of `ids` from one forward: (T, V) row-major.
pub fn all_logits<B: Backend>(backend: &B, model: &Falcon<B>, ids: &[u32]) -> Result<Vec<f32>> {
    AllLogits::new(backend, model, ids.len())?.run(backend, model, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_length_counts_the_prompt() {
        assert_eq!(plan_new_tokens(10, None, Some(100), 2048).unwrap(), 90);
        assert_eq!(plan_new_tokens(10, Some(5), Some(100), 2048).unwrap(), 5);
        assert_eq!(plan_new_tokens(10, Some(50), None, 30).unwrap(), 20);
        assert!(plan_new_tokens(0, Some(5), None, 30).is_err());
        assert!(plan_new_tokens(40, Some(5), None, 30).unwrap_err().to_string().contains("longer than the model's context"));
        assert!(plan_new_tokens(10, None, Some(10), 30).is_err());
    }

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        let stops = vec!["\nUser:".to_string()];
        let mut f = StopFilter::new(&stops);
        assert_eq!(f.push("Hello"), ("Hello".to_string(), false));
        assert_eq!(f.push(" there\nUs"), (" there".to_string(), false));
        assert_eq!(f.push("er: hi"), (String::new(), true));
        assert_eq!(f.text, "Hello there");
        let mut g = StopFilter::new(&stops);
        g.push("a\nU");
        assert_eq!(g.push("p"), ("\nUp".to_string(), false));
    }
}
