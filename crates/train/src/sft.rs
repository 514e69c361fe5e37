//! Supervised fine-tuning: a pretrained model learns to answer from dialogues. Each
//! conversation is rendered by the chat template, which marks the assistant's tokens as
//! the only targets; conversations are packed into rows of the context length (or one per
//! row, padded), and the pretraining loop does the rest. A share of pretraining text can
//! be mixed in so the model keeps its general language.

use std::path::Path;

use candle_core::{Device, Tensor};
use ferrochat_model::{checkpoint, ops::IGNORE};
use ferrochat_text::{Conversation, Split, TokenShards};
use ferrochat_tokenizer::{ChatEncoding, Tokenizer};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::epochs::Epochs;
use crate::hooks::{EvalReport, Hooks};
use crate::optim::AdamWConfig;
use crate::schedule::{Schedule, ScheduleKind};
use crate::trainer::{LoopOptions, Run};
use crate::{Result, TrainError};

/// Everything `ferrochat sft` sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftOptions {
    /// Tokens per row; 0: the base model's context.
    pub seq_len: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Optimizer steps; 0: as many as `epochs` passes over the data take.
    pub steps: u64,
    pub epochs: f64,
    pub lr: f64,
    pub min_lr_frac: f64,
    pub warmup_steps: u64,
    pub schedule: ScheduleKind,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub sample_every: u64,
    pub checkpoint_every: u64,
    pub seed: u64,
    /// Pack several conversations into a row (else one per row, padded).
    pub pack: bool,
    /// Share of rows taken from pretraining text instead of dialogues (needs shards).
    pub mix_pretrain: f64,
    /// Hold the base model's zero weights at zero (recovery fine-tuning after pruning).
    pub keep_sparsity: bool,
}

impl Default for SftOptions {
    fn default() -> Self {
        Self {
            seq_len: 0,
            batch_size: 8,
            grad_accum: 1,
            steps: 0,
            epochs: 2.0,
            lr: 1e-3,
            min_lr_frac: 0.0,
            warmup_steps: 10,
            schedule: ScheduleKind::Cosine,
            weight_decay: 0.0,
            grad_clip: 1.0,
            eval_every: 50,
            eval_batches: 16,
            sample_every: 0,
            checkpoint_every: 100,
            seed: 42,
            pack: true,
            mix_pretrain: 0.0,
            keep_sparsity: false,
        }
    }
}

impl SftOptions {
    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Options(m.to_string()));
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("--batch and --grad-accum must be at least 1");
        }
        if self.steps == 0 && !(self.epochs > 0.0 && self.epochs.is_finite()) {
            return bad("give --steps or a positive --epochs");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("--lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.mix_pretrain) {
            return bad("--mix-pretrain is a share of rows in [0, 1)");
        }
        Ok(())
    }

    fn resume_key(&self, seq_len: usize) -> serde_json::Value {
        let mut key = serde_json::json!({
            "seq_len": seq_len, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
            "seed": self.seed, "pack": self.pack, "mix_pretrain": self.mix_pretrain,
        });
        if self.keep_sparsity {
            key["keep_sparsity"] = true.into();
        }
        crate::dist::keyed(key)
    }
}

/// Training rows: `len + 1` tokens each and whether each token is a target.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub len: usize,
    pub ids: Vec<Vec<u32>>,
    pub mask: Vec<Vec<bool>>,
}

/// How the dialogues fitted the rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PackStats {
    pub conversations: usize,
    /// Conversations that lost their oldest turns to fit the context.
    pub truncated: usize,
    /// Conversations left out because not one answer token fitted.
    pub too_long: usize,
    pub rows: usize,
    /// Share of row positions holding a conversation token (not padding).
    pub fill: f64,
    /// Share of row positions that are training targets.
    pub target_share: f64,
}

