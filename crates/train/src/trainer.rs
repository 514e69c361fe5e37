//! The loop every training stage shares: fresh start or exact resume from a checkpoint
//! folder, then (micro-batches, backward, clip, AdamW step) with periodic evaluation,
//! samples and atomic checkpoints. A stage supplies the starting weights, its batches,
//! its evaluation and what to record in the checkpoint; the rest is here, once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, Var};
use ferrochat_model::{checkpoint, ops, weights, Config, Llama};
use ferrochat_tokenizer::Tokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dist::{self, World};
use crate::hooks::{EvalReport, Hooks, StepReport};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::schedule::Schedule;
use crate::state::TrainerState;
use crate::{Result, TrainError};

/// How often the loop does what, and how it steps.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    pub steps: u64,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub grad_clip: f64,
    /// 0 disables (the last step always evaluates and checkpoints).
    pub eval_every: u64,
    pub sample_every: u64,
    pub checkpoint_every: u64,
}

/// The arithmetic of the training forward. The parameters, the optimizer and the
/// gradients it steps with are f32 in every case; what changes is the matrix products
/// (see [`ferrochat_model::ops::autocast`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// bf16 products on a GPU (its tensor cores), f32 on the CPU (whose fused kernels
    /// are f32, and faster there than bf16).
    #[default]
    Auto,
    F32,
    /// Mixed precision: bf16 products, f32 master weights.
    Bf16,
}

impl Precision {
    /// The autocast dtype of a forward on `device`.
    pub fn autocast(self, device: &Device) -> Option<DType> {
        match self {
            Self::Auto => device.is_cuda().then_some(DType::BF16),
            Self::F32 => None,
            Self::Bf16 => Some(DType::BF16),
        }
    }
}

static PRECISION: OnceLock<Precision> = OnceLock::new();

/// Sets the process's training precision (the command line's `--precision`), once.
pub fn set_precision(p: Precision) {
    let _ = PRECISION.set(p);
}

/// The process's training precision; [`Precision::Auto`] unless set.
pub fn precision() -> Precision {
    PRECISION.get().copied().unwrap_or_default()
}

/// What one micro-batch contributes: its loss (differentiable), the tokens it trained
/// on, and the stage's own figures to log with the step (averaged over micro-batches).
pub struct Micro {
    pub loss: Tensor,
    pub tokens: u64,
    pub stats: Vec<(&'static str, f64)>,
}

/// Where a stage keeps trainable heads that are not part of the model folder (a PPO
/// value head): beside the model in the checkpoint, for resume.
pub const HEADS_FILE: &str = "heads.safetensors";

/// A model in training, with its optimizer and position.
pub struct Run<'a> {
    pub stage: &'static str,
    pub out: &'a Path,
    pub cfg: Config,
    pub params: Vec<(String, Var)>,
    /// Trained with the model but saved apart from it (see [`HEADS_FILE`]), by name.
    pub heads: Vec<(String, Var)>,
    /// Records the graph for backward.
    pub model: Llama,
    /// Shares the parameters' storage (sees every update) but records no graph.
    pub eval_model: Llama,
    pub optimizer: AdamW,
    pub step: u64,
    pub tokens: u64,
    /// The stream batches are drawn from; its position is saved, so a resumed run draws
    /// the same batches an unbroken one would.
    pub rng: ChaCha8Rng,
    /// The data-parallel ranks training together (one process alone by default): each
    /// draws its share of every batch, gradients are averaged over them, and rank 0
    /// evaluates, samples and writes checkpoints.
    pub world: World,
    /// Weights held at zero through training (pruned ones): each variable and its 0/1 mask,
    /// reapplied after every optimizer step. See [`Run::keep_zeros`].
    pub zero_masks: Vec<(Var, Tensor)>,
    /// The dtype the training forward's matrix products are cast to, if any (from
    /// [`precision`] and the device); evaluation runs in f32.
    pub autocast: Option<DType>,
    started: Instant,
    resume_key: serde_json::Value,
}

/// What the loop saw last.
#[derive(Debug, Clone, Default)]
pub struct LoopEnd {
    pub train_loss: f64,
    pub last_eval: Option<EvalReport>,
}

