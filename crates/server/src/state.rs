//! What the server holds: its models (each with its tokenizer and batching worker), its
//! settings, the API keys, the feedback store and the counters.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ferrochat_model::{checkpoint, Llama};
use ferrochat_tokenizer::Tokenizer;

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::openai::Limits;
use crate::scheduler::{Draft, Scheduler};
use crate::store::Store;

/// One model the server answers with.
pub struct ServedModel {
    /// The `model` field clients send.
    pub name: String,
    pub tokenizer: Arc<Tokenizer>,
    pub scheduler: Scheduler,
    /// The model's context in tokens.
    pub context: usize,
    pub vocab: usize,
    /// When it was loaded (unix seconds), for `/v1/models`.
    pub created: u64,
}

impl ServedModel {
    /// Serves `model` under `name`, batching up to `max_batch` sequences; with a `draft`,
    /// a request running alone is decoded speculatively.
    pub fn new(
        name: &str,
        tokenizer: Tokenizer,
        model: Llama,
        draft: Option<Draft>,
        max_batch: usize,
        max_waiting: usize,
    ) -> Result<Self> {
        if model.config().is_classifier() {
            anyhow::bail!("`{name}` is a scoring model (a reward model); serve a chat model");
        }
        let context = model.config().max_position_embeddings;
        let vocab = model.config().vocab_size;
        Ok(Self {
            name: name.to_string(),
            tokenizer: Arc::new(tokenizer),
            scheduler: Scheduler::start(name, model, draft, max_batch, max_waiting),
            context,
            vocab,
            created: crate::openai::unix_now(),
        })
    }

    /// Loads a checkpoint folder on `device`, and a draft model's folder with its `k`.
    pub fn load(
        name: &str,
        dir: &Path,
        draft: Option<(&Path, usize)>,
        device: &candle_core::Device,
        max_batch: usize,
        max_waiting: usize,
    ) -> Result<Self> {
        let tok = Tokenizer::load(dir)
            .with_context(|| format!("cannot load the tokenizer of {}", dir.display()))?;
        let model = checkpoint::load_model(dir, device)?;
        let draft = match draft {
            Some((ddir, k)) => Some(load_draft(&tok, &model, ddir, k, device)?),
            None => None,
        };
        Self::new(name, tok, model, draft, max_batch, max_waiting)
    }
}

/// A draft model for `model`: same tokenizer (the same vocabulary, token for token), a
/// context at least as long, and a model, not a scorer.
fn load_draft(
    tok: &Tokenizer,
    model: &Llama,
    dir: &Path,
    k: usize,
    device: &candle_core::Device,
) -> Result<Draft> {
    let what = || format!("the draft model {}", dir.display());
    if k == 0 {
        anyhow::bail!("{}: draft at least one token at a time (k >= 1)", what());
    }
    let dtok =
        Tokenizer::load(dir).with_context(|| format!("cannot load the tokenizer of {}", what()))?;
    if dtok.inner().get_vocab(true) != tok.inner().get_vocab(true) {
        anyhow::bail!(
            "{} has another tokenizer than the model it drafts for; a draft must share it \
             (distill one with `ferrochat distill`)",
            what()
        );
    }
    let d = checkpoint::load_model(dir, device).with_context(what)?;
    if d.config().is_classifier() {
        anyhow::bail!("{} is a scoring model, not a language model", what());
    }
    if d.config().max_position_embeddings < model.config().max_position_embeddings {
        anyhow::bail!(
            "{} has a context of {} tokens, shorter than the model's {}",
            what(),
            d.config().max_position_embeddings,
            model.config().max_position_embeddings
        );
    }
    Ok(Draft { model: d, k })
}

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub limits: Limits,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Origins allowed to call the API from a browser (`*` for any); none: same origin only.
    pub cors_origins: Vec<String>,
    /// Planted in every answer when set.
    pub watermark: Option<ferrochat_engine::Watermark>,
    /// One log line per request (method, route, status, milliseconds) at info level,
    /// target `ferrochat::access`: never a key, a query string or a body.
    pub access_log: bool,
    /// Also log the messages of each completion request (target `ferrochat::prompts`):
    /// what people type, so only when asked.
    pub log_prompts: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_body_bytes: 1 << 20,
            cors_origins: Vec::new(),
            watermark: None,
            access_log: false,
            log_prompts: false,
        }
    }
}

pub struct AppState {
    pub models: Vec<Arc<ServedModel>>,
    pub config: ServerConfig,
    pub auth: Auth,
    pub store: Option<Store>,
    pub metrics: Metrics,
    pub started: Instant,
}

impl AppState {
    pub fn new(models: Vec<ServedModel>, config: ServerConfig) -> Self {
        Self {
            models: models.into_iter().map(Arc::new).collect(),
            config,
            auth: Auth::default(),
            store: None,
            metrics: Metrics::default(),
            started: Instant::now(),
        }
    }

    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The model a request names.
    pub fn model(&self, name: &str) -> ApiResult<Arc<ServedModel>> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
                ApiError::not_found(format!(
                    "the model `{name}` does not exist; this server has: {}",
                    names.join(", ")
                ))
                .with_param("model")
                .with_code("model_not_found")
            })
    }

    pub fn store(&self) -> ApiResult<&Store> {
        self.store.as_ref().ok_or_else(|| {
            ApiError::not_found("this server keeps no feedback store (start it with --db)")
        })
    }
}
