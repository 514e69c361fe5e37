//! `ferrochat sft`: supervised fine-tuning of a pretrained checkpoint on dialogues.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferrochat_engine::{generate, GenerateOptions, SamplingParams};
use ferrochat_model::Llama;
use ferrochat_text::{read_conversations, Conversation, Message};
use ferrochat_tokenizer::Tokenizer;
use ferrochat_train::dist;
use ferrochat_train::{rank_zero, ConsoleHooks, ScheduleKind, SftOptions, SftSummary};

use crate::records::BadRecords;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The pretrained checkpoint to start from
    #[arg(long)]
    pub base: PathBuf,
    /// Dialogues, JSON lines: {"messages":[{"role":"user","content":"..."},{"role":"assistant",...}]}
    #[arg(long)]
    pub data: PathBuf,
    /// Validation dialogues in the same format (default: 2% of --data held out)
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Checkpoint folder to write (and to resume from with --resume)
    #[arg(long)]
    pub output: PathBuf,
    /// Optimizer steps (0: as many as --epochs take)
    #[arg(long, default_value_t = 0)]
    pub steps: u64,
    /// Passes over the dialogues when --steps is 0
    #[arg(long, default_value_t = 2.0)]
    pub epochs: f64,
    /// Rows per micro-batch
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per row (0: the base model's context)
    #[arg(long, default_value_t = 0)]
    pub seq: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.0)]
    pub min_lr_frac: f64,
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// cosine, wsd (warmup-stable-decay) or constant
    #[arg(long, default_value = "cosine")]
    pub schedule: ScheduleKind,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Evaluate on the validation dialogues every N steps (0: only at the end)
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 16)]
    pub eval_batches: usize,
    /// Print the model's answer to --sample-prompt every N steps (0: never)
    #[arg(long, default_value_t = 0)]
    pub sample_every: u64,
    #[arg(long, default_value = "What is the capital of France?")]
    pub sample_prompt: String,
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// One dialogue per row, padded, instead of packing several into a row
    #[arg(long)]
    pub no_pack: bool,
    /// Share of rows drawn from pretraining text (needs --pretrain-data)
    #[arg(long, default_value_t = 0.0)]
    pub mix_pretrain: f64,
    /// Token shards of pretraining text for --mix-pretrain
    #[arg(long)]
    pub pretrain_data: Option<PathBuf>,
    /// Keep the base model's zero weights at zero: recovery fine-tuning of a model
    /// `ferrochat prune` made sparse (magnitude, wanda) keeps its sparsity
    #[arg(long)]
    pub keep_sparsity: bool,
    /// Bad dialogues (not JSON, unknown role, empty content, no answer): skip or fail
    #[arg(long, value_enum, default_value = "skip")]
    pub on_bad: BadRecords,
    /// Continue from the checkpoint in --output
    #[arg(long)]
    pub resume: bool,
    /// Data-parallel processes (started by `mpirun -np N`; needs the `mpi` build): each
    /// trains on --batch rows of every step, so the global batch is N times larger
    #[arg(long)]
    pub world_size: Option<usize>,
    /// No progress bar: JSON lines of metrics on stdout
    #[arg(long)]
    pub quiet: bool,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl Args {
    pub fn options(&self) -> SftOptions {
        SftOptions {
            seq_len: self.seq,
            batch_size: self.batch,
            grad_accum: self.grad_accum,
            steps: self.steps,
            epochs: self.epochs,
            lr: self.lr,
            min_lr_frac: self.min_lr_frac,
            warmup_steps: self.warmup,
            schedule: self.schedule,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            sample_every: self.sample_every,
            checkpoint_every: self.checkpoint_every,
            seed: self.seed,
            pack: !self.no_pack,
            mix_pretrain: self.mix_pretrain,
            keep_sparsity: self.keep_sparsity,
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let s = train(&a)?;
    if !a.quiet && dist::world().is_main() {
        println!(
            "{} steps, {} tokens in {:.0}s ({:.0} tokens/s); answer loss on validation dialogues {:.3} -> {:.3}",
            s.steps, s.tokens, s.elapsed_secs, s.tokens_per_sec, s.val_loss_before, s.val_loss
        );
        println!("checkpoint: {}", a.output.display());
        println!(
            "chat with it: ferrochat chat --model {}",
            a.output.display()
        );
    }
    Ok(())
}

fn dialogues(path: &Path, on_bad: BadRecords, quiet: bool) -> Result<Vec<Conversation>> {
    crate::records::read(path, "dialogue", on_bad, quiet, read_conversations)
}

pub fn train(a: &Args) -> Result<SftSummary> {
    let device = crate::runtime::device(&a.device)?;
    let mut train = dialogues(&a.data, a.on_bad, a.quiet)?;
    let val = match &a.val {
        Some(v) => dialogues(v, a.on_bad, a.quiet)?,
        None => crate::records::hold_out(&mut train, 50),
    };
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let tok = Tokenizer::load(&ferrochat_model::checkpoint::resolve(&a.base)?)?;
    let prompt = a.sample_prompt.clone();
    let mut console = ConsoleHooks::new(a.quiet, Some(a.output.join("metrics.jsonl")))
        .with_sampler(|m: &Llama, step| answer(m, &tok, &prompt, step).ok());
    let hooks = rank_zero(&mut console);
    Ok(ferrochat_train::sft(
        &a.options(),
        &a.base,
        &tok,
        &train,
        &val,
        a.pretrain_data.as_deref(),
        &a.output,
        a.resume,
        &device,
        hooks,
    )?)
}

/// The model's answer to one user message, sampled with a seed fixed per step.
pub fn answer(m: &Llama, tok: &Tokenizer, prompt: &str, seed: u64) -> Result<String> {
    let ids = tok.encode_prompt(&[Message::user(prompt)])?;
    let opts = GenerateOptions {
        max_new_tokens: 64,
        sampling: SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            ..SamplingParams::default()
        },
        seed,
        stop: vec![tok.special().bos, tok.special().end],
        watermark: None,
    };
    let g = generate(m, &ids, &opts, |_| true)?;
    Ok(format!("{prompt} -> {}", tok.decode(&g.tokens, false)?))
}
