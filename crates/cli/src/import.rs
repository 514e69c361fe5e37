//! `ferrochat import hf`: a Hugging Face Llama-family folder (a SmolLM-class model someone
//! downloaded, or one `transformers` wrote) becomes a ferrochat checkpoint that every stage
//! takes: SFT, reward modelling, PPO, DPO, GRPO, distillation, serving.
//!
//! Weights come from `model.safetensors` or from the shards an index names, in any float
//! type, and are stored as f32. The tokenizer is kept as it is, plus ferrochat's chat
//! tokens when it lacks them: they are added after its vocabulary, and the embedding (and
//! an untied output layer) grows by as many rows, set to the mean row so a new token
//! starts as an average one (rows padding the vocabulary to a round size are dropped).
//! Whatever the folder cannot be run as faithfully (rope scaling, biases, another
//! activation, another architecture) is refused by name.
//!
//! A folder with its own Jinja chat template keeps it: every stage then renders
//! conversations with it (training targets are the answers and the template's end-of-turn
//! token, its `eos_token`, which also ends generation), and `export hf` writes it back.
//! `--native-template` uses ferrochat's template instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use ferrochat_model::{checkpoint, weights, Config};
use ferrochat_tokenizer::Tokenizer;
use ferrochat_tokenizer::SPECIAL_TOKENS;

#[derive(clap::Subcommand)]
pub enum Command {
    /// A Hugging Face LlamaForCausalLM folder (config.json, model.safetensors or shards
    /// with model.safetensors.index.json, tokenizer.json) as a ferrochat checkpoint
    Hf(HfArgs),
}

#[derive(clap::Args)]
pub struct HfArgs {
    /// The Hugging Face folder
    pub folder: PathBuf,
    /// The checkpoint folder to write (must not exist, or be empty)
    #[arg(long)]
    pub output: PathBuf,
    /// Render conversations with ferrochat's chat template (`<|user|>`...`<|end|>`) even
    /// when the folder has its own (by default its own template is kept and used)
    #[arg(long)]
    pub native_template: bool,
}

pub fn run(c: Command) -> Result<()> {
    let Command::Hf(a) = c;
    let r = import_hf(&a.folder, &a.output, a.native_template)?;
    println!(
        "imported {} ({:.1}M parameters, {} weight file(s){}) to {}; conversations are \
         rendered with {}",
        a.folder.display(),
        r.params as f64 / 1e6,
        r.files,
        if r.added > 0 {
            format!(", {} chat tokens added to the vocabulary", r.added)
        } else {
            String::new()
        },
        a.output.display(),
        r.template,
    );
    Ok(())
}

struct Imported {
    params: usize,
    files: usize,
    added: usize,
    /// Which chat template the checkpoint renders with, in words.
    template: String,
}

fn import_hf(src: &Path, out: &Path, native_template: bool) -> Result<Imported> {
    let cfg_path = src.join("config.json");
    let raw: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("cannot read {}", cfg_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", cfg_path.display()))?;
    check_supported(&raw, &cfg_path)?;
    let mut fields = raw.clone();
    // ids are set from the tokenizer below; a list of end ids is Hugging Face's, not ours
    for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        fields[k] = serde_json::Value::Null;
    }
    let mut cfg: Config = serde_json::from_value(fields)
        .with_context(|| format!("{}: not a Llama config", cfg_path.display()))?;
    cfg.architectures = vec![ferrochat_model::config::CAUSAL_LM.to_string()];
    cfg.torch_dtype = "float32".into();
    cfg.validate()
        .with_context(|| format!("{}", cfg_path.display()))?;

    let (mut w, files) = read_weights(src)?;
    w.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
    if cfg.tie_word_embeddings {
        w.remove("lm_head.weight");
    }

    // the tokenizer, with ferrochat's chat tokens after its own vocabulary
    let tok_path = src.join("tokenizer.json");
    let mut inner = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tok_path.display()))?;
    let missing: Vec<tokenizers::AddedToken> = SPECIAL_TOKENS
        .iter()
        .filter(|t| inner.token_to_id(t).is_none())
        .map(|t| tokenizers::AddedToken::from(t.to_string(), true))
        .collect();
    let added = inner
        .add_special_tokens(missing)
        .map_err(|e| anyhow::anyhow!("{}: cannot add the chat tokens: {e}", tok_path.display()))?;
    // one row per token: grown for the added tokens, or cut where the folder padded its
    // vocabulary to a round size (rows no token id reaches; every stage here expects the
    // model's and the tokenizer's vocabularies to agree)
    let vocab = inner.get_vocab_size(true);
    if vocab != cfg.vocab_size {
        for name in ["model.embed_tokens.weight", "lm_head.weight"] {
            if let Some(t) = w.get(name) {
                let fitted = if vocab > cfg.vocab_size {
                    grow_rows(t, vocab)?
                } else {
                    t.narrow(0, 0, vocab)?.contiguous()?
                };
                w.insert(name.to_string(), fitted);
            }
        }
        cfg.vocab_size = vocab;
    }
    let mut tok = Tokenizer::from_inner(inner)?;
    // the folder's own chat template, with the start and end-of-turn tokens it names:
    // newer transformers write it to its own file, older ones into the tokenizer config
    let tcfg_path = src.join("tokenizer_config.json");
    let tcfg: serde_json::Value = match std::fs::read_to_string(&tcfg_path) {
        Ok(t) => serde_json::from_str(&t)
            .with_context(|| format!("{} is not JSON", tcfg_path.display()))?,
        Err(_) => serde_json::Value::Null,
    };
    let template = std::fs::read_to_string(src.join("chat_template.jinja"))
        .ok()
        .or_else(|| ferrochat_tokenizer::template_from_config(&tcfg["chat_template"]));
    let mut rendered_with = "ferrochat's chat template (the folder has none)".to_string();
    if let Some(source) = template.as_deref().filter(|_| !native_template) {
        let token = |k: &str| ferrochat_tokenizer::token_from_config(&tcfg[k]);
        let eos = token("eos_token").with_context(|| {
            format!(
                "{}: the chat template's end-of-turn token (eos_token) is not named; \
                 import with --native-template",
                tcfg_path.display()
            )
        })?;
        let t = ferrochat_tokenizer::ChatTemplate::new(
            source,
            &token("bos_token").unwrap_or_default(),
            &eos,
        )
        .and_then(|t| tok.clone().with_template(t))
        .with_context(|| {
            format!(
                "{}: its chat template cannot be used (import with --native-template to \
                     use ferrochat's)",
                src.display()
            )
        })?;
        tok = t;
        rendered_with = format!("the folder's own chat template (turns end with {eos})");
    } else if template.is_some() {
        rendered_with = "ferrochat's chat template (--native-template)".into();
    }
    let s = tok.special();
    (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) =
        (Some(s.bos), Some(s.end), Some(s.pad));
    weights::check_weights(&cfg, &w, &src.display().to_string())?;

    crate::export::empty_folder(out)?;
    let meta = checkpoint::Meta {
        stage: "import".into(),
        step: 0,
        data: serde_json::json!({
            "source": src, "weight_files": files, "chat_tokens_added": added,
            "source_chat_template": template,
            "rendered_with": rendered_with,
        }),
        ..Default::default()
    };
    checkpoint::save(out, &cfg, &w, &meta, |dir| {
        tok.save(dir)
            .map_err(|e| ferrochat_model::ModelError::Io(e.to_string()))
    })?;
    Ok(Imported {
        params: cfg.num_params(),
        files,
        added,
        template: rendered_with,
    })
}

