//! The reserved chat tokens. They take the first ids of every ferrochat vocabulary so a
//! model's embedding rows for them are stable across tokenizers of any size.

use crate::{Result, TokenizerError};
use std::path::Path;

pub const BOS: &str = "<|bos|>";
pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";
pub const SYSTEM: &str = "<|system|>";
/// Ends a turn; generation stops on it. Distinct from padding.
pub const END: &str = "<|end|>";
pub const PAD: &str = "<|pad|>";

/// In id order.
pub const SPECIAL_TOKENS: [&str; 6] = [BOS, USER, ASSISTANT, SYSTEM, END, PAD];

/// The ids of the chat tokens in one vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialTokens {
    pub bos: u32,
    pub user: u32,
    pub assistant: u32,
    pub system: u32,
    pub end: u32,
    pub pad: u32,
}

impl SpecialTokens {
    pub(crate) fn resolve(tok: &tokenizers::Tokenizer, path: &Path) -> Result<Self> {
        let id = |t: &str| {
            tok.token_to_id(t)
                .ok_or_else(|| TokenizerError::MissingSpecial {
                    path: path.to_path_buf(),
                    token: t.to_string(),
                })
        };
        Ok(Self {
            bos: id(BOS)?,
            user: id(USER)?,
            assistant: id(ASSISTANT)?,
            system: id(SYSTEM)?,
            end: id(END)?,
            pad: id(PAD)?,
        })
    }

    pub fn is_special(&self, id: u32) -> bool {
        [
            self.bos,
            self.user,
            self.assistant,
            self.system,
            self.end,
            self.pad,
        ]
        .contains(&id)
    }
}
