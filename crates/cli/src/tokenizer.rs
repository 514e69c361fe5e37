//! `ferrochat tokenizer train|encode`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrochat_text::{for_each_document, CorpusOptions};
use ferrochat_tokenizer::{Tokenizer, TrainOptions};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Train a byte-level BPE on text files (txt, jsonl, parquet; files or folders)
    Train(TrainArgs),
    /// Show how a text is tokenized
    Encode(EncodeArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Vocabulary size, the special chat tokens included
    #[arg(long, default_value_t = 4096)]
    pub vocab_size: usize,
    /// Folder to write tokenizer.json and tokenizer_config.json into
    #[arg(long)]
    pub output: PathBuf,
    /// Train on at most this many bytes of text (the first ones)
    #[arg(long, default_value_t = 200_000_000)]
    pub max_bytes: u64,
    /// JSON-lines field holding the text
    #[arg(long, default_value = "text")]
    pub json_field: String,
    /// Parquet column holding the text
    #[arg(long, default_value = "text")]
    pub parquet_column: String,
    #[arg(long)]
    pub quiet: bool,
    /// Text files or folders
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct EncodeArgs {
    /// A tokenizer folder or tokenizer.json (a checkpoint folder works too)
    #[arg(long)]
    pub model: PathBuf,
    /// The text; with --chat, a conversation as JSON: {"messages":[{"role":..,"content":..}]}
    pub text: String,
    /// Render TEXT with the chat template and print the ids and the loss mask as JSON
    #[arg(long)]
    pub chat: bool,
    /// With --chat: end with `<|assistant|>` so the model answers next
    #[arg(long)]
    pub add_generation_prompt: bool,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Train(a) => {
            let tok = train(
                &a.inputs,
                a.vocab_size,
                a.max_bytes,
                &a.json_field,
                &a.parquet_column,
            )?;
            tok.save(&a.output)?;
            if !a.quiet {
                println!(
                    "tokenizer with {} tokens written to {}",
                    tok.vocab_size(),
                    a.output.display()
                );
            }
            Ok(())
        }
        Command::Encode(a) if a.chat => {
            let tok = Tokenizer::load(&a.model)?;
            let conv: ferrochat_text::Conversation = serde_json::from_str(&a.text)
                .map_err(|e| anyhow::anyhow!("--chat expects {{\"messages\": [...]}}: {e}"))?;
            let enc = tok.encode_chat_with(&conv.messages, a.add_generation_prompt)?;
            println!(
                "{}",
                serde_json::json!({ "ids": enc.ids, "mask": enc.mask })
            );
            Ok(())
        }
        Command::Encode(a) => {
            let tok = Tokenizer::load(&a.model)?;
            let ids = tok.encode(&a.text)?;
            let pieces: Vec<String> = ids
                .iter()
                .map(|&i| tok.decode(&[i], true).unwrap_or_default())
                .collect();
            println!(
                "{} bytes -> {} tokens ({:.2} bytes/token)",
                a.text.len(),
                ids.len(),
                a.text.len() as f64 / ids.len().max(1) as f64
            );
            println!("ids:    {ids:?}");
            println!("pieces: {pieces:?}");
            Ok(())
        }
    }
}

/// Trains on the documents of `inputs`, up to `max_bytes` of text.
pub fn train(
    inputs: &[PathBuf],
    vocab_size: usize,
    max_bytes: u64,
    json_field: &str,
    parquet_column: &str,
) -> Result<Tokenizer> {
    let opts = CorpusOptions {
        json_field: json_field.into(),
        parquet_column: parquet_column.into(),
        ..Default::default()
    };
    let mut texts = Vec::new();
    let mut bytes = 0u64;
    let stop = "byte budget reached";
    let r = for_each_document(inputs, &opts, |doc| {
        bytes += doc.text.len() as u64;
        texts.push(doc.text);
        if bytes >= max_bytes {
            return Err(ferrochat_text::TextError::InvalidOption(stop.into()));
        }
        Ok(())
    });
    match r {
        Ok(_) => {}
        Err(ferrochat_text::TextError::InvalidOption(m)) if m == stop => {}
        Err(e) => return Err(e.into()),
    }
    anyhow::ensure!(!texts.is_empty(), "no text found in {:?}", inputs);
    let opts = TrainOptions {
        vocab_size,
        ..Default::default()
    };
    Tokenizer::train(texts.into_iter(), &opts).context("training the tokenizer")
}
