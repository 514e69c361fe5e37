//! `ferrochat export hf|gguf`: a checkpoint as a clean Hugging Face folder, or as one GGUF
//! file for llama.cpp. Our checkpoints are already valid `LlamaForCausalLM` (or
//! `LlamaForSequenceClassification`) folders; `hf` leaves out the training state and adds
//! what generation tools look for; `gguf` adds the tokenizer and chat template to the
//! weights, so the file stands alone.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use ferrochat_model::gguf::{self, GgufType};
use ferrochat_model::{checkpoint, Config};
use ferrochat_tokenizer::Tokenizer;

#[derive(clap::Subcommand)]
pub enum Command {
    /// A Hugging Face folder: weights, config, tokenizer with its chat template, and
    /// generation_config.json (no trainer state)
    Hf(HfArgs),
    /// One GGUF file for llama.cpp: weights (f32, f16 or q8_0), hyper-parameters, the
    /// byte-level BPE tokenizer and the chat template
    Gguf(GgufArgs),
}

#[derive(clap::Args)]
pub struct GgufArgs {
    /// The checkpoint to export (a language model, not a reward model)
    #[arg(long)]
    pub model: PathBuf,
    /// The file to write, e.g. model.gguf
    #[arg(long)]
    pub output: PathBuf,
    /// How the weight matrices are stored: f32, f16, q8_0 or q4_0 (norms stay f32)
    #[arg(long = "type", default_value = "f16")]
    pub ty: String,
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
    match c {
        Command::Hf(a) => {
            let dir = hf(&a.model, &a.output)?;
            println!("exported {} to {}", a.model.display(), dir.display());
        }
        Command::Gguf(a) => {
            let ty = GgufType::parse(&a.ty)?;
            refuse_foreign_routing(&a.model, &checkpoint::load_config(&a.model)?, "llama.cpp")?;
            let bytes = gguf(&a.model, ty)?;
            ferrochat_text::write_atomic(&a.output, &bytes)
                .with_context(|| format!("cannot write {}", a.output.display()))?;
            println!(
                "exported {} to {} ({}, {:.1} MB)",
                a.model.display(),
                a.output.display(),
                a.ty,
                bytes.len() as f64 / 1e6
            );
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The checkpoint to quantize (f32, a language model)
    #[arg(long)]
    pub model: PathBuf,
    /// The folder to write (must not exist, or be empty)
    #[arg(long)]
    pub output: PathBuf,
    /// q8_0 (8-bit) or q4_0 (4-bit), both in blocks of 32 weights with one scale; f16 also
    #[arg(long = "type", default_value = "q8_0")]
    pub ty: String,
}

/// A quantized checkpoint folder: the config, tokenizer and meta of the original beside
/// the weights as GGUF (the very file `export gguf` writes).
pub fn quantize(a: QuantizeArgs) -> Result<()> {
    let src = checkpoint::resolve(&a.model)?;
    let bytes = quantize_quiet(&src, &a.output, &a.ty)?;
    let before = std::fs::metadata(src.join("model.safetensors"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "quantized {} to {} ({}): {:.2} MB of weights, {:.2} MB before",
        a.model.display(),
        a.output.display(),
        a.ty,
        bytes as f64 / 1e6,
        before as f64 / 1e6
    );
    Ok(())
}

/// Writes the quantized folder of `model` into `out` (new or empty); returns the size of
/// its weights file.
pub fn quantize_quiet(model: &Path, out: &Path, ty: &str) -> Result<usize> {
    let ty = GgufType::parse(ty)?;
    if ty == GgufType::F32 {
        bail!("--type f32 is the checkpoint as it is: quantize to q8_0, q4_0 or f16");
    }
    let src = checkpoint::resolve(model)?;
    empty_folder(out)?;
    let bytes = gguf(&src, ty)?;
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "meta.json",
    ] {
        let from = src.join(f);
        if from.exists() {
            std::fs::copy(&from, out.join(f))
                .with_context(|| format!("cannot copy {} to {}", from.display(), out.display()))?;
        }
    }
    let file = out.join(gguf::QUANTIZED_FILE);
    ferrochat_text::write_atomic(&file, &bytes)
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(bytes.len())
}

/// Refuses a folder that holds anything, then makes sure it exists: where a command
/// writes a new checkpoint or export.
pub fn empty_folder(out: &Path) -> Result<()> {
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some()
    {
        bail!("{} is not empty: write into a new folder", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

/// Refuses to export a mixture of experts whose routing `to` would compute differently.
fn refuse_foreign_routing(model: &Path, cfg: &Config, to: &str) -> Result<()> {
    if let Some(why) = cfg.routing_differs_from_mixtral() {
        bail!(
            "{}: {to} would not run this mixture of experts as ferrochat does: {why}. \
             Train with --experts-per-token 2 or more and no --capacity-factor to export it",
            model.display()
        );
    }
    Ok(())
}

/// The GGUF file of a checkpoint, as bytes.
fn gguf(model: &Path, ty: GgufType) -> Result<Vec<u8>> {
    let (cfg, w) = checkpoint::load(model, &candle_core::Device::Cpu)?;
    let name = model
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "ferrochat".into());
    let mut meta = gguf::llama_metadata(&cfg, &name, ty);
    meta.extend(gguf_tokenizer(model)?);
    let tensors = gguf::llama_tensors(&cfg, &w, ty)?;
    Ok(gguf::to_bytes(&meta, &tensors)?)
}

/// `tokenizer.ggml.*` and the chat template, from the checkpoint's tokenizer files: the
/// byte-level vocabulary and merges as they are (llama.cpp's `gpt2` tokenizer model), the
/// special tokens as control tokens, and the pre-tokenizer whose split expression ours
/// follows (`qwen2`: letters in runs, digits one by one).
fn gguf_tokenizer(model: &Path) -> Result<Vec<(String, Value)>> {
    let tok = Tokenizer::load(model)?;
    let path = model.join("tokenizer.json");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    let bpe = &json["model"];
    if bpe["type"] != "BPE" {
        bail!("{}: only a BPE tokenizer has a GGUF form", path.display());
    }
    let n = tok.vocab_size();
    let mut tokens = vec![String::new(); n];
    let mut types = vec![1i32; n]; // normal
    let vocab = bpe["vocab"]
        .as_object()
        .with_context(|| format!("{}: model.vocab is not a map", path.display()))?;
    for (t, id) in vocab {
        if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
            *slot = t.clone();
        }
    }
    for a in json["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(t)) = (a["id"].as_u64(), a["content"].as_str()) {
            if let Some(slot) = tokens.get_mut(id as usize) {
                *slot = t.to_string();
                types[id as usize] = if a["special"] == true { 3 } else { 4 }; // control / user-defined
            }
        }
    }
    if let Some(i) = tokens.iter().position(|t| t.is_empty()) {
        bail!("{}: token id {i} has no text", path.display());
    }
    let merges: Vec<Value> = bpe["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(p) => {
                Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
            }
            _ => None,
        })
        .map(Value::String)
        .collect();
    let s = tok.special();
    let mut meta = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("qwen2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(s.bos)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(s.end)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(s.pad)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)),
    ];
    let config = model.join("tokenizer_config.json");
    if let Some(t) = std::fs::read_to_string(&config)
        .ok()
        .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
        .and_then(|c| c["chat_template"].as_str().map(str::to_string))
    {
        meta.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    Ok(meta)
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
    refuse_foreign_routing(model, &cfg, "transformers")?;
    let tok = Tokenizer::load(model)?;
    empty_folder(out)?;
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
