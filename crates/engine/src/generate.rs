//! Generation for one sequence: prefill the prompt into the KV cache in one pass, then
//! decode a token at a time until a stop token or the length limit.

use std::time::Instant;

use candle_core::{Device, Tensor};
use ferrochat_model::{Llama, Result};

use crate::sampler::{Sampler, SamplingParams};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    /// Generation ends after any of these (the stop token is included in the output).
    pub stop: Vec<u32>,
}

/// What came out, and how fast.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    pub tokens: Vec<u32>,
    /// True when a stop token ended it (rather than the length limit).
    pub stopped: bool,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

impl Generation {
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
    let mut out = Generation::default();
    if prompt.is_empty() {
        return Err(ferrochat_model::ModelError::Config(
            "empty prompt: nothing to continue".into(),
        ));
    }
    let ctx = model.config().max_position_embeddings;
    let budget = opts.max_new_tokens.min(ctx.saturating_sub(prompt.len()));
    if budget == 0 {
        return Ok(out);
    }
    let mut sampler = Sampler::new(opts.sampling, opts.seed);
    let mut cache = model.new_cache();
    let dev: &Device = model.device();
    let t0 = Instant::now();
    let ids = Tensor::new(prompt, dev)?.unsqueeze(0)?;
    let mut logits: Vec<f32> = model
        .forward_cached(&ids, &mut cache)?
        .squeeze(0)?
        .to_vec1()?;
    out.prefill_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    loop {
        let next = sampler.sample(&logits);
        out.tokens.push(next);
        let go_on = on_token(next);
        if opts.stop.contains(&next) {
            out.stopped = true;
            break;
        }
        if !go_on || out.tokens.len() >= budget {
            break;
        }
        let ids = Tensor::new(&[next], dev)?.unsqueeze(0)?;
        logits = model
            .forward_cached(&ids, &mut cache)?
            .squeeze(0)?
            .to_vec1()?;
    }
    out.decode_secs = t1.elapsed().as_secs_f64();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
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
