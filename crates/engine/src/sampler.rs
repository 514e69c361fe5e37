//! Picking the next token from logits: an optional repetition penalty, then greedy, or
//! temperature with top-k, top-p (nucleus) and min-p truncation, from a seeded generator
//! so a run can be repeated exactly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::watermark::Watermark;

/// How to sample. Temperature 0 means greedy.
///
/// The steps run in the order of Hugging Face `generate`: repetition penalty, then
/// temperature, top-k, top-p and min-p. Fields added after the first three default when
/// missing, so older JSON still reads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: no limit).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1: no limit).
    pub top_p: f32,
    /// Keep only tokens at least `min_p` times as likely as the most likely one (0: off).
    #[serde(default)]
    pub min_p: f32,
    /// CTRL-style penalty on every token already in the sequence, prompt included: a
    /// positive logit is divided by it, a negative one multiplied (1: off).
    #[serde(default = "no_penalty")]
    pub repetition_penalty: f32,
}

fn no_penalty() -> f32 {
    1.0
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 50,
            top_p: 0.95,
            min_p: 0.0,
            repetition_penalty: 1.0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
        }
    }

    /// Checks the ranges; the error names the field, the allowed range and the value.
    pub fn validate(&self) -> Result<(), String> {
        let p = self;
        if !(p.temperature.is_finite() && p.temperature >= 0.0) {
            return Err(format!(
                "temperature must be finite and >= 0 (0 for greedy), got {}",
                p.temperature
            ));
        }
        if !(p.top_p > 0.0 && p.top_p <= 1.0) {
            return Err(format!(
                "top_p must be in (0, 1] (1 for no limit), got {}",
                p.top_p
            ));
        }
        if !(p.min_p >= 0.0 && p.min_p < 1.0) {
            return Err(format!(
                "min_p must be in [0, 1) (0 for off), got {}",
                p.min_p
            ));
        }
        if !(p.repetition_penalty.is_finite() && p.repetition_penalty > 0.0) {
            return Err(format!(
                "repetition_penalty must be finite and > 0 (1 for off), got {}",
                p.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// A seeded sampler for one sequence: one draw from its generator per sampled token
/// (none when greedy), so the same seed and logits give the same tokens.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    scratch: Vec<(f32, u32)>,
    penalized: Vec<f32>,
    watermark: Option<Watermark>,
}

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Self {
        Self {
            params,
            rng: ChaCha8Rng::seed_from_u64(seed),
            scratch: Vec::new(),
            penalized: Vec::new(),
            watermark: None,
        }
    }

    /// Plants `watermark` in what this sampler picks: after the repetition penalty, the
    /// tokens green after the previous one get its logit bonus.
    pub fn with_watermark(mut self, watermark: Option<Watermark>) -> Self {
        self.watermark = watermark;
        self
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token id from one row of logits, with no repetition penalty.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.sample_after(logits, &[])
    }

    /// Picks a token id from one row of logits that follows `context` (the tokens of the
    /// sequence so far, prompt and generated); the repetition penalty, when on, applies
    /// once to each distinct token of `context`.
    pub fn sample_after(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        match self.adjusted(logits, context) {
            None => self.pick(logits),
            Some(adj) => {
                let t = self.pick(&adj);
                self.penalized = adj;
                t
            }
        }
    }

    /// The logits after the repetition penalty and the watermark's bonus; `None` when
    /// neither applies (the logits are used as they are).
    fn adjusted(&mut self, logits: &[f32], context: &[u32]) -> Option<Vec<f32>> {
        let rp = self.params.repetition_penalty;
        let mark = self
            .watermark
            .filter(|w| w.delta > 0.0)
            .zip(context.last().copied());
        let penalize = rp != 1.0 && !context.is_empty();
        if !penalize && mark.is_none() {
            return None;
        }
        let mut pen = std::mem::take(&mut self.penalized);
        if penalize {
            penalize_into(logits, context, rp, &mut pen);
        } else {
            pen.clear();
            pen.extend_from_slice(logits);
        }
        if let Some((w, prev)) = mark {
            w.bias(prev, &mut pen);
        }
        Some(pen)
    }

    /// The full distribution [`Sampler::sample_after`] draws from: probabilities over the
    /// vocabulary, zero for tokens the truncations drop, one-hot when greedy. Speculative
    /// decoding compares the draft's and the target's.
    pub fn distribution(&mut self, logits: &[f32], context: &[u32]) -> Vec<f32> {
        let adj = self.adjusted(logits, context);
        let l = adj.as_deref().unwrap_or(logits);
        let mut out = vec![0.0f32; l.len()];
        if self.greedy() {
            out[argmax(l) as usize] = 1.0;
        } else {
            let total = self.weigh(l);
            for &(w, i) in &self.scratch {
                out[i as usize] = w / total;
            }
        }
        if let Some(a) = adj {
            self.penalized = a;
        }
        out
    }

    /// Whether picking is greedy (no draws from the generator).
    pub fn greedy(&self) -> bool {
        self.params.temperature <= 0.0 || self.params.top_k == 1
    }

    /// A token drawn from `probs` (weights over the vocabulary; they need not sum to 1).
    pub fn draw(&mut self, probs: &[f32]) -> u32 {
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        let mut last = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                last = i;
                r -= p;
                if r <= 0.0 {
                    return i as u32;
                }
            }
        }
        last as u32
    }

    /// A uniform draw in [0, 1) from this sampler's generator.
    pub fn uniform(&mut self) -> f32 {
        self.rng.random::<f32>()
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.greedy() {
            return argmax(logits);
        }
        let total = self.weigh(logits);
        let c = &self.scratch;
        let mut r = self.rng.random::<f32>() * total;
        for e in c.iter() {
            r -= e.0;
            if r <= 0.0 {
                return e.1;
            }
        }
        c[c.len() - 1].1
    }

    /// Fills `scratch` with the (weight, token) pairs that survive temperature, top-k,
    /// top-p and min-p, most likely first; returns the weights' sum.
    fn weigh(&mut self, logits: &[f32]) -> f32 {
        let p = self.params;
        let c = &mut self.scratch;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (l, i as u32)));
        let by_logit_desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0);
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(by_logit_desc);
        let max = c[0].0;
        let mut total = 0.0f32;
        for e in c.iter_mut() {
            e.0 = ((e.0 - max) / p.temperature).exp();
            total += e.0;
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = c.len();
            for (i, e) in c.iter().enumerate() {
                acc += e.0 / total;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep);
            total = c.iter().map(|e| e.0).sum();
        }
        if p.min_p > 0.0 {
            // e.0 is already p / p_max: the most likely token has weight exp(0) = 1
            let keep = c.iter().take_while(|e| e.0 >= p.min_p).count().max(1);
            if keep < c.len() {
                c.truncate(keep);
                total = c.iter().map(|e| e.0).sum();
            }
        }
        total
    }
}

