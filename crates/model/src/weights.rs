//! Parameter names and shapes (Hugging Face Llama names), and seeded initialisation.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Config, ModelError, Result};

/// Every parameter of a model of this config, in a fixed order, with its shape.
pub fn param_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_size());
    let (h, kv) = (cfg.num_attention_heads, cfg.kv_heads());
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, c],
    )];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), vec![c]));
        out.push((format!("{p}.self_attn.q_proj.weight"), vec![h * d, c]));
        out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv * d, c]));
        out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv * d, c]));
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![c, h * d]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![c]));
        match cfg.experts() {
            // Mixtral's names: w1 gate, w3 up, w2 down
            Some((e, _)) => {
                out.push((format!("{p}.block_sparse_moe.gate.weight"), vec![e, c]));
                for x in 0..e {
                    let q = format!("{p}.block_sparse_moe.experts.{x}");
                    out.push((format!("{q}.w1.weight"), vec![f, c]));
                    out.push((format!("{q}.w2.weight"), vec![c, f]));
                    out.push((format!("{q}.w3.weight"), vec![f, c]));
                }
            }
            None => {
                out.push((format!("{p}.mlp.gate_proj.weight"), vec![f, c]));
                out.push((format!("{p}.mlp.up_proj.weight"), vec![f, c]));
                out.push((format!("{p}.mlp.down_proj.weight"), vec![c, f]));
            }
        }
    }
    out.push(("model.norm.weight".to_string(), vec![c]));
    if cfg.is_classifier() {
        out.push(("score.weight".to_string(), vec![1, c]));
    } else if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, c]));
    }
    out
}

/// Trainable variables over named weights, in [`param_shapes`] order (the order the
/// optimizer state and checkpoints use).
pub fn to_vars(cfg: &Config, weights: &HashMap<String, Tensor>) -> Result<Vec<(String, Var)>> {
    check_weights(cfg, weights, "the weights")?;
    param_shapes(cfg)
        .into_iter()
        .map(|(name, _)| {
            let var = Var::from_tensor(&weights[&name])?;
            Ok((name, var))
        })
        .collect()
}

/// The variables' tensors by name, to build a [`crate::Llama`] over. `detach` gives
/// tensors that share the variables' storage (they see every in-place update) but record
/// no autograd graph: for evaluation during training.
pub fn var_tensors(params: &[(String, Var)], detach: bool) -> HashMap<String, Tensor> {
    params
        .iter()
        .map(|(n, v)| {
            let t = if detach {
                v.as_tensor().detach()
            } else {
                v.as_tensor().clone()
            };
            (n.clone(), t)
        })
        .collect()
}

/// Fresh weights: norms at one, matrices normal(0, initializer_range), and the
/// projections that write into the residual stream (o_proj, down_proj) scaled by
/// 1/sqrt(2 * layers) so the stream's variance does not grow with depth (GPT-2).
/// Deterministic in `seed`, whatever the device.
pub fn init_weights(cfg: &Config, seed: u64, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let std = cfg.initializer_range;
    let resid_std = std / (2.0 * cfg.num_hidden_layers as f64).sqrt();
    let mut out = HashMap::new();
    for (name, shape) in param_shapes(cfg) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name == "score.weight" {
            // A new head starts at zero: every answer scores the same until it learns.
            vec![0.0; n]
        } else {
            let s = if name.contains("o_proj")
                || name.contains("down_proj")
                || name.ends_with(".w2.weight")
            {
                resid_std
            } else {
                std
            };
            (0..n).map(|_| (normal(&mut rng) * s) as f32).collect()
        };
        out.insert(name, Tensor::from_vec(data, shape, device)?);
    }
    Ok(out)
}

/// Standard normal sample by Box-Muller; portable across rand versions, unlike distributions.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Checks a set of named tensors against a config: every expected name present with its
/// shape, and nothing unexpected; the error lists each mismatch.
pub fn check_weights(cfg: &Config, weights: &HashMap<String, Tensor>, source: &str) -> Result<()> {
    let expected = param_shapes(cfg);
    let mut problems = Vec::new();
    for (name, shape) in &expected {
        match weights.get(name) {
            None => problems.push(format!(
                "missing tensor `{name}` (expected shape {shape:?})"
            )),
            Some(t) if t.dims() != shape.as_slice() => problems.push(format!(
                "tensor `{name}` has shape {:?}, the config needs {shape:?}",
                t.dims()
            )),
            _ => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let mut extra: Vec<&String> = weights
        .keys()
        .filter(|k| !known.contains(k.as_str()) && !is_ignorable(k, cfg))
        .collect();
    extra.sort();
    for k in extra {
        problems.push(format!("unexpected tensor `{k}`"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let n = problems.len();
        problems.truncate(12);
        Err(ModelError::Weights(format!(
            "{source} does not match its config ({n} problem{}):\n  {}",
            if n == 1 { "" } else { "s" },
            problems.join("\n  ")
        )))
    }
}

/// Tensors some exporters add that carry no parameters of ours.
fn is_ignorable(name: &str, cfg: &Config) -> bool {
    name.ends_with("rotary_emb.inv_freq")
        || ((cfg.tie_word_embeddings || cfg.is_classifier()) && name == "lm_head.weight")
}

/// A language model's weights as the start of a scoring model of `cfg.to_classifier()`:
/// the trunk kept, the language-model head dropped, a zero `score.weight` added.
pub fn trunk_with_score(
    cfg: &Config,
    mut w: HashMap<String, Tensor>,
    device: &Device,
) -> Result<(Config, HashMap<String, Tensor>)> {
    let rm = cfg.to_classifier();
    w.remove("lm_head.weight");
    w.insert(
        "score.weight".into(),
        Tensor::zeros((1, cfg.hidden_size), candle_core::DType::F32, device)?,
    );
    check_weights(&rm, &w, "the scoring model")?;
    Ok((rm, w))
}
