//! Knowledge distillation: a small student learns a large teacher's next-token
//! distributions on pretraining text, not just the one token the text holds. Every
//! position gives the student the teacher's whole ranking of the vocabulary (softened by
//! a temperature), which is more to learn from per token than the text alone.
//!
//! Losses: forward KL(teacher || student) covers every token the teacher finds likely
//! (the classic choice, Hinton et al.); reverse KL(student || teacher) makes the student
//! commit to the teacher's main modes (MiniLLM's argument for small students); `mix`
//! weighs the two. Both are scaled by T², which keeps gradient sizes comparable across
//! temperatures. An optional share of the ordinary next-token loss keeps the student
//! anchored to the text.

use std::path::Path;

use candle_core::{Device, Tensor, D};
use ferrochat_model::{checkpoint, ops, Llama};
use ferrochat_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::hooks::{EvalReport, Hooks};
use crate::optim::AdamWConfig;
use crate::pretrain::{bpb, evaluate, fresh_model, open_shards, rank_batch};
use crate::schedule::{Schedule, ScheduleKind};
use crate::trainer::{LoopOptions, Micro, Run};
use crate::{Result, TrainError};

/// Which divergence the student minimises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlKind {
    /// KL(teacher || student): mass-covering.
    Forward,
    /// KL(student || teacher): mode-seeking.
    Reverse,
    /// `mix_weight` x forward + (1 - `mix_weight`) x reverse.
    Mix,
}

impl std::str::FromStr for KlKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "forward" => Ok(Self::Forward),
            "reverse" => Ok(Self::Reverse),
            "mix" => Ok(Self::Mix),
            o => Err(format!("unknown KL `{o}`: use forward, reverse or mix")),
        }
    }
}

/// Everything `ferrochat distill` sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillOptions {
    pub student_preset: String,
    pub kl: KlKind,
    pub mix_weight: f64,
    pub temperature: f64,
    /// Share of the ordinary next-token loss in the total (0: distillation alone).
    pub hard_weight: f64,
    pub seq_len: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub steps: u64,
    pub lr: f64,
    pub min_lr_frac: f64,
    pub warmup_steps: u64,
    pub schedule: ScheduleKind,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub checkpoint_every: u64,
    pub seed: u64,
}

impl Default for DistillOptions {
    fn default() -> Self {
        Self {
            student_preset: "tiny".into(),
            kl: KlKind::Forward,
            mix_weight: 0.5,
            temperature: 1.0,
            hard_weight: 0.0,
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
            checkpoint_every: 100,
            seed: 42,
        }
    }
}

impl DistillOptions {
    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Options(m.to_string()));
        if self.seq_len < 2 || self.batch_size == 0 || self.grad_accum == 0 || self.steps == 0 {
            return bad("--seq must be at least 2; --batch, --grad-accum and --steps at least 1");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("--temperature must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.mix_weight) || !(0.0..=1.0).contains(&self.hard_weight) {
            return bad("--mix-weight and --hard-weight are shares in [0, 1]");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("--lr must be a positive number");
        }
        Ok(())
    }

    fn resume_key(&self, teacher: &Path) -> serde_json::Value {
        crate::dist::keyed(serde_json::json!({
            "teacher": teacher, "student_preset": self.student_preset, "kl": self.kl,
            "temperature": self.temperature, "hard_weight": self.hard_weight,
            "mix_weight": self.mix_weight, "seq_len": self.seq_len,
            "batch_size": self.batch_size, "grad_accum": self.grad_accum, "seed": self.seed,
        }))
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillSummary {
    pub steps: u64,
    pub tokens: u64,
    pub student_params: usize,
    pub teacher_params: usize,
    /// Next-token loss on the validation split, student and teacher.
    pub val_loss: f64,
    pub teacher_val_loss: f64,
    pub tokens_per_sec: f64,
    pub elapsed_secs: f64,
}

/// log-softmax over the last axis, differentiable (the max is a constant shift, so it
/// is taken without a gradient).
fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.detach().max_keepdim(D::Minus1)?)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// The distillation loss of student logits against teacher logits, both (N, V): the
/// chosen KL at temperature `t`, times t², averaged over the N positions.
pub fn kl_loss(
    student: &Tensor,
    teacher: &Tensor,
    kind: KlKind,
    mix_weight: f64,
    t: f64,
) -> Result<Tensor> {
    let n = student.dim(0)? as f64;
    let ls = log_softmax(&(student / t)?)?;
    let lt = log_softmax(&(teacher.detach() / t)?)?;
    let forward = || -> Result<Tensor> { Ok((lt.exp()? * (&lt - &ls)?)?.sum_all()?) };
    let reverse = || -> Result<Tensor> { Ok((ls.exp()? * (&ls - &lt)?)?.sum_all()?) };
    let kl = match kind {
        KlKind::Forward => forward()?,
        KlKind::Reverse => reverse()?,
        KlKind::Mix => ((forward()? * mix_weight)? + (reverse()? * (1.0 - mix_weight))?)?,
    };
    Ok((kl * (t * t / n))?)
}

