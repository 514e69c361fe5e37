//! The arithmetic of policy-gradient fine-tuning that PPO and GRPO share: token
//! log-probabilities and entropy, KL estimators against the reference model, generalized
//! advantage estimation, whitening, the clipped policy and value losses, and the adaptive
//! KL coefficient. Plain functions, each checked against a hand-computed example.

use candle_core::{DType, Tensor, D};

use crate::Result;

/// Log-probability of each target under its row of logits: (N, V), (N) u32 -> (N).
/// Differentiable (log-softmax and gather both carry gradients).
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(lsm.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?)
}

/// Entropy of each row's distribution, in nats, without a graph: (N, V) -> Vec (N).
pub fn entropy(logits: &Tensor) -> Result<Vec<f32>> {
    let logits = logits.detach();
    let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let h = (lsm.exp()? * &lsm)?.sum(D::Minus1)?.neg()?;
    Ok(h.to_vec1()?)
}

/// Mean of `x` where `mask` is 1 (same shapes, f32); zero when the mask is empty.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let n = mask.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    Ok(((x * mask)?.sum_all()? / n)?)
}

/// The per-token KL estimate `log π(a) − log π_ref(a)` (k1: unbiased, the one whose sum
/// is the sequence KL that PPO's penalty uses).
pub fn kl_k1(logp: f32, ref_logp: f32) -> f32 {
    logp - ref_logp
}

/// Schulman's k3 estimate `r − 1 − log r` with `r = π_ref(a)/π(a)`: unbiased and never
/// negative, so a low-variance figure to report.
pub fn kl_k3(logp: f32, ref_logp: f32) -> f32 {
    let lr = ref_logp - logp;
    lr.exp() - 1.0 - lr
}

/// Generalized advantage estimation over one episode (the answer's tokens): `rewards[t]`
/// and `values[t]` per token, the value after the last token taken as zero (the episode
/// ends). Returns (advantages, returns = advantages + values).
pub fn gae(rewards: &[f32], values: &[f32], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut next_value = 0.0;
    let mut running = 0.0;
    for t in (0..n).rev() {
        let delta = rewards[t] + gamma * next_value - values[t];
        running = delta + gamma * lambda * running;
        adv[t] = running;
        next_value = values[t];
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// Shifts and scales values to mean 0 and standard deviation 1 (left as they are when
/// they are all equal or there is only one).
pub fn whiten(x: &mut [f32]) {
    whiten_across(crate::dist::World::ALONE, x)
}

/// [`whiten`] with the mean and deviation of every rank's values together (each rank
/// whitens its own with them); one rank alone is [`whiten`].
pub fn whiten_across(world: crate::dist::World, x: &mut [f32]) {
    let mut sums = [x.len() as f64, x.iter().map(|&v| v as f64).sum::<f64>()];
    world.sum_f64(&mut sums);
    let n = sums[0] as usize;
    if n < 2 {
        return;
    }
    let mean = sums[1] / n as f64;
    let mut dev = [x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>()];
    world.sum_f64(&mut dev);
    let var = dev[0] / (n - 1) as f64;
    let std = var.sqrt();
    for v in x.iter_mut() {
        *v = if std > 1e-8 {
            ((*v as f64 - mean) / std) as f32
        } else {
            (*v as f64 - mean) as f32
        };
    }
}

/// PPO's clipped surrogate: `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))` with `ρ = exp(logp − old)`,
/// averaged over the masked tokens. Returns the loss and the share of tokens where the
/// clip was active.
pub fn clipped_policy_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Result<(Tensor, f64)> {
    let ratio = (logp - old_logp)?.exp()?;
    let unclipped = (adv.neg()? * &ratio)?;
    let clipped = (adv.neg()? * ratio.clamp(1.0 - clip, 1.0 + clip)?)?;
    let loss = masked_mean(&unclipped.maximum(&clipped)?, mask)?;
    let active = clipped.gt(&unclipped)?.to_dtype(DType::F32)?;
    let frac = masked_mean(&active, mask)?.to_scalar::<f32>()? as f64;
    Ok((loss, frac))
}

/// PPO's clipped value loss: `½ max((v − R)², (clip(v, old ± ε) − R)²)` over masked tokens.
pub fn clipped_value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Result<Tensor> {
    let lo = (old_values - clip)?;
    let hi = (old_values + clip)?;
    let clipped = values.maximum(&lo)?.minimum(&hi)?;
    let a = (values - returns)?.sqr()?;
    let b = (clipped - returns)?.sqr()?;
    Ok((masked_mean(&a.maximum(&b)?, mask)? * 0.5)?)
}

/// The adaptive KL coefficient of Ziegler et al. (2019): nudged up when the measured KL
/// is above the target and down when below, by at most 20% per horizon of samples.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct KlController {
    pub coef: f64,
    /// `None`: a fixed coefficient.
    pub target: Option<f64>,
    pub horizon: f64,
}

impl KlController {
    pub fn update(&mut self, kl: f64, samples: usize) {
        if let Some(target) = self.target.filter(|t| *t > 0.0) {
            let err = ((kl - target) / target).clamp(-0.2, 0.2);
            self.coef *= 1.0 + err * samples as f64 / self.horizon;
        }
    }
}

/// Running mean and variance (Welford), for normalising rewards across batches.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct RunningStats {
    pub count: f64,
    pub mean: f64,
    pub m2: f64,
}

