//! `ferrochat generate`: continue a prompt with a checkpoint.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use ferrochat_engine::{generate, GenerateOptions, SamplingParams};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 100)]
    pub max_tokens: usize,
    /// 0 for greedy
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// 0 for no limit
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability (1 for no limit)
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Keep only tokens at least this fraction as likely as the best one (0 for off)
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalise tokens already in the text: above 1 discourages repeats (1 for off)
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print tokens/s to stderr at the end
    #[arg(long)]
    pub stats: bool,
    /// A small model with the same tokenizer that drafts tokens for this one to verify
    /// (speculative decoding: the same output distribution, faster when the draft is
    /// much cheaper than the model)
    #[arg(long)]
    pub draft: Option<PathBuf>,
    /// Tokens the draft proposes per round
    #[arg(long, default_value_t = 4)]
    pub draft_k: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub watermark: crate::runtime::WatermarkArgs,
}

pub fn run(a: Args) -> Result<()> {
    let sampling = crate::runtime::sampling(SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repetition_penalty,
    })?;
    let (tok, model, _) = crate::runtime::open_model(&a.model, &a.device)?;
    let mut ids = vec![tok.special().bos];
    ids.extend(tok.encode(&a.prompt)?);
    let opts = GenerateOptions {
        max_new_tokens: a.max_tokens,
        sampling,
        seed: a.seed,
        stop: vec![tok.special().bos, tok.special().end],
        watermark: a.watermark.get()?,
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{}", a.prompt)?;
    let mut stream = crate::stream::Stream::new(&tok, false);
    let mut spec = None;
    let g = match &a.draft {
        None => generate(&model, &ids, &opts, |t| stream.push(t, &mut out).is_ok())?,
        Some(dir) => {
            let (dtok, draft, _) = crate::runtime::open_model(dir, &a.device)?;
            if dtok.inner().get_vocab(true) != tok.inner().get_vocab(true) {
                anyhow::bail!(
                    "the draft {} has another tokenizer than the model: they must share one",
                    dir.display()
                );
            }
            let (g, s) = ferrochat_engine::generate_speculative(
                &model,
                &draft,
                &ids,
                &opts,
                a.draft_k,
                |t| stream.push(t, &mut out).is_ok(),
            )?;
            spec = Some(s);
            g
        }
    };
    stream.finish(&mut out)?;
    writeln!(out)?;
    if a.stats {
        eprintln!(
            "prompt {} tokens in {:.3}s; {} new tokens at {:.1} tokens/s",
            ids.len(),
            g.prefill_secs,
            g.tokens.len(),
            g.decode_tokens_per_sec()
        );
        if let Some(s) = spec {
            eprintln!(
                "draft: {:.0}% of {} drafted tokens kept, {:.2} tokens per pass of the model",
                100.0 * s.acceptance(),
                s.drafted,
                s.tokens_per_round(g.tokens.len())
            );
        }
    }
    Ok(())
}
