//! Helpers shared by the tokenizer's integration tests.

use ferrochat_tokenizer::{ChatEncoding, Tokenizer};

/// The training targets of a rendered conversation, decoded (special tokens kept).
pub fn targets(tok: &Tokenizer, enc: &ChatEncoding) -> String {
    let t: Vec<u32> = enc
        .ids
        .iter()
        .zip(&enc.mask)
        .filter(|(_, &m)| m)
        .map(|(&i, _)| i)
        .collect();
    tok.decode(&t, true).unwrap()
}
