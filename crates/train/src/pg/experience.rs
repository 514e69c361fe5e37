//! One iteration's experience: rollouts sampled and scored, the reference's and the
//! sampling policy's log-probabilities, values and advantages (GAE for PPO, group-relative
//! for GRPO); and the loss of one minibatch of it.

use candle_core::{Device, Tensor};
use ferrochat_model::Llama;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Algo, PgOptions, Reward};
use crate::policy::{answer_pass, rollouts, AnswerPass, Prompt, Rollout, RolloutOptions};
use crate::pref::{pad, Answer};
use crate::rl::{self, KlController, RunningStats};
use crate::trainer::Micro;
use crate::{Result, TrainError};

/// State carried across iterations, saved in the checkpoint's metrics for resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Carry {
    pub(super) kl: KlController,
    pub(super) reward_stats: RunningStats,
    pub(super) reward_first: Option<f64>,
}

/// One iteration's rollouts with everything the updates need, per answer token.
pub(super) struct Experience {
    pub(super) rollouts: Vec<Rollout>,
    pub(super) old_logp: Vec<Vec<f32>>,
    pub(super) ref_logp: Vec<Vec<f32>>,
    pub(super) old_values: Vec<Vec<f32>>,
    pub(super) advantages: Vec<Vec<f32>>,
    pub(super) returns: Vec<Vec<f32>>,
    pub(super) stats: Vec<(&'static str, f64)>,
}

/// Samples an iteration's rollouts and computes rewards, reference log-probabilities,
/// values and advantages.
#[allow(clippy::too_many_arguments)]
pub(super) fn collect(
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
    // the iteration's prompts, drawn alike on every rank; a rank of a data-parallel run
    // answers its own share of them, sampling from a stream of its own
    let world = crate::dist::world();
    let share = opts.prompts_per_iter / world.size();
    let chosen: Vec<&Prompt> = crate::dist::my_share(world, share, || {
        &prompts[rng.random_range(0..prompts.len())]
    });
    let ropts = RolloutOptions {
        max_new_tokens: opts.max_new_tokens,
        temperature: opts.temperature,
    };
    let mut own_stream;
    let sampling: &mut ChaCha8Rng = if world.size() == 1 {
        rng
    } else {
        let seed: u64 = rng.random();
        own_stream = ChaCha8Rng::seed_from_u64(
            seed ^ (world.rank() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        &mut own_stream
    };
    let rs = rollouts(sampler, &chosen, opts.per_prompt(), &ropts, stop, sampling)?;
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
        let pass = answer_pass(sampler, &p)?;
        let rp = answer_pass(reference, &p)?.logp;
        let (b, t) = p.ids.dims2()?;
        let ent = rl::entropy(&pass.logits)?;
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
                pass.hidden
                    .matmul(&v.as_tensor().detach().t()?)?
                    .reshape((b, t))?
                    .to_vec2()?,
            ),
            None => None,
        };
        let lp: Vec<Vec<f32>> = pass.logp.to_vec2()?;
        let rp: Vec<Vec<f32>> = rp.to_vec2()?;
        for (i, a) in answers.iter().enumerate() {
            old_logp.push(lp[i][a.targets()].to_vec());
            ref_logp.push(rp[i][a.targets()].to_vec());
            old_values.push(
                values
                    .as_ref()
                    .map(|v| v[i][a.targets()].to_vec())
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
    // the iteration's figures over every rank's answers (one rank alone: its own)
    let kl = mean(&world.gather_f64(&seq_kl));
    let answers_all = rs.len() * world.size();
    let (advantages, returns) = match opts.algo {
        Algo::Ppo => {
            let scores: Vec<f64> = if opts.normalise_reward {
                // every rank keeps the same running statistics, of every rank's rewards
                carry.reward_stats.push_all(&world.gather_f64(&penalised));
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
            rl::whiten_across(world, &mut flat);
            let mut it = flat.into_iter();
            for a in adv.iter_mut() {
                for x in a.iter_mut() {
                    *x = it.next().unwrap_or(0.0);
                }
            }
            carry.kl.update(kl, answers_all);
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
    let raw_mean = mean(&world.gather_f64(&raw));
    carry.reward_first.get_or_insert(raw_mean);
    let lens: Vec<f64> = rs.iter().map(|r| r.answer_tokens().len() as f64).collect();
    let mut sums = [
        ent_sum,
        ent_n as f64,
        lens.iter().sum::<f64>(),
        rs.iter().filter(|r| r.ended).count() as f64,
    ];
    world.sum_f64(&mut sums);
    let answers_all = answers_all.max(1) as f64;
    let stats = vec![
        ("reward", raw_mean),
        ("kl", kl),
        ("kl_coef", carry.kl.coef),
        ("entropy", sums[0] / sums[1].max(1.0)),
        ("answer_len", sums[2] / answers_all),
        ("ended", sums[3] / answers_all),
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
        let s = a.targets().start;
        out[i * t + s..i * t + s + r.len()].copy_from_slice(r);
    }
    Ok(Tensor::from_vec(out, (rows.len(), t), device)?)
}

/// The loss of one minibatch of an iteration's rollouts.
#[allow(clippy::too_many_arguments)]
pub(super) fn minibatch_loss(
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
    let AnswerPass {
        logp: lp,
        hidden: h,
        ..
    } = answer_pass(model, &p)?;
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
