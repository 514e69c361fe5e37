//! A green-list watermark (Kirchenbauer et al., 2023, "A Watermark for Large Language
//! Models"): at each step a keyed hash of the previous token splits the vocabulary into
//! a green share `gamma` and the rest, and green tokens get `delta` added to their
//! logits. Text written that way holds more green tokens than chance; anyone with the
//! key and the tokenizer (no model) counts them and gets a z-score.
//!
//! Token `v` after `prev` is green when `hash(key, prev, v) < gamma`: the same split as
//! seeding a permutation of the vocabulary with `hash(key, prev)`, but computed per token,
//! so detection never materialises the list.

use serde::{Deserialize, Serialize};

/// The watermark's key and strength.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Watermark {
    pub key: u64,
    /// Share of the vocabulary that is green at each step, in (0, 1).
    pub gamma: f32,
    /// Logit bonus of green tokens (0: the text is not changed, and not marked).
    pub delta: f32,
}

impl Watermark {
    pub const DEFAULT_GAMMA: f32 = 0.25;
    pub const DEFAULT_DELTA: f32 = 2.0;

    pub fn new(key: u64) -> Self {
        Self {
            key,
            gamma: Self::DEFAULT_GAMMA,
            delta: Self::DEFAULT_DELTA,
        }
    }

    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.gamma > 0.0 && self.gamma < 1.0) {
            return Err(format!(
                "watermark gamma must be in (0, 1), got {}",
                self.gamma
            ));
        }
        if !(self.delta.is_finite() && self.delta >= 0.0) {
            return Err(format!(
                "watermark delta must be finite and >= 0, got {}",
                self.delta
            ));
        }
        Ok(())
    }

    /// Whether `token` is green after `prev`.
    pub fn is_green(&self, prev: u32, token: u32) -> bool {
        let h =
            mix(self.key
                ^ mix(u64::from(prev).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(token)));
        // the top 24 bits as a fraction in [0, 1)
        ((h >> 40) as f32) / ((1u64 << 24) as f32) < self.gamma
    }

    /// Adds `delta` to the logits of the tokens green after `prev`.
    pub fn bias(&self, prev: u32, logits: &mut [f32]) {
        for (v, l) in logits.iter_mut().enumerate() {
            if self.is_green(prev, v as u32) {
                *l += self.delta;
            }
        }
    }

    /// Counts the green tokens of `tokens` (each scored against the one before it; a
    /// repeated (previous, token) pair counts once, so repetition cannot inflate the
    /// score) and tests them against chance.
    pub fn detect(&self, tokens: &[u32]) -> Detection {
        let mut seen = std::collections::HashSet::new();
        let (mut scored, mut green) = (0usize, 0usize);
        for w in tokens.windows(2) {
            if seen.insert((w[0], w[1])) {
                scored += 1;
                green += usize::from(self.is_green(w[0], w[1]));
            }
        }
        let g = f64::from(self.gamma);
        let n = scored as f64;
        let z = if scored == 0 {
            0.0
        } else {
            (green as f64 - g * n) / (n * g * (1.0 - g)).sqrt()
        };
        Detection {
            scored,
            green,
            z,
            p_value: normal_sf(z),
        }
    }
}

/// What detection found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    /// Tokens scored (distinct (previous, token) pairs).
    pub scored: usize,
    pub green: usize,
    /// Standard deviations above the green count chance gives.
    pub z: f64,
    /// One-sided: the chance of a z this large in text without the watermark.
    pub p_value: f64,
}

