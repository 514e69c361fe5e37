//! `ferrochat prune`: unstructured (magnitude or Wanda) or structured (MLP channels,
//! attention heads) pruning of a checkpoint into a new one.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use ferrochat_model::prune::{self, Score};
use ferrochat_model::{checkpoint, Llama};
use ferrochat_text::{Split, TokenShards};
use ferrochat_tokenizer::Tokenizer;
use rand::SeedableRng;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Zero the smallest weights of each output row
    Magnitude,
    /// Zero the weights with the smallest |weight| x input activation norm (needs --data)
    Wanda,
    /// Remove whole MLP channels, the same number per block: smaller, faster matrices
    MlpChannels,
    /// Remove whole attention heads (key/value groups with grouped-query attention), the
    /// same number per block: smaller, faster attention
    Heads,
}

#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint to prune
    #[arg(long)]
    pub model: PathBuf,
    /// The folder to write (must not exist, or be empty)
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "wanda")]
    pub method: Method,
    /// Share to remove: of each row's weights (magnitude, wanda), of the MLP channels or
    /// of the attention heads (rounded to whole heads, at least one kept)
    #[arg(long, default_value_t = 0.5)]
    pub sparsity: f64,
    /// Token shards to measure activations on (wanda; mlp-channels uses them when given)
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Calibration batches of --batch x --seq tokens
    #[arg(long, default_value_t = 8)]
    pub calibration_batches: usize,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: Args) -> Result<()> {
    let src = checkpoint::resolve(&a.model)?;
    let (mut cfg, mut w) = checkpoint::load(&src, &Device::Cpu)?;
    if cfg.experts().is_some() {
        bail!(
            "{}: pruning a mixture of experts is not supported yet",
            src.display()
        );
    }
    let tok = Tokenizer::load(&src)?;
    if !(0.0..1.0).contains(&a.sparsity) {
        bail!("--sparsity is a share in [0, 1)");
    }
    if a.method == Method::Wanda && a.data.is_none() {
        bail!("--method wanda weighs weights by their inputs: give --data SHARDS to measure them")
    }
    crate::export::empty_folder(&a.output)?;
    let norms = match &a.data {
        Some(data) => {
            let shards = TokenShards::open(data, Split::Train)?;
            let model = Llama::new(&cfg, &w, &Device::Cpu)?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
            let seq = a.seq.min(cfg.max_position_embeddings);
            let batches = (0..a.calibration_batches.max(1))
                .map(|_| {
                    let (x, _) = shards.random_batch(&mut rng, a.batch, seq)?;
                    Ok(Tensor::from_vec(x, (a.batch, seq), &Device::Cpu)?)
                })
                .collect::<Result<Vec<_>>>()?;
            Some(prune::input_norms(&model, &batches)?)
        }
        None => None,
    };
    let params_before = cfg.num_params();
    let summary = match a.method {
        Method::Magnitude | Method::Wanda => {
            let score = if a.method == Method::Wanda {
                Score::Wanda
            } else {
                Score::Magnitude
            };
            let zero = prune::unstructured(&cfg, &mut w, a.sparsity, score, norms.as_ref())?;
            format!(
                "{:.1}% of the block projections' weights are zero",
                100.0 * zero
            )
        }
        Method::Heads => {
            let (h, kv) = (cfg.num_attention_heads, cfg.kv_heads());
            let keep = (((1.0 - a.sparsity) * kv as f64).round() as usize).clamp(1, kv);
            prune::heads(&mut cfg, &mut w, keep, norms.as_ref())?;
            format!(
                "attention {h} -> {} query heads ({kv} -> {keep} key/value) per block; {:.2}M -> {:.2}M parameters",
                cfg.num_attention_heads,
                params_before as f64 / 1e6,
                cfg.num_params() as f64 / 1e6
            )
        }
        Method::MlpChannels => {
            let f = cfg.intermediate_size;
            let keep = (((1.0 - a.sparsity) * f as f64).round() as usize).clamp(1, f);
            prune::mlp_channels(&mut cfg, &mut w, keep, norms.as_ref())?;
            format!(
                "MLP {f} -> {keep} channels per block; {:.2}M -> {:.2}M parameters",
                params_before as f64 / 1e6,
                cfg.num_params() as f64 / 1e6
            )
        }
    };
    let meta = checkpoint::Meta {
        stage: "prune".into(),
        step: 0,
        data: serde_json::json!({
            "source": src, "method": format!("{:?}", a.method).to_lowercase(),
            "sparsity": a.sparsity, "calibration": a.data,
        }),
        ..Default::default()
    };
    checkpoint::save(&a.output, &cfg, &w, &meta, |dir| {
        tok.save(dir)
            .map_err(|e| ferrochat_model::ModelError::Io(e.to_string()))
    })?;
    println!(
        "pruned {} to {}: {summary}",
        src.display(),
        a.output.display()
    );
    Ok(())
}
