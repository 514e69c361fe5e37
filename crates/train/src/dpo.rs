//! Direct preference optimisation (Rafailov et al., 2023): the chat model learns from the
//! same comparisons a reward model would, without one: the loss raises the chosen
//! answer's log-probability relative to the frozen reference (the SFT model) over the
//! rejected one's, `-log σ(β ((π_c - ρ_c) - (π_r - ρ_r)))`. A ranked list gives all its
//! pairs.

use std::path::Path;

use candle_core::Device;
use ferrochat_model::{checkpoint, Llama};
use ferrochat_text::RankedComparison;
use ferrochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::epochs::Epochs;
use crate::hooks::{EvalReport, Hooks};
use crate::optim::AdamWConfig;
use crate::policy::{answer_logprobs, render_prompts, sampled_kl};
use crate::pref::{dpo_loss, encode_groups, pad, Answer, FitStats, Group};
use crate::schedule::{Schedule, ScheduleKind};
use crate::trainer::{LoopOptions, Micro, Run};
use crate::{Result, TrainError};

/// Everything `ferrochat dpo` sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpoOptions {
    /// Tokens per answer with its prompt; 0: the model's context.
    pub seq_len: usize,
    /// Pairs per micro-batch.
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Optimizer steps; 0: as many as `epochs` passes over the pairs take.
    pub steps: u64,
    pub epochs: f64,
    /// Strength of the pull toward the reference: higher keeps the policy closer.
    pub beta: f64,
    pub lr: f64,
    pub warmup_steps: u64,
    pub grad_clip: f64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub seed: u64,
    /// Answers sampled to measure KL to the reference at the end (0: skip).
    pub kl_samples: usize,
    pub max_new_tokens: usize,
}

impl Default for DpoOptions {
    fn default() -> Self {
        Self {
            seq_len: 0,
            batch_size: 8,
            grad_accum: 1,
            steps: 0,
            epochs: 1.0,
            beta: 0.1,
            lr: 1e-4,
            warmup_steps: 10,
            grad_clip: 1.0,
            eval_every: 50,
            checkpoint_every: 100,
            seed: 42,
            kl_samples: 64,
            max_new_tokens: 96,
        }
    }
}

/// DPO's view of held-out pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DpoEval {
    pub pairs: usize,
    pub loss: f64,
    /// Share of pairs whose implicit reward margin favours the preferred answer.
    pub accuracy: f64,
    pub margin: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpoSummary {
    pub steps: u64,
    pub train_loss: f64,
    pub train: FitStats,
    pub before: DpoEval,
    pub after: DpoEval,
    /// KL(policy ‖ SFT) per answer on sampled answers to held-out prompts (nats).
    pub kl: Option<f64>,
    pub elapsed_secs: f64,
}

/// Every (better, worse) pair of every group.
fn pairs_of(groups: &[Group]) -> Vec<(&Answer, &Answer)> {
    groups
        .iter()
        .flat_map(|g| {
            g.pairs()
                .into_iter()
                .map(move |(i, j)| (&g.answers[i], &g.answers[j]))
        })
        .collect()
}

/// The DPO loss and margins of a batch of pairs under a policy and the reference.
fn batch_loss(
    policy: &Llama,
    reference: &Llama,
    pairs: &[(&Answer, &Answer)],
    beta: f64,
    pad_id: u32,
    device: &Device,
) -> Result<(candle_core::Tensor, Vec<f32>, usize)> {
    let rows: Vec<&Answer> = pairs
        .iter()
        .map(|p| p.0)
        .chain(pairs.iter().map(|p| p.1))
        .collect();
    let p = pad(&rows, pad_id, device)?;
    let n = pairs.len();
    let pol = answer_logprobs(policy, &p)?;
    let refr = answer_logprobs(reference, &p)?.detach();
    let (loss, margin) = dpo_loss(
        &pol.narrow(0, 0, n)?,
        &pol.narrow(0, n, n)?,
        &refr.narrow(0, 0, n)?,
        &refr.narrow(0, n, n)?,
        beta,
    )?;
    Ok((loss, margin.to_vec1()?, p.ids.elem_count()))
}

fn evaluate(
    policy: &Llama,
    reference: &Llama,
    pairs: &[(&Answer, &Answer)],
    opts: &DpoOptions,
    pad_id: u32,
    device: &Device,
) -> Result<DpoEval> {
    let (mut loss, mut margins) = (0.0, Vec::new());
    for chunk in pairs.chunks(opts.batch_size.max(1)) {
        let (l, m, _) = batch_loss(policy, reference, chunk, opts.beta, pad_id, device)?;
        loss += l.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        margins.extend(m);
    }
    let n = margins.len().max(1) as f64;
    Ok(DpoEval {
        pairs: margins.len(),
        loss: loss / n,
        accuracy: crate::pref::pairwise_accuracy(margins.iter().map(|&m| m as f64)),
        margin: margins.iter().map(|&m| m as f64).sum::<f64>() / n,
    })
}

