//! `ferrochat logits`: the model's next-token logits for a prompt, as JSON, so other
//! implementations (Hugging Face transformers) can be checked against ours.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Tensor;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    /// Write the JSON here instead of stdout
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: Args) -> Result<()> {
    let (tok, model, device) = crate::runtime::open_model(&a.model, &a.device)?;
    let ids = tok.encode(&a.prompt)?;
    anyhow::ensure!(!ids.is_empty(), "the prompt encodes to no tokens");
    let x = Tensor::new(ids.as_slice(), &device)?.unsqueeze(0)?;
    let logits: Vec<Vec<f32>> = model.forward(&x)?.to_vec2()?;
    let json = serde_json::json!({ "ids": ids, "logits": logits });
    match a.output {
        Some(p) => std::fs::write(&p, json.to_string())
            .with_context(|| format!("writing {}", p.display()))?,
        None => {
            // a reader that stops early (`| head`) is not an error
            use std::io::Write;
            match writeln!(std::io::stdout().lock(), "{json}") {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => r.context("writing the logits to stdout")?,
            }
        }
    }
    Ok(())
}
