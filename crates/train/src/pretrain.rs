//! Pretraining: next-token prediction on token shards. Reads top to bottom: open the
//! data, build or resume the model and optimizer, then loop (sample a batch, forward,
//! backward, clip, step), evaluating, sampling and checkpointing at intervals.

use std::path::Path;

use candle_core::{Device, Tensor};
use ferrochat_model::{weights, Config, Llama};
use ferrochat_text::{Split, TokenShards};
use ferrochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::hooks::{EvalReport, Hooks};
use crate::optim::AdamWConfig;
use crate::schedule::{Schedule, ScheduleKind};
use crate::trainer::{LoopOptions, Run};
use crate::{Result, TrainError};

/// Everything `ferrochat pretrain` sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainOptions {
    pub preset: String,
    pub seq_len: usize,
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub steps: u64,
    pub lr: f64,
    pub min_lr_frac: f64,
    pub warmup_steps: u64,
    pub schedule: ScheduleKind,
    pub weight_decay: f64,
    pub grad_clip: f64,
    /// 0 disables.
    pub eval_every: u64,
    pub eval_batches: usize,
    pub sample_every: u64,
    pub checkpoint_every: u64,
    pub seed: u64,
    /// Share the output projection with the token embedding.
    pub tie_embeddings: bool,
    /// A mixture of experts instead of one MLP per block.
    pub experts: Option<MoeOptions>,
}

/// A mixture-of-experts model: `experts` SwiGLU MLPs per block (each the preset's MLP
/// size), `per_token` active per token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MoeOptions {
    pub experts: usize,
    pub per_token: usize,
    pub aux_loss_coef: f64,
    pub capacity_factor: Option<f64>,
}

impl Default for PretrainOptions {
    fn default() -> Self {
        Self {
            preset: "tiny".into(),
            seq_len: 128,
            batch_size: 8,
            grad_accum: 1,
            steps: 200,
            lr: 3e-3,
            min_lr_frac: 0.1,
            warmup_steps: 20,
            schedule: ScheduleKind::Cosine,
            weight_decay: 0.1,
            grad_clip: 1.0,
            eval_every: 50,
            eval_batches: 8,
            sample_every: 0,
            checkpoint_every: 100,
            seed: 42,
            tie_embeddings: true,
            experts: None,
        }
    }
}

