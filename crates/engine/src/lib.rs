//! The inference engine: token ids in, token ids out. It knows nothing of text; the
//! tokenizer and chat template live upstream.

pub mod generate;
pub mod sampler;

pub use generate::{generate, GenerateOptions, Generation};
pub use sampler::{Sampler, SamplingParams};
