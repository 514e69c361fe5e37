//! `ferrochat world generate`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrochat_world::WorldConfig;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Write the world's data files into a folder
    Generate(GenerateArgs),
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub output: PathBuf,
    /// Megabytes of pretraining prose
    #[arg(long)]
    pub pretrain_mb: Option<f64>,
    /// Number of SFT dialogues
    #[arg(long)]
    pub sft: Option<usize>,
    /// Number of pairwise comparisons
    #[arg(long)]
    pub comparisons: Option<usize>,
    /// Share of comparisons whose preference is flipped, like disagreeing labellers
    #[arg(long)]
    pub label_noise: Option<f64>,
    /// Number of prompts for PPO/GRPO rollouts
    #[arg(long)]
    pub rl_prompts: Option<usize>,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Generate(a) => {
            let mut cfg = WorldConfig {
                seed: a.seed,
                ..Default::default()
            };
            if let Some(mb) = a.pretrain_mb {
                cfg.pretrain_bytes = (mb * 1e6) as usize;
            }
            if let Some(n) = a.sft {
                cfg.sft_dialogues = n;
            }
            if let Some(n) = a.comparisons {
                cfg.comparisons = n;
            }
            if let Some(x) = a.label_noise {
                cfg.label_noise = x;
            }
            if let Some(n) = a.rl_prompts {
                cfg.rl_prompts = n;
            }
            let summary = ferrochat_world::generate(&cfg, &a.output)
                .with_context(|| format!("generating the world into {}", a.output.display()))?;
            if !a.quiet {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            }
            Ok(())
        }
    }
}
