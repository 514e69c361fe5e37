//! Policy-gradient fine-tuning of a chat model against a reward, in the two forms the
//! field uses, sharing one loop:
//!
//! - **PPO** (InstructGPT): one answer per prompt, the reward model's score at the end
//!   token, a per-token KL penalty against the frozen reference with an adaptive
//!   coefficient, a value head (zero-initialised, on the policy's trunk) and GAE.
//! - **GRPO** (DeepSeekMath): several answers per prompt, each answer's advantage its
//!   reward relative to its group's (no value head), the KL to the reference in the loss.
//!
//! One iteration samples rollouts with the engine, scores them, computes the reference
//! log-probabilities and advantages, then takes `ppo_epochs` passes of clipped updates in
//! minibatches. Each minibatch is one optimizer step of the shared trainer, so schedule,
//! clipping, checkpoints and resume are the same as every other stage's; checkpoints
//! fall on iteration boundaries, where a resumed run samples exactly what an unbroken
//! one would.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ferrochat_model::{checkpoint, Llama};
use ferrochat_text::{Message, Split, TokenShards};
use ferrochat_tokenizer::Tokenizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

mod experience;
mod options;

pub use options::{Algo, PgOptions};

use experience::{collect, minibatch_loss, Carry, Experience};

use crate::hooks::{EvalReport, Hooks};
use crate::optim::AdamWConfig;
use crate::policy::{render_prompts, Prompt, Rollout};
use crate::pref::Answer;
use crate::rl::{KlController, RunningStats};
use crate::schedule::{Schedule, ScheduleKind};
use crate::trainer::{LoopOptions, Micro, Run};
use crate::{Result, TrainError};

/// The value head's name among the run's extra parameters.
pub const VALUE_HEAD: &str = "value_head.weight";

/// Scores finished rollouts. `Rollout::prompt` is the index of the prompt answered in the
/// list given to [`train`] (`prompts` holds those that fitted the context).
pub trait Reward {
    fn score(&mut self, prompts: &[Prompt], rollouts: &[Rollout]) -> Result<Vec<f64>>;
}

impl<F: FnMut(&[Prompt], &[Rollout]) -> Result<Vec<f64>>> Reward for F {
    fn score(&mut self, prompts: &[Prompt], rollouts: &[Rollout]) -> Result<Vec<f64>> {
        self(prompts, rollouts)
    }
}

/// A reward model's score of each answer, read at its last token.
pub struct ModelReward<'a> {
    pub model: &'a Llama,
    pub pad_id: u32,
}

impl Reward for ModelReward<'_> {
    fn score(&mut self, _prompts: &[Prompt], rollouts: &[Rollout]) -> Result<Vec<f64>> {
        let answers: Vec<&Answer> = rollouts.iter().map(|r| &r.answer).collect();
        let s = crate::reward::score_answers(
            self.model,
            &answers,
            self.pad_id,
            16,
            self.model.device(),
        )?;
        Ok(s.into_iter().map(f64::from).collect())
    }
}

/// Measures the policy now and then (e.g. judged score and reward-model score on held-out
/// prompts); the figures are logged with the evaluation and compared for reward hacking.
pub type Monitor<'a> = dyn FnMut(&Llama) -> Result<Vec<(String, f64)>> + 'a;

/// What a policy-gradient run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgSummary {
    pub iterations: u64,
    pub steps: u64,
    /// Mean raw reward of the first and the last iteration's rollouts.
    pub reward_first: f64,
    pub reward_last: f64,
    /// KL(policy ‖ reference) per answer at the last iteration (nats).
    pub kl_last: f64,
    pub kl_coef: f64,
    pub ended_last: f64,
    /// The monitor's figures at the start and the end.
    pub monitor_first: Vec<(String, f64)>,
    pub monitor_last: Vec<(String, f64)>,
    /// Set when the reward rose while the monitor's `judged` score fell.
    pub reward_hacking: bool,
    pub elapsed_secs: f64,
}

/// The run's fixed parts.
pub struct PgInputs<'a> {
    pub policy: &'a Path,
    pub tokenizer: &'a Tokenizer,
    pub prompts: &'a [Vec<Message>],
    /// Token shards for PPO-ptx.
    pub pretrain: Option<&'a Path>,
    pub out: &'a Path,
    pub resume: bool,
    pub device: &'a Device,
}

