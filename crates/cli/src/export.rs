//! `ferrochat export hf`: a checkpoint as a clean Hugging Face folder. Our checkpoints are
//! already valid `LlamaForCausalLM` (or `LlamaForSequenceClassification`) folders; export
//! leaves out the training state and adds what generation tools look for.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferrochat_model::checkpoint;
use ferrochat_tokenizer::Tokenizer;

#[derive(clap::Subcommand)]
pub enum Command {
    /// A Hugging Face folder: weights, config, tokenizer with its chat template, and
    /// generation_config.json (no trainer state)
    Hf(HfArgs),
}

#[derive(clap::Args)]
pub struct HfArgs {
    /// The checkpoint to export
    #[arg(long)]
    pub model: PathBuf,
    /// The folder to write (must not exist, or be empty)
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(c: Command) -> Result<()> {
    let Command::Hf(a) = c;
    let dir = hf(&a.model, &a.output)?;
    println!("exported {} to {}", a.model.display(), dir.display());
    Ok(())
}

/// The files a Hugging Face folder needs from a checkpoint.
const FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];

fn hf(model: &Path, out: &Path) -> Result<PathBuf> {
    let cfg = checkpoint::load_config(model)?;
    let tok = Tokenizer::load(model)?;
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some()
    {
        bail!("{} is not empty: export into a new folder", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for f in FILES {
        let from = model.join(f);
        std::fs::copy(&from, out.join(f))
            .with_context(|| format!("cannot copy {} to {}", from.display(), out.display()))?;
    }
    if !cfg.is_classifier() {
        let s = tok.special();
        let gen = serde_json::json!({
            "bos_token_id": s.bos,
            "eos_token_id": [s.end],
            "pad_token_id": s.pad,
            "do_sample": true,
            "temperature": 0.7,
            "top_k": 50,
            "top_p": 0.95,
            "max_length": cfg.max_position_embeddings,
        });
        ferrochat_text::write_atomic(
            &out.join("generation_config.json"),
            serde_json::to_string_pretty(&gen)?.as_bytes(),
        )?;
    }
    Ok(out.to_path_buf())
}
