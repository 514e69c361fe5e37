//! Checkpoint folders: `config.json`, `model.safetensors`, `meta.json`, plus whatever the
//! stage adds (tokenizer files, `trainer.safetensors`). A folder is written whole into a
//! staging folder and swapped in by renames, so a kill at any moment leaves either the
//! old or the new checkpoint complete; loading recovers the old one if a swap was cut.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{weights, Config, ModelError, Result};

/// Bumped when the folder layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// `meta.json`: what produced a checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    pub format_version: u32,
    /// pretrain, sft, reward, ...
    pub stage: String,
    pub step: u64,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub metrics: serde_json::Value,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Io(format!("{}: {e}", path.display()))
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}{suffix}"))
}

/// Writes a checkpoint folder atomically. `extra` writes more files into the staging
/// folder before the swap (tokenizer, trainer state).
pub fn save(
    dir: &Path,
    cfg: &Config,
    tensors: &HashMap<String, Tensor>,
    meta: &Meta,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let staging = sibling(dir, ".partial");
    let old = sibling(dir, ".old");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io_err(&staging, e))?;
    }
    let staged = (|| {
        std::fs::create_dir_all(&staging).map_err(|e| io_err(&staging, e))?;
        let cfg_json = serde_json::to_string_pretty(cfg).map_err(|e| io_err(dir, e))?;
        std::fs::write(staging.join("config.json"), cfg_json).map_err(|e| io_err(&staging, e))?;
        let mut meta = meta.clone();
        meta.format_version = FORMAT_VERSION;
        let meta_json = serde_json::to_string_pretty(&meta).map_err(|e| io_err(dir, e))?;
        std::fs::write(staging.join("meta.json"), meta_json).map_err(|e| io_err(&staging, e))?;
        save_tensors(&staging.join("model.safetensors"), tensors)?;
        extra(&staging)?;
        sync_dir_files(&staging)
    })();
    if let Err(e) = staged {
        // a full disk or a read-only folder: free what was staged and say that the last
        // checkpoint stands
        let _ = std::fs::remove_dir_all(&staging);
        let kept = if dir.join("config.json").exists() {
            format!("the previous checkpoint in {} is untouched", dir.display())
        } else {
            "no earlier checkpoint was there".to_string()
        };
        return Err(ModelError::Io(format!(
            "cannot write the checkpoint: {e}; {kept}"
        )));
    }
    // swap: dir -> old, staging -> dir, drop old
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| io_err(dir, e))?;
    }
    std::fs::rename(&staging, dir).map_err(|e| io_err(dir, e))?;
    if let Some(parent) = dir.parent() {
        if let Ok(f) = std::fs::File::open(parent) {
            let _ = f.sync_all();
        }
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
    }
    Ok(())
}

fn sync_dir_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let path = entry.map_err(|e| io_err(dir, e))?.path();
        if path.is_file() {
            let f = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
            f.sync_all().map_err(|e| io_err(&path, e))?;
        }
    }
    Ok(())
}

/// Writes tensors as safetensors (f32 values on the CPU).
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let cpu: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&cpu, path).map_err(|e| io_err(path, e))
}

/// Reads all tensors of a safetensors file, converted to f32 on `device`; integer
/// tensors keep their type.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(ModelError::Io(format!(
            "{}: file not found",
            path.display()
        )));
    }
    let raw = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        ModelError::Weights(format!(
            "{} is not a readable safetensors file: {e}",
            path.display()
        ))
    })?;
    raw.into_iter()
        .map(|(k, t)| {
            let t = match t.dtype() {
                DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32)?,
                _ => t,
            };
            Ok((k, t.to_device(device)?))
        })
        .collect()
}

/// Finds the folder to read: `dir`, or the previous checkpoint if a swap was cut between
/// its two renames.
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    if dir.join("config.json").exists() {
        return Ok(dir.to_path_buf());
    }
    let old = sibling(dir, ".old");
    if !dir.exists() && old.join("config.json").exists() {
        std::fs::rename(&old, dir).map_err(|e| io_err(dir, e))?;
        return Ok(dir.to_path_buf());
    }
    if dir.exists() {
        Err(ModelError::Io(format!(
            "{} is not a checkpoint folder: it has no config.json",
            dir.display()
        )))
    } else {
        Err(ModelError::Io(format!(
            "checkpoint folder {} does not exist",
            dir.display()
        )))
    }
}

/// Reads `config.json`.
pub fn load_config(dir: &Path) -> Result<Config> {
    let dir = resolve(dir)?;
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let cfg: Config = serde_json::from_str(&text)
        .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
    cfg.validate()
        .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
    Ok(cfg)
}

/// Reads `meta.json` (a default one for folders from elsewhere, e.g. Hugging Face).
pub fn load_meta(dir: &Path) -> Result<Meta> {
    let path = resolve(dir)?.join("meta.json");
    if !path.exists() {
        return Ok(Meta::default());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let meta: Meta = serde_json::from_str(&text)
        .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
    if meta.format_version > FORMAT_VERSION {
        return Err(ModelError::Config(format!(
            "{}: format version {} is newer than this ferrochat understands ({FORMAT_VERSION})",
            path.display(),
            meta.format_version
        )));
    }
    Ok(meta)
}

/// The model of a checkpoint folder, ready to run: f32 weights, or the quantized ones of a
/// folder `ferrochat quantize` wrote.
pub fn load_model(dir: &Path, device: &Device) -> Result<crate::Llama> {
    let dir = resolve(dir)?;
    let gguf = dir.join(crate::gguf::QUANTIZED_FILE);
    if !dir.join("model.safetensors").exists() && gguf.exists() {
        let cfg = load_config(&dir)?;
        let w = crate::gguf::load_llama(&gguf, &cfg, device)?;
        return crate::Llama::new_quantized(&cfg, w, device);
    }
    let (cfg, w) = load(&dir, device)?;
    crate::Llama::new(&cfg, &w, device)
}

/// Reads config and weights, checking every name and shape against the config.
pub fn load(dir: &Path, device: &Device) -> Result<(Config, HashMap<String, Tensor>)> {
    let dir = resolve(dir)?;
    let cfg = load_config(&dir)?;
    let path = dir.join("model.safetensors");
    if !path.exists() && dir.join(crate::gguf::QUANTIZED_FILE).exists() {
        return Err(ModelError::Weights(format!(
            "{} holds a quantized model ({}), for inference only: train from the \
             checkpoint it was quantized from",
            dir.display(),
            crate::gguf::QUANTIZED_FILE
        )));
    }
    let mut w = load_tensors(&path, device)?;
    w.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
    if cfg.tie_word_embeddings || cfg.is_classifier() {
        w.remove("lm_head.weight");
    }
    weights::check_weights(&cfg, &w, &path.display().to_string())?;
    Ok((cfg, w))
}
