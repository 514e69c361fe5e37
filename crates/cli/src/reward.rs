//! `ferrochat reward`: train a reward model on comparisons, and `ferrochat reward score`
//! to read one's verdict on answers.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferrochat_text::{read_conversations, Message, Role};
use ferrochat_tokenizer::Tokenizer;
use ferrochat_train::dist;
use ferrochat_train::{rank_zero, ConsoleHooks, RewardOptions, RewardSummary, RmEval};

use crate::records::PreferenceArgs;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Command {
    #[command(subcommand)]
    pub sub: Option<Sub>,
    #[command(flatten)]
    pub train: Args,
}

#[derive(clap::Subcommand)]
pub enum Sub {
    /// Print a reward model's score of answers to a prompt, or of conversations' last answers
    Score(ScoreArgs),
}

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The chat (SFT) checkpoint whose trunk the reward model starts from
    #[arg(long, required = true)]
    pub base: Option<PathBuf>,
    #[command(flatten)]
    pub data: PreferenceArgs,
    /// Checkpoint folder to write (a LlamaForSequenceClassification folder)
    #[arg(long, required = true)]
    pub output: Option<PathBuf>,
    /// Optimizer steps (0: as many as --epochs take)
    #[arg(long, default_value_t = 0)]
    pub steps: u64,
    /// Passes over the records when --steps is 0 (InstructGPT: one; more overfits)
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    /// Records (pairs or ranked lists) per micro-batch
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per answer with its prompt (0: the base model's context)
    #[arg(long, default_value_t = 0)]
    pub seq: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Measure held-out accuracy every N steps (0: only at the end)
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue from the checkpoint in --output
    #[arg(long)]
    pub resume: bool,
    /// No progress bar: JSON lines of metrics on stdout
    #[arg(long)]
    pub quiet: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Data-parallel processes (started by `mpirun -np N`; needs the `mpi` build): each
    /// trains on --batch records of every step, so the global batch is N times larger
    #[arg(long)]
    pub world_size: Option<usize>,
}

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// The reward model
    #[arg(long)]
    pub model: PathBuf,
    /// The user's message (with --answer)
    #[arg(long, requires = "answer")]
    pub prompt: Option<String>,
    /// An answer to score (repeat for several)
    #[arg(long)]
    pub answer: Vec<String>,
    #[arg(long)]
    pub system: Option<String>,
    /// Score the last answer of each conversation in a JSON-lines chat file instead
    #[arg(long, conflicts_with = "prompt")]
    pub conversations: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(c: Command) -> Result<()> {
    match c.sub {
        Some(Sub::Score(a)) => score(&a),
        None => {
            let a = c.train;
            let s = train(&a)?;
            if !a.quiet && dist::world().is_main() {
                print_summary(&s);
                if let Some(out) = &a.output {
                    println!("checkpoint: {}", out.display());
                }
            }
            Ok(())
        }
    }
}

fn print_summary(s: &RewardSummary) {
    let line = |name: &str, e: &RmEval| {
        println!(
            "{name}: held-out pairwise accuracy {:.1}% on {} pairs, loss {:.3}, calibration error {:.3}",
            100.0 * e.accuracy,
            e.pairs,
            e.loss,
            e.ece
        )
    };
    println!("{} steps in {:.0}s", s.steps, s.elapsed_secs);
    line("before", &s.before);
    line("after", &s.after);
    println!("reliability (confidence -> accuracy, pairs):");
    for (c, a, n) in s.after.bins.iter().filter(|b| b.2 > 0) {
        println!("  {:.2} -> {:.2}  ({n})", c, a);
    }
}

pub fn train(a: &Args) -> Result<RewardSummary> {
    let (Some(base), Some(output)) = (&a.base, &a.output) else {
        bail!("--base and --output are required");
    };
    let device = crate::runtime::device(&a.device)?;
    let (train, val) = a.data.load(a.quiet)?;
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    let tok = Tokenizer::load(&ferrochat_model::checkpoint::resolve(base)?)?;
    let opts = RewardOptions {
        seq_len: a.seq,
        batch_size: a.batch,
        grad_accum: a.grad_accum,
        steps: a.steps,
        epochs: a.epochs,
        lr: a.lr,
        warmup_steps: a.warmup,
        weight_decay: a.weight_decay,
        grad_clip: a.grad_clip,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
        seed: a.seed,
    };
    let mut console = ConsoleHooks::new(a.quiet, Some(output.join("metrics.jsonl")));
    let hooks = rank_zero(&mut console);
    let s = ferrochat_train::reward(
        &opts, base, &tok, &train, &val, output, a.resume, &device, hooks,
    )?;
    if !dist::world().is_main() {
        return Ok(s);
    }
    let path = output.join("reward.json");
    std::fs::write(&path, serde_json::to_string_pretty(&s)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(s)
}

fn score(a: &ScoreArgs) -> Result<()> {
    let (tok, model, _) = crate::runtime::open_model(&a.model, &a.device)?;
    if !model.config().is_classifier() {
        bail!(
            "{} is a language model, not a reward model (train one with `ferrochat reward`)",
            a.model.display()
        );
    }
    // (prompt, answer) pairs to score
    let mut items: Vec<(Vec<Message>, String)> = Vec::new();
    if let Some(path) = &a.conversations {
        for (line, c) in read_conversations(path, ferrochat_text::OnBad::Fail)?.items {
            let mut m = c.messages;
            match m.pop() {
                Some(last) if last.role == Role::Assistant => items.push((m, last.content)),
                _ => bail!(
                    "{}:{line}: the conversation must end with the answer to score (an assistant message)",
                    path.display()
                ),
            }
        }
    } else if let Some(p) = &a.prompt {
        let mut m: Vec<Message> = a.system.iter().map(Message::system).collect();
        m.push(Message::user(p));
        items.extend(a.answer.iter().map(|x| (m.clone(), x.clone())));
    } else {
        bail!("give --prompt with one or more --answer, or --conversations FILE");
    }
    let scores = ferrochat_train::reward::score_texts(&model, &tok, &items)?;
    for ((_, answer), s) in items.iter().zip(scores) {
        println!("{s:.4}\t{}", answer.replace('\n', " ⏎ "));
    }
    Ok(())
}