/// Trains a student from scratch (or resumes) on `data` against `teacher`, into `out`.
#[allow(clippy::too_many_arguments)]
pub fn distill(
    opts: &DistillOptions,
    teacher_dir: &Path,
    data: &Path,
    tokenizer: &Tokenizer,
    out: &Path,
    resume: bool,
    device: &Device,
    hooks: &mut dyn Hooks,
) -> Result<DistillSummary> {
    opts.check()?;
    let teacher = checkpoint::load_model(teacher_dir, device)?;
    if teacher.config().is_classifier() {
        return Err(TrainError::Options(format!(
            "{} is a scoring model (a reward model): a teacher must be a language model",
            teacher_dir.display()
        )));
    }
    let vocab = tokenizer.vocab_size();
    if teacher.config().vocab_size != vocab {
        return Err(TrainError::Data(format!(
            "the teacher {} has a vocabulary of {} but the tokenizer has {vocab}: the \
             student learns the teacher's distribution over the same tokens",
            teacher_dir.display(),
            teacher.config().vocab_size
        )));
    }
    let (train, val) = open_shards(data, vocab)?;
    let init = || {
        let tied = true;
        fresh_model(
            &opts.student_preset,
            tokenizer,
            opts.seq_len,
            tied,
            None,
            opts.seed,
            device,
        )
    };
    let adam = AdamWConfig {
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut run = Run::start(
        "distill",
        out,
        resume,
        opts.resume_key(teacher_dir),
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
    let (b, t) = (opts.batch_size, opts.seq_len);
    let world = run.world;
    let teacher_val_loss = evaluate(&teacher, &val, b, t, opts.eval_batches, device)?;
    hooks.message(&format!(
        "teacher {} ({:.2}M parameters): validation loss {teacher_val_loss:.3}",
        teacher_dir.display(),
        teacher.config().num_params() as f64 / 1e6
    ));
    let lo = LoopOptions {
        steps: opts.steps,
        grad_accum: opts.grad_accum,
        grad_clip: opts.grad_clip,
        eval_every: opts.eval_every,
        sample_every: 0,
        checkpoint_every: opts.checkpoint_every,
    };
    let micro = |m: &Llama, rng: &mut rand_chacha::ChaCha8Rng, _step: u64| {
        let (x, y) = rank_batch(&train, rng, world, b, t, device)?;
        let y = y.flatten_all()?; // (B * T)
        let teacher_logits = teacher.forward(&x)?.detach(); // (B * T, V)
        let logits = m.forward(&x)?; // (B * T, V)
        let kl = kl_loss(
            &logits,
            &teacher_logits,
            opts.kl,
            opts.mix_weight,
            opts.temperature,
        )?;
        let hard = ops::cross_entropy(&logits, &y)?;
        let loss = ((&kl * (1.0 - opts.hard_weight))? + (&hard * opts.hard_weight)?)?;
        Ok(Micro {
            loss,
            tokens: (b * t) as u64,
            stats: vec![
                ("kl", kl.to_scalar::<f32>()? as f64),
                ("next_token_loss", hard.to_scalar::<f32>()? as f64),
            ],
        })
    };
    let end = run.train_with(
        &lo,
        &schedule,
        hooks,
        micro,
        |m, step| {
            let val_loss = evaluate(m, &val, b, t, opts.eval_batches, device)?;
            let mut r = EvalReport {
                step,
                val_loss,
                val_bpb: Some(bpb(val_loss, val.bytes_per_token())),
                ..Default::default()
            };
            r.stats.insert("teacher_val_loss".into(), teacher_val_loss);
            Ok(r)
        },
        |run, end| {
            let e = end.last_eval.as_ref();
            let metrics = serde_json::json!({
                "train_loss": end.train_loss,
                "val_loss": e.map(|e| e.val_loss),
                "teacher_val_loss": teacher_val_loss,
                "tokens": run.tokens,
            });
            let data = serde_json::json!({ "shards": data, "teacher": teacher_dir });
            run.save(tokenizer, data, metrics)
        },
    )?;
    let elapsed = run.elapsed_secs();
    let val_loss = match &end.last_eval {
        Some(e) => e.val_loss,
        None => evaluate(&run.eval_model, &val, b, t, opts.eval_batches, device)?,
    };
    Ok(DistillSummary {
        steps: run.step,
        tokens: run.tokens,
        student_params: run.cfg.num_params(),
        teacher_params: teacher.config().num_params(),
        val_loss,
        teacher_val_loss,
        tokens_per_sec: run.tokens as f64 / elapsed.max(1e-9),
        elapsed_secs: elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(seed: u64) -> Tensor {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        let v: Vec<f32> = (0..3 * 7)
            .map(|_| rand::Rng::random_range(&mut rng, -2.0..2.0))
            .collect();
        Tensor::from_vec(v, (3, 7), &Device::Cpu).unwrap()
    }

    #[test]
    fn kl_is_zero_on_the_teacher_and_positive_elsewhere() {
        let (a, b) = (logits(1), logits(2));
        for kind in [KlKind::Forward, KlKind::Reverse, KlKind::Mix] {
            let same = kl_loss(&a, &a, kind, 0.5, 2.0).unwrap();
            assert!(same.to_scalar::<f32>().unwrap().abs() < 1e-6);
            let apart = kl_loss(&a, &b, kind, 0.5, 2.0).unwrap();
            assert!(apart.to_scalar::<f32>().unwrap() > 0.01);
        }
        // a shift of every logit changes no distribution
        let shifted = (&a + 3.0).unwrap();
        let l = kl_loss(&shifted, &a, KlKind::Forward, 0.5, 1.0).unwrap();
        assert!(l.to_scalar::<f32>().unwrap().abs() < 1e-5);
    }

    #[test]
    fn kl_gradient_matches_finite_differences() {
        let (s, t) = (logits(3), logits(4));
        for kind in [KlKind::Forward, KlKind::Reverse, KlKind::Mix] {
            let var = candle_core::Var::from_tensor(&s).unwrap();
            let loss = kl_loss(var.as_tensor(), &t, kind, 0.3, 1.5).unwrap();
            let grad = loss.backward().unwrap();
            let g = grad.get(var.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
            let base: Vec<Vec<f32>> = s.to_vec2().unwrap();
            let eps = 1e-2f32;
            for (i, j) in [(0, 0), (1, 3), (2, 6)] {
                let at = |d: f32| {
                    let mut m = base.clone();
                    m[i][j] += d;
                    let x = Tensor::new(m, &Device::Cpu).unwrap();
                    kl_loss(&x, &t, kind, 0.3, 1.5)
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps);
                assert!(
                    (fd - g[i][j]).abs() < 2e-3,
                    "{kind:?} [{i},{j}]: finite difference {fd} vs backward {}",
                    g[i][j]
                );
            }
        }
    }
}
