//! Generation to the end: one sequence ([`generate`]) or several at once
//! ([`generate_batch`]), each prefilled in one pass into its own KV cache, then decoded
//! a token at a time (all sequences in one batched forward) until a stop token, the
//! length limit or the caller says stop. Both run on [`Batch`].

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::time::Instant;

use ferrochat_model::{Llama, ModelError, Result};

use crate::batch::{budget, Batch, FinishReason};
use crate::sampler::SamplingParams;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    /// Generation ends after any of these (the stop token is included in the output).
    pub stop: Vec<u32>,
    /// A watermark planted in the sampled tokens (none by default).
    pub watermark: Option<crate::Watermark>,
}

/// What came out, and how fast.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    pub tokens: Vec<u32>,
    /// True when a stop token ended it (rather than the length limit).
    pub stopped: bool,
    pub finish: FinishReason,
    pub prefill_secs: f64,
    /// Wall time from the end of the prefills to this sequence's last token; in a batch
    /// the sequences share it.
    pub decode_secs: f64,
}

impl Generation {
    /// Tokens per second after the first (which comes from the prefill's logits).
    pub fn decode_tokens_per_sec(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

/// Generates after `prompt`; `on_token` sees each new token as it is chosen and can
/// end generation by returning false.
pub fn generate(
    model: &Llama,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    let mut g = generate_batch(model, &[prompt], std::slice::from_ref(opts), |_, t| {
        on_token(t)
    })?;
    Ok(g.pop().expect("one generation per prompt"))
}

/// Generates after each of `prompts` at once, with `opts` one per prompt or one for
/// all. Prompts may differ in length; sequences decode together and each leaves when it
/// finishes. `on_token(i, token)` sees each new token of prompt `i` as it is chosen and
/// can end that sequence by returning false. A prompt with no room for a new token
/// (`max_new_tokens` 0, or as long as the context) gets an empty [`Generation`].
pub fn generate_batch<P: AsRef<[u32]>>(
    model: &Llama,
    prompts: &[P],
    opts: &[GenerateOptions],
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<Vec<Generation>> {
    if opts.len() != prompts.len() && opts.len() != 1 {
        return Err(ModelError::Config(format!(
            "{} generation options for {} prompts (give one per prompt, or one for all)",
            opts.len(),
            prompts.len()
        )));
    }
    let opt = |i: usize| &opts[i.min(opts.len() - 1)];
    let mut out = vec![Generation::default(); prompts.len()];
    let mut batch = Batch::new(model);
    let mut index = HashMap::new();
    for (i, p) in prompts.iter().enumerate() {
        let p = p.as_ref();
        if !p.is_empty() && budget(model, p.len(), opt(i).max_new_tokens) == 0 {
            continue;
        }
        let t = Instant::now();
        index.insert(batch.add(p, opt(i))?, i);
        out[i].prefill_secs = t.elapsed().as_secs_f64();
    }
    let t0 = Instant::now();
    while !batch.is_empty() {
        for e in batch.step()? {
            let i = index[&e.id];
            let g = &mut out[i];
            g.tokens.push(e.token);
            let go_on = on_token(i, e.token);
            let finish = match e.finish {
                Some(f) => Some(f),
                None if !go_on => {
                    batch.cancel(e.id);
                    Some(FinishReason::Cancelled)
                }
                None => None,
            };
            if let Some(f) = finish {
                g.finish = f;
                g.stopped = f == FinishReason::Stop;
                g.decode_secs = t0.elapsed().as_secs_f64();
            }
        }
    }
    Ok(out)
}

/// [`generate_batch`] streaming `(prompt index, token)` into a channel; a receiver that
/// hangs up cancels every sequence at its next token. Run it on its own thread (a
/// scoped one can borrow the model) and read the channel on another.
pub fn generate_batch_to<P: AsRef<[u32]>>(
    model: &Llama,
    prompts: &[P],
    opts: &[GenerateOptions],
    tx: Sender<(usize, u32)>,
) -> Result<Vec<Generation>> {
    generate_batch(model, prompts, opts, |i, t| tx.send((i, t)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use ferrochat_model::{weights, Config};

    #[test]
    fn greedy_generation_matches_argmax_of_full_recompute() {
        let cfg = Config::preset("tiny", 50, 64).unwrap();
        let w = weights::init_weights(&cfg, 5, &Device::Cpu).unwrap();
        let m = Llama::new(&cfg, &w, &Device::Cpu).unwrap();
        let opts = GenerateOptions {
            max_new_tokens: 10,
            sampling: SamplingParams::greedy(),
            seed: 0,
            stop: vec![],
            watermark: None,
        };
        let g = generate(&m, &[1, 2, 3], &opts, |_| true).unwrap();
        assert_eq!(g.tokens.len(), 10);
        let mut seq = vec![1u32, 2, 3];
        for &t in &g.tokens {
            let ids = Tensor::new(seq.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits: Vec<Vec<f32>> = m.forward(&ids).unwrap().to_vec2().unwrap();
            assert_eq!(crate::sampler::argmax(logits.last().unwrap()), t);
            seq.push(t);
        }
    }

    #[test]
    fn stops_on_a_stop_token_and_respects_the_context() {
        let cfg = Config::preset("tiny", 50, 8).unwrap();
        let w = weights::init_weights(&cfg, 5, &Device::Cpu).unwrap();
        let m = Llama::new(&cfg, &w, &Device::Cpu).unwrap();
        let opts = GenerateOptions {
            max_new_tokens: 100,
            sampling: SamplingParams::greedy(),
            seed: 0,
            stop: vec![],
            watermark: None,
        };
        let g = generate(&m, &[1, 2, 3], &opts, |_| true).unwrap();
        assert_eq!(g.tokens.len(), 5, "context of 8 leaves 5 new tokens");
        let first = g.tokens[0];
        let opts = GenerateOptions {
            stop: vec![first],
            ..opts
        };
        let g = generate(&m, &[1, 2, 3], &opts, |_| true).unwrap();
        assert!(g.stopped);
        assert_eq!(g.tokens, vec![first]);
    }
}