impl<'a> Run<'a> {
    /// Resumes from `out` when asked and it holds a checkpoint (refusing if it was made
    /// with other `resume_key` options), else starts from `init()`. Tensors `init` gives
    /// beyond the config's parameters become [`Run::heads`].
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        stage: &'static str,
        out: &'a Path,
        resume: bool,
        resume_key: serde_json::Value,
        seed: u64,
        adam: AdamWConfig,
        device: &Device,
        hooks: &mut dyn Hooks,
        init: impl FnOnce() -> Result<(Config, HashMap<String, Tensor>)>,
    ) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        if dist::world().is_main() {
            check_writable(out)?;
        }
        let (cfg, w, state) = if resume && checkpoint::resolve(out).is_ok() {
            let (cfg, w) = checkpoint::load(out, device)?;
            let (state, opt_state) = TrainerState::load(&checkpoint::resolve(out)?, device)?;
            if state.stage != stage {
                return Err(TrainError::Resume(format!(
                    "{} holds a {} checkpoint, not {stage}: choose another --output",
                    out.display(),
                    state.stage
                )));
            }
            if state.options != resume_key {
                return Err(TrainError::Resume(format!(
                    "{} was trained with {} but this run asks for {resume_key}",
                    out.display(),
                    state.options,
                )));
            }
            rng.set_word_pos(state.word_pos()?);
            if dist::world().is_main() {
                trim_metrics(out, state.step);
            }
            let mut w = w;
            let heads = checkpoint::resolve(out)?.join(HEADS_FILE);
            if heads.exists() {
                w.extend(checkpoint::load_tensors(&heads, device)?);
            }
            (cfg, w, Some((state, opt_state)))
        } else {
            let (cfg, w) = init()?;
            (cfg, w, None)
        };
        let names: std::collections::HashSet<String> = weights::param_shapes(&cfg)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut head_names: Vec<&String> = w.keys().filter(|n| !names.contains(*n)).collect();
        head_names.sort();
        let heads = head_names
            .into_iter()
            .map(|n| Ok((n.clone(), Var::from_tensor(&w[n])?)))
            .collect::<Result<Vec<_>>>()?;
        let model_w: HashMap<String, Tensor> = w
            .iter()
            .filter(|(n, _)| names.contains(*n))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        let params = weights::to_vars(&cfg, &model_w)?;
        drop((w, model_w));
        let model = Llama::new(&cfg, &weights::var_tensors(&params, false), device)?;
        let eval_model = Llama::new(&cfg, &weights::var_tensors(&params, true), device)?;
        let mut optimizer = AdamW::new(params.iter().chain(&heads).cloned().collect(), adam)?;
        let (mut step, mut tokens, mut elapsed) = (0, 0, 0.0);
        if let Some((state, opt_state)) = &state {
            optimizer.load_state(opt_state)?;
            (step, tokens, elapsed) = (state.step, state.tokens, state.elapsed_secs);
            hooks.message(&format!("resuming {} at step {step}", out.display()));
        }
        let world = dist::world();
        let all: Vec<(String, Var)> = params.iter().chain(&heads).cloned().collect();
        dist::sync_start(world, &all, step)?;
        let autocast = precision().autocast(device);
        if let Some(d) = autocast {
            hooks.message(&format!(
                "mixed precision: {d:?} matrix products, f32 weights and optimizer"
            ));
        }
        Ok(Self {
            stage,
            out,
            cfg,
            params,
            heads,
            model,
            eval_model,
            optimizer,
            step,
            tokens,
            rng,
            world,
            zero_masks: Vec::new(),
            autocast,
            started: Instant::now() - Duration::from_secs_f64(elapsed),
            resume_key,
        })
    }

    /// Keeps the weights that are zero now at zero for the rest of training (recovery
    /// fine-tuning of a pruned model keeps its sparsity): every matrix with zeros in it
    /// gets a mask. Returns the share of the matrices' weights held at zero.
    pub fn keep_zeros(&mut self) -> Result<f64> {
        let (mut zeros, mut total) = (0usize, 0usize);
        self.zero_masks.clear();
        for (_, v) in &self.params {
            let t = v.as_tensor();
            if t.rank() != 2 {
                continue;
            }
            let mask = t.ne(0f32)?.to_dtype(t.dtype())?;
            let kept = mask
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()? as usize;
            total += t.elem_count();
            if kept < t.elem_count() {
                zeros += t.elem_count() - kept;
                self.zero_masks.push((v.clone(), mask));
            }
        }
        Ok(zeros as f64 / total.max(1) as f64)
    }

    /// Seconds of training so far, across resumes.
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Runs to `lo.steps` on next-token prediction. `batch` gives one micro-batch (inputs
    /// and targets, (B, T) u32, targets [`ferrochat_model::ops::IGNORE`] where nothing is
    /// learned) and the number of tokens it trains on; `eval` measures the model; `save`
    /// writes a checkpoint given the metrics to record.
    pub fn train(
        &mut self,
        lo: &LoopOptions,
        schedule: &Schedule,
        hooks: &mut dyn Hooks,
        mut batch: impl FnMut(&mut ChaCha8Rng, u64) -> Result<(Tensor, Tensor, u64)>,
        eval: impl FnMut(&Llama, u64) -> Result<EvalReport>,
        save: impl FnMut(&Run, &LoopEnd) -> Result<()>,
    ) -> Result<LoopEnd> {
        let micro = |m: &Llama, rng: &mut ChaCha8Rng, step: u64| {
            let (x, y, tokens) = batch(rng, step)?;
            let (loss, balance) = m.train_loss(&x, &y)?;
            Ok(Micro {
                loss,
                tokens,
                // a mixture of experts logs how evenly it routes (1: perfectly)
                stats: balance.map(|b| ("router_balance", b)).into_iter().collect(),
            })
        };
        self.train_with(lo, schedule, hooks, micro, eval, save)
    }

    /// Runs to `lo.steps` on any loss: `micro` computes one micro-batch's loss with the
    /// graph-recording model (and [`Run::heads`], which the stage holds clones of).
    pub fn train_with(
        &mut self,
        lo: &LoopOptions,
        schedule: &Schedule,
        hooks: &mut dyn Hooks,
        mut micro: impl FnMut(&Llama, &mut ChaCha8Rng, u64) -> Result<Micro>,
        mut eval: impl FnMut(&Llama, u64) -> Result<EvalReport>,
        mut save: impl FnMut(&Run, &LoopEnd) -> Result<()>,
    ) -> Result<LoopEnd> {
        let mut end = LoopEnd {
            train_loss: f64::NAN,
            last_eval: None,
        };
        // every trained variable: the model's and the stage's heads
        let trained: Vec<(String, Var)> = self.params.iter().chain(&self.heads).cloned().collect();
        while self.step < lo.steps {
            let t0 = Instant::now();
            let lr = schedule.lr(self.step);
            let mut grads: Option<candle_core::backprop::GradStore> = None;
            let (mut loss_sum, mut step_tokens) = (0.0, 0u64);
            let mut stats: Vec<(&'static str, f64)> = Vec::new();
            for _ in 0..lo.grad_accum {
                let m = {
                    let _mixed = ops::autocast(self.autocast)?;
                    micro(&self.model, &mut self.rng, self.step)?
                };
                step_tokens += m.tokens;
                for (k, v) in m.stats {
                    match stats.iter_mut().find(|s| s.0 == k) {
                        Some(s) => s.1 += v / lo.grad_accum as f64,
                        None => stats.push((k, v / lo.grad_accum as f64)),
                    }
                }
                let loss = m.loss;
                let scaled = if lo.grad_accum > 1 {
                    (&loss / lo.grad_accum as f64)?
                } else {
                    loss.clone()
                };
                let g = scaled.backward()?;
                // read after the backward pass is queued: on a GPU, reading it first would
                // leave the device idle while the host queues the backward kernels
                loss_sum += loss.to_scalar::<f32>()? as f64;
                grads = Some(match grads {
                    None => g,
                    Some(mut acc) => {
                        for (_, v) in &trained {
                            if let (Some(a), Some(n)) =
                                (acc.get(v.as_tensor()), g.get(v.as_tensor()))
                            {
                                let sum = (a + n)?;
                                acc.insert(v.as_tensor(), sum);
                            }
                        }
                        acc
                    }
                });
            }
            let mut grads =
                grads.ok_or_else(|| TrainError::Options("no micro-batch ran".into()))?;
            // every rank steps with the mean over all ranks' micro-batches
            dist::average_grads(self.world, &mut grads, &trained)?;
            let mut figures = [loss_sum, step_tokens as f64];
            self.world.sum_f64(&mut figures);
            let ranks = self.world.size() as f64;
            let (loss_sum, step_tokens) = (figures[0] / ranks, figures[1] as u64);
            let grad_norm = clip_grad_norm(&mut grads, &trained, lo.grad_clip)?;
            self.optimizer.step(&grads, lr)?;
            drop(grads);
            for (v, mask) in &self.zero_masks {
                v.set(&v.as_tensor().mul(mask)?)?;
            }
            self.step += 1;
            self.tokens += step_tokens;
            end.train_loss = loss_sum / lo.grad_accum as f64;
            if !end.train_loss.is_finite() {
                return Err(TrainError::Options(format!(
                    "the loss became {} at step {}: lower --lr (now {})",
                    end.train_loss, self.step, schedule.max_lr
                )));
            }
            let dt = t0.elapsed().as_secs_f64();
            hooks.on_step(&StepReport {
                step: self.step,
                total_steps: lo.steps,
                loss: end.train_loss,
                lr,
                grad_norm,
                tokens: self.tokens,
                tokens_per_sec: step_tokens as f64 / dt,
                elapsed_secs: self.elapsed_secs(),
                stats: stats.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            });
            let last = self.step == lo.steps;
            if !self.world.is_main() {
                continue;
            }
            if (lo.eval_every > 0 && self.step.is_multiple_of(lo.eval_every)) || last {
                let r = eval(&self.eval_model, self.step)?;
                hooks.on_eval(&r);
                end.last_eval = Some(r);
            }
            if lo.sample_every > 0 && (self.step.is_multiple_of(lo.sample_every) || last) {
                hooks.sample(&self.eval_model, self.step);
            }
            if (lo.checkpoint_every > 0 && self.step.is_multiple_of(lo.checkpoint_every)) || last {
                save(self, &end)?;
                hooks.on_checkpoint(self.out, self.step);
            }
        }
        dist::check_in_sync(self.world, &trained)?;
        Ok(end)
    }

    /// Writes the model, the tokenizer and the trainer state to `out` atomically.
    pub fn save(
        &self,
        tokenizer: &Tokenizer,
        data: serde_json::Value,
        metrics: serde_json::Value,
    ) -> Result<()> {
        let state = TrainerState {
            stage: self.stage.into(),
            step: self.step,
            tokens: self.tokens,
            rng_word_pos: self.rng.get_word_pos().to_string(),
            elapsed_secs: self.elapsed_secs(),
            options: self.resume_key.clone(),
        };
        let tensors: HashMap<String, Tensor> = self
            .params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let meta = checkpoint::Meta {
            stage: self.stage.into(),
            step: self.step,
            data,
            metrics,
            ..Default::default()
        };
        let opt_state = self.optimizer.state()?;
        let live_metrics = self.out.join("metrics.jsonl");
        let heads: HashMap<String, Tensor> = self
            .heads
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        checkpoint::save(self.out, &self.cfg, &tensors, &meta, |dir| {
            let io = |e: String| ferrochat_model::ModelError::Io(e);
            if !heads.is_empty() {
                checkpoint::save_tensors(&dir.join(HEADS_FILE), &heads)?;
            }
            tokenizer.save(dir).map_err(|e| io(e.to_string()))?;
            state.save(dir, opt_state).map_err(|e| io(e.to_string()))?;
            if live_metrics.exists() {
                std::fs::copy(&live_metrics, dir.join("metrics.jsonl"))
                    .map_err(|e| io(format!("{}: {e}", live_metrics.display())))?;
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// Fails now, not at the first checkpoint after minutes of training, when `out` cannot
/// be written (a read-only folder, a full disk).
fn check_writable(out: &Path) -> Result<()> {
    let probe = out.join(".ferrochat-write-test");
    let written = std::fs::create_dir_all(out)
        .and_then(|()| std::fs::write(&probe, vec![0u8; 64 << 10]))
        .and_then(|()| std::fs::remove_file(&probe));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&probe);
        TrainError::Io(format!(
            "cannot write checkpoints into {}: {e}",
            out.display()
        ))
    })
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