impl Rows {
    /// Renders `convs` (each cut to fit `len + 1` tokens by dropping its oldest turns) and
    /// packs them into rows, first fit in the given order, or one per row.
    pub fn build(
        tok: &Tokenizer,
        convs: &[Conversation],
        len: usize,
        pack: bool,
    ) -> Result<(Rows, PackStats)> {
        let cap = len + 1;
        let mut stats = PackStats::default();
        let mut encs: Vec<ChatEncoding> = Vec::with_capacity(convs.len());
        for c in convs {
            match tok.encode_chat_fitting(&c.messages, cap)? {
                Some(f) => {
                    // whole: its last target is the end of the answer's turn
                    let last_target = f.value.ids.iter().zip(&f.value.mask).rev().find(|p| *p.1);
                    let whole = last_target.map(|p| *p.0) == Some(tok.special().end);
                    stats.truncated += usize::from(f.dropped > 0 || !whole);
                    encs.push(f.value);
                }
                None => stats.too_long += 1,
            }
        }
        stats.conversations = encs.len();
        let pad = tok.special().pad;
        let mut rows = Rows {
            len,
            ..Default::default()
        };
        // first fit: each conversation goes into the first row with room
        let mut room: Vec<usize> = Vec::new();
        for e in encs {
            let n = e.ids.len();
            let slot = if pack {
                room.iter().position(|&r| r >= n)
            } else {
                None
            };
            let i = slot.unwrap_or_else(|| {
                rows.ids.push(Vec::with_capacity(cap));
                rows.mask.push(Vec::with_capacity(cap));
                room.push(cap);
                room.len() - 1
            });
            rows.ids[i].extend_from_slice(&e.ids);
            rows.mask[i].extend_from_slice(&e.mask);
            room[i] -= n;
        }
        let (mut used, mut targets) = (0usize, 0usize);
        for (ids, mask) in rows.ids.iter_mut().zip(&mut rows.mask) {
            used += ids.len();
            targets += mask[1..].iter().filter(|&&m| m).count();
            ids.resize(cap, pad);
            mask.resize(cap, false);
        }
        stats.rows = rows.ids.len();
        let positions = (stats.rows * len).max(1) as f64;
        stats.fill = used as f64 / (stats.rows * cap).max(1) as f64;
        stats.target_share = targets as f64 / positions;
        Ok((rows, stats))
    }

    /// Inputs and targets of row `i`: targets are [`IGNORE`] where the next token is not
    /// an assistant token.
    fn xy(&self, i: usize, x: &mut Vec<u32>, y: &mut Vec<u32>) {
        let (ids, mask) = (&self.ids[i], &self.mask[i]);
        x.extend_from_slice(&ids[..self.len]);
        y.extend((1..=self.len).map(|j| if mask[j] { ids[j] } else { IGNORE }));
    }
}

/// What a finished SFT run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftSummary {
    pub steps: u64,
    pub tokens: u64,
    pub train_loss: f64,
    /// Mean loss on the validation dialogues' answer tokens, before and after.
    pub val_loss_before: f64,
    pub val_loss: f64,
    pub pack: PackStats,
    pub tokens_per_sec: f64,
    pub elapsed_secs: f64,
}

