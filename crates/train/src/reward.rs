//! Reward modelling: the SFT model's trunk with a scalar head (`score.weight`, read at
//! the answer's last token) learns people's preferences from comparisons. A ranked list
//! of K answers trains on all its C(K, 2) pairs at once, counted as one example
//! (InstructGPT). The result is a Hugging Face sequence-classification folder.

use std::path::Path;

use candle_core::Device;
use ferrochat_model::{checkpoint, weights, Llama};
use ferrochat_text::RankedComparison;
use ferrochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::epochs::Epochs;
use crate::hooks::{EvalReport, Hooks};
use crate::optim::AdamWConfig;
use crate::pref::{encode_groups, pad, ranking_loss, FitStats, Group};
use crate::schedule::{Schedule, ScheduleKind};
use crate::trainer::{LoopOptions, Micro, Run};
use crate::{Result, TrainError};

/// Everything `ferrochat reward` sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewardOptions {
    /// Tokens per answer with its prompt; 0: the base model's context.
    pub seq_len: usize,
    /// Preference records (pairs or ranked lists) per micro-batch.
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Optimizer steps; 0: as many as `epochs` passes over the records take.
    pub steps: u64,
    pub epochs: f64,
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub seed: u64,
}

impl Default for RewardOptions {
    fn default() -> Self {
        Self {
            seq_len: 0,
            batch_size: 8,
            grad_accum: 1,
            steps: 0,
            epochs: 1.0,
            lr: 3e-4,
            warmup_steps: 10,
            weight_decay: 0.0,
            grad_clip: 1.0,
            eval_every: 50,
            checkpoint_every: 100,
            seed: 42,
        }
    }
}

/// How well a reward model orders held-out pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RmEval {
    pub pairs: usize,
    /// Share of pairs where the preferred answer scores higher.
    pub accuracy: f64,
    /// Mean `-log σ(r_chosen - r_rejected)`.
    pub loss: f64,
    /// Expected calibration error of `σ(r_a - r_b)` as the probability that a is preferred.
    pub ece: f64,
    /// Reliability bins over confidence 0.5..1: (mean confidence, accuracy, pairs).
    pub bins: Vec<(f64, f64, usize)>,
    /// Mean score of preferred and of rejected answers.
    pub mean_chosen: f64,
    pub mean_rejected: f64,
}

/// What a reward-model run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewardSummary {
    pub steps: u64,
    pub train_loss: f64,
    pub train: FitStats,
    pub before: RmEval,
    pub after: RmEval,
    pub elapsed_secs: f64,
}

