//! Pretraining: next-token prediction on token shards. Reads top to bottom: open the
//! data, build or resume the model and optimizer, then loop (sample a batch, forward,
//! backward, clip, step), evaluating, sampling and checkpointing at intervals.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use ferrochat_model::{checkpoint, weights, Config, Llama};
use ferrochat_text::{Split, TokenShards};
use ferrochat_tokenizer::Tokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::hooks::{EvalReport, Hooks, StepReport};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::schedule::{Schedule, ScheduleKind};
use crate::state::TrainerState;
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
        serde_json::json!({
            "preset": self.preset, "seq_len": self.seq_len, "batch_size": self.batch_size,
            "grad_accum": self.grad_accum, "seed": self.seed,
        })
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
    let train = TokenShards::open(data, Split::Train)?;
    let val = TokenShards::open(data, Split::Val)?;
    let vocab = tokenizer.vocab_size();
    if train.manifest().vocab_size as usize != vocab {
        return Err(TrainError::Data(format!(
            "the shards in {} were made with a vocabulary of {} but the tokenizer has {vocab}: \
             run `ferrochat data prepare` again with this tokenizer",
            data.display(),
            train.manifest().vocab_size
        )));
    }

    // model, optimizer and sampler position: fresh or from the checkpoint
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let (cfg, init, state) = if resume && checkpoint::resolve(out).is_ok() {
        let (cfg, w) = checkpoint::load(out, device)?;
        let (state, opt_state) = TrainerState::load(&checkpoint::resolve(out)?, device)?;
        if state.options != opts.resume_key() {
            return Err(TrainError::Resume(format!(
                "{} was trained with {} but this run asks for {}",
                out.display(),
                state.options,
                opts.resume_key()
            )));
        }
        rng.set_word_pos(state.word_pos()?);
        trim_metrics(out, state.step);
        (cfg, w, Some((state, opt_state)))
    } else {
        let mut cfg = Config::preset(&opts.preset, vocab, opts.seq_len)?;
        cfg.tie_word_embeddings = opts.tie_embeddings;
        let s = tokenizer.special();
        (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) =
            (Some(s.bos), Some(s.end), Some(s.pad));
        let w = weights::init_weights(&cfg, opts.seed, device)?;
        (cfg, w, None)
    };
    let params = weights::to_vars(&cfg, &init)?;
    drop(init);
    let model = Llama::new(&cfg, &weights::var_tensors(&params, false), device)?;
    // shares the parameters' storage, so it sees every update, but records no graph
    let eval_model = Llama::new(&cfg, &weights::var_tensors(&params, true), device)?;
    let adam = AdamWConfig {
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(params.clone(), adam)?;
    let (mut step, mut tokens, mut elapsed) = (0u64, 0u64, 0.0f64);
    if let Some((state, opt_state)) = &state {
        optimizer.load_state(opt_state)?;
        (step, tokens, elapsed) = (state.step, state.tokens, state.elapsed_secs);
        hooks.message(&format!("resuming {} at step {step}", out.display()));
    }
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
    let mut train_loss = f64::NAN;
    let mut last_eval = None;
    let run_start = Instant::now() - std::time::Duration::from_secs_f64(elapsed);

    while step < opts.steps {
        let t0 = Instant::now();
        let lr = schedule.lr(step);
        let mut grads: Option<candle_core::backprop::GradStore> = None;
        let mut loss_sum = 0.0;
        for _ in 0..opts.grad_accum {
            let (x, y) = train.random_batch(&mut rng, b, t)?;
            let x = Tensor::from_vec(x, (b, t), device)?;
            let y = Tensor::from_vec(y, (b, t), device)?;
            let loss = model.loss(&x, &y)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            let loss = if opts.grad_accum > 1 {
                (loss / opts.grad_accum as f64)?
            } else {
                loss
            };
            let g = loss.backward()?;
            grads = Some(match grads {
                None => g,
                Some(mut acc) => {
                    for (_, v) in &params {
                        if let (Some(a), Some(n)) = (acc.get(v.as_tensor()), g.get(v.as_tensor())) {
                            let sum = (a + n)?;
                            acc.insert(v.as_tensor(), sum);
                        }
                    }
                    acc
                }
            });
        }
        let mut grads = grads.ok_or_else(|| TrainError::Options("no micro-batch ran".into()))?;
        let grad_norm = clip_grad_norm(&mut grads, &params, opts.grad_clip)?;
        optimizer.step(&grads, lr)?;
        drop(grads);
        step += 1;
        tokens += (b * t * opts.grad_accum) as u64;
        train_loss = loss_sum / opts.grad_accum as f64;
        if !train_loss.is_finite() {
            return Err(TrainError::Options(format!(
                "the loss became {train_loss} at step {step}: lower --lr (now {})",
                opts.lr
            )));
        }
        let dt = t0.elapsed().as_secs_f64();
        hooks.on_step(&StepReport {
            step,
            total_steps: opts.steps,
            loss: train_loss,
            lr,
            grad_norm,
            tokens,
            tokens_per_sec: (b * t * opts.grad_accum) as f64 / dt,
            elapsed_secs: run_start.elapsed().as_secs_f64(),
        });
        let last = step == opts.steps;
        if (opts.eval_every > 0 && step % opts.eval_every == 0) || last {
            let val_loss = evaluate(&eval_model, &val, b, t, opts.eval_batches, device)?;
            let r = EvalReport {
                step,
                val_loss,
                val_bpb: bpb(val_loss, val.bytes_per_token()),
            };
            hooks.on_eval(&r);
            last_eval = Some(r);
        }
        if opts.sample_every > 0 && (step % opts.sample_every == 0 || last) {
            hooks.sample(&eval_model, step);
        }
        if (opts.checkpoint_every > 0 && step % opts.checkpoint_every == 0) || last {
            elapsed = run_start.elapsed().as_secs_f64();
            let state = TrainerState {
                stage: "pretrain".into(),
                step,
                tokens,
                rng_word_pos: rng.get_word_pos().to_string(),
                elapsed_secs: elapsed,
                options: opts.resume_key(),
            };
            let metrics = serde_json::json!({
                "train_loss": train_loss,
                "val_loss": last_eval.as_ref().map(|e| e.val_loss),
                "val_bpb": last_eval.as_ref().map(|e| e.val_bpb),
                "unigram_loss": unigram_loss,
                "tokens": tokens,
            });
            save(
                out, &cfg, &params, tokenizer, &optimizer, &state, metrics, data,
            )?;
            hooks.on_checkpoint(out, step);
        }
    }
    let elapsed = run_start.elapsed().as_secs_f64();
    let val_loss = match &last_eval {
        Some(e) => e.val_loss,
        None => evaluate(&eval_model, &val, b, t, opts.eval_batches, device)?,
    };
    Ok(PretrainSummary {
        steps: step,
        tokens,
        params: cfg.num_params(),
        train_loss,
        val_loss,
        val_bpb: bpb(val_loss, val.bytes_per_token()),
        unigram_loss,
        tokens_per_sec: tokens as f64 / elapsed.max(1e-9),
        elapsed_secs: elapsed,
    })
}

