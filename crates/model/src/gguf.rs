//! GGUF export: a Llama checkpoint as the single file llama.cpp (and the tools built on
//! it) load, in f32, f16 or q8_0, written with candle's GGUF writer.
//!
//! Two things differ from the Hugging Face layout besides the names. llama.cpp rotates
//! adjacent pairs of a head's dimensions where Hugging Face's Llama rotates the first
//! half against the second, so the rows of the query and key projections are reordered
//! per head to keep the same attention. And GGUF lists a tensor's dimensions innermost
//! first, which the writer does.

use std::collections::HashMap;
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
}

impl GgufType {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" | "q8" => Ok(Self::Q8_0),
            o => Err(ModelError::Config(format!(
                "unknown GGUF type `{o}`: use f32, f16 or q8_0"
            ))),
        }
    }

    fn ggml(self) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::Q8_0 => GgmlDType::Q8_0,
        }
    }

    /// `general.file_type`: llama.cpp's name for what most tensors are.
    fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
        }
    }
}

/// llama.cpp's name for one of our (Hugging Face) tensor names.
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
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
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}"))
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
    let mut out = Vec::with_capacity(names.len());
    for hf in names {
        let name = gguf_name(hf).ok_or_else(|| {
            ModelError::Weights(format!("tensor `{hf}` has no llama.cpp counterpart"))
        })?;
        let mut t = weights[hf].to_dtype(DType::F32)?;
        if name.ends_with("attn_q.weight") {
            t = interleave_rotary(&t, cfg.num_attention_heads)?;
        } else if name.ends_with("attn_k.weight") {
            t = interleave_rotary(&t, cfg.kv_heads())?;
        }
        let dtype = match (t.rank(), ty) {
            (1, _) => GgmlDType::F32,
            (_, GgufType::Q8_0) if !t.dims()[t.rank() - 1].is_multiple_of(32) => GgmlDType::F16,
            (_, ty) => ty.ggml(),
        };
        out.push((name, QTensor::quantize(&t, dtype)?));
    }
    Ok(out)
}

/// The `llama.*` hyper-parameters llama.cpp reads.
pub fn llama_metadata(cfg: &Config, name: &str, ty: GgufType) -> Vec<(String, Value)> {
    let u = |v: usize| Value::U32(v as u32);
    vec![
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
    ]
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