/// Trains a reward model from `base` (a language model) on `train`, measuring it on `val`.
#[allow(clippy::too_many_arguments)]
pub fn reward(
    opts: &RewardOptions,
    base: &Path,
    tokenizer: &Tokenizer,
    train: &[RankedComparison],
    val: &[RankedComparison],
    out: &Path,
    resume: bool,
    device: &Device,
    hooks: &mut dyn Hooks,
) -> Result<RewardSummary> {
    if opts.batch_size == 0 || opts.grad_accum == 0 {
        return Err(TrainError::Options(
            "--batch and --grad-accum must be at least 1".into(),
        ));
    }
    if !(opts.lr > 0.0 && opts.lr.is_finite()) {
        return Err(TrainError::Options("--lr must be a positive number".into()));
    }
    let base_cfg = checkpoint::load_config(base)?;
    let ctx = base_cfg.max_position_embeddings;
    let len = if opts.seq_len == 0 {
        ctx
    } else {
        opts.seq_len.min(ctx)
    };
    let (groups, fit) = encode_groups(tokenizer, train, len)?;
    let (val_groups, _) = encode_groups(tokenizer, val, len)?;
    if groups.is_empty() {
        return Err(TrainError::Data(format!(
            "no preference record fits a context of {len} tokens"
        )));
    }
    let b = opts.batch_size;
    // the global batch: every rank of a data-parallel run trains on `b` of each micro-batch
    let world = crate::dist::world();
    let per_step = (b * opts.grad_accum * world.size()) as f64;
    let steps = if opts.steps > 0 {
        opts.steps
    } else {
        ((groups.len() as f64 * opts.epochs) / per_step)
            .ceil()
            .max(1.0) as u64
    };
    hooks.message(&format!(
        "{} records ({} pairs, {} cut to fit, {} too long), {} held out; {steps} steps",
        fit.records,
        fit.pairs,
        fit.truncated,
        fit.too_long,
        val_groups.len()
    ));
    let key = crate::dist::keyed(serde_json::json!({
        "seq_len": len, "batch_size": b, "grad_accum": opts.grad_accum, "seed": opts.seed,
        "records": groups.len(),
    }));
    let adam = AdamWConfig {
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut run = Run::start(
        "reward",
        out,
        resume,
        key,
        opts.seed,
        adam,
        device,
        hooks,
        || {
            let (cfg, w) = checkpoint::load(base, device)?;
            if cfg.is_classifier() {
                return Ok((cfg, w));
            }
            Ok(weights::trunk_with_score(&cfg, w, device)?)
        },
    )?;
    let pad_id = tokenizer.special().pad;
    let before = evaluate(&run.eval_model, &val_groups, pad_id, b, device)?;
    let schedule = Schedule {
        kind: ScheduleKind::Cosine,
        max_lr: opts.lr,
        min_lr_frac: 0.1,
        warmup_steps: opts.warmup_steps,
        total_steps: steps,
        decay_frac: 0.2,
    };
    let lo = LoopOptions {
        steps,
        grad_accum: opts.grad_accum,
        grad_clip: opts.grad_clip,
        eval_every: opts.eval_every,
        sample_every: 0,
        checkpoint_every: opts.checkpoint_every,
    };
    let mut epochs = Epochs::new(groups.len(), opts.seed, run.step * per_step as u64);
    let data = serde_json::json!({ "base": base, "fit": fit });
    let last_eval = std::cell::RefCell::new(before.clone());
    let end = run.train_with(
        &lo,
        &schedule,
        hooks,
        |m: &Llama, _rng, _step| {
            let batch: Vec<&Group> =
                crate::dist::my_share(world, b, || &groups[epochs.next_index()]);
            let answers: Vec<_> = batch.iter().flat_map(|g| &g.answers).collect();
            let p = pad(&answers, pad_id, device)?;
            let scores = m.scores(&p.ids, &p.last)?;
            let (loss, acc) = ranking_loss(&scores, &batch)?;
            Ok(Micro {
                loss,
                tokens: p.ids.elem_count() as u64,
                stats: vec![("accuracy", acc)],
            })
        },
        |m, step| {
            let e = evaluate(m, &val_groups, pad_id, b, device)?;
            let r = EvalReport {
                step,
                val_loss: e.loss,
                val_bpb: None,
                stats: [
                    ("accuracy".to_string(), e.accuracy),
                    ("ece".to_string(), e.ece),
                ]
                .into_iter()
                .collect(),
            };
            *last_eval.borrow_mut() = e;
            Ok(r)
        },
        |run, end| {
            let e = last_eval.borrow();
            let metrics = serde_json::json!({
                "train_loss": end.train_loss,
                "val_accuracy": e.accuracy,
                "val_accuracy_before": before.accuracy,
                "val_ece": e.ece,
            });
            run.save(tokenizer, data.clone(), metrics)
        },
    )?;
    // the last step always evaluates; a finished run resumed trains no more and its
    // figures are the ones measured at the start
    let after = last_eval.into_inner();
    Ok(RewardSummary {
        steps: run.step,
        train_loss: end.train_loss,
        train: fit,
        before,
        after,
        elapsed_secs: run.elapsed_secs(),
    })
}

/// Scores answers (rows of a padded batch) with a reward model, `batch` rows at a time.
pub fn score_answers(
    model: &Llama,
    answers: &[&crate::pref::Answer],
    pad_id: u32,
    batch: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(answers.len());
    for chunk in answers.chunks(batch.max(1)) {
        let p = pad(chunk, pad_id, device)?;
        out.extend(model.scores(&p.ids, &p.last)?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// A reward model's score of each answer text to its prompt, in order, rendered as the
/// reward model was trained on them. Errors, naming the item, when a prompt does not fit
/// the model's context.
pub fn score_texts(
    model: &Llama,
    tok: &Tokenizer,
    items: &[(Vec<ferrochat_text::Message>, String)],
) -> Result<Vec<f32>> {
    let ctx = model.config().max_position_embeddings;
    let mut answers = Vec::with_capacity(items.len());
    for (i, (prompt, answer)) in items.iter().enumerate() {
        let rec = RankedComparison {
            prompt: prompt.clone(),
            ranked: vec![answer.clone()],
        };
        let (mut groups, _) = encode_groups(tok, &[rec], ctx)?;
        let Some(g) = groups.pop() else {
            return Err(TrainError::Data(format!(
                "item {}: the prompt does not fit the reward model's context of {ctx} tokens",
                i + 1
            )));
        };
        answers.extend(g.answers);
    }
    let refs: Vec<&crate::pref::Answer> = answers.iter().collect();
    score_answers(model, &refs, tok.special().pad, 16, model.device())
}

/// Accuracy, loss and calibration of a reward model on groups (every pair of each).
pub fn evaluate(
    model: &Llama,
    groups: &[Group],
    pad_id: u32,
    batch: usize,
    device: &Device,
) -> Result<RmEval> {
    let mut margins = Vec::new();
    let (mut chosen, mut rejected) = (0.0, 0.0);
    let answers_per_batch = batch.max(1) * 2;
    let mut pending: Vec<&Group> = Vec::new();
    let mut flush = |pending: &mut Vec<&Group>| -> Result<()> {
        let answers: Vec<_> = pending.iter().flat_map(|g| &g.answers).collect();
        let s = score_answers(model, &answers, pad_id, answers.len(), device)?;
        let mut off = 0;
        for g in pending.iter() {
            for (i, j) in g.pairs() {
                let m = (s[off + i] - s[off + j]) as f64;
                margins.push(m);
                chosen += s[off + i] as f64;
                rejected += s[off + j] as f64;
            }
            off += g.answers.len();
        }
        pending.clear();
        Ok(())
    };
    for g in groups {
        pending.push(g);
        if pending.iter().map(|g| g.answers.len()).sum::<usize>() >= answers_per_batch {
            flush(&mut pending)?;
        }
    }
    if !pending.is_empty() {
        flush(&mut pending)?;
    }
    Ok(summarise(&margins, chosen, rejected))
}

/// Accuracy, loss and a 5-bin reliability table from pair margins `r_chosen - r_rejected`.
fn summarise(margins: &[f64], chosen: f64, rejected: f64) -> RmEval {
    let n = margins.len();
    if n == 0 {
        return RmEval::default();
    }
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let accuracy = crate::pref::pairwise_accuracy(margins.iter().copied());
    let loss = margins
        .iter()
        .map(|&m| (-m).max(0.0) + (1.0 + (-m.abs()).exp()).ln())
        .sum::<f64>()
        / n as f64;
    // confidence in the answer the model prefers, and whether people preferred it
    let mut bins = vec![(0.0, 0.0, 0usize); 5];
    for &m in margins {
        let conf = sig(m.abs());
        let b = (((conf - 0.5) / 0.1) as usize).min(4);
        bins[b].0 += conf;
        bins[b].1 += if m > 0.0 {
            1.0
        } else if m == 0.0 {
            0.5
        } else {
            0.0
        };
        bins[b].2 += 1;
    }
    let mut ece = 0.0;
    let bins: Vec<(f64, f64, usize)> = bins
        .into_iter()
        .map(|(c, a, k)| {
            if k == 0 {
                return (0.0, 0.0, 0);
            }
            let (c, a) = (c / k as f64, a / k as f64);
            ece += k as f64 / n as f64 * (c - a).abs();
            (c, a, k)
        })
        .collect();
    RmEval {
        pairs: n,
        accuracy,
        loss,
        ece,
        bins,
        mean_chosen: chosen / n as f64,
        mean_rejected: rejected / n as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_of_known_margins() {
        // margins 3 (conf 0.953, right), -3 (conf 0.953, wrong), 0.1 (conf 0.525, right)
        let e = summarise(&[3.0, -3.0, 0.1], 0.0, 0.0);
        assert_eq!(e.pairs, 3);
        assert!((e.accuracy - 2.0 / 3.0).abs() < 1e-12);
        let hi = 1.0 / (1.0 + (-3f64).exp());
        let lo = 1.0 / (1.0 + (-0.1f64).exp());
        assert_eq!(e.bins[4].2, 2);
        assert_eq!(e.bins[0].2, 1);
        let want = 2.0 / 3.0 * (hi - 0.5).abs() + 1.0 / 3.0 * (lo - 1.0).abs();
        assert!((e.ece - want).abs() < 1e-12, "{} vs {want}", e.ece);
    }
}
