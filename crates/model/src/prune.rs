//! Pruning: removing the weights that matter least.
//!
//! - Unstructured: in every projection of every block, each output row loses the given
//!   share of its weights, by magnitude |W| or, activation-aware as Wanda does, by
//!   |W| x the norm of the input feature it multiplies (measured on calibration text).
//!   Comparing within a row keeps every output alive. The zeros save nothing in dense
//!   kernels: the point is quality at a sparsity, for sparse formats to exploit.
//! - Structured: whole MLP channels go (a row of the gate and up projections and the
//!   matching column of the down projection), the same number in every block, chosen by
//!   the size of what each channel writes back (its activation norm x its down column's
//!   norm). The matrices shrink, so the model runs faster.
//! - Structured, attention: whole heads go (their query, key and value rows and their
//!   output-projection columns), the same number in every block. With grouped-query
//!   attention a key/value head goes with the query heads that share it, so the grouping
//!   stays even. Chosen by what each writes back through the output projection.
//!
//! Embeddings, norms and the output layer are left alone.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};

use crate::{Config, Llama, ModelError, Result};

/// How unstructured pruning ranks the weights of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Score {
    Magnitude,
    /// |W| x the input feature's activation norm (Wanda).
    Wanda,
}

/// The projections unstructured pruning thins, and which measured input each reads.
const PROJECTIONS: [(&str, &str); 7] = [
    ("self_attn.q_proj.weight", "self_attn.qkv"),
    ("self_attn.k_proj.weight", "self_attn.qkv"),
    ("self_attn.v_proj.weight", "self_attn.qkv"),
    ("self_attn.o_proj.weight", "self_attn.o_proj"),
    ("mlp.gate_proj.weight", "mlp.gate_up"),
    ("mlp.up_proj.weight", "mlp.gate_up"),
    ("mlp.down_proj.weight", "mlp.down_proj"),
];

/// Input feature norms of every block's projections over calibration batches: name
/// `model.layers.{i}.{input}` (see [`Llama::hidden_probed`]) to a vector (in,) of
/// sqrt(sum over tokens of x²).
pub fn input_norms(model: &Llama, batches: &[Tensor]) -> Result<HashMap<String, Tensor>> {
    let mut sums: HashMap<String, Tensor> = HashMap::new();
    for ids in batches {
        model.hidden_probed(ids, None, &mut |layer, input, x| {
            let sq = x.to_dtype(DType::F32)?.sqr()?.sum(0)?; // (in,)
            let key = format!("model.layers.{layer}.{input}");
            let total = match sums.remove(&key) {
                Some(s) => (s + sq)?,
                None => sq,
            };
            sums.insert(key, total);
            Ok(())
        })?;
    }
    sums.into_iter().map(|(k, v)| Ok((k, v.sqrt()?))).collect()
}

/// Zeroes the lowest-scoring `sparsity` share of each output row of every block
/// projection; returns the share of those projections' weights now zero.
pub fn unstructured(
    cfg: &Config,
    w: &mut HashMap<String, Tensor>,
    sparsity: f64,
    score: Score,
    norms: Option<&HashMap<String, Tensor>>,
) -> Result<f64> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(ModelError::Config(format!(
            "sparsity {sparsity} must be in [0, 1)"
        )));
    }
    let (mut zeros, mut total) = (0usize, 0usize);
    for layer in 0..cfg.num_hidden_layers {
        for (proj, input) in PROJECTIONS {
            let name = format!("model.layers.{layer}.{proj}");
            let t = w
                .get(&name)
                .ok_or_else(|| ModelError::Weights(format!("`{name}` missing")))?;
            let (rows, cols) = t.dims2()?;
            let device = t.device().clone();
            let mut m = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let scale: Vec<f32> = match score {
                Score::Magnitude => vec![1.0; cols],
                Score::Wanda => {
                    let key = format!("model.layers.{layer}.{input}");
                    norms
                        .and_then(|n| n.get(&key))
                        .ok_or_else(|| {
                            ModelError::Config(format!(
                                "Wanda needs calibration activations: none for `{key}`"
                            ))
                        })?
                        .to_vec1::<f32>()?
                }
            };
            let k = (sparsity * cols as f64).floor() as usize;
            let mut order: Vec<usize> = Vec::with_capacity(cols);
            for row in m.chunks_mut(cols) {
                order.clear();
                order.extend(0..cols);
                let s = |j: usize| row[j].abs() * scale[j];
                if k > 0 {
                    order.select_nth_unstable_by(k - 1, |&a, &b| s(a).total_cmp(&s(b)));
                    for &j in &order[..k] {
                        row[j] = 0.0;
                    }
                }
            }
            zeros += m.iter().filter(|x| **x == 0.0).count();
            total += m.len();
            let pruned = Tensor::from_vec(m, (rows, cols), &device)?.to_dtype(t.dtype())?;
            w.insert(name, pruned);
        }
    }
    Ok(zeros as f64 / total.max(1) as f64)
}

