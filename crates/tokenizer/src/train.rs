//! Training a byte-level BPE. Text is first split GPT-4 style (words with their leading
//! space, punctuation runs, whitespace) with every digit its own piece, so numbers are
//! spelled digit by digit and arithmetic stays learnable; then mapped to bytes, so any
//! text, Chinese or emoji included, encodes without unknown tokens.

use crate::special::SPECIAL_TOKENS;
use crate::{Result, Tokenizer, TokenizerError};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// The pre-tokenizer's split pattern.
pub const SPLIT_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// What `ferrochat tokenizer train` sets.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Final vocabulary size, the special tokens included.
    pub vocab_size: usize,
    /// Pairs seen fewer times are not merged.
    pub min_frequency: u64,
    pub show_progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            vocab_size: 4096,
            min_frequency: 2,
            show_progress: false,
        }
    }
}

fn pre_tokenizer() -> Result<PreTokenizerWrapper> {
    let split = Split::new(
        SplitPattern::Regex(SPLIT_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| TokenizerError::Train(format!("bad split pattern: {e}")))?;
    let bytes = ByteLevel::new(false, true, false);
    Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(bytes),
    ])))
}

impl Tokenizer {
    /// Trains a tokenizer on a stream of texts (documents or lines).
    pub fn train<I, S>(texts: I, opts: &TrainOptions) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let min_vocab = SPECIAL_TOKENS.len() + 256;
        if opts.vocab_size < min_vocab {
            return Err(TokenizerError::Train(format!(
                "vocabulary size {} is too small: it needs at least {min_vocab} (256 bytes and {} special tokens)",
                opts.vocab_size,
                SPECIAL_TOKENS.len()
            )));
        }
        let specials: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(opts.vocab_size)
            .min_frequency(opts.min_frequency)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .show_progress(opts.show_progress)
            .build();
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        let mut tok = tokenizers::Tokenizer::new(BPE::default());
        tok.with_pre_tokenizer(Some(pre_tokenizer()?));
        tok.with_decoder(Some(ByteLevelDecoder::default()));
        tok.train(&mut trainer, texts)
            .map_err(|e| TokenizerError::Train(e.to_string()))?;
        Tokenizer::from_inner(tok)
    }
}
