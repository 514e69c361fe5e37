//! `ferrochat serve`: the OpenAI-compatible API, the web chat page and the feedback store
//! over one or more checkpoints; `ferrochat feedback export`: the store's ratings and
//! comparisons as preference records for `reward` and `dpo`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrochat_server::{AppState, Auth, Limits, ServedModel, ServerConfig, Store};
use ferrochat_text::write_atomic;

#[derive(clap::Args)]
#[command(after_help = "\
Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models (the OpenAI API; \
streaming with \"stream\": true), the chat page at /, GET /health, GET /metrics (Prometheus). \
Requests to the same model share decode steps (continuous batching). Feedback from the page \
goes to the SQLite database (--db); `ferrochat feedback export` turns it into comparisons.")]
pub struct Args {
    /// Checkpoint folder to serve, as DIR or NAME=DIR; repeat for several models (the
    /// first is the page's default). The name defaults to the folder's name
    #[arg(long, required = true)]
    pub model: Vec<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Feedback database: an SQLite file, or a postgres://user@host:port/database URL for a
    /// store several servers share; default: feedback.db in the first model's run folder
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Keep no feedback store (the page's conversations and ratings are refused)
    #[arg(long, conflicts_with = "db")]
    pub no_db: bool,
    /// Require this API key as `Authorization: Bearer KEY` on /v1 (repeat for several;
    /// also read from FERROCHAT_API_KEYS, comma-separated)
    #[arg(long)]
    pub api_key: Vec<String>,
    /// Requests per minute allowed per API key (all clients together when there are no keys)
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Origin allowed to call the API from other web pages (repeat; * for any)
    #[arg(long)]
    pub cors_origin: Vec<String>,
    /// A draft model for speculative decoding, as DIR (for the first model) or NAME=DIR: a
    /// smaller model with the same tokenizer (a distilled student). A request running
    /// alone is decoded with it; under load decoding is batched as usual
    #[arg(long)]
    pub draft: Vec<String>,
    /// Tokens the draft proposes per pass of the model
    #[arg(long, default_value_t = 4)]
    pub draft_k: usize,
    /// Sequences decoded together per model
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Sequences allowed to wait for a slot before requests are refused (503)
    #[arg(long, default_value_t = 256)]
    pub max_waiting: usize,
    /// Most new tokens one answer may ask for
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Most answers per request (n)
    #[arg(long, default_value_t = 8)]
    pub max_n: usize,
    /// Largest request body, in bytes
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Seconds streams in flight get to finish after Ctrl-C or SIGTERM
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Watermark every answer (detect it with `ferrochat detect --key`)
    #[command(flatten)]
    pub watermark: crate::runtime::WatermarkArgs,
    /// Log one line per request to stderr: method, route, status, milliseconds (never a
    /// key, a query string or a body)
    #[arg(long)]
    pub access_log: bool,
    /// Also log the messages and prompts of completion requests (people's text: only
    /// when you mean to keep it)
    #[arg(long)]
    pub log_prompts: bool,
}

fn named(spec: &str) -> Result<(String, PathBuf)> {
    if let Some((name, dir)) = spec.split_once('=') {
        if name.is_empty() || dir.is_empty() {
            bail!("--model {spec}: use DIR or NAME=DIR");
        }
        return Ok((name.to_string(), PathBuf::from(dir)));
    }
    let dir = PathBuf::from(spec);
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| spec.to_string());
    Ok((name, dir))
}

/// The run folder of a checkpoint: the folder above it.
fn default_db(model_dir: &Path) -> PathBuf {
    let dir = model_dir
        .canonicalize()
        .unwrap_or_else(|_| model_dir.to_path_buf());
    dir.parent().unwrap_or(&dir).join("feedback.db")
}

