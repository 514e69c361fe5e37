//! `ferrochat`: build a ChatGPT-style assistant end to end. One subcommand per stage,
//! and `speedrun` for the whole pipeline.

mod bench;
mod bench_serve;
mod chat;
mod data;
mod detect;
mod distill;
mod dpo;
mod eval;
mod export;
mod generate;
mod import;
mod logits;
mod pretrain;
mod prune;
mod records;
mod report;
mod reward;
mod rl;
mod runtime;
mod serve;
mod sft;
mod speedrun;
mod stream;
mod teach;
mod tokenizer;
mod world;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferrochat",
    version,
    about = "Train, align, compress and serve your own chat model, in Rust",
    long_about = "Train, align, compress and serve your own chat model, in Rust.\n\n\
        Start with `ferrochat speedrun`: it runs the whole pipeline on the built-in world \
        and tells you where the model and the report are."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Arithmetic of training: auto (bf16 matrix products on a GPU, f32 on the CPU), f32,
    /// or bf16 (mixed precision: bf16 products, f32 weights and optimizer)
    #[arg(long, global = true, value_enum, default_value_t = Precision::Auto)]
    precision: Precision,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Precision {
    Auto,
    F32,
    Bf16,
}

#[derive(Subcommand)]
enum Command {
    /// The whole pipeline on the built-in data: world, tokenizer, shards, pretraining, SFT, reward model, PPO, DPO, GRPO, judged evals, serving, the report
    Speedrun(speedrun::Args),
    /// Generate the built-in bilingual world (pretraining text, dialogues, comparisons, held-out prompts)
    #[command(subcommand)]
    World(world::Command),
    /// Train or inspect a tokenizer
    #[command(subcommand)]
    Tokenizer(tokenizer::Command),
    /// Turn text corpora into token shards
    #[command(subcommand)]
    Data(data::Command),
    /// Pretrain a model on token shards (next-token prediction)
    Pretrain(pretrain::Args),
    /// Fine-tune a pretrained checkpoint on dialogues (loss on the assistant's tokens only)
    Sft(sft::Args),
    /// Train a small student on a large teacher's next-token distributions (knowledge
    /// distillation on pretraining text)
    Distill(distill::Args),
    /// A model answers prompts; the answers become dialogues for `sft` (sequence-level
    /// distillation, or a specialist's judged answers teaching a larger model)
    Teach(teach::Args),
    /// Train a reward model on comparisons (or `reward score` to read its verdict on answers)
    Reward(reward::Command),
    /// Align a chat model by PPO against a reward model, under a KL leash to where it started
    Ppo(rl::PpoArgs),
    /// Align a chat model by GRPO against the world's judge (a verifiable reward)
    Grpo(rl::GrpoArgs),
    /// Align a chat model on comparisons by direct preference optimisation
    Dpo(dpo::Args),
    /// Continue a prompt with a checkpoint
    Generate(generate::Args),
    /// Chat with a checkpoint in the terminal (reads stdin when piped)
    Chat(chat::Args),
    /// Tell whether a text carries a ferrochat watermark (needs the key and the tokenizer, no model)
    Detect(detect::Args),
    /// Serve checkpoints over the OpenAI API, with the web chat page and the feedback store
    Serve(serve::Args),
    /// Turn people's ratings and comparisons from the chat page into training data
    #[command(subcommand)]
    Feedback(serve::Command),
    /// Answer the world's held-out prompts and score them with the judge
    Eval(eval::Args),
    /// Print next-token logits for a prompt as JSON (to check other implementations against ours)
    Logits(logits::Args),
    /// Write a checkpoint out for other tools (`export hf`: a clean Hugging Face folder;
    /// `export gguf`: one file for llama.cpp)
    #[command(subcommand)]
    Export(export::Command),
    /// Bring a model in from another tool (`import hf`: a Hugging Face Llama folder)
    #[command(subcommand)]
    Import(import::Command),
    /// Prune a checkpoint: zero the least important weights (magnitude, Wanda) or remove
    /// whole MLP channels (smaller and faster)
    Prune(prune::Args),
    /// Quantize a checkpoint's weights to 8 or 4 bits for inference (generate, chat, eval,
    /// serve and bench read the folder it writes; llama.cpp reads its model.gguf)
    Quantize(export::QuantizeArgs),
    /// Rebuild a run folder's report.md and plots from its metrics files
    Report(report::Args),
    /// Measure speed: training, generation (and speculative decoding), serving, and watermark detection
    #[command(subcommand)]
    Bench(bench::Command),
}