/// Fine-tunes the checkpoint `base` (whose tokenizer is `tokenizer`) on `train`
/// dialogues into `out`, measuring on `val`. `pretrain_mix` supplies the shards for
/// [`SftOptions::mix_pretrain`].
#[allow(clippy::too_many_arguments)]
pub fn sft(
    opts: &SftOptions,
    base: &Path,
    tokenizer: &Tokenizer,
    train: &[Conversation],
    val: &[Conversation],
    pretrain_mix: Option<&Path>,
    out: &Path,
    resume: bool,
    device: &Device,
    hooks: &mut dyn Hooks,
) -> Result<SftSummary> {
    opts.check()?;
    let base_cfg = checkpoint::load_config(base)?;
    let ctx = base_cfg.max_position_embeddings;
    let t = if opts.seq_len == 0 { ctx } else { opts.seq_len };
    if t < 2 || t > ctx {
        return Err(TrainError::Options(format!(
            "--seq {t} must be between 2 and the base model's context ({ctx})"
        )));
    }
    let mix = match (opts.mix_pretrain > 0.0, pretrain_mix) {
        (true, Some(dir)) => Some(TokenShards::open(dir, Split::Train)?),
        (true, None) => {
            return Err(TrainError::Options(
                "--mix-pretrain needs --pretrain-data (token shards)".into(),
            ))
        }
        _ => None,
    };
    // a fixed shuffle before packing, so rows mix conversations of every kind
    let mut order: Vec<Conversation> = train.to_vec();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5f7));
    let (rows, stats) = Rows::build(tokenizer, &order, t, opts.pack)?;
    if rows.ids.is_empty() {
        return Err(TrainError::Data(
            "no training dialogue fits the context: not one answer token is left".into(),
        ));
    }
    let (val_rows, _) = Rows::build(tokenizer, val, t, opts.pack)?;
    hooks.message(&format!(
        "{} dialogues ({} cut to fit, {} too long) packed into {} rows of {t} tokens: {:.0}% filled, {:.0}% targets",
        stats.conversations,
        stats.truncated,
        stats.too_long,
        stats.rows,
        stats.fill * 100.0,
        stats.target_share * 100.0
    ));
    let b = opts.batch_size;
    let steps = if opts.steps > 0 {
        opts.steps
    } else {
        let ranks = crate::dist::world().size();
        let per_step = (b * opts.grad_accum * ranks) as f64 * (1.0 - opts.mix_pretrain);
        ((stats.rows as f64 * opts.epochs / per_step).ceil() as u64).max(1)
    };
    let adam = AdamWConfig {
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut run = Run::start(
        "sft",
        out,
        resume,
        opts.resume_key(t),
        opts.seed,
        adam,
        device,
        hooks,
        || Ok(checkpoint::load(base, device)?),
    )?;
    if run.cfg.vocab_size != tokenizer.vocab_size() {
        return Err(TrainError::Data(format!(
            "{}: the model's vocabulary ({}) and its tokenizer's ({}) differ",
            base.display(),
            run.cfg.vocab_size,
            tokenizer.vocab_size()
        )));
    }
    if opts.keep_sparsity {
        let share = run.keep_zeros()?;
        hooks.message(&format!(
            "keeping the base model's zero weights at zero: {:.1}% of the matrices' weights",
            100.0 * share
        ));
    }
    let val_loss_before = eval_rows(&run.eval_model, &val_rows, b, opts.eval_batches, device)?;
    let schedule = Schedule {
        kind: opts.schedule,
        max_lr: opts.lr,
        min_lr_frac: opts.min_lr_frac,
        warmup_steps: opts.warmup_steps.min(steps / 4),
        total_steps: steps,
        decay_frac: 0.2,
    };
    let lo = LoopOptions {
        steps,
        grad_accum: opts.grad_accum,
        grad_clip: opts.grad_clip,
        eval_every: opts.eval_every,
        sample_every: opts.sample_every,
        checkpoint_every: opts.checkpoint_every,
    };
    // the row stream: every epoch visits the rows in a fresh seeded order. A row slot
    // given to pretraining text still advances it (that dialogue row sits this epoch
    // out), so the position is `step * rows per step` and a resumed run continues exactly.
    let (rank, ranks) = (run.world.rank(), run.world.size());
    let mut epochs = Epochs::new(
        rows.ids.len(),
        opts.seed,
        run.step * (opts.grad_accum * b * ranks) as u64,
    );
    let data_desc =
        serde_json::json!({ "base": base, "dialogues": stats.conversations, "pack": stats });
    let end = run.train(
        &lo,
        &schedule,
        hooks,
        |rng, _| {
            // one global batch of `b` rows per rank, drawn alike on every rank; this
            // rank keeps its own rows
            let (mut x, mut y) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
            for i in 0..b * ranks {
                let row = epochs.next_index();
                let own = i / b == rank;
                if let Some(m) = mix
                    .as_ref()
                    .filter(|_| rng.random::<f64>() < opts.mix_pretrain)
                {
                    let (px, py) = m.random_batch_part(rng, 1, t, 0..usize::from(own))?;
                    x.extend(px);
                    y.extend(py);
                    continue;
                }
                if own {
                    rows.xy(row, &mut x, &mut y);
                }
            }
            let x = Tensor::from_vec(x, (b, t), device)?;
            let y = Tensor::from_vec(y, (b, t), device)?;
            Ok((x, y, (b * t) as u64))
        },
        |m, step| {
            Ok(EvalReport {
                step,
                val_loss: eval_rows(m, &val_rows, b, opts.eval_batches, device)?,
                val_bpb: None,
                ..Default::default()
            })
        },
        |run, end| {
            let metrics = serde_json::json!({
                "train_loss": end.train_loss,
                "val_loss": end.last_eval.as_ref().map(|e| e.val_loss),
                "val_loss_before": val_loss_before,
                "tokens": run.tokens,
            });
            run.save(tokenizer, data_desc.clone(), metrics)
        },
    )?;
    let elapsed = run.elapsed_secs();
    let val_loss = match &end.last_eval {
        Some(e) => e.val_loss,
        None => eval_rows(&run.eval_model, &val_rows, b, opts.eval_batches, device)?,
    };
    Ok(SftSummary {
        steps: run.step,
        tokens: run.tokens,
        train_loss: end.train_loss,
        val_loss_before,
        val_loss,
        pack: stats,
        tokens_per_sec: run.tokens as f64 / elapsed.max(1e-9),
        elapsed_secs: elapsed,
    })
}

