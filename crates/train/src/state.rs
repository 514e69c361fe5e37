//! The trainer's own state beside the model in a checkpoint folder, so `--resume`
//! continues exactly where a run stopped: `trainer.safetensors` (optimizer moments) and
//! `trainer.json` (step, tokens seen, the data sampler's position, the run's options).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub stage: String,
    /// Steps completed.
    pub step: u64,
    pub tokens: u64,
    /// Position of the data sampler's ChaCha stream (u128 as a decimal string: JSON
    /// numbers lose precision past 2^53).
    pub rng_word_pos: String,
    pub elapsed_secs: f64,
    /// The options the run was started with; a resume must match them.
    pub options: serde_json::Value,
}

pub const STATE_JSON: &str = "trainer.json";
pub const STATE_TENSORS: &str = "trainer.safetensors";

impl TrainerState {
    pub fn save(&self, dir: &Path, optimizer: Vec<(String, Tensor)>) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| TrainError::Io(e.to_string()))?;
        let path = dir.join(STATE_JSON);
        std::fs::write(&path, json)
            .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
        let map: HashMap<String, Tensor> = optimizer.into_iter().collect();
        ferrochat_model::checkpoint::save_tensors(&dir.join(STATE_TENSORS), &map)?;
        Ok(())
    }

    pub fn load(dir: &Path, device: &Device) -> Result<(Self, HashMap<String, Tensor>)> {
        let path = dir.join(STATE_JSON);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            TrainError::Resume(format!(
                "{}: {e} (the folder holds no trainer state; was it written by a finished run of another stage?)",
                path.display()
            ))
        })?;
        let state: TrainerState = serde_json::from_str(&text)
            .map_err(|e| TrainError::Resume(format!("{}: {e}", path.display())))?;
        let tensors = ferrochat_model::checkpoint::load_tensors(&dir.join(STATE_TENSORS), device)?;
        Ok((state, tensors))
    }

    pub fn word_pos(&self) -> Result<u128> {
        self.rng_word_pos.parse().map_err(|_| {
            TrainError::Resume(format!(
                "bad rng_word_pos `{}` in {STATE_JSON}",
                self.rng_word_pos
            ))
        })
    }
}
