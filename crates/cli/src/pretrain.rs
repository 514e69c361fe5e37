//! `ferrochat pretrain`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrochat_engine::{generate, GenerateOptions, SamplingParams};
use ferrochat_model::Llama;
use ferrochat_tokenizer::Tokenizer;
use ferrochat_train::dist;
use ferrochat_train::{rank_zero, ConsoleHooks, PretrainOptions, PretrainSummary, ScheduleKind};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Token shards from `ferrochat data prepare`
    #[arg(long)]
    pub data: PathBuf,
    /// Tokenizer (default: the one beside the shards)
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Checkpoint folder to write (and to resume from with --resume)
    #[arg(long)]
    pub output: PathBuf,
    /// Model size: tiny, small, d12, d20 or dN
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Optimizer steps in all (a resumed run continues to this count)
    #[arg(long, default_value_t = 500)]
    pub steps: u64,
    /// Sequences per micro-batch
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per sequence (the model's context length)
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Micro-batches per optimizer step
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Final learning rate as a fraction of the peak
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_frac: f64,
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// cosine, wsd (warmup-stable-decay) or constant
    #[arg(long, default_value = "cosine")]
    pub schedule: ScheduleKind,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Evaluate on validation every N steps (0: only at the end)
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 8)]
    pub eval_batches: usize,
    /// Print a text sample every N steps (0: never)
    #[arg(long, default_value_t = 0)]
    pub sample_every: u64,
    /// Prompt of the samples
    #[arg(long, default_value = "The capital of")]
    pub sample_prompt: String,
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// A separate output projection instead of one tied to the embedding
    #[arg(long)]
    pub untied: bool,
    /// A mixture of experts: this many SwiGLU MLPs per block (each the preset's size),
    /// routed per token (Mixtral's layout; 0: one dense MLP)
    #[arg(long, default_value_t = 0)]
    pub experts: usize,
    /// Experts each token goes to: 1 Switch-style (gated by the router's probability), 2
    /// or more Mixtral-style (the chosen probabilities renormalised)
    #[arg(long, default_value_t = 1)]
    pub experts_per_token: usize,
    /// Weight of the load-balancing loss
    #[arg(long, default_value_t = 0.01)]
    pub router_aux_coef: f64,
    /// At most this factor x its fair share of tokens per expert in a batch; the rest
    /// skip the MLP (none: no limit)
    #[arg(long)]
    pub capacity_factor: Option<f64>,
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
    pub fn options(&self) -> PretrainOptions {
        PretrainOptions {
            preset: self.preset.clone(),
            seq_len: self.seq,
            batch_size: self.batch,
            grad_accum: self.grad_accum,
            steps: self.steps,
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
            tie_embeddings: !self.untied,
            experts: (self.experts > 0).then_some(ferrochat_train::MoeOptions {
                experts: self.experts,
                per_token: self.experts_per_token,
                aux_loss_coef: self.router_aux_coef,
                capacity_factor: self.capacity_factor,
            }),
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let s = train(&a)?;
    if !a.quiet && dist::world().is_main() {
        println!(
            "{} steps, {} tokens in {:.0}s ({:.0} tokens/s); val loss {:.3} (unigram baseline {:.3}), {:.3} bits/byte",
            s.steps, s.tokens, s.elapsed_secs, s.tokens_per_sec, s.val_loss, s.unigram_loss, s.val_bpb
        );
        println!("checkpoint: {}", a.output.display());
    }
    Ok(())
}

pub fn train(a: &Args) -> Result<PretrainSummary> {
    let device = crate::runtime::device(&a.device)?;
    let tok = crate::data::tokenizer_for(&a.data, a.tokenizer.as_deref())?;
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let prompt = a.sample_prompt.clone();
    let mut console = ConsoleHooks::new(a.quiet, Some(a.output.join("metrics.jsonl")))
        .with_sampler(|m: &Llama, step| sample(m, &tok, &prompt, step).ok());
    let hooks = rank_zero(&mut console);
    let s = ferrochat_train::pretrain(
        &a.options(),
        &a.data,
        &tok,
        &a.output,
        a.resume,
        &device,
        hooks,
    )?;
    Ok(s)
}

/// A short continuation of `prompt`, sampled with a seed fixed per step.
pub fn sample(m: &Llama, tok: &Tokenizer, prompt: &str, seed: u64) -> Result<String> {
    let mut ids = vec![tok.special().bos];
    ids.extend(tok.encode(prompt)?);
    let opts = GenerateOptions {
        max_new_tokens: 32,
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
    Ok(format!("{prompt}{}", tok.decode(&g.tokens, false)?))
}