fn main() {
    runtime::tune();
    let cli = Cli::parse();
    ferrochat_train::trainer::set_precision(match cli.precision {
        Precision::Auto => ferrochat_train::trainer::Precision::Auto,
        Precision::F32 => ferrochat_train::trainer::Precision::F32,
        Precision::Bf16 => ferrochat_train::trainer::Precision::Bf16,
    });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter(&cli.command))),
        )
        .with_writer(std::io::stderr)
        // colours for a terminal, plain lines for a log file
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let trains_in_parallel = match &cli.command {
        Command::Pretrain(_)
        | Command::Sft(_)
        | Command::Distill(_)
        | Command::Dpo(_)
        | Command::Ppo(_)
        | Command::Grpo(_) => true,
        Command::Reward(c) => c.sub.is_none(),
        _ => false,
    };
    if !trains_in_parallel {
        if let Some((_, n)) = ferrochat_train::dist::launched().filter(|(_, n)| *n > 1) {
            eprintln!(
                "error: started by an MPI launcher with {n} processes, but only the training \
                 commands (`pretrain`, `sft`, `distill`, `reward`, `ppo`, `grpo`, `dpo`) run \
                 data-parallel: run this command as one process"
            );
            std::process::exit(2);
        }
    }
    let result = match cli.command {
        // a server waits on its own threads (its model runs on a pool of its own): it
        // stays off the shared pool
        Command::Serve(a) => serve::run(a),
        Command::Bench(bench::Command::Serve(a)) => bench_serve::serve(a),
        command => runtime::on_pool(|| run(command)),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Speedrun(a) => speedrun::run(a),
        Command::World(c) => world::run(c),
        Command::Tokenizer(c) => tokenizer::run(c),
        Command::Data(c) => data::run(c),
        Command::Pretrain(a) => {
            let out = a.output.clone();
            data_parallel(a.world_size, || pretrain::run(a), &out)
        }
        Command::Sft(a) => {
            let out = a.output.clone();
            data_parallel(a.world_size, || sft::run(a), &out)
        }
        Command::Distill(a) => {
            let out = a.output.clone();
            data_parallel(a.world_size, || distill::run(a), &out)
        }
        Command::Reward(c) => match c.sub.is_none().then(|| c.train.output.clone()).flatten() {
            Some(out) => data_parallel(c.train.world_size, || reward::run(c), &out),
            None => reward::run(c),
        },
        Command::Ppo(a) => {
            let out = a.common.output.clone();
            data_parallel(a.common.world_size, || rl::ppo(a), &out)
        }
        Command::Grpo(a) => {
            let out = a.common.output.clone();
            data_parallel(a.common.world_size, || rl::grpo(a), &out)
        }
        Command::Dpo(a) => {
            let out = a.output.clone();
            data_parallel(a.world_size, || dpo::run(a), &out)
        }
        Command::Report(a) => report::run(a),
        Command::Export(c) => export::run(c),
        Command::Quantize(a) => export::quantize(a),
        Command::Import(c) => import::run(c),
        Command::Prune(a) => prune::run(a),
        Command::Teach(a) => teach::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Feedback(c) => serve::feedback(c),
        Command::Eval(a) => eval::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Bench(c) => bench::run(c),
    }
}

/// Runs a training command in the data-parallel world the launcher started (one process
/// when none did); rank 0 refreshes the run's report.
fn data_parallel(
    world_size: Option<usize>,
    train: impl FnOnce() -> anyhow::Result<()>,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let _world = ferrochat_train::dist::init(world_size).map_err(anyhow::Error::msg)?;
    train()?;
    if ferrochat_train::dist::world().is_main() {
        report::refresh(out);
    }
    Ok(())
}

/// Warnings only, plus the server's request and prompt logs when asked for (`RUST_LOG`
/// overrides all of it).
fn log_filter(command: &Command) -> String {
    let mut f = String::from("warn");
    if let Command::Serve(a) = command {
        if a.access_log {
            f += ",ferrochat::access=info";
        }
        if a.log_prompts {
            f += ",ferrochat::prompts=info";
        }
    }
    f
}
