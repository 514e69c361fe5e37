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
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::hooks::{EvalReport, Hooks};
use crate::optim::AdamWConfig;
use crate::policy::{
    logprobs_and_hidden, render_prompts, rollouts, Prompt, Rollout, RolloutOptions,
};
use crate::pref::{pad, Answer};
use crate::rl::{self, KlController, RunningStats};
use crate::schedule::{Schedule, ScheduleKind};
use crate::trainer::{LoopOptions, Micro, Run};
use crate::{Result, TrainError};

/// The value head's name among the run's extra parameters.
pub const VALUE_HEAD: &str = "value_head.weight";

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

    fn per_prompt(&self) -> usize {
        match self.algo {
            Algo::Ppo => 1,
            Algo::Grpo { group } => group,
        }
    }

    fn stage(&self) -> &'static str {
        match self.algo {
            Algo::Ppo => "ppo",
            Algo::Grpo { .. } => "grpo",
        }
    }

    fn check(&self) -> Result<()> {
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
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !positive(self.lr) || !positive(self.temperature as f64) {
            return bad("--lr and --temperature must be positive");
        }
        if !(self.kl_coef >= 0.0 && self.clip_range > 0.0) {
            return bad("--kl-coef must be >= 0 and --clip-range > 0");
        }
        Ok(())
    }

    fn steps_per_iter(&self) -> u64 {
        let answers = self.prompts_per_iter * self.per_prompt();
        (self.ppo_epochs * answers.div_ceil(self.minibatch)) as u64
    }
}

/// Scores finished rollouts; `prompts` are the messages they answer, by `Rollout::prompt`.
pub trait Reward {
    fn score(&mut self, prompts: &[Prompt], rollouts: &[Rollout]) -> Result<Vec<f64>>;
}

impl<F: FnMut(&[Prompt], &[Rollout]) -> Result<Vec<f64>>> Reward for F {
    fn score(&mut self, prompts: &[Prompt], rollouts: &[Rollout]) -> Result<Vec<f64>> {
        self(prompts, rollouts)
    }
}

/// A reward model's score of each answer, read at its last token.
pub struct ModelReward {
    pub model: Llama,
    pub pad_id: u32,
}