impl PretrainOptions {
    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Options(m.to_string()));
        if self.seq_len < 2 || self.batch_size == 0 || self.grad_accum == 0 {
            return bad("--seq must be at least 2, --batch and --grad-accum at least 1");
        }
        if self.steps == 0 {
            return bad("--steps must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("--lr must be a positive number");
        }
        Ok(())
    }

    /// The options that must not change across a resume (the step count may grow).
    fn resume_key(&self) -> serde_json::Value {
        let mut key = serde_json::json!({
            "preset": self.preset, "seq_len": self.seq_len, "batch_size": self.batch_size,
            "grad_accum": self.grad_accum, "seed": self.seed,
        });
        if let Some(m) = &self.experts {
            key["experts"] = serde_json::json!(m);
        }
        crate::dist::keyed(key)
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainSummary {
    pub steps: u64,
    pub tokens: u64,
    pub params: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_bpb: f64,
    /// Cross-entropy of the validation tokens under the training unigram distribution:
    /// what a model that ignores context achieves.
    pub unigram_loss: f64,
    pub tokens_per_sec: f64,
    pub elapsed_secs: f64,
}

/// Trains from scratch (or resumes) into the checkpoint folder `out`.
pub fn pretrain(
    opts: &PretrainOptions,
    data: &Path,
    tokenizer: &Tokenizer,
    out: &Path,
    resume: bool,
    device: &Device,
    hooks: &mut dyn Hooks,
) -> Result<PretrainSummary> {
    opts.check()?;
    let vocab = tokenizer.vocab_size();
    let (train, val) = open_shards(data, vocab)?;

    let init = || {
        fresh_model(
            &opts.preset,
            tokenizer,
            opts.seq_len,
            opts.tie_embeddings,
            opts.experts.as_ref(),
            opts.seed,
            device,
        )
    };
    let adam = AdamWConfig {
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut run = Run::start(
        "pretrain",
        out,
        resume,
        opts.resume_key(),
        opts.seed,
        adam,
        device,
        hooks,
        init,
    )?;
    let schedule = Schedule {
        kind: opts.schedule,
        max_lr: opts.lr,
        min_lr_frac: opts.min_lr_frac,
        warmup_steps: opts.warmup_steps,
        total_steps: opts.steps,
        decay_frac: 0.2,
    };
    let unigram_loss = unigram_baseline(&train, &val, vocab);
    let (b, t) = (opts.batch_size, opts.seq_len);
    let world = run.world;
    let lo = LoopOptions {
        steps: opts.steps,
        grad_accum: opts.grad_accum,
        grad_clip: opts.grad_clip,
        eval_every: opts.eval_every,
        sample_every: opts.sample_every,
        checkpoint_every: opts.checkpoint_every,
    };
    let end = run.train(
        &lo,
        &schedule,
        hooks,
        |rng, _| {
            let (x, y) = rank_batch(&train, rng, world, b, t, device)?;
            Ok((x, y, (b * t) as u64))
        },
        |m, step| {
            let val_loss = evaluate(m, &val, b, t, opts.eval_batches, device)?;
            Ok(EvalReport {
                step,
                val_loss,
                val_bpb: Some(bpb(val_loss, val.bytes_per_token())),
                ..Default::default()
            })
        },
        |run, end| {
            let e = end.last_eval.as_ref();
            let metrics = serde_json::json!({
                "train_loss": end.train_loss,
                "val_loss": e.map(|e| e.val_loss),
                "val_bpb": e.and_then(|e| e.val_bpb),
                "unigram_loss": unigram_loss,
                "tokens": run.tokens,
            });
            run.save(tokenizer, serde_json::json!({ "shards": data }), metrics)
        },
    )?;
    let elapsed = run.elapsed_secs();
    let val_loss = match &end.last_eval {
        Some(e) => e.val_loss,
        None => evaluate(&run.eval_model, &val, b, t, opts.eval_batches, device)?,
    };
    Ok(PretrainSummary {
        steps: run.step,
        tokens: run.tokens,
        params: run.cfg.num_params(),
        train_loss: end.train_loss,
        val_loss,
        val_bpb: bpb(val_loss, val.bytes_per_token()),
        unigram_loss,
        tokens_per_sec: run.tokens as f64 / elapsed.max(1e-9),
        elapsed_secs: elapsed,
    })
}

/// The train and validation splits of the shards in `data`, refused when they were made
/// with another vocabulary than the `vocab` tokens of the tokenizer in use.
pub(crate) fn open_shards(data: &Path, vocab: usize) -> Result<(TokenShards, TokenShards)> {
    let train = TokenShards::open(data, Split::Train)?;
    let val = TokenShards::open(data, Split::Val)?;
    if train.manifest().vocab_size as usize != vocab {
        return Err(TrainError::Data(format!(
            "the shards in {} were made with a vocabulary of {} but the tokenizer has {vocab}: \
             run `ferrochat data prepare` again with this tokenizer",
            data.display(),
            train.manifest().vocab_size
        )));
    }
    Ok((train, val))
}

/// One micro-batch of random windows, (B, T) inputs and targets. Under data parallelism
/// every rank draws the same global batch of `b` rows per rank and reads only its own.
pub(crate) fn rank_batch(
    train: &TokenShards,
    rng: &mut rand_chacha::ChaCha8Rng,
    world: crate::dist::World,
    b: usize,
    t: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let part = world.rank() * b..(world.rank() + 1) * b;
    let (x, y) = train.random_batch_part(rng, b * world.size(), t, part)?;
    Ok((
        Tensor::from_vec(x, (b, t), device)?,
        Tensor::from_vec(y, (b, t), device)?,
    ))
}

/// A new model of `preset` for `tokenizer`'s vocabulary and chat tokens, with seeded
/// initial weights: where pretraining and distillation start.
pub(crate) fn fresh_model(
    preset: &str,
    tokenizer: &Tokenizer,
    seq_len: usize,
    tie_embeddings: bool,
    experts: Option<&MoeOptions>,
    seed: u64,
    device: &Device,
) -> Result<(Config, std::collections::HashMap<String, Tensor>)> {
    let mut cfg = Config::preset(preset, tokenizer.vocab_size(), seq_len)?;
    cfg.tie_word_embeddings = tie_embeddings;
    if let Some(m) = experts {
        cfg = cfg.with_experts(m.experts, m.per_token, m.aux_loss_coef, m.capacity_factor)?;
    }
    let s = tokenizer.special();
    (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) =
        (Some(s.bos), Some(s.end), Some(s.pad));
    let w = weights::init_weights(&cfg, seed, device)?;
    Ok((cfg, w))
}

pub(crate) fn bpb(loss_nats: f64, bytes_per_token: f64) -> f64 {
    loss_nats / std::f64::consts::LN_2 / bytes_per_token.max(1e-9)
}

/// Mean loss over up to `max_batches` fixed validation windows.
pub fn evaluate(
    model: &Llama,
    val: &TokenShards,
    b: usize,
    t: usize,
    max_batches: usize,
    device: &Device,
) -> Result<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for (x, y) in val.val_batches(b, t, Some(max_batches.max(1)))? {
        let rows = x.len() / t;
        let x = Tensor::from_vec(x, (rows, t), device)?;
        let y = Tensor::from_vec(y, (rows, t), device)?;
        sum += model.eval_loss(&x, &y)?.to_scalar::<f32>()? as f64;
        n += 1;
    }
    if n == 0 {
        return Err(TrainError::Data(
            "the validation split is too small for one batch".into(),
        ));
    }
    Ok(sum / n as f64)
}

/// Cross-entropy (nats/token) of validation tokens under add-one-smoothed unigram
/// frequencies of (up to 20M) training tokens.
fn unigram_baseline(train: &TokenShards, val: &TokenShards, vocab: usize) -> f64 {
    let mut counts = vec![1.0f64; vocab];
    let n = train.len().min(20_000_000);
    for i in 0..n {
        if let Some(c) = train.get(i).and_then(|id| counts.get_mut(id as usize)) {
            *c += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    let m = val.len().min(2_000_000);
    let mut nll = 0.0;
    for i in 0..m {
        let c = val
            .get(i)
            .and_then(|id| counts.get(id as usize))
            .copied()
            .unwrap_or(1.0);
        nll -= (c / total).ln();
    }
    nll / m.max(1) as f64
}