/// Fine-tunes `base` (the reference too) on preference records by DPO.
#[allow(clippy::too_many_arguments)]
pub fn dpo(
    opts: &DpoOptions,
    base: &Path,
    tokenizer: &Tokenizer,
    train: &[RankedComparison],
    val: &[RankedComparison],
    out: &Path,
    resume: bool,
    device: &Device,
    hooks: &mut dyn Hooks,
) -> Result<DpoSummary> {
    if opts.batch_size == 0 || opts.grad_accum == 0 {
        return Err(TrainError::Options(
            "--batch and --grad-accum must be at least 1".into(),
        ));
    }
    let positive = |x: f64| x > 0.0 && x.is_finite();
    if !positive(opts.beta) || !positive(opts.lr) {
        return Err(TrainError::Options(
            "--beta and --lr must be positive numbers".into(),
        ));
    }
    let (ref_cfg, ref_w) = checkpoint::load(base, device)?;
    if ref_cfg.is_classifier() {
        return Err(TrainError::Options(format!(
            "{} is a reward model; DPO starts from a chat (SFT) model",
            base.display()
        )));
    }
    let reference = Llama::new(&ref_cfg, &ref_w, device)?;
    let ctx = ref_cfg.max_position_embeddings;
    let len = if opts.seq_len == 0 {
        ctx
    } else {
        opts.seq_len.min(ctx)
    };
    let (groups, fit) = encode_groups(tokenizer, train, len)?;
    let (val_groups, _) = encode_groups(tokenizer, val, len)?;
    let pairs = pairs_of(&groups);
    let val_pairs = pairs_of(&val_groups);
    if pairs.is_empty() {
        return Err(TrainError::Data(format!(
            "no preference pair fits a context of {len} tokens"
        )));
    }
    let b = opts.batch_size;
    // the global batch: every rank of a data-parallel run trains on `b` of each micro-batch
    let world = crate::dist::world();
    let per_step = (b * opts.grad_accum * world.size()) as f64;
    let steps = if opts.steps > 0 {
        opts.steps
    } else {
        ((pairs.len() as f64 * opts.epochs) / per_step)
            .ceil()
            .max(1.0) as u64
    };
    hooks.message(&format!(
        "{} pairs from {} records ({} cut to fit), {} held out; {steps} steps",
        pairs.len(),
        fit.records,
        fit.truncated,
        val_pairs.len()
    ));
    let key = crate::dist::keyed(serde_json::json!({
        "seq_len": len, "batch_size": b, "grad_accum": opts.grad_accum, "seed": opts.seed,
        "beta": opts.beta, "pairs": pairs.len(),
    }));
    let adam = AdamWConfig {
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut run = Run::start(
        "dpo",
        out,
        resume,
        key,
        opts.seed,
        adam,
        device,
        hooks,
        || Ok((ref_cfg.clone(), ref_w.clone())),
    )?;
    let pad_id = tokenizer.special().pad;
    // the policy starts as the reference: every margin is zero
    let before = DpoEval {
        pairs: val_pairs.len(),
        loss: std::f64::consts::LN_2,
        accuracy: 0.5,
        margin: 0.0,
    };
    // what the model in `out` is now (a resumed run that is already finished trains no
    // more, and its figures are these)
    let now = if run.step > 0 {
        evaluate(
            &run.eval_model,
            &reference,
            &val_pairs,
            opts,
            pad_id,
            device,
        )?
    } else {
        before.clone()
    };
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
    let mut epochs = Epochs::new(pairs.len(), opts.seed, run.step * per_step as u64);
    let data = serde_json::json!({ "base": base, "fit": fit, "beta": opts.beta });
    let last = std::cell::RefCell::new(now);
    let end = run.train_with(
        &lo,
        &schedule,
        hooks,
        |m: &Llama, _rng, _step| {
            let batch = crate::dist::my_share(world, b, || pairs[epochs.next_index()]);
            let (loss, margins, tokens) =
                batch_loss(m, &reference, &batch, opts.beta, pad_id, device)?;
            let k = margins.len().max(1) as f64;
            Ok(Micro {
                loss,
                tokens: tokens as u64,
                stats: vec![
                    (
                        "accuracy",
                        margins.iter().filter(|&&x| x > 0.0).count() as f64 / k,
                    ),
                    ("margin", margins.iter().map(|&x| x as f64).sum::<f64>() / k),
                ],
            })
        },
        |m, step| {
            let e = evaluate(m, &reference, &val_pairs, opts, pad_id, device)?;
            let r = EvalReport {
                step,
                val_loss: e.loss,
                val_bpb: None,
                stats: [
                    ("accuracy".to_string(), e.accuracy),
                    ("margin".to_string(), e.margin),
                ]
                .into_iter()
                .collect(),
            };
            *last.borrow_mut() = e;
            Ok(r)
        },
        |run, end| {
            let e = last.borrow();
            let metrics = serde_json::json!({
                "train_loss": end.train_loss,
                "val_loss": e.loss,
                "val_accuracy": e.accuracy,
                "val_margin": e.margin,
            });
            run.save(tokenizer, data.clone(), metrics)
        },
    )?;
    let after = last.into_inner();
    // rank 0 alone measures and reports
    let kl = if opts.kl_samples > 0 && !val.is_empty() && world.is_main() {
        let msgs: Vec<_> = val.iter().map(|r| r.prompt.clone()).collect();
        let (prompts, _) = render_prompts(tokenizer, &msgs, ctx, opts.max_new_tokens)?;
        let s = tokenizer.special();
        Some(sampled_kl(
            &run.eval_model,
            &reference,
            &prompts,
            opts.kl_samples,
            opts.max_new_tokens,
            &[s.end, s.bos],
            pad_id,
            opts.seed,
        )?)
    } else {
        None
    };
    Ok(DpoSummary {
        steps: run.step,
        train_loss: end.train_loss,
        train: fit,
        before,
        after,
        kl,
        elapsed_secs: run.elapsed_secs(),
    })
}
