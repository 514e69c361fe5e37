//! Speculative decoding (Leviathan et al., 2023; Chen et al., 2023): a small draft model
//! proposes `k` tokens one at a time, the target checks all of them in one forward pass,
//! keeps the longest prefix it agrees with and adds one token of its own. The output
//! follows the target's distribution exactly: a drafted token `d` is kept with
//! probability `min(1, p(d) / q(d))`, and at the first refusal the target's token is
//! drawn from the residual `max(0, p - q)`. Greedy, that is "keep while the draft picks
//! the target's argmax", so the tokens are the target's own.

use std::time::Instant;

use candle_core::Tensor;
use ferrochat_model::{Llama, ModelError, Result};

use crate::batch::{budget, FinishReason};
use crate::generate::{GenerateOptions, Generation};
use crate::sampler::{argmax, Sampler};

/// How the drafting went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpecStats {
    /// Verification passes of the target.
    pub rounds: usize,
    /// Tokens the draft proposed.
    pub drafted: usize,
    /// Of those, kept.
    pub accepted: usize,
}

impl SpecStats {
    /// Share of drafted tokens the target kept.
    pub fn acceptance(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }

    /// Tokens generated per target pass.
    pub fn tokens_per_round(&self, generated: usize) -> f64 {
        generated as f64 / self.rounds.max(1) as f64
    }
}

/// Feeds `ids` to `model` after what `cache` holds; the logits of the last position.
fn feed_last(model: &Llama, ids: &[u32], cache: &mut ferrochat_model::KvCache) -> Result<Vec<f32>> {
    let t = Tensor::new(ids, model.device())?.unsqueeze(0)?;
    Ok(model.forward_cached(&t, cache)?.squeeze(0)?.to_vec1()?)
}