/// `out` = `logits` with the repetition penalty on each distinct token of `context`
/// (ids outside the vocabulary are ignored).
fn penalize_into(logits: &[f32], context: &[u32], penalty: f32, out: &mut Vec<f32>) {
    out.clear();
    out.extend_from_slice(logits);
    for &t in context {
        // computed from the untouched logit, so a repeated token is penalised once
        if let Some(&l) = logits.get(t as usize) {
            out[t as usize] = if l > 0.0 { l / penalty } else { l * penalty };
        }
    }
}

/// The index of the largest logit (the first one on a tie).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            ..SamplingParams::greedy()
        }
    }

    /// How often each token comes out in `n` draws.
    fn frequencies(s: &mut Sampler, logits: &[f32], context: &[u32], n: usize) -> Vec<f64> {
        let mut f = vec![0.0; logits.len()];
        for _ in 0..n {
            f[s.sample_after(logits, context) as usize] += 1.0 / n as f64;
        }
        f
    }

    #[test]
    fn greedy_takes_the_max() {
        let mut s = Sampler::new(SamplingParams::greedy(), 0);
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn top_k_one_and_top_p_small_are_greedy() {
        let logits = [0.0, 1.0, 5.0, 2.0];
        let mut s = Sampler::new(params(1.0, 1, 1.0), 1);
        let mut t = Sampler::new(params(1.0, 0, 0.01), 1);
        for _ in 0..20 {
            assert_eq!(s.sample(&logits), 2);
            assert_eq!(t.sample(&logits), 2);
        }
    }

    #[test]
    fn sampling_follows_the_distribution_and_is_seeded() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let p = params(1.0, 0, 1.0);
        let mut s = Sampler::new(p, 7);
        let n = 20_000;
        let ones = (0..n).filter(|_| s.sample(&logits) == 1).count() as f64 / n as f64;
        assert!((ones - 0.75).abs() < 0.02, "{ones}");
        let a: Vec<u32> = {
            let mut s = Sampler::new(p, 9);
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(p, 9);
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn top_k_never_picks_outside_the_k_best() {
        let logits = [5.0, 4.9, 0.0, 4.8, -1.0];
        let mut s = Sampler::new(params(2.0, 3, 1.0), 3);
        for _ in 0..500 {
            assert!([0, 1, 3].contains(&s.sample(&logits)));
        }
    }

    #[test]
    fn min_p_drops_tokens_below_its_share_of_the_best() {
        // p = 0.5, 0.3, 0.15, 0.05; min_p 0.2 keeps p >= 0.1: the first three, renormalised
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let p = SamplingParams {
            min_p: 0.2,
            ..params(1.0, 0, 1.0)
        };
        let f = frequencies(&mut Sampler::new(p, 11), &logits, &[], 20_000);
        assert_eq!(f[3], 0.0, "{f:?}");
        for (got, want) in f.iter().zip([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95]) {
            assert!((got - want).abs() < 0.02, "{f:?}");
        }
        // min_p 0.7 keeps p >= 0.35: only the best
        let p = SamplingParams { min_p: 0.7, ..p };
        let mut s = Sampler::new(p, 12);
        assert!((0..200).all(|_| s.sample(&logits) == 0));
        // the threshold is taken after temperature: at T = 2 the ratios are square
        // roots, sqrt(0.05 / 0.5) = 0.32 >= 0.2, so all four stay
        let p = SamplingParams {
            temperature: 2.0,
            min_p: 0.2,
            ..p
        };
        let f = frequencies(&mut Sampler::new(p, 13), &logits, &[], 20_000);
        assert!(f[3] > 0.05, "{f:?}");
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits_once() {
        let mut out = Vec::new();
        penalize_into(&[2.0, -1.0, 0.5, 3.0], &[0, 1, 0, 0, 99], 2.0, &mut out);
        assert_eq!(out, vec![1.0, -2.0, 0.5, 3.0]);
        // greedy: 3.0 vs 1.4 picks 0; penalised once (1.5) it still does, twice (0.75) would not
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(p, 0);
        assert_eq!(s.sample_after(&[3.0, 1.4], &[0, 0]), 0);
        assert_eq!(s.sample_after(&[3.0, 1.6], &[0, 0]), 1);
        assert_eq!(s.sample_after(&[-1.0, -1.5], &[0]), 1);
        assert_eq!(s.sample(&[-1.0, -1.5]), 0, "no context, no penalty");
        // sampled: logits (ln 3, 0) penalised by 2 become (ln 3 / 2, 0), so
        // p(0) = sqrt(3) / (1 + sqrt(3)) = 0.634 instead of 0.75
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..params(1.0, 0, 1.0)
        };
        let f = frequencies(&mut Sampler::new(p, 5), &[3f32.ln(), 0.0], &[0], 20_000);
        let want = 3f64.sqrt() / (1.0 + 3f64.sqrt());
        assert!((f[0] - want).abs() < 0.02, "{f:?} vs {want}");
    }

    #[test]
    fn seeded_sampling_with_every_option_repeats_and_seeds_differ() {
        let p = SamplingParams {
            temperature: 1.3,
            top_k: 20,
            top_p: 0.9,
            min_p: 0.05,
            repetition_penalty: 1.3,
        };
        let logits: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(p, seed);
            let mut ctx = vec![3u32, 5];
            for _ in 0..60 {
                let t = s.sample_after(&logits, &ctx);
                ctx.push(t);
            }
            ctx
        };
        assert_eq!(run(4), run(4));
        assert_ne!(run(4), run(5));
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert!(SamplingParams::default().validate().is_ok());
        assert!(SamplingParams::greedy().validate().is_ok());
        let ok = SamplingParams::default();
        let bad = [
            (
                SamplingParams {
                    temperature: -0.1,
                    ..ok
                },
                "temperature",
            ),
            (
                SamplingParams {
                    temperature: f32::INFINITY,
                    ..ok
                },
                "temperature",
            ),
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..ok
                },
                "temperature",
            ),
            (SamplingParams { top_p: 0.0, ..ok }, "top_p"),
            (SamplingParams { top_p: 1.5, ..ok }, "top_p"),
            (SamplingParams { min_p: 1.0, ..ok }, "min_p"),
            (SamplingParams { min_p: -0.1, ..ok }, "min_p"),
            (
                SamplingParams {
                    min_p: f32::NAN,
                    ..ok
                },
                "min_p",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..ok
                },
                "repetition_penalty",
            ),
            (
                SamplingParams {
                    repetition_penalty: f32::NAN,
                    ..ok
                },
                "repetition_penalty",
            ),
        ];
        for (p, field) in bad {
            let e = p.validate().unwrap_err();
            assert!(e.starts_with(field), "{p:?}: {e}");
        }
        let edge = SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 0.5,
            ..ok
        };
        assert!(edge.validate().is_ok());
    }

    #[test]
    fn json_without_the_new_fields_still_reads() {
        let p: SamplingParams =
            serde_json::from_str(r#"{"temperature":0.7,"top_k":40,"top_p":0.9}"#).unwrap();
        assert_eq!((p.min_p, p.repetition_penalty), (0.0, 1.0));
        assert_eq!((p.temperature, p.top_k, p.top_p), (0.7, 40, 0.9));
        let back: SamplingParams =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