impl Reward for ModelReward {
    fn score(&mut self, _prompts: &[Prompt], rollouts: &[Rollout]) -> Result<Vec<f64>> {
        let answers: Vec<&Answer> = rollouts.iter().map(|r| &r.answer).collect();
        let dev = self.model.device().clone();
        let s = crate::reward::score_answers(&self.model, &answers, self.pad_id, 16, &dev)?;
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

/// State carried across iterations, saved in the checkpoint's metrics for resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Carry {
    kl: KlController,
    reward_stats: RunningStats,
    reward_first: Option<f64>,
}

/// One iteration's rollouts with everything the updates need, per answer token.
struct Experience {
    rollouts: Vec<Rollout>,
    old_logp: Vec<Vec<f32>>,
    ref_logp: Vec<Vec<f32>>,
    old_values: Vec<Vec<f32>>,
    advantages: Vec<Vec<f32>>,
    returns: Vec<Vec<f32>>,
    stats: Vec<(&'static str, f64)>,
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
    let key = serde_json::json!({
        "algo": opts.algo, "prompts_per_iter": opts.prompts_per_iter, "minibatch": opts.minibatch,
        "ppo_epochs": opts.ppo_epochs, "max_new_tokens": opts.max_new_tokens, "seed": opts.seed,
        "prompts": prompts.len(),
    });
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
    let monitor_first = match monitor.as_mut() {
        Some(m) => m(&sampler)?,
        None => Vec::new(),
    };
    let carry = std::cell::RefCell::new(carry);
    let last_exp_stats = std::cell::RefCell::new(Vec::<(&'static str, f64)>::new());
    let monitor_last = std::cell::RefCell::new(monitor_first.clone());
    let hacking = std::cell::Cell::new(false);
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
            let n = e.rollouts.len();
            let per_epoch = n.div_ceil(opts.minibatch) as u64;
            let (epoch, k) = (within / per_epoch, (within % per_epoch) as usize);
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                opts.seed ^ (step / spi).wrapping_mul(0x9e37_79b9) ^ epoch.wrapping_mul(0x85eb_ca6b),
            ));
            let idx = &order[k * opts.minibatch..((k + 1) * opts.minibatch).min(n)];
            let Micro {
                mut loss,
                mut stats,
                tokens,
            } =
                minibatch_loss(opts, m, value_head.as_ref(), e, idx, carry.borrow().kl.coef, pad_id, device)?;
            if let Some(shards) = &ptx {
                let t = ctx.min(256);
                let (x, y) = shards.random_batch(rng, opts.ptx_batch, t)?;
                let x = Tensor::from_vec(x, (opts.ptx_batch, t), device)?;
                let y = Tensor::from_vec(y, (opts.ptx_batch, t), device)?;
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
                        hacking.set(true);
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
        reward_hacking: hacking.get(),
        elapsed_secs: run.elapsed_secs(),
    })
}

/// Samples an iteration's rollouts and computes rewards, reference log-probabilities,
/// values and advantages.
#[allow(clippy::too_many_arguments)]
fn collect(
    opts: &PgOptions,
    sampler: &Llama,
    reference: &Llama,
    value_head: Option<&candle_core::Var>,
    prompts: &[Prompt],
    reward: &mut dyn Reward,
    stop: &[u32],
    pad_id: u32,
    carry: &mut Carry,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Experience> {
    let picked: Vec<usize> = (0..opts.prompts_per_iter)
        .map(|_| rng.random_range(0..prompts.len()))
        .collect();
    let chosen: Vec<&Prompt> = picked.iter().map(|&i| &prompts[i]).collect();
    let ropts = RolloutOptions {
        max_new_tokens: opts.max_new_tokens,
        temperature: opts.temperature,
    };
    let rs = rollouts(
        sampler,
        &chosen,
        &picked,
        opts.per_prompt(),
        &ropts,
        stop,
        rng,
    )?;
    let raw = reward.score(prompts, &rs)?;
    if raw.len() != rs.len() || raw.iter().any(|r| !r.is_finite()) {
        return Err(TrainError::Data(format!(
            "the reward gave {} finite scores for {} answers",
            raw.iter().filter(|r| r.is_finite()).count(),
            rs.len()
        )));
    }
    let penalised: Vec<f64> = raw
        .iter()
        .zip(&rs)
        .map(|(r, ro)| {
            if ro.ended {
                *r
            } else {
                r - opts.missing_end_penalty
            }
        })
        .collect();
    // per-token quantities under the sampling policy and the reference
    let mut old_logp = Vec::with_capacity(rs.len());
    let mut ref_logp = Vec::with_capacity(rs.len());
    let mut old_values = Vec::with_capacity(rs.len());
    let (mut ent_sum, mut ent_n) = (0.0, 0usize);
    for chunk in rs.chunks(16) {
        let answers: Vec<&Answer> = chunk.iter().map(|r| &r.answer).collect();
        let p = pad(&answers, pad_id, device)?;
        let (lp, h) = logprobs_and_hidden(sampler, &p)?;
        let (rp, _) = logprobs_and_hidden(reference, &p)?;
        let (b, t) = p.ids.dims2()?;
        let logits = sampler.logits(&h)?;
        let ent = rl::entropy(&logits)?;
        let mask: Vec<Vec<f32>> = p.mask.to_vec2()?;
        for (i, row) in mask.iter().enumerate() {
            for (j, &on) in row.iter().enumerate() {
                if on > 0.0 {
                    ent_sum += ent[i * t + j] as f64;
                    ent_n += 1;
                }
            }
        }
        let values: Option<Vec<Vec<f32>>> = match value_head {
            Some(v) => Some(
                h.matmul(&v.as_tensor().detach().t()?)?
                    .reshape((b, t))?
                    .to_vec2()?,
            ),
            None => None,
        };
        let lp: Vec<Vec<f32>> = lp.to_vec2()?;
        let rp: Vec<Vec<f32>> = rp.to_vec2()?;
        for (i, a) in answers.iter().enumerate() {
            let (s, e) = (a.prompt_len - 1, a.ids.len() - 1);
            old_logp.push(lp[i][s..e].to_vec());
            ref_logp.push(rp[i][s..e].to_vec());
            old_values.push(
                values
                    .as_ref()
                    .map(|v| v[i][s..e].to_vec())
                    .unwrap_or_default(),
            );
        }
    }
    let seq_kl: Vec<f64> = old_logp
        .iter()
        .zip(&ref_logp)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| rl::kl_k1(*x, *y) as f64).sum())
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let kl = mean(&seq_kl);
    let (advantages, returns) = match opts.algo {
        Algo::Ppo => {
            let scores: Vec<f64> = if opts.normalise_reward {
                carry.reward_stats.push_all(&penalised);
                penalised
                    .iter()
                    .map(|&r| carry.reward_stats.normalise(r))
                    .collect()
            } else {
                penalised.clone()
            };
            let coef = carry.kl.coef as f32;
            let mut adv = Vec::with_capacity(rs.len());
            let mut ret = Vec::with_capacity(rs.len());
            for i in 0..rs.len() {
                let mut r: Vec<f32> = old_logp[i]
                    .iter()
                    .zip(&ref_logp[i])
                    .map(|(a, b)| -coef * rl::kl_k1(*a, *b))
                    .collect();
                if let Some(last) = r.last_mut() {
                    *last += scores[i] as f32;
                }
                let (a, rt) = rl::gae(&r, &old_values[i], opts.gamma, opts.lambda);
                adv.push(a);
                ret.push(rt);
            }
            // whiten advantages over every answer token of the batch
            let mut flat: Vec<f32> = adv.iter().flatten().copied().collect();
            rl::whiten(&mut flat);
            let mut it = flat.into_iter();
            for a in adv.iter_mut() {
                for x in a.iter_mut() {
                    *x = it.next().unwrap_or(0.0);
                }
            }
            carry.kl.update(kl, rs.len());
            (adv, ret)
        }
        Algo::Grpo { group } => {
            let mut adv = Vec::with_capacity(rs.len());
            for g in penalised.chunks(group) {
                let m = mean(g);
                let sd = (g.iter().map(|x| (x - m).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
                for r in g {
                    adv.push(((r - m) / (sd + 1e-4)) as f32);
                }
            }
            let adv: Vec<Vec<f32>> = adv
                .iter()
                .zip(&old_logp)
                .map(|(a, lp)| vec![*a; lp.len()])
                .collect();
            (adv, Vec::new())
        }
    };
    let raw_mean = mean(&raw);
    carry.reward_first.get_or_insert(raw_mean);
    let lens: Vec<f64> = rs.iter().map(|r| r.answer_tokens().len() as f64).collect();
    let ended = rs.iter().filter(|r| r.ended).count() as f64 / rs.len().max(1) as f64;
    let stats = vec![
        ("reward", raw_mean),
        ("kl", kl),
        ("kl_coef", carry.kl.coef),
        ("entropy", ent_sum / ent_n.max(1) as f64),
        ("answer_len", mean(&lens)),
        ("ended", ended),
    ];
    Ok(Experience {
        rollouts: rs,
        old_logp,
        ref_logp,
        old_values,
        advantages,
        returns,
        stats,
    })
}

/// Lays per-answer-token vectors into a (B, T) tensor aligned with [`pad`]'s mask.
fn aligned(rows: &[&Vec<f32>], answers: &[&Answer], t: usize, device: &Device) -> Result<Tensor> {
    let mut out = vec![0f32; rows.len() * t];
    for (i, (r, a)) in rows.iter().zip(answers).enumerate() {
        let s = a.prompt_len - 1;
        out[i * t + s..i * t + s + r.len()].copy_from_slice(r);
    }
    Ok(Tensor::from_vec(out, (rows.len(), t), device)?)
}

/// The loss of one minibatch of an iteration's rollouts.
#[allow(clippy::too_many_arguments)]
fn minibatch_loss(
    opts: &PgOptions,
    model: &Llama,
    value_head: Option<&candle_core::Var>,
    e: &Experience,
    idx: &[usize],
    kl_coef: f64,
    pad_id: u32,
    device: &Device,
) -> Result<Micro> {
    let answers: Vec<&Answer> = idx.iter().map(|&i| &e.rollouts[i].answer).collect();
    let p = pad(&answers, pad_id, device)?;
    let (b, t) = p.ids.dims2()?;
    let (lp, h) = logprobs_and_hidden(model, &p)?;
    fn pick<'v>(v: &'v [Vec<f32>], idx: &[usize]) -> Vec<&'v Vec<f32>> {
        idx.iter().map(|&i| &v[i]).collect()
    }
    let old = aligned(&pick(&e.old_logp, idx), &answers, t, device)?;
    let adv = aligned(&pick(&e.advantages, idx), &answers, t, device)?;
    let (pg, clipfrac) = rl::clipped_policy_loss(&lp, &old, &adv, &p.mask, opts.clip_range)?;
    let mut stats = vec![
        ("pg_loss", pg.to_scalar::<f32>()? as f64),
        ("clipfrac", clipfrac),
    ];
    let loss = match (opts.algo, value_head) {
        (Algo::Ppo, Some(v)) => {
            let values = h.matmul(&v.as_tensor().t()?)?.reshape((b, t))?;
            let old_v = aligned(&pick(&e.old_values, idx), &answers, t, device)?;
            let ret = aligned(&pick(&e.returns, idx), &answers, t, device)?;
            let vf = rl::clipped_value_loss(&values, &old_v, &ret, &p.mask, opts.value_clip)?;
            stats.push(("vf_loss", vf.to_scalar::<f32>()? as f64));
            (pg + (vf * opts.vf_coef)?)?
        }
        _ => {
            // k3 estimator of KL(π ‖ π_ref) per token, differentiable in log π
            let rp = aligned(&pick(&e.ref_logp, idx), &answers, t, device)?;
            let d = (rp - &lp)?;
            let k3 = ((d.exp()? - &d)? - 1.0)?;
            let kl = rl::masked_mean(&k3, &p.mask)?;
            stats.push(("kl_loss", kl.to_scalar::<f32>()? as f64));
            (pg + (kl * kl_coef)?)?
        }
    };
    Ok(Micro {
        loss,
        stats,
        tokens: p.answer_tokens as u64,
    })
}
