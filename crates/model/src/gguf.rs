//! GGUF export: a Llama checkpoint as the single file llama.cpp (and the tools built on
//! it) load, in f32, f16 or q8_0, written with candle's GGUF writer.
//!
//! Two things differ from the Hugging Face layout besides the names. llama.cpp rotates
//! adjacent pairs of a head's dimensions where Hugging Face's Llama rotates the first
//! half against the second, so the rows of the query and key projections are reordered
//! per head to keep the same attention. And GGUF lists a tensor's dimensions innermost
//! first, which the writer does.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};

use crate::{Config, ModelError, Result};

/// How the weight matrices are stored (norms stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    F32,
    F16,
    /// 8-bit integers in blocks of 32 with an f16 scale each.
    Q8_0,
    /// 4-bit integers in blocks of 32 with an f16 scale each.
    Q4_0,
}

/// The file of a quantized checkpoint folder (beside its config and tokenizer): the same
/// GGUF `export gguf` writes, so llama.cpp runs that folder's model file as it is.
pub const QUANTIZED_FILE: &str = "model.gguf";

impl GgufType {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" | "q8" | "int8" => Ok(Self::Q8_0),
            "q4_0" | "q4" | "int4" => Ok(Self::Q4_0),
            o => Err(ModelError::Config(format!(
                "unknown GGUF type `{o}`: use f32, f16, q8_0 or q4_0"
            ))),
        }
    }

    fn ggml(self) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
        }
    }

    /// `general.file_type`: llama.cpp's name for what most tensors are.
    fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
            Self::Q4_0 => 2,
        }
    }
}

/// llama.cpp's name for one of our (Hugging Face) tensor names.
#[cfg(test)]
fn gguf_name(hf: &str) -> Option<String> {
    gguf_place(hf).map(|(name, _)| name)
}

/// Where one of our tensors goes in a GGUF file: llama.cpp's tensor name and, for an
/// expert's matrix, its index in the tensor that stacks every expert of the block
/// ((experts, rows, cols), as llama.cpp keeps a mixture's experts).
fn gguf_place(hf: &str) -> Option<(String, Option<usize>)> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some((f.to_string(), None));
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    if let Some(expert) = part.strip_prefix("block_sparse_moe.experts.") {
        let (x, w) = expert.split_once('.')?;
        let part = match w {
            "w1.weight" => "ffn_gate_exps.weight",
            "w3.weight" => "ffn_up_exps.weight",
            "w2.weight" => "ffn_down_exps.weight",
            _ => return None,
        };
        return Some((format!("blk.{layer}.{part}"), Some(x.parse().ok()?)));
    }
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "block_sparse_moe.gate.weight" => "ffn_gate_inp.weight",
        _ => return None,
    };
    Some((format!("blk.{layer}.{part}"), None))
}