impl RunningStats {
    pub fn push_all(&mut self, xs: &[f64]) {
        for &x in xs {
            self.count += 1.0;
            let d = x - self.mean;
            self.mean += d / self.count;
            self.m2 += d * (x - self.mean);
        }
    }
    pub fn std(&self) -> f64 {
        if self.count < 2.0 {
            1.0
        } else {
            (self.m2 / (self.count - 1.0)).sqrt().max(1e-6)
        }
    }
    /// `(x − mean) / std` with the statistics so far.
    pub fn normalise(&self, x: f64) -> f64 {
        (x - self.mean) / self.std()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn gae_matches_a_hand_computed_episode() {
        // gamma 0.9, lambda 0.8, rewards [0, 0, 1], values [0.5, 0.4, 0.6]
        let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.6], 0.9, 0.8);
        // deltas: d2 = 1 - 0.6 = 0.4; d1 = 0 + 0.9*0.6 - 0.4 = 0.14; d0 = 0.9*0.4 - 0.5 = -0.14
        // A2 = 0.4; A1 = 0.14 + 0.72*0.4 = 0.428; A0 = -0.14 + 0.72*0.428 = 0.16816
        let want = [0.16816, 0.428, 0.4];
        for (a, w) in adv.iter().zip(want) {
            assert!((a - w).abs() < 1e-6, "{adv:?}");
        }
        assert!((ret[0] - (0.16816 + 0.5)).abs() < 1e-6);
        // lambda 1, gamma 1: the advantage is the return minus the value
        let (adv, _) = gae(&[0.0, 2.0], &[1.0, 0.5], 1.0, 1.0);
        assert_eq!(adv, vec![1.0, 1.5]);
    }

    #[test]
    fn clipped_policy_loss_matches_hand_values() {
        // ratios e^0.5 ≈ 1.6487 (clipped to 1.2), e^-0.5 ≈ 0.6065 (clipped to 0.8), 1
        let logp = t(&[0.0, 0.0, 0.0, 0.0]);
        let old = t(&[-0.5, 0.5, 0.0, 0.0]);
        let adv = t(&[1.0, -2.0, 3.0, 100.0]);
        let mask = t(&[1.0, 1.0, 1.0, 0.0]);
        let (loss, frac) = clipped_policy_loss(&logp, &old, &adv, &mask, 0.2).unwrap();
        // token 0: max(-1.6487, -1.2) = -1.2 (clipped); token 1: max(1.2131, 1.6) = 1.6
        // (clipped); token 2: -3
        let want = (-1.2 + 1.6 - 3.0) / 3.0;
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!((frac - 2.0 / 3.0).abs() < 1e-6, "{frac}");
    }

    #[test]
    fn clipped_value_loss_matches_hand_values() {
        let v = t(&[1.0, 0.0]);
        let old = t(&[0.5, 0.0]);
        let ret = t(&[0.0, 1.0]);
        let mask = t(&[1.0, 1.0]);
        // token 0: clip(1, 0.3, 0.7) = 0.7: max(1, 0.49) = 1; token 1: max(1, 1) = 1
        let l = clipped_value_loss(&v, &old, &ret, &mask, 0.2).unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 0.5).abs() < 1e-6);
        // token 0 again with the return beyond the clip: (1-2)^2 = 1 vs (0.7-2)^2 = 1.69
        let l = clipped_value_loss(&t(&[1.0]), &t(&[0.5]), &t(&[2.0]), &t(&[1.0]), 0.2).unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 0.845).abs() < 1e-6);
    }

    #[test]
    fn kl_estimators_match_hand_values() {
        assert!((kl_k1(-1.0, -1.5) - 0.5).abs() < 1e-7);
        // r = e^-0.5: k3 = e^-0.5 - 1 + 0.5
        assert!((kl_k3(-1.0, -1.5) - ((-0.5f32).exp() - 0.5)).abs() < 1e-7);
        assert_eq!(kl_k3(-2.0, -2.0), 0.0);
        assert!(kl_k3(-0.1, -3.0) > 0.0 && kl_k3(-3.0, -0.1) > 0.0);
    }

    #[test]
    fn token_logprobs_and_entropy_of_a_known_distribution() {
        let logits = Tensor::new(
            &[[0f32, 0.0, 0.0, 0.0], [2f32.ln(), 0.0, 0.0, 0.0]],
            &Device::Cpu,
        )
        .unwrap();
        let lp: Vec<f32> = token_logprobs(&logits, &Tensor::new(&[1u32, 0], &Device::Cpu).unwrap())
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((lp[0] - 0.25f32.ln()).abs() < 1e-6 && (lp[1] - 0.4f32.ln()).abs() < 1e-6);
        let h = entropy(&logits).unwrap();
        assert!((h[0] - 4f32.ln()).abs() < 1e-6);
        let p = [0.4f32, 0.2, 0.2, 0.2];
        let want: f32 = -p.iter().map(|x| x * x.ln()).sum::<f32>();
        assert!((h[1] - want).abs() < 1e-6);
    }

    #[test]
    fn token_logprobs_gradient_matches_finite_differences() {
        let x =
            candle_core::Var::new(&[[0.3f32, -0.2, 0.9], [0.1, 0.4, -0.7]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let w = t(&[1.0, -2.0]);
        let f = |x: &Tensor| -> f32 {
            (token_logprobs(x, &targets).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let y = (token_logprobs(x.as_tensor(), &targets).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = y.backward().unwrap();
        let g: Vec<Vec<f32>> = g.get(x.as_tensor()).unwrap().to_vec2().unwrap();
        let base: Vec<Vec<f32>> = x.as_tensor().to_vec2().unwrap();
        for i in 0..2 {
            for j in 0..3 {
                let mut p = base.clone();
                p[i][j] += 1e-2;
                let mut m = base.clone();
                m[i][j] -= 1e-2;
                let fd = (f(&Tensor::new(p, &Device::Cpu).unwrap())
                    - f(&Tensor::new(m, &Device::Cpu).unwrap()))
                    / 2e-2;
                assert!((fd - g[i][j]).abs() < 1e-3, "({i},{j}) {fd} vs {}", g[i][j]);
            }
        }
    }

    #[test]
    fn kl_controller_moves_toward_the_target_and_whiten_normalises() {
        let mut c = KlController {
            coef: 0.1,
            target: Some(6.0),
            horizon: 100.0,
        };
        c.update(12.0, 10); // error clipped to 0.2: coef * (1 + 0.2 * 0.1)
        assert!((c.coef - 0.102).abs() < 1e-12);
        c.update(3.0, 10); // error -0.5 clipped to -0.2
        assert!((c.coef - 0.102 * 0.98).abs() < 1e-12);
        let mut x = [1.0f32, 2.0, 3.0];
        whiten(&mut x);
        assert!((x[0] + 1.0).abs() < 1e-6 && x[1].abs() < 1e-6 && (x[2] - 1.0).abs() < 1e-6);
        let mut s = RunningStats::default();
        s.push_all(&[1.0, 2.0, 3.0]);
        assert!((s.mean - 2.0).abs() < 1e-12 && (s.std() - 1.0).abs() < 1e-12);
    }
}