/// Fine-tunes the policy in `inp.policy` (also the frozen reference) against `reward`.
pub fn train(
    opts: &PgOptions,
    inp: &PgInputs,
    reward: &mut dyn Reward,
    monitor: Option<&mut Monitor>,
    hooks: &mut dyn Hooks,
) -> Result<PgSummary> {
    opts.check()?;
    let device = inp.device;
    let (ref_cfg, ref_w) = checkpoint::load(inp.policy, device)?;
    if ref_cfg.is_classifier() {
        return Err(TrainError::Options(format!(
            "{} is a reward model; the policy must be a chat (SFT) model",
            inp.policy.display()
        )));
    }
    let reference = Llama::new(&ref_cfg, &ref_w, device)?;
    let ctx = ref_cfg.max_position_embeddings;
    let (prompts, too_long) = render_prompts(inp.tokenizer, inp.prompts, ctx, opts.max_new_tokens)?;
    let ptx = match (opts.ptx_coef > 0.0, inp.pretrain) {
        (false, _) => None,
        (true, Some(p)) => Some(TokenShards::open(p, Split::Train)?),
        (true, None) => {
            return Err(TrainError::Options(
                "--ptx-coef needs --pretrain-data (token shards)".into(),
            ))
        }
    };
    let spi = opts.steps_per_iter();
    let steps = opts.iterations * spi;
    hooks.message(&format!(
        "{} prompts ({too_long} too long for the context); {} iterations of {} answers, {spi} updates each",
        prompts.len(),
        opts.iterations,
        opts.prompts_per_iter * opts.per_prompt()
    ));
    let key = crate::dist::keyed(serde_json::json!({
        "algo": opts.algo, "prompts_per_iter": opts.prompts_per_iter, "minibatch": opts.minibatch,
        "ppo_epochs": opts.ppo_epochs, "max_new_tokens": opts.max_new_tokens, "seed": opts.seed,
        "prompts": prompts.len(),
    }));
    let adam = AdamWConfig {
        weight_decay: 0.0,
        ..Default::default()
    };
    let with_value = opts.algo == Algo::Ppo;
    let mut run = Run::start(
        opts.stage(),
        inp.out,
        inp.resume,
        key,
        opts.seed,
        adam,
        device,
        hooks,
        || {
            let mut w = ref_w.clone();
            if with_value {
                let c = ref_cfg.hidden_size;
                w.insert(
                    VALUE_HEAD.into(),
                    Tensor::zeros((1, c), DType::F32, device)?,
                );
            }
            Ok((ref_cfg.clone(), w))
        },
    )?;
    let value_head = run
        .heads
        .iter()
        .find(|(n, _)| n == VALUE_HEAD)
        .map(|(_, v)| v.clone());
    let mut carry = Carry {
        kl: KlController {
            coef: opts.kl_coef,
            target: opts.target_kl,
            horizon: opts.kl_horizon,
        },
        reward_stats: RunningStats::default(),
        reward_first: None,
    };
    if run.step > 0 {
        let meta = checkpoint::load_meta(inp.out)?;
        if let Ok(c) = serde_json::from_value::<Carry>(meta.metrics["carry"].clone()) {
            carry = c;
        }
    }
    // the sampling model: the policy's parameters without a graph
    let sampler = Llama::new(
        &run.cfg,
        &ferrochat_model::weights::var_tensors(&run.params, true),
        device,
    )?;
    let s = inp.tokenizer.special();
    let stop = [s.end, s.bos];
    let pad_id = s.pad;
    let schedule = Schedule {
        kind: ScheduleKind::Constant,
        max_lr: opts.lr,
        min_lr_frac: 1.0,
        warmup_steps: opts.warmup_steps,
        total_steps: steps,
        decay_frac: 0.0,
    };
    let lo = LoopOptions {
        steps,
        grad_accum: 1,
        grad_clip: opts.grad_clip,
        eval_every: opts.eval_every * spi,
        sample_every: 0,
        checkpoint_every: opts.checkpoint_every.max(1) * spi,
    };
    let mut monitor = monitor;
    // rank 0 alone watches the held-out prompts (and evaluates, in the loop)
    let (world, ranks) = (run.world, run.world.size());
    let monitor_first = match monitor.as_mut() {
        Some(m) if world.is_main() => m(&sampler)?,
        _ => Vec::new(),
    };
    let carry = std::cell::RefCell::new(carry);
    let last_exp_stats = std::cell::RefCell::new(Vec::<(&'static str, f64)>::new());
    let monitor_last = std::cell::RefCell::new(monitor_first.clone());
    let mut exp: Option<Experience> = None;
    let mut warn: Vec<String> = Vec::new();
    run.train_with(
        &lo,
        &schedule,
        hooks,
        |m: &Llama, rng, step| {
            let within = step % spi;
            if within == 0 || exp.is_none() {
                let e = collect(
                    opts, &sampler, &reference, value_head.as_ref(), &prompts, &mut *reward,
                    &stop, pad_id, &mut carry.borrow_mut(), rng, device,
                )?;
                *last_exp_stats.borrow_mut() = e.stats.clone();
                exp = Some(e);
            }
            let e = exp.as_ref().expect("collected above");
            // a rank's rollouts and its share of each minibatch (all of it when alone)
            let n = e.rollouts.len();
            let mb = opts.minibatch / ranks;
            let per_epoch = n.div_ceil(mb) as u64;
            let (epoch, k) = (within / per_epoch, (within % per_epoch) as usize);
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                opts.seed ^ (step / spi).wrapping_mul(0x9e37_79b9) ^ epoch.wrapping_mul(0x85eb_ca6b),
            ));
            let idx = &order[k * mb..((k + 1) * mb).min(n)];
            let Micro {
                mut loss,
                mut stats,
                tokens,
            } =
                minibatch_loss(opts, m, value_head.as_ref(), e, idx, carry.borrow().kl.coef, pad_id, device)?;
            if let Some(shards) = &ptx {
                let t = ctx.min(256);
                // one batch drawn alike on every rank; each reads its own rows
                let (x, y) =
                    crate::pretrain::rank_batch(shards, rng, world, opts.ptx_batch / ranks, t, device)?;
                let l = m.loss(&x, &y)?;
                stats.push(("ptx_loss", l.to_scalar::<f32>()? as f64));
                loss = (loss + (l * opts.ptx_coef)?)?;
            }
            stats.extend(e.stats.iter().cloned());
            Ok(Micro { loss, tokens, stats })
        },
        |model, step| {
            let mut r = EvalReport {
                step,
                val_loss: f64::NAN,
                ..Default::default()
            };
            if let Some(mon) = monitor.as_mut() {
                let now = mon(model)?;
                let first = &monitor_first;
                let get = |v: &[(String, f64)], k: &str| v.iter().find(|x| x.0 == k).map(|x| x.1);
                if let (Some(r0), Some(r1), Some(j0), Some(j1)) = (
                    get(first, "reward"),
                    get(&now, "reward"),
                    get(first, "judged"),
                    get(&now, "judged"),
                ) {
                    if r1 > r0 && j1 < j0 {
                        warn.push(format!(
                            "step {step}: the reward model's score rose ({r0:.3} -> {r1:.3}) while the judged score fell ({j0:.3} -> {j1:.3}): the policy may be exploiting the reward model"
                        ));
                    }
                }
                r.stats = now.iter().cloned().collect();
                *monitor_last.borrow_mut() = now;
            }
            Ok(r)
        },
        |run, end| {
            let c = carry.borrow();
            let metrics = serde_json::json!({
                "train_loss": end.train_loss,
                "carry": *c,
                "rollout": last_exp_stats.borrow().iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
                "monitor": *monitor_last.borrow(),
            });
            run.save(
                inp.tokenizer,
                serde_json::json!({ "policy": inp.policy, "algo": opts.algo }),
                metrics,
            )
        },
    )?;
    for w in &warn {
        hooks.message(&format!("warning: {w}"));
    }
    let stats = last_exp_stats.borrow().clone();
    let get = |k: &str| {
        stats
            .iter()
            .find(|s| s.0 == k)
            .map(|s| s.1)
            .unwrap_or(f64::NAN)
    };
    let c = carry.borrow().clone();
    let monitor_last = monitor_last.borrow().clone();
    Ok(PgSummary {
        iterations: run.step / spi,
        steps: run.step,
        reward_first: c.reward_first.unwrap_or(f64::NAN),
        reward_last: get("reward"),
        kl_last: get("kl"),
        kl_coef: c.kl.coef,
        ended_last: get("ended"),
        monitor_first,
        monitor_last,
        reward_hacking: !warn.is_empty(),
        elapsed_secs: run.elapsed_secs(),
    })
}