/// Refuses, by name, what this model code would run differently from `transformers`.
fn check_supported(raw: &serde_json::Value, path: &Path) -> Result<()> {
    let model_type = raw["model_type"].as_str().unwrap_or("");
    if model_type != "llama" {
        bail!(
            "{}: model_type `{model_type}` is not supported: ferrochat imports Llama-family \
             models (model_type llama)",
            path.display()
        );
    }
    if let Some(r) = raw.get("rope_scaling").filter(|r| !r.is_null()) {
        bail!(
            "{}: rope_scaling {r} is not supported (plain rotary positions only)",
            path.display()
        );
    }
    for k in ["attention_bias", "mlp_bias"] {
        if raw[k].as_bool() == Some(true) {
            bail!("{}: {k} is not supported (no biases)", path.display());
        }
    }
    Ok(())
}

/// The weights of a folder: one `model.safetensors`, or the shards its index lists.
fn read_weights(src: &Path) -> Result<(HashMap<String, Tensor>, usize)> {
    let index = src.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&index)
                .with_context(|| format!("cannot read {}", index.display()))?,
        )
        .with_context(|| format!("{} is not JSON", index.display()))?;
        let map = v["weight_map"]
            .as_object()
            .with_context(|| format!("{}: no weight_map", index.display()))?;
        let mut names: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
        names.sort();
        names.dedup();
        for n in &names {
            if n.contains('/') || n.contains("..") {
                bail!(
                    "{}: shard name `{n}` is not a file beside it",
                    index.display()
                );
            }
        }
        names.into_iter().map(|n| src.join(n)).collect()
    } else {
        vec![src.join("model.safetensors")]
    };
    let mut w = HashMap::new();
    for f in &files {
        // floats of any width arrive as f32
        for (k, t) in checkpoint::load_tensors(f, &Device::Cpu)? {
            if w.insert(k.clone(), t).is_some() {
                bail!("{}: tensor `{k}` appears in two shards", f.display());
            }
        }
    }
    Ok((w, files.len()))
}

/// `t` (rows, C) with rows added up to `rows`, each the mean of the existing ones.
fn grow_rows(t: &Tensor, rows: usize) -> Result<Tensor> {
    let (n, _) = t.dims2()?;
    let mean = t.mean_keepdim(0)?;
    let extra = mean.repeat((rows - n, 1))?;
    Ok(Tensor::cat(&[t, &extra], 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_would_run_differently_is_refused_by_name() {
        let p = Path::new("config.json");
        let ok = serde_json::json!({"model_type": "llama", "rope_scaling": null});
        assert!(check_supported(&ok, p).is_ok());
        for (bad, word) in [
            (serde_json::json!({"model_type": "qwen2"}), "qwen2"),
            (
                serde_json::json!({"model_type": "llama", "rope_scaling": {"rope_type": "llama3"}}),
                "rope_scaling",
            ),
            (
                serde_json::json!({"model_type": "llama", "attention_bias": true}),
                "attention_bias",
            ),
        ] {
            let e = check_supported(&bad, p).unwrap_err().to_string();
            assert!(e.contains(word) && e.contains("config.json"), "{e}");
        }
    }

    #[test]
    fn padded_rows_go_and_new_rows_start_at_the_mean() {
        let t = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        let g = grow_rows(&t, 3).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(g, vec![vec![1., 2.], vec![3., 4.], vec![2., 3.]]);
    }
}
