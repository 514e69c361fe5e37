//! What `ferrochat ppo` and `ferrochat grpo` set, with each method's defaults.

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// Which policy-gradient method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Algo {
    Ppo,
    /// `group` answers per prompt.
    Grpo {
        group: usize,
    },
}

/// Everything `ferrochat ppo` and `ferrochat grpo` set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgOptions {
    pub algo: Algo,
    /// Rollout batches (each followed by `ppo_epochs` passes of updates).
    pub iterations: u64,
    /// Prompts per iteration.
    pub prompts_per_iter: usize,
    /// Answers per optimizer step.
    pub minibatch: usize,
    pub ppo_epochs: usize,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub lr: f64,
    pub warmup_steps: u64,
    pub grad_clip: f64,
    pub clip_range: f64,
    /// PPO: clip of the value update and weight of the value loss.
    pub value_clip: f64,
    pub vf_coef: f64,
    pub gamma: f32,
    pub lambda: f32,
    /// PPO: the per-token KL penalty's starting coefficient (adapted toward `target_kl`
    /// when set); GRPO: the fixed weight of the KL term in the loss.
    pub kl_coef: f64,
    /// PPO: the KL per answer (nats) the adaptive controller aims for.
    pub target_kl: Option<f64>,
    pub kl_horizon: f64,
    /// Subtracted from the reward of an answer that never ends (hits the length limit).
    pub missing_end_penalty: f64,
    /// PPO: divide rewards by their running standard deviation, less their running mean.
    pub normalise_reward: bool,
    /// PPO-ptx: weight of a pretraining loss mixed into every step (0: off).
    pub ptx_coef: f64,
    pub ptx_batch: usize,
    /// Iterations between measurements with the monitor (0: only at the end).
    pub eval_every: u64,
    /// Iterations between checkpoints.
    pub checkpoint_every: u64,
    pub seed: u64,
}

impl PgOptions {
    pub fn ppo() -> Self {
        Self {
            algo: Algo::Ppo,
            iterations: 40,
            prompts_per_iter: 16,
            minibatch: 8,
            ppo_epochs: 2,
            max_new_tokens: 64,
            temperature: 1.0,
            lr: 3e-5,
            warmup_steps: 5,
            grad_clip: 1.0,
            clip_range: 0.2,
            value_clip: 0.2,
            vf_coef: 0.1,
            gamma: 1.0,
            lambda: 0.95,
            kl_coef: 0.05,
            target_kl: Some(4.0),
            kl_horizon: 10_000.0,
            missing_end_penalty: 1.0,
            normalise_reward: true,
            ptx_coef: 0.0,
            ptx_batch: 4,
            eval_every: 10,
            checkpoint_every: 10,
            seed: 42,
        }
    }

    pub fn grpo() -> Self {
        Self {
            algo: Algo::Grpo { group: 4 },
            prompts_per_iter: 8,
            kl_coef: 0.04,
            target_kl: None,
            normalise_reward: false,
            ..Self::ppo()
        }
    }

    pub(super) fn per_prompt(&self) -> usize {
        match self.algo {
            Algo::Ppo => 1,
            Algo::Grpo { group } => group,
        }
    }

    pub(super) fn stage(&self) -> &'static str {
        match self.algo {
            Algo::Ppo => "ppo",
            Algo::Grpo { .. } => "grpo",
        }
    }

    pub(super) fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Options(m.to_string()));
        if self.iterations == 0 || self.prompts_per_iter == 0 || self.minibatch == 0 {
            return bad("--iterations, --prompts and --minibatch must be at least 1");
        }
        if self.ppo_epochs == 0 || self.max_new_tokens == 0 {
            return bad("--ppo-epochs and --max-new-tokens must be at least 1");
        }
        if let Algo::Grpo { group } = self.algo {
            if group < 2 {
                return bad("GRPO needs a --group of at least 2 answers per prompt");
            }
        }
        let ranks = crate::dist::world().size();
        if ranks > 1 {
            // each rank answers its share of the prompts and trains on its share of every
            // minibatch (and of the pretraining rows)
            for (flag, n) in [
                ("--prompts-per-iter", self.prompts_per_iter),
                ("--minibatch", self.minibatch),
            ] {
                if !n.is_multiple_of(ranks) {
                    return bad(&format!(
                        "{flag} {n} does not split evenly over {ranks} data-parallel ranks"
                    ));
                }
            }
            if self.ptx_coef > 0.0 && !self.ptx_batch.is_multiple_of(ranks) {
                return bad(&format!(
                    "the {} pretraining rows of PPO-ptx do not split evenly over {ranks} ranks",
                    self.ptx_batch
                ));
            }
        }
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !positive(self.lr) || !positive(self.temperature as f64) {
            return bad("--lr and --temperature must be positive");
        }
        if !(self.kl_coef >= 0.0 && self.clip_range > 0.0) {
            return bad("--kl-coef must be >= 0 and --clip-range > 0");
        }
        Ok(())
    }

    pub(super) fn steps_per_iter(&self) -> u64 {
        let answers = self.prompts_per_iter * self.per_prompt();
        (self.ppo_epochs * answers.div_ceil(self.minibatch)) as u64
    }
}