/// The `keep` highest-scoring indices, in index order.
fn most_important(scores: &[f32], keep: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx.truncate(keep);
    idx.sort();
    idx
}

/// Keeps `keep` MLP channels in every block (the most important ones, in their order)
/// and shrinks the gate, up and down projections and `cfg.intermediate_size` to match.
/// Importance: activation norm of the channel (calibration) x norm of its down column;
/// without calibration, the product of its gate, up and down weight norms.
pub fn mlp_channels(
    cfg: &mut Config,
    w: &mut HashMap<String, Tensor>,
    keep: usize,
    norms: Option<&HashMap<String, Tensor>>,
) -> Result<()> {
    let f = cfg.intermediate_size;
    if keep == 0 || keep > f {
        return Err(ModelError::Config(format!(
            "keep {keep} MLP channels of {f}: choose 1..={f}"
        )));
    }
    for layer in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{layer}.mlp");
        let get = |n: &str| {
            w.get(&format!("{p}.{n}.weight"))
                .cloned()
                .ok_or_else(|| ModelError::Weights(format!("`{p}.{n}.weight` missing")))
        };
        let (gate, up, down) = (get("gate_proj")?, get("up_proj")?, get("down_proj")?); // (F, C), (F, C), (C, F)
        let down_norm = down.sqr()?.sum(0)?.sqrt()?; // (F,)
        let importance = match norms.and_then(|n| n.get(&format!("{p}.down_proj"))) {
            Some(act) => (act * &down_norm)?,
            None => {
                let row = |t: &Tensor| -> Result<Tensor> { Ok(t.sqr()?.sum(D::Minus1)?.sqrt()?) };
                ((row(&gate)? * row(&up)?)? * &down_norm)?
            }
        };
        let imp = importance.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let idx: Vec<u32> = most_important(&imp, keep)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        let idx = Tensor::new(idx.as_slice(), &Device::Cpu)?.to_device(gate.device())?;
        w.insert(format!("{p}.gate_proj.weight"), gate.index_select(&idx, 0)?);
        w.insert(format!("{p}.up_proj.weight"), up.index_select(&idx, 0)?);
        w.insert(
            format!("{p}.down_proj.weight"),
            down.index_select(&idx, 1)?.contiguous()?,
        );
    }
    cfg.intermediate_size = keep;
    Ok(())
}