pub fn run(a: Args) -> Result<()> {
    let device = crate::runtime::device(&a.device)?;
    let mut models = Vec::new();
    let mut first_dir = None;
    let specs: Vec<(String, PathBuf)> = a.model.iter().map(|s| named(s)).collect::<Result<_>>()?;
    let mut drafts: std::collections::HashMap<String, PathBuf> = Default::default();
    for d in &a.draft {
        let (name, dir) = match d.split_once('=') {
            Some((n, dir)) if !n.is_empty() && !dir.is_empty() => {
                (n.to_string(), PathBuf::from(dir))
            }
            Some(_) => bail!("--draft {d}: use DIR or NAME=DIR"),
            None => (specs[0].0.clone(), PathBuf::from(d)),
        };
        if !specs.iter().any(|s| s.0 == name) {
            bail!("--draft {d}: no model is named `{name}`");
        }
        if drafts.insert(name.clone(), dir).is_some() {
            bail!("two drafts for the model `{name}`");
        }
    }
    for (name, dir) in specs {
        if models.iter().any(|m: &ServedModel| m.name == name) {
            bail!("two models are named `{name}`: name them with NAME=DIR");
        }
        first_dir.get_or_insert_with(|| dir.clone());
        let draft = drafts.get(&name).map(|d| (d.as_path(), a.draft_k));
        let m = ServedModel::load(&name, &dir, draft, &device, a.max_batch, a.max_waiting)
            .with_context(|| format!("cannot serve {}", dir.display()))?;
        eprintln!(
            "model `{name}`: {} ({} tokens of context{})",
            dir.display(),
            m.context,
            match draft {
                Some((d, k)) => format!("; drafts {k} tokens at a time with {}", d.display()),
                None => String::new(),
            }
        );
        models.push(m);
    }
    let mut keys = a.api_key.clone();
    if let Ok(env) = std::env::var("FERROCHAT_API_KEYS") {
        keys.extend(
            env.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(String::from),
        );
    }
    let config = ServerConfig {
        limits: Limits {
            max_tokens: a.max_tokens,
            max_n: a.max_n,
            ..Limits::default()
        },
        max_body_bytes: a.max_body_bytes,
        cors_origins: a.cors_origin.clone(),
        watermark: a.watermark.get()?,
        access_log: a.access_log,
        log_prompts: a.log_prompts,
    };
    let mut state = AppState::new(models, config).with_auth(Auth::new(&keys, a.rate_limit));
    if !a.no_db {
        let db = match &a.db {
            Some(p) => p.clone(),
            None => default_db(first_dir.as_deref().expect("one model at least")),
        };
        let store = Store::open(&db)?;
        eprintln!("feedback store: {}", store.place());
        state = state.with_store(store);
    }
    if !keys.is_empty() {
        eprintln!("API keys required: {}", keys.len());
    }
    let router = ferrochat_server::app(Arc::new(state));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // the line scripts wait for
        eprintln!("listening on http://{local} (chat page at http://{local}/)");
        ferrochat_server::serve(
            listener,
            router,
            ferrochat_server::shutdown_signal(),
            Duration::from_secs(a.shutdown_grace),
        )
        .await?;
        eprintln!("stopped");
        anyhow::Ok(())
    })
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Write the store's comparisons (and up/down rating pairs) as preference JSON lines
    Export(ExportArgs),
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The feedback database `ferrochat serve` wrote (a file, or a postgres:// URL)
    #[arg(long)]
    pub db: PathBuf,
    /// Preference records, one per line: {"prompt": [...], "chosen": ..., "rejected": ...}
    #[arg(long)]
    pub output: PathBuf,
}

pub fn feedback(c: Command) -> Result<()> {
    let Command::Export(a) = c;
    let url = a.db.to_string_lossy().starts_with("postgres");
    if !url && !a.db.is_file() {
        bail!("no feedback database at {}", a.db.display());
    }
    let store = Store::open(&a.db)?;
    let (records, counts) = store.export()?;
    let mut text = String::new();
    for r in &records {
        text.push_str(&r.to_string());
        text.push('\n');
    }
    write_atomic(&a.output, text.as_bytes())?;
    println!(
        "{} preference pairs to {}: {} from comparisons ({} ties left out), {} from ratings ({} ratings had no opposite rating of the same prompt)",
        records.len(),
        a.output.display(),
        counts.from_comparisons,
        counts.ties,
        counts.from_ratings,
        counts.unpaired_ratings
    );
    Ok(())
}