fn bpb(loss_nats: f64, bytes_per_token: f64) -> f64 {
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
        sum += model.loss(&x, &y)?.to_scalar::<f32>()? as f64;
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

#[allow(clippy::too_many_arguments)]
fn save(
    out: &Path,
    cfg: &Config,
    params: &[(String, Var)],
    tokenizer: &Tokenizer,
    optimizer: &AdamW,
    state: &TrainerState,
    metrics: serde_json::Value,
    data: &Path,
) -> Result<()> {
    let tensors: HashMap<String, Tensor> = params
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let meta = checkpoint::Meta {
        stage: "pretrain".into(),
        step: state.step,
        data: serde_json::json!({ "shards": data }),
        metrics,
        ..Default::default()
    };
    let opt_state = optimizer.state()?;
    let live_metrics = out.join("metrics.jsonl");
    checkpoint::save(out, cfg, &tensors, &meta, |dir| {
        tokenizer
            .save(dir)
            .map_err(|e| ferrochat_model::ModelError::Io(e.to_string()))?;
        state
            .save(dir, opt_state)
            .map_err(|e| ferrochat_model::ModelError::Io(e.to_string()))?;
        if live_metrics.exists() {
            std::fs::copy(&live_metrics, dir.join("metrics.jsonl")).map_err(|e| {
                ferrochat_model::ModelError::Io(format!("{}: {e}", live_metrics.display()))
            })?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Drops metrics lines logged after the checkpoint a run resumes from.
fn trim_metrics(out: &Path, step: u64) {
    let path = out.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_none_or(|s| s <= step)
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    let _ = std::fs::write(&path, body);
}
