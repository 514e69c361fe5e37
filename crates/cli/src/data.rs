//! `ferrochat data prepare`: corpora to token shards.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferrochat_text::{
    prepare_with_progress, CorpusOptions, Manifest, PrepareOptions, ProgressInfo,
};
use ferrochat_tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Tokenize text (txt, jsonl, parquet; files or folders) into train/val token shards
    Prepare(PrepareArgs),
}

#[derive(clap::Args)]
pub struct PrepareArgs {
    /// Tokenizer folder (or a checkpoint folder); it is copied beside the shards
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Folder for the shards and manifest.json
    #[arg(long)]
    pub output: PathBuf,
    /// Share of documents held out for validation
    #[arg(long, default_value_t = 0.01)]
    pub val_fraction: f64,
    /// JSON-lines field holding the text
    #[arg(long, default_value = "text")]
    pub json_field: String,
    /// Parquet column holding the text
    #[arg(long, default_value = "text")]
    pub parquet_column: String,
    /// Plain-text files larger than this many bytes are split into documents at blank
    /// lines (smaller files are one document each); also the longest document kept whole
    #[arg(long, default_value_t = 8 << 20)]
    pub split_above: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub quiet: bool,
    /// Text files or folders
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Prepare(a) => {
            let tok = Tokenizer::load(&a.tokenizer)?;
            let m = prepare(&a, &tok)?;
            if !a.quiet {
                println!(
                    "{} documents, {} train + {} val tokens ({:.2} bytes/token) written to {}",
                    m.documents,
                    m.train.tokens,
                    m.val.tokens,
                    m.source_bytes as f64 / (m.train.tokens + m.val.tokens).max(1) as f64,
                    a.output.display()
                );
            }
            Ok(())
        }
    }
}

pub fn prepare(a: &PrepareArgs, tok: &Tokenizer) -> Result<Manifest> {
    let mut opts = PrepareOptions::new(tok.vocab_size() as u32, Some(tok.special().bos));
    opts.corpus = CorpusOptions {
        json_field: a.json_field.clone(),
        parquet_column: a.parquet_column.clone(),
        split_text_above: a.split_above,
    };
    opts.val_fraction = a.val_fraction;
    opts.seed = a.seed;
    opts.tokenizer = "tokenizer.json".into();
    let encode = |texts: &[String]| -> std::result::Result<Vec<Vec<u32>>, String> {
        texts
            .iter()
            .map(|t| tok.encode(t).map_err(|e| e.to_string()))
            .collect()
    };
    let bar = (!a.quiet).then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{bar:30.cyan/blue} {bytes}/{total_bytes}  {msg}  [{elapsed_precise} < {eta_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let progress = |p: &ProgressInfo| {
        if let Some(b) = &bar {
            b.set_length(p.input_bytes_total);
            b.set_position(p.input_bytes_read);
            b.set_message(format!("{} docs, {} tokens", p.documents, p.tokens));
        }
    };
    let m = prepare_with_progress(&a.inputs, &a.output, &opts, &encode, &progress)
        .with_context(|| format!("preparing {}", a.output.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    tok.save(&a.output)?;
    Ok(m)
}

/// The tokenizer for shards: `--tokenizer` if given, else the copy beside the shards.
pub fn tokenizer_for(data: &Path, explicit: Option<&Path>) -> Result<Tokenizer> {
    match explicit {
        Some(path) => Ok(Tokenizer::load(path)?),
        None => Tokenizer::load(data).with_context(|| {
            format!(
                "no --tokenizer given and none beside the shards in {}",
                data.display()
            )
        }),
    }
}
