//! Several sequences decoding together, each at its own length: the step-level API that
//! continuous batching stands on. A sequence joins at any time ([`Batch::add`] prefills
//! its prompt in one pass into its own KV cache), every [`Batch::step`] chooses one token
//! for each sequence in flight with a single batched forward
//! ([`Llama::decode_step`]), and a sequence leaves the moment it finishes or is
//! cancelled.

use candle_core::Tensor;
use ferrochat_model::{KvCache, Llama, ModelError, Result};
use serde::{Deserialize, Serialize};

use crate::generate::GenerateOptions;
use crate::sampler::Sampler;

/// Names a sequence within its [`Batch`]; ids count up from 0 and are never reused.
pub type SeqId = u64;

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// It produced one of its stop tokens (which is part of the output).
    Stop,
    /// It reached `max_new_tokens` or the model's context.
    #[default]
    Length,
    /// The caller ended it.
    Cancelled,
}

impl FinishReason {
    /// Its name in JSON: "stop" and "length" as the OpenAI API's `finish_reason`, and
    /// "cancelled".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One token chosen by [`Batch::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepToken {
    pub id: SeqId,
    pub token: u32,
    /// Set when this was the sequence's last token; it has left the batch.
    pub finish: Option<FinishReason>,
}

/// New tokens a prompt of `prompt_len` may get: `max_new_tokens`, less if the model's
/// context runs out first.
pub fn budget(model: &Llama, prompt_len: usize, max_new_tokens: usize) -> usize {
    let ctx = model.config().max_position_embeddings;
    max_new_tokens.min(ctx.saturating_sub(prompt_len))
}

struct Seq {
    id: SeqId,
    cache: KvCache,
    sampler: Sampler,
    stop: Vec<u32>,
    /// The prompt, then every generated token: the repetition penalty's context.
    tokens: Vec<u32>,
    prompt_len: usize,
    budget: usize,
    /// The next token's logits once the cache holds every token of `tokens`; `None`
    /// while the last sampled token still has to be fed.
    logits: Option<Vec<f32>>,
}

/// Sequences in flight over one model.
pub struct Batch<'m> {
    model: &'m Llama,
    seqs: Vec<Seq>,
    next_id: SeqId,
}

impl<'m> Batch<'m> {
    pub fn new(model: &'m Llama) -> Self {
        Self {
            model,
            seqs: Vec::new(),
            next_id: 0,
        }
    }

    pub fn model(&self) -> &'m Llama {
        self.model
    }

    /// Starts a sequence: checks the prompt and options, and prefills the prompt into a
    /// fresh cache in one forward pass. Its first token comes with the next [`step`].
    ///
    /// A prompt that leaves no room for a new token (empty, `max_new_tokens` 0, or as
    /// long as the context) is an error, as are bad sampling parameters and token ids
    /// outside the vocabulary.
    ///
    /// [`step`]: Batch::step
    pub fn add(&mut self, prompt: &[u32], opts: &GenerateOptions) -> Result<SeqId> {
        let bad = |m: String| Err(ModelError::Config(m));
        if prompt.is_empty() {
            return bad("empty prompt: nothing to continue".into());
        }
        if let Err(e) = opts.sampling.validate() {
            return bad(format!("sampling: {e}"));
        }
        if let Some(Err(e)) = opts.watermark.map(|w| w.validate()) {
            return bad(e);
        }
        let vocab = self.model.config().vocab_size;
        if let Some(t) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return bad(format!(
                "prompt token {t} is outside the vocabulary of {vocab}"
            ));
        }
        let budget = budget(self.model, prompt.len(), opts.max_new_tokens);
        if budget == 0 {
            let ctx = self.model.config().max_position_embeddings;
            return bad(if opts.max_new_tokens == 0 {
                "max_new_tokens is 0: nothing to generate".into()
            } else {
                format!(
                    "a prompt of {} tokens leaves no room in the model's context of {ctx}",
                    prompt.len()
                )
            });
        }
        let mut cache = self.model.new_cache();
        let ids = Tensor::new(prompt, self.model.device())?.unsqueeze(0)?;
        let logits = self
            .model
            .forward_cached(&ids, &mut cache)?
            .squeeze(0)?
            .to_vec1()?;
        let id = self.next_id;
        self.next_id += 1;
        self.seqs.push(Seq {
            id,
            cache,
            sampler: Sampler::new(opts.sampling, opts.seed).with_watermark(opts.watermark),
            stop: opts.stop.clone(),
            tokens: prompt.to_vec(),
            prompt_len: prompt.len(),
            budget,
            logits: Some(logits),
        });
        Ok(id)
    }

    /// Chooses the next token of every sequence in flight, in the order they joined:
    /// one batched forward for those whose last token is not yet in their cache (a
    /// sequence added since the last step already has its logits from the prefill),
    /// then sampling. Sequences that finish leave the batch at once.
    ///
    /// An error (from the model) leaves the batch in no state to go on.
    pub fn step(&mut self) -> Result<Vec<StepToken>> {
        let pending: Vec<u32> = self
            .seqs
            .iter()
            .filter(|s| s.logits.is_none())
            .map(|s| s.tokens[s.tokens.len() - 1])
            .collect();
        if !pending.is_empty() {
            let mut caches: Vec<&mut KvCache> = self
                .seqs
                .iter_mut()
                .filter(|s| s.logits.is_none())
                .map(|s| &mut s.cache)
                .collect();
            let logits = self.model.decode_step(&pending, &mut caches)?; // (n, V)
            let v = logits.dim(1)?;
            let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            let waiting = self.seqs.iter_mut().filter(|s| s.logits.is_none());
            for (s, row) in waiting.zip(flat.chunks_exact(v)) {
                s.logits = Some(row.to_vec());
            }
        }
        let mut out = Vec::with_capacity(self.seqs.len());
        for s in &mut self.seqs {
            let logits = s.logits.take().expect("every sequence has logits here");
            let token = s.sampler.sample_after(&logits, &s.tokens);
            s.tokens.push(token);
            let finish = if s.stop.contains(&token) {
                Some(FinishReason::Stop)
            } else if s.tokens.len() - s.prompt_len >= s.budget {
                Some(FinishReason::Length)
            } else {
                None
            };
            out.push(StepToken {
                id: s.id,
                token,
                finish,
            });
        }
        let mut events = out.iter(); // one per sequence, in the same order
        self.seqs
            .retain(|_| events.next().is_some_and(|e| e.finish.is_none()));
        Ok(out)
    }

    /// Ends a sequence now and frees its cache; false if it is not in the batch.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        let before = self.seqs.len();
        self.seqs.retain(|s| s.id != id);
        self.seqs.len() < before
    }

    /// Sequences in flight.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Whether `id` is still in flight.
    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.iter().any(|s| s.id == id)
    }

    /// The ids in flight, in the order they joined.
    pub fn ids(&self) -> Vec<SeqId> {
        self.seqs.iter().map(|s| s.id).collect()
    }

    /// The tokens `id` has generated so far (prompt excluded).
    pub fn generated(&self, id: SeqId) -> Option<&[u32]> {
        self.seqs
            .iter()
            .find(|s| s.id == id)
            .map(|s| &s.tokens[s.prompt_len..])
    }
}
