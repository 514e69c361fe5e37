//! The inference engine: token ids in, token ids out. It knows nothing of text; the
//! tokenizer and chat template live upstream.
//!
//! [`Sampler`] picks a token from logits; [`Batch`] runs sequences of any lengths
//! together, one token each per [`Batch::step`] (the base of continuous batching);
//! [`generate`] and [`generate_batch`] run prompts to the end on top of it.

pub mod batch;
pub mod generate;
pub mod sampler;
pub mod speculative;
pub mod watermark;

pub use batch::{Batch, FinishReason, SeqId, StepToken};
pub use generate::{generate, generate_batch, generate_batch_to, GenerateOptions, Generation};
pub use sampler::{Sampler, SamplingParams};
pub use speculative::{generate_speculative, SpecStats};
pub use watermark::{Detection, Watermark};