/// Reorders each head's rows from half-split rotary pairs (i, i + d/2) to adjacent
/// ones (2i, 2i + 1): row `2i` takes row `i`, row `2i + 1` takes row `i + d/2`.
fn interleave_rotary(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let d = rows / heads;
    Ok(w.reshape((heads, 2, d / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// The model's tensors under llama.cpp's names, converted to `ty` (vectors stay f32; a
/// matrix whose rows do not split into q8_0 blocks falls back to f16).
pub fn llama_tensors(
    cfg: &Config,
    weights: &HashMap<String, Tensor>,
    ty: GgufType,
) -> Result<Vec<(String, QTensor)>> {
    if cfg.is_classifier() {
        return Err(ModelError::Config(
            "a reward model (score head) has no GGUF form: export a language model".into(),
        ));
    }
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    // the tensors to write, experts gathered per stacked tensor in expert order
    let mut whole: Vec<(String, Tensor)> = Vec::with_capacity(names.len());
    let mut stacks: BTreeMap<String, Vec<(usize, Tensor)>> = BTreeMap::new();
    for hf in names {
        let (name, expert) = gguf_place(hf).ok_or_else(|| {
            ModelError::Weights(format!("tensor `{hf}` has no llama.cpp counterpart"))
        })?;
        let mut t = weights[hf].to_dtype(DType::F32)?;
        if name.ends_with("attn_q.weight") {
            t = interleave_rotary(&t, cfg.num_attention_heads)?;
        } else if name.ends_with("attn_k.weight") {
            t = interleave_rotary(&t, cfg.kv_heads())?;
        }
        match expert {
            Some(x) => stacks.entry(name).or_default().push((x, t)),
            None => whole.push((name, t)),
        }
    }
    for (name, mut experts) in stacks {
        experts.sort_by_key(|(x, _)| *x);
        if experts.iter().enumerate().any(|(i, (x, _))| i != *x) {
            return Err(ModelError::Weights(format!(
                "`{name}`: experts are missing"
            )));
        }
        let ts: Vec<Tensor> = experts.into_iter().map(|(_, t)| t).collect();
        whole.push((name, Tensor::stack(&ts, 0)?));
    }
    whole.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(whole.len());
    for (name, t) in whole {
        let dtype = match (t.rank(), ty) {
            (1, _) => GgmlDType::F32,
            // llama.cpp keeps the router in f32, as its own quantizer does
            _ if name.ends_with("ffn_gate_inp.weight") => GgmlDType::F32,
            (_, GgufType::Q8_0 | GgufType::Q4_0) if !t.dims()[t.rank() - 1].is_multiple_of(32) => {
                GgmlDType::F16
            }
            (_, ty) => ty.ggml(),
        };
        out.push((name, QTensor::quantize(&t, dtype)?));
    }
    Ok(out)
}

/// The inverse of [`interleave_rotary`]: adjacent pairs back to half-split ones.
fn split_rotary(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let d = rows / heads;
    Ok(w.reshape((heads, d / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Reads a GGUF file this module wrote back into our names and layout, tensors kept in
/// their stored type (query and key rows are put back in our order: dequantized,
/// reordered and quantized again, which gives back the same blocks, a row being whole
/// blocks and each block keeping its own scale).
pub fn load_llama(
    path: &std::path::Path,
    cfg: &Config,
    device: &candle_core::Device,
) -> Result<HashMap<String, QTensor>> {
    let err = |e: String| ModelError::Weights(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let content = gguf_file::Content::read(&mut f).map_err(|e| err(e.to_string()))?;
    let mut out = HashMap::new();
    let mut stacked: HashMap<String, QTensor> = HashMap::new();
    for (hf, shape) in crate::weights::param_shapes(cfg) {
        if hf == "lm_head.weight" && cfg.tie_word_embeddings {
            continue;
        }
        let (name, expert) =
            gguf_place(&hf).ok_or_else(|| err(format!("no GGUF name for `{hf}`")))?;
        let read = |f: &mut std::fs::File| {
            content
                .tensor(f, &name, device)
                .map_err(|e| err(format!("tensor `{name}`: {e}")))
        };
        let q = match expert {
            None => read(&mut f)?,
            Some(x) => {
                if !stacked.contains_key(&name) {
                    let t = read(&mut f)?;
                    stacked.insert(name.clone(), t);
                }
                let all = &stacked[&name];
                let experts = cfg.experts().map(|(e, _)| e).unwrap_or(0);
                let mut want = vec![experts];
                want.extend(&shape);
                if all.shape().dims() != want.as_slice() {
                    return Err(err(format!(
                        "`{name}` is {:?}, the config needs {want:?}",
                        all.shape().dims()
                    )));
                }
                expert_slice(all, x, experts, &shape, device)
                    .map_err(|e| err(format!("`{name}` expert {x}: {e}")))?
            }
        };
        if q.shape().dims() != shape.as_slice() {
            return Err(err(format!(
                "`{name}` is {:?}, the config needs {shape:?}",
                q.shape().dims()
            )));
        }
        let heads = if name.ends_with("attn_q.weight") {
            Some(cfg.num_attention_heads)
        } else if name.ends_with("attn_k.weight") {
            Some(cfg.kv_heads())
        } else {
            None
        };
        let q = match heads {
            Some(h) => QTensor::quantize(&split_rotary(&q.dequantize(device)?, h)?, q.dtype())?,
            None => q,
        };
        out.insert(hf, q);
    }
    Ok(out)
}

/// Expert `x` of a stacked (experts, rows, cols) tensor, its blocks copied as they are.
fn expert_slice(
    all: &QTensor,
    x: usize,
    experts: usize,
    shape: &[usize],
    device: &candle_core::Device,
) -> Result<QTensor> {
    let bytes = all.data()?;
    let per = bytes.len() / experts;
    let slab = &bytes[x * per..(x + 1) * per];
    Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
        all.dtype(),
        slab,
        shape.to_vec(),
        device,
    )?)
}

/// The `llama.*` hyper-parameters llama.cpp reads.
pub fn llama_metadata(cfg: &Config, name: &str, ty: GgufType) -> Vec<(String, Value)> {
    let u = |v: usize| Value::U32(v as u32);
    let mut meta = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String(name.into())),
        ("general.file_type".into(), Value::U32(ty.file_type())),
        ("llama.vocab_size".into(), u(cfg.vocab_size)),
        (
            "llama.context_length".into(),
            u(cfg.max_position_embeddings),
        ),
        ("llama.embedding_length".into(), u(cfg.hidden_size)),
        ("llama.block_count".into(), u(cfg.num_hidden_layers)),
        ("llama.feed_forward_length".into(), u(cfg.intermediate_size)),
        (
            "llama.attention.head_count".into(),
            u(cfg.num_attention_heads),
        ),
        ("llama.attention.head_count_kv".into(), u(cfg.kv_heads())),
        ("llama.attention.key_length".into(), u(cfg.head_size())),
        ("llama.attention.value_length".into(), u(cfg.head_size())),
        ("llama.rope.dimension_count".into(), u(cfg.head_size())),
        (
            "llama.rope.freq_base".into(),
            Value::F32(cfg.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
    ];
    if let Some((e, k)) = cfg.experts() {
        meta.push(("llama.expert_count".into(), u(e)));
        meta.push(("llama.expert_used_count".into(), u(k)));
    }
    meta
}

/// The whole file: metadata then tensors, as bytes (the caller writes them atomically).
pub fn to_bytes(metadata: &[(String, Value)], tensors: &[(String, QTensor)]) -> Result<Vec<u8>> {
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tens: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut buf = Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &meta, &tens)?;
    Ok(buf.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn names_cover_every_parameter() {
        let cfg = Config::preset("tiny", 64, 32).unwrap();
        for (n, _) in crate::weights::param_shapes(&cfg) {
            assert!(gguf_name(&n).is_some(), "{n}");
        }
        assert_eq!(
            gguf_name("model.layers.3.mlp.down_proj.weight").as_deref(),
            Some("blk.3.ffn_down.weight")
        );
        assert!(gguf_name("score.weight").is_none());
    }

    #[test]
    fn rotary_rows_interleave_per_head() {
        // 2 heads of 4 rows: per head [0 1 2 3] -> [0 2 1 3]
        let w = Tensor::arange(0f32, 8., &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let p = interleave_rotary(&w, 2).unwrap().flatten_all().unwrap();
        assert_eq!(
            p.to_vec1::<f32>().unwrap(),
            vec![0., 2., 1., 3., 4., 6., 5., 7.]
        );
    }

    /// A tiny random model written as GGUF of `ty` and read back as a quantized model.
    fn round_trip(ty: GgufType) -> (crate::Llama, crate::Llama, HashMap<String, QTensor>) {
        let mut cfg = Config::preset("tiny", 96, 32).unwrap();
        cfg.num_key_value_heads = Some(cfg.num_attention_heads / 2);
        round_trip_of(cfg, ty)
    }

    fn round_trip_of(
        cfg: Config,
        ty: GgufType,
    ) -> (crate::Llama, crate::Llama, HashMap<String, QTensor>) {
        let w = crate::weights::init_weights(&cfg, 3, &Device::Cpu).unwrap();
        let dense = crate::Llama::new(&cfg, &w, &Device::Cpu).unwrap();
        let meta = llama_metadata(&cfg, "t", ty);
        let bytes = to_bytes(&meta, &llama_tensors(&cfg, &w, ty).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(QUANTIZED_FILE);
        std::fs::write(&path, bytes).unwrap();
        let q = load_llama(&path, &cfg, &Device::Cpu).unwrap();
        let again = load_llama(&path, &cfg, &Device::Cpu).unwrap();
        let quant = crate::Llama::new_quantized(&cfg, again, &Device::Cpu).unwrap();
        (dense, quant, q)
    }

    fn max_logit_diff(a: &crate::Llama, b: &crate::Llama) -> f32 {
        let ids = Tensor::new(&[[5u32, 17, 3, 60, 2, 9, 44, 1]], &Device::Cpu).unwrap();
        let (la, lb) = (a.forward(&ids).unwrap(), b.forward(&ids).unwrap());
        (la - lb)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn f32_gguf_reads_back_exactly_and_runs_as_the_checkpoint() {
        let (dense, quant, q) = round_trip(GgufType::F32);
        let cfg = dense.config().clone();
        let w = crate::weights::init_weights(&cfg, 3, &Device::Cpu).unwrap();
        for (n, t) in &w {
            let back = q[n].dequantize(&Device::Cpu).unwrap();
            let d = (t - back).unwrap().abs().unwrap().flatten_all().unwrap();
            assert_eq!(d.max(0).unwrap().to_scalar::<f32>().unwrap(), 0.0, "{n}");
        }
        assert!(max_logit_diff(&dense, &quant) < 1e-4);
    }

    #[test]
    fn quantized_models_stay_close_to_f32_and_decode_as_they_prefill() {
        for (ty, bound) in [(GgufType::Q8_0, 0.05), (GgufType::Q4_0, 0.5)] {
            let (dense, quant, q) = round_trip(ty);
            let d = max_logit_diff(&dense, &quant);
            assert!(d < bound, "{ty:?}: logits differ by {d}");
            assert!(d > 0.0, "{ty:?}: the weights were not quantized");
            assert_eq!(q["model.layers.0.mlp.up_proj.weight"].dtype(), ty.ggml());
            // the batched decode step of the engine equals the cached forward
            let mut c1 = quant.new_cache();
            let mut c2 = quant.new_cache();
            let ids = Tensor::new(&[[5u32, 17, 3]], &Device::Cpu).unwrap();
            quant.forward_cached(&ids, &mut c1).unwrap();
            quant.forward_cached(&ids, &mut c2).unwrap();
            let a = quant.decode_step(&[7], &mut [&mut c1]).unwrap();
            let b = quant
                .forward_cached(&Tensor::new(&[[7u32]], &Device::Cpu).unwrap(), &mut c2)
                .unwrap();
            let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
            assert!(diff.max(0).unwrap().to_scalar::<f32>().unwrap() < 1e-4);
        }
    }

    #[test]
    fn a_mixture_of_experts_is_stacked_per_block_and_reads_back() {
        let cfg = Config::preset("tiny", 96, 32)
            .unwrap()
            .with_experts(3, 2, 0.01, None)
            .unwrap();
        for (n, _) in crate::weights::param_shapes(&cfg) {
            assert!(gguf_place(&n).is_some(), "{n}");
        }
        assert_eq!(
            gguf_place("model.layers.1.block_sparse_moe.experts.2.w2.weight"),
            Some(("blk.1.ffn_down_exps.weight".to_string(), Some(2)))
        );
        let w = crate::weights::init_weights(&cfg, 3, &Device::Cpu).unwrap();
        let tensors = llama_tensors(&cfg, &w, GgufType::Q8_0).unwrap();
        let find = |n: &str| &tensors.iter().find(|(m, _)| m == n).unwrap().1;
        let f = cfg.intermediate_size;
        let c = cfg.hidden_size;
        assert_eq!(find("blk.0.ffn_up_exps.weight").shape().dims(), &[3, f, c]);
        assert_eq!(
            find("blk.0.ffn_down_exps.weight").shape().dims(),
            &[3, c, f]
        );
        assert_eq!(find("blk.0.ffn_gate_inp.weight").dtype(), GgmlDType::F32);
        let meta = llama_metadata(&cfg, "t", GgufType::Q8_0);
        assert!(meta
            .iter()
            .any(|(k, v)| k == "llama.expert_used_count" && matches!(v, Value::U32(2))));
        // f32: every expert's matrix comes back exactly, and the model runs as before
        let (dense, quant, q) = round_trip_of(cfg.clone(), GgufType::F32);
        for (n, t) in &w {
            let back = q[n].dequantize(&Device::Cpu).unwrap();
            let d = (t - back).unwrap().abs().unwrap().flatten_all().unwrap();
            assert_eq!(d.max(0).unwrap().to_scalar::<f32>().unwrap(), 0.0, "{n}");
        }
        assert!(max_logit_diff(&dense, &quant) < 1e-4);
        // q8_0 and q4_0: quantized experts, an f32 router, close logits
        for (ty, bound) in [(GgufType::Q8_0, 0.05), (GgufType::Q4_0, 0.5)] {
            let (dense, quant, q) = round_trip_of(cfg.clone(), ty);
            let up = "model.layers.0.block_sparse_moe.experts.1.w3.weight";
            assert_eq!(q[up].dtype(), ty.ggml());
            let d = max_logit_diff(&dense, &quant);
            assert!(d < bound && d > 0.0, "{ty:?}: logits differ by {d}");
        }
    }

    #[test]
    fn q8_0_stays_within_half_a_step_of_each_block_scale() {
        let w = Tensor::randn(0f32, 1., (8, 64), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let back = q.dequantize(&Device::Cpu).unwrap();
        let (a, b) = (w.to_vec2::<f32>().unwrap(), back.to_vec2::<f32>().unwrap());
        for (ra, rb) in a.iter().zip(&b) {
            for (ba, bb) in ra.chunks(32).zip(rb.chunks(32)) {
                let scale = ba.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
                for (x, y) in ba.iter().zip(bb) {
                    // half a quantization step, plus the f16 rounding of the scale
                    assert!((x - y).abs() <= 0.5 * scale + 1e-3 * x.abs() + 1e-6);
                }
            }
        }
    }
}
