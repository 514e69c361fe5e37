//! A Llama-family decoder-only transformer on candle, laid out so that a checkpoint
//! folder is a valid Hugging Face `LlamaForCausalLM` folder.

pub mod ops;