/// Generates after `prompt` with `target`, drafting `k` tokens at a time with `draft`
/// (which must share the target's vocabulary). Stop tokens, the length limit and
/// `on_token` (return false to stop) work as in [`crate::generate`].
pub fn generate_speculative(
    target: &Llama,
    draft: &Llama,
    prompt: &[u32],
    opts: &GenerateOptions,
    k: usize,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<(Generation, SpecStats)> {
    let bad = |m: String| Err(ModelError::Config(m));
    let (tv, dv) = (target.config().vocab_size, draft.config().vocab_size);
    if tv != dv {
        return bad(format!(
            "the draft's vocabulary ({dv}) is not the target's ({tv}): they must share a tokenizer"
        ));
    }
    if k == 0 {
        return bad("draft at least one token per round (k >= 1)".into());
    }
    if prompt.is_empty() {
        return bad("empty prompt: nothing to continue".into());
    }
    if let Err(e) = opts.sampling.validate() {
        return bad(format!("sampling: {e}"));
    }
    let limit = budget(target, prompt.len(), opts.max_new_tokens).min(budget(
        draft,
        prompt.len(),
        opts.max_new_tokens,
    ));
    let mut out = Generation::default();
    let mut stats = SpecStats::default();
    let t0 = Instant::now();
    let mut tokens = prompt.to_vec();
    let mut tc = target.new_cache();
    let mut dc = draft.new_cache();
    // the target's sampler accepts, refuses and draws; the draft's drafts
    let mut ts = Sampler::new(opts.sampling, opts.seed).with_watermark(opts.watermark);
    let mut ds =
        Sampler::new(opts.sampling, opts.seed ^ 0x5EC0_DE5E_C0DE).with_watermark(opts.watermark);
    let greedy = ts.greedy();
    out.finish = FinishReason::Length;
    'rounds: while out.tokens.len() < limit {
        let n = tokens.len();
        // at most as many drafts as leave room for the target's own token
        let kk = k.min(limit - out.tokens.len() - 1);
        let mut ctx = tokens.clone();
        let mut qs = Vec::with_capacity(kk);
        for _ in 0..kk {
            let logits = feed_last(draft, &ctx[dc.len()..], &mut dc)?;
            let q = ds.distribution(&logits, &ctx);
            let d = if greedy { argmax(&q) } else { ds.draw(&q) };
            ctx.push(d);
            qs.push(q);
        }
        let drafts = ctx[n..].to_vec();
        // one pass of the target over what it has not seen plus every draft
        let seen = tc.len();
        let feed = Tensor::new(&ctx[seen..], target.device())?.unsqueeze(0)?;
        let logits = target.forward_cached_all(&feed, &mut tc)?; // (T, V)
        let row = |i: usize| -> Result<Vec<f32>> { Ok(logits.get(n - 1 - seen + i)?.to_vec1()?) };
        stats.rounds += 1;
        stats.drafted += kk;
        let mut kept = 0;
        let mut own = None;
        for (i, &d) in drafts.iter().enumerate() {
            let p = ts.distribution(&row(i)?, &ctx[..n + i]);
            let keep = if greedy {
                p[d as usize] > 0.0
            } else {
                let q = qs[i][d as usize];
                q > 0.0 && ts.uniform() < (p[d as usize] / q).min(1.0)
            };
            if keep {
                kept += 1;
                continue;
            }
            own = Some(if greedy {
                argmax(&p)
            } else {
                let residual: Vec<f32> = p
                    .iter()
                    .zip(&qs[i])
                    .map(|(a, b)| (a - b).max(0.0))
                    .collect();
                if residual.iter().sum::<f32>() > 0.0 {
                    ts.draw(&residual)
                } else {
                    ts.draw(&p)
                }
            });
            break;
        }
        let own = match own {
            Some(t) => t,
            // every draft kept: the target's next token comes free from the same pass
            None => {
                let p = ts.distribution(&row(kk)?, &ctx);
                if greedy {
                    argmax(&p)
                } else {
                    ts.draw(&p)
                }
            }
        };
        stats.accepted += kept;
        // the target's cache keeps what it accepted; the draft's no more than that
        tc.truncate(n + kept)?;
        dc.truncate((n + kept).min(dc.len()))?;
        for &t in drafts[..kept].iter().chain(std::iter::once(&own)) {
            tokens.push(t);
            out.tokens.push(t);
            if opts.stop.contains(&t) {
                out.finish = FinishReason::Stop;
                break 'rounds;
            }
            if !on_token(t) {
                out.finish = FinishReason::Cancelled;
                break 'rounds;
            }
            if out.tokens.len() >= limit {
                break 'rounds;
            }
        }
    }
    out.stopped = out.finish == FinishReason::Stop;
    out.decode_secs = t0.elapsed().as_secs_f64();
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate, SamplingParams};
    use candle_core::Device;
    use ferrochat_model::{weights, Config};

    fn model(seed: u64, layers: usize) -> Llama {
        let cfg = Config {
            tie_word_embeddings: false,
            num_hidden_layers: layers,
            ..Config::preset("tiny", 64, 96).unwrap()
        };
        let w = weights::init_weights(&cfg, seed, &Device::Cpu).unwrap();
        Llama::new(&cfg, &w, &Device::Cpu).unwrap()
    }

    fn opts(max: usize, sampling: SamplingParams, stop: Vec<u32>) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: max,
            sampling,
            seed: 3,
            stop,
            watermark: None,
        }
    }

    #[test]
    fn greedy_output_is_the_targets_own_token_for_token() {
        let target = model(1, 2);
        for (draft, k) in [(model(2, 1), 4), (model(1, 2), 3), (model(5, 1), 1)] {
            for prompt in [vec![1u32, 2, 3], vec![7u32; 9], vec![40u32, 3, 17, 22, 9]] {
                let o = opts(40, SamplingParams::greedy(), vec![]);
                let plain = generate(&target, &prompt, &o, |_| true).unwrap();
                let (spec, stats) =
                    generate_speculative(&target, &draft, &prompt, &o, k, |_| true).unwrap();
                assert_eq!(spec.tokens, plain.tokens, "k {k}, prompt {prompt:?}");
                assert!(stats.rounds <= 40);
            }
        }
        // the target as its own draft: every draft is kept
        let same = model(1, 2);
        let o = opts(30, SamplingParams::greedy(), vec![]);
        let (_, stats) = generate_speculative(&target, &same, &[1, 2, 3], &o, 4, |_| true).unwrap();
        assert_eq!(stats.acceptance(), 1.0, "{stats:?}");
    }

    #[test]
    fn stop_tokens_and_the_length_limit_end_it_as_plain_generation_does() {
        let target = model(1, 2);
        let draft = model(2, 1);
        let o = opts(40, SamplingParams::greedy(), vec![]);
        let plain = generate(&target, &[5, 6], &o, |_| true).unwrap();
        let stop = plain.tokens[6];
        let o = opts(40, SamplingParams::greedy(), vec![stop]);
        let plain = generate(&target, &[5, 6], &o, |_| true).unwrap();
        let (spec, _) = generate_speculative(&target, &draft, &[5, 6], &o, 4, |_| true).unwrap();
        assert_eq!(spec.tokens, plain.tokens);
        assert_eq!(spec.finish, FinishReason::Stop);
        // the context: 96 positions, a prompt of 90 leaves 6
        let (spec, _) = generate_speculative(
            &target,
            &draft,
            &[3; 90],
            &opts(40, SamplingParams::greedy(), vec![]),
            4,
            |_| true,
        )
        .unwrap();
        assert_eq!(spec.tokens.len(), 6);
        // a draft of another vocabulary is refused
        let cfg = Config::preset("tiny", 65, 96).unwrap();
        let w = weights::init_weights(&cfg, 1, &Device::Cpu).unwrap();
        let other = Llama::new(&cfg, &w, &Device::Cpu).unwrap();
        assert!(generate_speculative(&target, &other, &[1], &o, 2, |_| true).is_err());
    }

    #[test]
    fn sampled_output_follows_the_targets_distribution() {
        // the first two tokens after a prompt, many times, with and without a draft
        let target = model(1, 2);
        let draft = model(9, 1);
        let sampling = SamplingParams {
            temperature: 1.0,
            top_k: 8,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
        };
        let runs = 3000;
        let mut plain = std::collections::HashMap::new();
        let mut spec = std::collections::HashMap::new();
        let mut stats = SpecStats::default();
        for seed in 0..runs {
            let o = GenerateOptions {
                seed,
                ..opts(2, sampling, vec![])
            };
            let a = generate(&target, &[4, 8, 15], &o, |_| true).unwrap().tokens;
            *plain.entry(a).or_insert(0usize) += 1;
            let (b, s) =
                generate_speculative(&target, &draft, &[4, 8, 15], &o, 3, |_| true).unwrap();
            *spec.entry(b.tokens).or_insert(0usize) += 1;
            stats.drafted += s.drafted;
            stats.accepted += s.accepted;
        }
        // total variation distance between the two empirical distributions of pairs
        let keys: std::collections::HashSet<_> = plain.keys().chain(spec.keys()).cloned().collect();
        let tv: f64 = keys
            .iter()
            .map(|k| {
                let a = *plain.get(k).unwrap_or(&0) as f64 / runs as f64;
                let b = *spec.get(k).unwrap_or(&0) as f64 / runs as f64;
                (a - b).abs()
            })
            .sum::<f64>()
            / 2.0;
        // 64 possible pairs at most; sampling noise alone gives a TV of about 0.08 here
        assert!(tv < 0.12, "total variation {tv}");
        assert!(
            stats.accepted > 0 && stats.accepted < stats.drafted,
            "{stats:?}"
        );
    }
}