/// Mean loss over the answer tokens of up to `max_batches` batches of rows (NaN when
/// there are none).
fn eval_rows(
    model: &ferrochat_model::Llama,
    rows: &Rows,
    b: usize,
    max_batches: usize,
    device: &Device,
) -> Result<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    let t = rows.len;
    for chunk in (0..rows.ids.len())
        .collect::<Vec<_>>()
        .chunks(b)
        .take(max_batches.max(1))
    {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for &i in chunk {
            rows.xy(i, &mut x, &mut y);
        }
        let x = Tensor::from_vec(x, (chunk.len(), t), device)?;
        let y = Tensor::from_vec(y, (chunk.len(), t), device)?;
        sum += model.eval_loss(&x, &y)?.to_scalar::<f32>()? as f64;
        n += 1;
    }
    Ok(if n == 0 { f64::NAN } else { sum / n as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrochat_model::{weights, Config, Llama};
    use ferrochat_text::Message;

    fn tok() -> Tokenizer {
        let text = "The capital of France is Paris. What is seven times eight? It is 56. \
                    法国的首都是巴黎。 Hello there, how are you today?";
        let opts = ferrochat_tokenizer::TrainOptions {
            vocab_size: 300,
            ..Default::default()
        };
        Tokenizer::train((0..50).map(|i| format!("{text} {i}")), &opts).unwrap()
    }

    fn dialogues() -> Vec<Conversation> {
        vec![
            Conversation::new(vec![
                Message::system("Be brief."),
                Message::user("The capital of France?"),
                Message::assistant("Paris."),
            ]),
            Conversation::new(vec![
                Message::user("Seven times eight?"),
                Message::assistant("56."),
                Message::user("法国的首都?"),
                Message::assistant("巴黎。"),
            ]),
        ]
    }

    /// The decoded targets of every row, in order.
    fn targets(tok: &Tokenizer, rows: &Rows) -> Vec<String> {
        (0..rows.ids.len())
            .map(|i| {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                rows.xy(i, &mut x, &mut y);
                let t: Vec<u32> = y.into_iter().filter(|&t| t != IGNORE).collect();
                tok.decode(&t, true).unwrap()
            })
            .collect()
    }

    #[test]
    fn only_the_assistants_tokens_are_targets_packed_or_padded() {
        let tok = tok();
        let lens: Vec<usize> = dialogues()
            .iter()
            .map(|d| tok.encode_chat(&d.messages).unwrap().ids.len())
            .collect();
        let t = lens[0] + lens[1] + 3;
        let (rows, stats) = Rows::build(&tok, &dialogues(), t, true).unwrap();
        assert_eq!(stats.rows, 1, "both dialogues fit one row");
        assert_eq!(
            targets(&tok, &rows),
            vec!["Paris.<|end|>56.<|end|>巴黎。<|end|>"]
        );
        // inputs are the row, targets the row shifted by one
        let (mut x, mut y) = (Vec::new(), Vec::new());
        rows.xy(0, &mut x, &mut y);
        for (j, &target) in y.iter().enumerate() {
            if target != IGNORE {
                assert_eq!(target, rows.ids[0][j + 1]);
            }
        }
        assert_eq!(x, rows.ids[0][..t]);
        let (rows, stats) = Rows::build(&tok, &dialogues(), t, false).unwrap();
        assert_eq!(stats.rows, 2);
        assert_eq!(
            targets(&tok, &rows),
            vec!["Paris.<|end|>", "56.<|end|>巴黎。<|end|>"]
        );
        assert!(rows.ids[0][lens[0]..]
            .iter()
            .all(|&t| t == tok.special().pad));
        assert!(!rows.mask[0][lens[0]..].iter().any(|&m| m));
    }

    #[test]
    fn masked_loss_ignores_everything_but_the_answers() {
        let tok = tok();
        let (rows, _) = Rows::build(&tok, &dialogues(), 128, false).unwrap();
        let cfg = Config::preset("tiny", tok.vocab_size(), 128).unwrap();
        let w = weights::init_weights(&cfg, 1, &Device::Cpu).unwrap();
        let m = Llama::new(&cfg, &w, &Device::Cpu).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        rows.xy(1, &mut x, &mut y);
        let loss = |x: &[u32], y: &[u32]| {
            let x = Tensor::from_slice(x, (1, 128), &Device::Cpu).unwrap();
            let y = Tensor::from_slice(y, (1, 128), &Device::Cpu).unwrap();
            m.loss(&x, &y).unwrap().to_scalar::<f32>().unwrap()
        };
        let base = loss(&x, &y);
        // the loss is the mean over answer positions only
        let logits = m
            .forward(&Tensor::from_slice(&x, (1, 128), &Device::Cpu).unwrap())
            .unwrap();
        let lsm = candle_nn::ops::log_softmax(&logits, 1).unwrap();
        let lsm: Vec<Vec<f32>> = lsm.to_vec2().unwrap();
        let picked: Vec<f32> = y
            .iter()
            .enumerate()
            .filter(|(_, &t)| t != IGNORE)
            .map(|(j, &t)| -lsm[j][t as usize])
            .collect();
        let want = picked.iter().sum::<f32>() / picked.len() as f32;
        assert!((base - want).abs() < 1e-5, "{base} vs {want}");
        // a user token changing as a target changes nothing
        let first_prompt = y.iter().position(|&t| t == IGNORE).unwrap();
        let mut y2 = y.clone();
        y2[first_prompt] = IGNORE;
        assert_eq!(loss(&x, &y2), base);
    }

    #[test]
    fn dialogues_too_long_lose_old_turns_or_are_left_out() {
        let tok = tok();
        let d = dialogues();
        let full = tok.encode_chat(&d[1].messages).unwrap().ids.len();
        let (rows, stats) = Rows::build(&tok, &d[1..], full - 2, true).unwrap();
        assert_eq!((stats.truncated, stats.too_long), (1, 0));
        assert_eq!(targets(&tok, &rows), vec!["巴黎。<|end|>"]);
        let (_, stats) = Rows::build(&tok, &d, 4, true).unwrap();
        assert_eq!(stats.too_long, 2);
    }
}
