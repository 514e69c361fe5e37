//! A Llama-family decoder-only transformer on candle, laid out so that a checkpoint
//! folder is a valid Hugging Face `LlamaForCausalLM` folder.

pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod gguf;
pub mod linear;
pub mod llama;
pub mod ops;
pub mod prune;
pub mod weights;

pub use cache::KvCache;
pub use config::Config;
pub use llama::Llama;

/// Errors of building, loading and running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("{0}")]
    Weights(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
