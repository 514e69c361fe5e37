//! `ferrochat distill`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrochat_train::dist;
use ferrochat_train::{rank_zero, ConsoleHooks, DistillOptions, KlKind, ScheduleKind};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The teacher: any language-model checkpoint (a quantized one too)
    #[arg(long)]
    pub teacher: PathBuf,
    /// Token shards from `ferrochat data prepare`, made with the teacher's tokenizer
    #[arg(long)]
    pub data: PathBuf,
    /// Checkpoint folder of the student (and to resume from with --resume)
    #[arg(long)]
    pub output: PathBuf,
    /// The student's size: tiny, small or dN
    #[arg(long, default_value = "tiny")]
    pub student_preset: String,
    /// forward KL(teacher || student), reverse KL(student || teacher), or mix
    #[arg(long, default_value = "forward")]
    pub kl: KlKind,
    /// With --kl mix: the forward KL's share
    #[arg(long, default_value_t = 0.5)]
    pub mix_weight: f64,
    /// Softens both distributions (above 1 shows the student more of the teacher's
    /// ranking of unlikely tokens)
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Share of the ordinary next-token loss on the text in the total
    #[arg(long, default_value_t = 0.0)]
    pub hard_weight: f64,
    #[arg(long, default_value_t = 500)]
    pub steps: u64,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_frac: f64,
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// cosine, wsd or constant
    #[arg(long, default_value = "cosine")]
    pub schedule: ScheduleKind,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 8)]
    pub eval_batches: usize,
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue from the checkpoint in --output
    #[arg(long)]
    pub resume: bool,
    /// Data-parallel processes (started by `mpirun -np N`; needs the `mpi` build)
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
    pub fn options(&self) -> DistillOptions {
        DistillOptions {
            student_preset: self.student_preset.clone(),
            kl: self.kl,
            mix_weight: self.mix_weight,
            temperature: self.temperature,
            hard_weight: self.hard_weight,
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
            checkpoint_every: self.checkpoint_every,
            seed: self.seed,
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let device = crate::runtime::device(&a.device)?;
    let tok =
        ferrochat_tokenizer::Tokenizer::load(&ferrochat_model::checkpoint::resolve(&a.teacher)?)?;
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let main = dist::world().is_main();
    let mut console = ConsoleHooks::new(a.quiet, Some(a.output.join("metrics.jsonl")));
    let hooks = rank_zero(&mut console);
    let s = ferrochat_train::distill(
        &a.options(),
        &a.teacher,
        &a.data,
        &tok,
        &a.output,
        a.resume,
        &device,
        hooks,
    )?;
    if !a.quiet && main {
        println!(
            "{} steps, {} tokens in {:.0}s ({:.0} tokens/s); student ({:.2}M parameters) val loss {:.3}, teacher ({:.2}M) {:.3}",
            s.steps,
            s.tokens,
            s.elapsed_secs,
            s.tokens_per_sec,
            s.student_params as f64 / 1e6,
            s.val_loss,
            s.teacher_params as f64 / 1e6,
            s.teacher_val_loss
        );
        println!("checkpoint: {}", a.output.display());
    }
    Ok(())
}
