//! `ferrochat dpo`: direct preference optimisation of a chat model on comparisons, with
//! the starting model as the frozen reference.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrochat_tokenizer::Tokenizer;
use ferrochat_train::dist;
use ferrochat_train::{rank_zero, ConsoleHooks, DpoOptions, DpoSummary};

use crate::records::PreferenceArgs;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The chat (SFT) checkpoint to start from; it is also the reference
    #[arg(long)]
    pub base: PathBuf,
    #[command(flatten)]
    pub data: PreferenceArgs,
    /// Checkpoint folder to write
    #[arg(long)]
    pub output: PathBuf,
    /// Optimizer steps (0: as many as --epochs take)
    #[arg(long, default_value_t = 0)]
    pub steps: u64,
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    /// Pairs per micro-batch
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per answer with its prompt (0: the model's context)
    #[arg(long, default_value_t = 0)]
    pub seq: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// KL strength: higher keeps the model closer to the reference
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Answers sampled at the end to measure KL to the reference (0: skip)
    #[arg(long, default_value_t = 64)]
    pub kl_samples: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub quiet: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Data-parallel processes (started by `mpirun -np N`; needs the `mpi` build): each
    /// trains on --batch records of every step, so the global batch is N times larger
    #[arg(long)]
    pub world_size: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    let s = train(&a)?;
    if !a.quiet && dist::world().is_main() {
        println!(
            "{} steps in {:.0}s; held-out preference accuracy {:.1}% -> {:.1}%, DPO loss {:.3} -> {:.3}{}",
            s.steps,
            s.elapsed_secs,
            100.0 * s.before.accuracy,
            100.0 * s.after.accuracy,
            s.before.loss,
            s.after.loss,
            s.kl.map(|k| format!(", KL to the reference {k:.2} nats per answer"))
                .unwrap_or_default()
        );
        println!("checkpoint: {}", a.output.display());
    }
    Ok(())
}

pub fn train(a: &Args) -> Result<DpoSummary> {
    let device = crate::runtime::device(&a.device)?;
    let (train, val) = a.data.load(a.quiet)?;
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let tok = Tokenizer::load(&ferrochat_model::checkpoint::resolve(&a.base)?)?;
    let opts = DpoOptions {
        seq_len: a.seq,
        batch_size: a.batch,
        grad_accum: a.grad_accum,
        steps: a.steps,
        epochs: a.epochs,
        beta: a.beta,
        lr: a.lr,
        warmup_steps: a.warmup,
        grad_clip: a.grad_clip,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
        seed: a.seed,
        kl_samples: a.kl_samples,
        max_new_tokens: 96,
    };
    let mut console = ConsoleHooks::new(a.quiet, Some(a.output.join("metrics.jsonl")));
    let hooks = rank_zero(&mut console);
    let s = ferrochat_train::dpo(
        &opts, &a.base, &tok, &train, &val, &a.output, a.resume, &device, hooks,
    )?;
    if !dist::world().is_main() {
        return Ok(s);
    }
    let path = a.output.join("dpo.json");
    std::fs::write(&path, serde_json::to_string_pretty(&s)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(s)
}