/// splitmix64's finaliser: a fast, well-mixed 64-bit hash step.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// P(Z > z) for a standard normal Z (Abramowitz and Stegun 7.1.26 through erfc; absolute
/// error below 1.5e-7).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let r = poly * (-x * x).exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_green_list_is_fixed_by_the_key_and_has_the_asked_share() {
        let w = Watermark::new(42);
        let again = Watermark::new(42);
        let other = Watermark::new(43);
        let mut same_other = 0;
        let mut green = 0;
        for prev in 0..50u32 {
            for v in 0..1000u32 {
                assert_eq!(w.is_green(prev, v), again.is_green(prev, v));
                same_other += usize::from(w.is_green(prev, v) == other.is_green(prev, v));
                green += usize::from(w.is_green(prev, v));
            }
        }
        let share = green as f64 / 50_000.0;
        assert!((share - 0.25).abs() < 0.01, "green share {share}");
        // another key gives another split (agreement by chance: 0.25² + 0.75² = 0.625)
        let agree = same_other as f64 / 50_000.0;
        assert!((agree - 0.625).abs() < 0.02, "{agree}");
        // and the split depends on the previous token
        let row = |p: u32| (0..200u32).map(|v| w.is_green(p, v)).collect::<Vec<_>>();
        assert_ne!(row(1), row(2));
    }

    #[test]
    fn z_scores_of_unmarked_text_follow_a_standard_normal() {
        let w = Watermark::new(7);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let zs: Vec<f64> = (0..2000)
            .map(|_| {
                let t: Vec<u32> = (0..200).map(|_| rng.random_range(0..5000)).collect();
                w.detect(&t).z
            })
            .collect();
        let n = zs.len() as f64;
        let mean = zs.iter().sum::<f64>() / n;
        let var = zs.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!(mean.abs() < 0.07, "mean {mean}");
        assert!((var - 1.0).abs() < 0.1, "variance {var}");
        // the tail: about 1% above z = 2.326
        let tail = zs.iter().filter(|&&z| z > 2.326).count() as f64 / n;
        assert!(tail < 0.025, "{tail}");
    }

    #[test]
    fn marked_text_scores_high_and_the_p_value_matches_the_normal_tail() {
        let w = Watermark::new(3);
        // a sequence choosing green tokens 80% of the time
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut t = vec![1u32];
        while t.len() < 200 {
            let prev = *t.last().unwrap();
            let want_green = rng.random::<f32>() < 0.8;
            let v = loop {
                let v = rng.random_range(0..5000);
                if w.is_green(prev, v) == want_green {
                    break v;
                }
            };
            t.push(v);
        }
        let d = w.detect(&t);
        assert!(d.z > 8.0, "{d:?}");
        assert!(d.p_value < 1e-12);
        assert!((normal_sf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_sf(2.326) - 0.01).abs() < 1e-4);
        assert!((normal_sf(-1.0) - 0.841_344_7).abs() < 1e-6);
    }

    #[test]
    fn the_bias_raises_exactly_the_green_logits() {
        let w = Watermark {
            key: 5,
            gamma: 0.5,
            delta: 3.0,
        };
        let mut logits = vec![0.0f32; 100];
        w.bias(17, &mut logits);
        for (v, &l) in logits.iter().enumerate() {
            assert_eq!(l, if w.is_green(17, v as u32) { 3.0 } else { 0.0 });
        }
    }

    #[test]
    fn a_watermarked_sampler_picks_green_tokens_as_often_as_the_bonus_says() {
        use crate::{Sampler, SamplingParams};
        let w = Watermark::new(9);
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
        };
        let mut s = Sampler::new(params, 1).with_watermark(Some(w));
        let logits = vec![0.0f32; 1000];
        let mut context = vec![3u32];
        let mut green = 0;
        for _ in 0..4000 {
            let t = s.sample_after(&logits, &context);
            green += usize::from(w.is_green(*context.last().unwrap(), t));
            context.push(t);
        }
        // flat logits: P(green) = g e^d / (g e^d + 1 - g)
        let e = (2.0f64).exp();
        let want = 0.25 * e / (0.25 * e + 0.75);
        let got = green as f64 / 4000.0;
        assert!((got - want).abs() < 0.03, "{got} vs {want}");
        // with no previous token there is nothing to key on: plain sampling
        let mut plain = Sampler::new(params, 1);
        let mut marked = Sampler::new(params, 1).with_watermark(Some(w));
        assert_eq!(
            plain.sample_after(&logits, &[]),
            marked.sample_after(&logits, &[])
        );
    }
}
