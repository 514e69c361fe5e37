//! The tokenizer: a byte-level BPE trained with Hugging Face `tokenizers`, the reserved
//! chat tokens, and the chat template that turns a conversation into token ids plus a
//! loss mask. The saved `tokenizer.json` loads unchanged in Hugging Face `tokenizers`.

mod chat;
mod special;
mod template;
mod train;

pub use chat::{ChatEncoding, Fitted, CHAT_TEMPLATE_JINJA};
pub use special::{SpecialTokens, SPECIAL_TOKENS};
pub use template::{template_from_config, token_from_config, ChatTemplate};
pub use train::TrainOptions;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrochat_text::write_atomic;

/// Errors of loading, training and using a tokenizer; each names the file or token at fault.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("no tokenizer at {path}: {reason}")]
    Missing { path: PathBuf, reason: String },
    #[error("cannot read tokenizer {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("tokenizer {path} lacks the special token {token}; it was not trained by ferrochat or was edited")]
    MissingSpecial { path: PathBuf, token: String },
    #[error("cannot write tokenizer to {path}: {reason}")]
    Save { path: PathBuf, reason: String },
    #[error("tokenizer training failed: {0}")]
    Train(String),
    #[error("cannot encode text: {0}")]
    Encode(String),
    #[error("{0}")]
    TooLong(String),
    #[error("cannot decode ids: {0}")]
    Decode(String),
    #[error("{0}")]
    Template(String),
}

pub type Result<T> = std::result::Result<T, TokenizerError>;

/// A trained tokenizer with the chat tokens resolved to ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same, but reading special-token strings as plain text: what message contents
    /// are encoded with, so text typed as `<|assistant|>` never becomes the control token.
    plain: tokenizers::Tokenizer,
    special: SpecialTokens,
    /// The model's own chat template (an imported model's); `None`: ferrochat's.
    template: Option<Arc<ChatTemplate>>,
    /// Added tokens (string, id), longest first: where rendered template text is split.
    added: Arc<Vec<(String, u32)>>,
}

impl Tokenizer {
    /// Loads `tokenizer.json` from a file or from a checkpoint/tokenizer folder.
    pub fn load(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        if !file.exists() {
            return Err(TokenizerError::Missing {
                path: file,
                reason: "file not found (train one with `ferrochat tokenizer train`)".into(),
            });
        }
        let load = |reason: String| TokenizerError::Load {
            path: file.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&file).map_err(|e| load(e.to_string()))?;
        // the tokenizers library panics on some malformed files: check the JSON first,
        // and turn a panic on valid JSON of the wrong shape into an error too
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| load(format!("not valid JSON: {e}")))?;
        let parsed = std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>())
            .map_err(|_| load("not a tokenizer the tokenizers library can read".into()))?;
        let inner = parsed.map_err(|e| load(e.to_string()))?;
        let special = SpecialTokens::resolve(&inner, &file)?;
        let tok = Self::assemble(inner, special);
        let config = file.with_file_name("tokenizer_config.json");
        match read_template(&config)? {
            Some(t) => tok.with_template(t).map_err(|e| TokenizerError::Load {
                path: config,
                reason: e.to_string(),
            }),
            None => Ok(tok),
        }
    }

    fn assemble(inner: tokenizers::Tokenizer, special: SpecialTokens) -> Self {
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);
        let mut added: Vec<(String, u32)> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (t.content, id))
            .filter(|(s, _)| !s.is_empty())
            .collect();
        added.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Self {
            inner,
            plain,
            special,
            template: None,
            added: Arc::new(added),
        }
    }

    /// Wraps a `tokenizers` tokenizer that already has the chat tokens.
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Result<Self> {
        let special = SpecialTokens::resolve(&inner, Path::new("<memory>"))?;
        Ok(Self::assemble(inner, special))
    }

    /// Renders conversations with `template` (a model's own) instead of ferrochat's; its
    /// end-of-turn token (`eos_token`) becomes [`SpecialTokens::end`], where answers stop.
    pub fn with_template(mut self, template: ChatTemplate) -> Result<Self> {
        let eos = &template.eos_token;
        self.special.end = self.inner.token_to_id(eos).ok_or_else(|| {
            TokenizerError::Template(format!(
                "the chat template's end-of-turn token {eos:?} is not in the vocabulary"
            ))
        })?;
        self.template = Some(Arc::new(template));
        // a template that cannot render a plain exchange is refused now, not mid-training
        self.encode_chat(&[
            ferrochat_text::Message::user("Hi"),
            ferrochat_text::Message::assistant("Hello"),
        ])?;
        Ok(self)
    }

    /// The model's own chat template, when it has one (else ferrochat's is used).
    pub fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_deref()
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` (with the chat template) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let err = |reason: String| TokenizerError::Save {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| err(e.to_string()))?;
        write_atomic(&dir.join("tokenizer.json"), json.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        let config = chat::tokenizer_config(self.template.as_deref());
        let config = serde_json::to_string_pretty(&config).map_err(|e| err(e.to_string()))?;
        write_atomic(&dir.join("tokenizer_config.json"), config.as_bytes())
            .map_err(|e| err(e.to_string()))
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// Size of the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes plain text (special-token strings in it are recognised as such).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes text in which special-token strings are plain characters: what the chat
    /// template uses for message contents (a user who types `<|end|>` gets those
    /// characters, not the end of their turn).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .plain
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes text with offsets, special-token strings as plain characters.
    pub(crate) fn encode_plain_offsets(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.plain
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Encodes many texts in parallel.
    pub fn encode_batch(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let encs = self
            .inner
            .encode_batch_fast(refs, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Decodes ids to text; special tokens are kept when `keep_special`.
    pub fn decode(&self, ids: &[u32], keep_special: bool) -> Result<String> {
        self.inner
            .decode(ids, !keep_special)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Bytes of UTF-8 text per token on `text` (higher is better compression).
    pub fn bytes_per_token(&self, text: &str) -> Result<f64> {
        let n = self.encode(text)?.len().max(1);
        Ok(text.len() as f64 / n as f64)
    }
}

/// A model's own chat template from `tokenizer_config.json`, if it has one that is not
/// ferrochat's. A missing file or template: none.
fn read_template(config: &Path) -> Result<Option<ChatTemplate>> {
    let Ok(text) = std::fs::read_to_string(config) else {
        return Ok(None);
    };
    let err = |reason: String| TokenizerError::Load {
        path: config.to_path_buf(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let Some(source) = template::template_from_config(&v["chat_template"]) else {
        return Ok(None);
    };
    if source == CHAT_TEMPLATE_JINJA {
        return Ok(None);
    }
    let bos = template::token_from_config(&v["bos_token"]).unwrap_or_default();
    let eos = template::token_from_config(&v["eos_token"])
        .ok_or_else(|| err("a chat template without an eos_token (its end of turn)".into()))?;
    ChatTemplate::new(&source, &bos, &eos)
        .map(Some)
        .map_err(|e| err(e.to_string()))
}