/// Keeps `keep` key/value head groups in every block (with multi-head attention, `keep`
/// heads), the most important in their order, and shrinks the attention projections and
/// the config to match. Importance of a group: sum over its heads' output features of the
/// activation norm (calibration) x the output-projection column's norm; without
/// calibration, the query and output weights' norms instead of the activations. Returns
/// the kept groups of each block.
pub fn heads(
    cfg: &mut Config,
    w: &mut HashMap<String, Tensor>,
    keep: usize,
    norms: Option<&HashMap<String, Tensor>>,
) -> Result<Vec<Vec<usize>>> {
    let (h, kv, d) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_size());
    if keep == 0 || keep > kv {
        return Err(ModelError::Config(format!(
            "keep {keep} attention head groups of {kv}: choose 1..={kv}"
        )));
    }
    let g = h / kv;
    let mut kept_all = Vec::with_capacity(cfg.num_hidden_layers);
    for layer in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{layer}.self_attn");
        let get = |n: &str| {
            w.get(&format!("{p}.{n}.weight"))
                .cloned()
                .ok_or_else(|| ModelError::Weights(format!("`{p}.{n}.weight` missing")))
        };
        let (q, k, v, o) = (
            get("q_proj")?,
            get("k_proj")?,
            get("v_proj")?,
            get("o_proj")?,
        );
        // per output feature of the attention (h * d): what it writes back
        let o_col = o.sqr()?.sum(0)?.sqrt()?; // (H*D,)
        let feature = match norms.and_then(|n| n.get(&format!("{p}.o_proj"))) {
            Some(act) => (act * &o_col)?,
            None => (q.sqr()?.sum(D::Minus1)?.sqrt()? * &o_col)?,
        };
        let feature = feature.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let group_scores: Vec<f32> = feature.chunks(g * d).map(|c| c.iter().sum()).collect();
        let groups = most_important(&group_scores, keep);
        let rows = |per: usize| -> Result<Tensor> {
            let idx: Vec<u32> = groups
                .iter()
                .flat_map(|&grp| (grp * per * d..(grp + 1) * per * d).map(|i| i as u32))
                .collect();
            Ok(Tensor::new(idx.as_slice(), &Device::Cpu)?.to_device(q.device())?)
        };
        let (qi, kvi) = (rows(g)?, rows(1)?);
        w.insert(format!("{p}.q_proj.weight"), q.index_select(&qi, 0)?);
        w.insert(format!("{p}.k_proj.weight"), k.index_select(&kvi, 0)?);
        w.insert(format!("{p}.v_proj.weight"), v.index_select(&kvi, 0)?);
        w.insert(
            format!("{p}.o_proj.weight"),
            o.index_select(&qi, 1)?.contiguous()?,
        );
        kept_all.push(groups);
    }
    // the head size no longer follows from the width: pin it
    cfg.head_dim = Some(d);
    cfg.num_attention_heads = keep * g;
    cfg.num_key_value_heads = Some(keep);
    Ok(kept_all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (Config, HashMap<String, Tensor>) {
        let cfg = Config::preset("tiny", 64, 32).unwrap();
        let w = crate::weights::init_weights(&cfg, 5, &Device::Cpu).unwrap();
        (cfg, w)
    }

    fn calibration(cfg: &Config, w: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
        let m = Llama::new(cfg, w, &Device::Cpu).unwrap();
        let ids = Tensor::new(&[[1u32, 9, 33, 7, 2, 60, 5, 12]], &Device::Cpu).unwrap();
        input_norms(&m, &[ids]).unwrap()
    }

    #[test]
    fn every_row_loses_its_share_and_the_smallest_go_first() {
        let (cfg, w0) = tiny();
        for score in [Score::Magnitude, Score::Wanda] {
            let norms = calibration(&cfg, &w0);
            let mut w = w0.clone();
            let got = unstructured(&cfg, &mut w, 0.5, score, Some(&norms)).unwrap();
            assert!((got - 0.5).abs() < 0.01, "{score:?}: {got}");
            let name = "model.layers.1.mlp.down_proj.weight";
            let (before, after) = (
                w0[name].to_vec2::<f32>().unwrap(),
                w[name].to_vec2::<f32>().unwrap(),
            );
            let scale = norms["model.layers.1.mlp.down_proj"]
                .to_vec1::<f32>()
                .unwrap();
            for (b, a) in before.iter().zip(&after) {
                let cols = b.len();
                assert_eq!(a.iter().filter(|x| **x == 0.0).count(), cols / 2);
                // every kept weight scores at least as high as every pruned one
                let s = |j: usize| match score {
                    Score::Magnitude => b[j].abs(),
                    Score::Wanda => b[j].abs() * scale[j],
                };
                let kept = (0..cols)
                    .filter(|&j| a[j] != 0.0)
                    .map(s)
                    .fold(f32::MAX, f32::min);
                let gone = (0..cols)
                    .filter(|&j| a[j] == 0.0)
                    .map(s)
                    .fold(0f32, f32::max);
                assert!(kept >= gone, "{score:?}: kept {kept} < pruned {gone}");
                for j in 0..cols {
                    assert!(a[j] == 0.0 || a[j] == b[j], "kept weights are unchanged");
                }
            }
            // the embedding and norms are untouched
            assert_eq!(
                w["model.embed_tokens.weight"].to_vec2::<f32>().unwrap(),
                w0["model.embed_tokens.weight"].to_vec2::<f32>().unwrap()
            );
        }
        let mut w = w0.clone();
        let e = unstructured(&cfg, &mut w, 0.5, Score::Wanda, None).unwrap_err();
        assert!(e.to_string().contains("calibration"), "{e}");
    }

    #[test]
    fn channel_pruning_shrinks_the_mlp_and_keeping_all_changes_nothing() {
        let (cfg, w0) = tiny();
        let norms = calibration(&cfg, &w0);
        let ids = Tensor::new(&[[3u32, 8, 13, 21]], &Device::Cpu).unwrap();
        let before = Llama::new(&cfg, &w0, &Device::Cpu)
            .unwrap()
            .forward(&ids)
            .unwrap();
        // keeping every channel is the same model
        let (mut c, mut w) = (cfg.clone(), w0.clone());
        mlp_channels(&mut c, &mut w, cfg.intermediate_size, Some(&norms)).unwrap();
        let same = Llama::new(&c, &w, &Device::Cpu)
            .unwrap()
            .forward(&ids)
            .unwrap();
        let d = (&before - &same)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap();
        assert!(d.max(0).unwrap().to_scalar::<f32>().unwrap() < 1e-5);
        // half the channels: smaller matrices, a model that loads and runs
        for n in [Some(&norms), None] {
            let (mut c, mut w) = (cfg.clone(), w0.clone());
            mlp_channels(&mut c, &mut w, cfg.intermediate_size / 2, n).unwrap();
            assert_eq!(c.intermediate_size, cfg.intermediate_size / 2);
            assert_eq!(
                w["model.layers.0.mlp.down_proj.weight"].dims(),
                &[cfg.hidden_size, cfg.intermediate_size / 2]
            );
            crate::weights::check_weights(&c, &w, "pruned").unwrap();
            let out = Llama::new(&c, &w, &Device::Cpu)
                .unwrap()
                .forward(&ids)
                .unwrap();
            assert_eq!(out.dims(), before.dims());
            assert!(c.num_params() < cfg.num_params());
        }
        let (mut c, mut w) = (cfg.clone(), w0.clone());
        assert!(mlp_channels(&mut c, &mut w, 0, None).is_err());
    }

    #[test]
    fn removing_heads_equals_silencing_them() {
        // the tiny preset has grouped-query attention (4 query heads over 2 key/value heads)
        for calibrated in [false, true] {
            let (cfg0, w0) = tiny();
            let norms = calibration(&cfg0, &w0);
            let (mut cfg, mut w) = (cfg0.clone(), w0.clone());
            let kept = heads(&mut cfg, &mut w, 1, calibrated.then_some(&norms)).unwrap();
            assert_eq!((cfg.num_attention_heads, cfg.kv_heads()), (2, 1));
            assert_eq!(cfg.head_size(), cfg0.head_size());
            crate::weights::check_weights(&cfg, &w, "pruned").unwrap();
            // the same model with the dropped heads' output columns zeroed
            let d = cfg0.head_size();
            let mut silenced = w0.clone();
            for (layer, groups) in kept.iter().enumerate() {
                let name = format!("model.layers.{layer}.self_attn.o_proj.weight");
                let mut o = silenced[&name].to_vec2::<f32>().unwrap();
                for row in o.iter_mut() {
                    for (j, x) in row.iter_mut().enumerate() {
                        if !groups.contains(&(j / (2 * d))) {
                            *x = 0.0;
                        }
                    }
                }
                silenced.insert(name, Tensor::new(o, &Device::Cpu).unwrap());
            }
            let ids = Tensor::new(&[[4u32, 8, 15, 16, 23, 42]], &Device::Cpu).unwrap();
            let a = Llama::new(&cfg, &w, &Device::Cpu)
                .unwrap()
                .forward(&ids)
                .unwrap();
            let b = Llama::new(&cfg0, &silenced, &Device::Cpu)
                .unwrap()
                .forward(&ids)
                .unwrap();
            let diff = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "calibrated {calibrated}: {diff}");
            assert!(cfg.num_params() < cfg0.num_params());
        }
        let (mut cfg, mut w) = tiny();
        assert!(heads(&mut cfg, &mut w, 3, None).is_err());
    }
}
