//! Model configuration in the Hugging Face `config.json` format of `LlamaForCausalLM`,
//! and the presets: one depth knob sets width, heads and MLP size, as in nanochat.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// The architecture of a causal language model (a `lm_head`, or tied embeddings).
pub const CAUSAL_LM: &str = "LlamaForCausalLM";
/// The architecture of a scoring model: the same trunk with a scalar head `score.weight`
/// read at the last token (reward and value models).
pub const SEQUENCE_CLASSIFIER: &str = "LlamaForSequenceClassification";

/// The `config.json` of a checkpoint folder (Hugging Face Llama names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: each key/value head serves `heads / kv_heads` query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default = "default_dtype")]
    pub torch_dtype: String,
    /// Labels of a sequence classifier (one: the reward), as Hugging Face writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    /// Mixture of experts (Mixtral's names): experts per block, each a SwiGLU MLP of
    /// `intermediate_size`; none: one dense MLP per block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_local_experts: Option<usize>,
    /// Experts each token is routed to (1: Switch, the gate is the router's probability;
    /// 2 or more: Mixtral/GLaM, the chosen probabilities renormalised to sum to one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_experts_per_tok: Option<usize>,
    /// Weight of the load-balancing loss (Switch: experts x sum over experts of the share
    /// of tokens routed there x the mean router probability) in the training loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_aux_loss_coef: Option<f64>,
    /// Switch-style capacity: in one forward pass an expert takes at most this factor x
    /// tokens x experts-per-token / experts tokens; the rest skip it (the residual carries
    /// them). None: no limit (as transformers' Mixtral).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_capacity_factor: Option<f64>,
}

fn default_architectures() -> Vec<String> {
    vec![CAUSAL_LM.into()]
}
fn default_model_type() -> String {
    "llama".into()
}
fn default_max_pos() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_act() -> String {
    "silu".into()
}
fn default_init() -> f64 {
    0.02
}
fn default_dtype() -> String {
    "float32".into()
}

/// Named presets; `dN` for any depth N also works.
pub const PRESETS: [&str; 4] = ["tiny", "small", "d12", "d20"];

impl Config {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// A preset for a vocabulary and context length.
    ///
    /// `dN` gives N layers of width 64N with 64-wide heads and an MLP of 8/3 the width
    /// (rounded to 64), the SwiGLU sizing that keeps parameters equal to a 4x GELU MLP.
    /// `tiny` is for tests and demos (0.1M parameters plus embeddings), `small` is `d6`
    /// (about 14M parameters with an 8k vocabulary), `d12` is GPT-2-small sized.
    pub fn preset(name: &str, vocab_size: usize, max_seq: usize) -> Result<Self> {
        let (layers, width, heads, kv_heads, mlp) = match name {
            "tiny" => (2, 64, 4, 2, 192),
            "small" => depth(6),
            other => match other
                .strip_prefix('d')
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) if (1..=64).contains(&n) => depth(n),
                _ => {
                    return Err(ModelError::Config(format!(
                        "unknown preset `{name}`: use one of {} or dN for a depth N in 1..=64",
                        PRESETS.join(", ")
                    )))
                }
            },
        };
        let cfg = Self {
            architectures: default_architectures(),
            model_type: default_model_type(),
            vocab_size,
            hidden_size: width,
            intermediate_size: mlp,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: Some(width / heads),
            max_position_embeddings: max_seq,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            hidden_act: default_act(),
            attention_bias: false,
            mlp_bias: false,
            initializer_range: 0.02,
            bos_token_id: Some(0),
            eos_token_id: Some(4),
            pad_token_id: Some(5),
            torch_dtype: default_dtype(),
            id2label: None,
            num_local_experts: None,
            num_experts_per_tok: None,
            router_aux_loss_coef: None,
            expert_capacity_factor: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The same model with a mixture of `experts` SwiGLU MLPs per block, `per_token` of
    /// them active for each token (Mixtral's config names and architecture).
    pub fn with_experts(
        mut self,
        experts: usize,
        per_token: usize,
        aux_loss_coef: f64,
        capacity_factor: Option<f64>,
    ) -> Result<Self> {
        self.num_local_experts = Some(experts);
        self.num_experts_per_tok = Some(per_token);
        self.router_aux_loss_coef = Some(aux_loss_coef);
        self.expert_capacity_factor = capacity_factor;
        self.model_type = "mixtral".into();
        self.architectures = vec![self.architecture(self.is_classifier()).into()];
        self.validate()?;
        Ok(self)
    }

    /// (experts per block, experts per token) of a mixture-of-experts model.
    pub fn experts(&self) -> Option<(usize, usize)> {
        match self.num_local_experts {
            Some(e) if e > 0 => Some((e, self.num_experts_per_tok.unwrap_or(2))),
            _ => None,
        }
    }

    /// Why a mixture's routing is not the one Mixtral implementations (transformers'
    /// `MixtralForCausalLM`, llama.cpp) compute, if it is not: they weight each chosen
    /// expert by its renormalised top-k probability, which for top-1 is always 1, where
    /// a Switch-style top-1 router scales the expert by its probability; and they have
    /// no capacity limit.
    pub fn routing_differs_from_mixtral(&self) -> Option<String> {
        let (_, k) = self.experts()?;
        if k == 1 {
            return Some(
                "its top-1 router scales the expert's output by the router probability; Mixtral implementations give the chosen expert weight 1"
                    .into(),
            );
        }
        self.expert_capacity_factor.map(|f| {
            format!("its experts have a capacity (factor {f}); Mixtral implementations have none")
        })
    }

    /// The Hugging Face architecture of this trunk as a scoring model or a language model
    /// (Mixtral's names for a mixture of experts, Llama's otherwise).
    fn architecture(&self, classifier: bool) -> &'static str {
        match (self.experts().is_some(), classifier) {
            (true, true) => "MixtralForSequenceClassification",
            (true, false) => "MixtralForCausalLM",
            (false, true) => SEQUENCE_CLASSIFIER,
            (false, false) => CAUSAL_LM,
        }
    }

    /// Whether this is a scoring model (`score.weight`, no language-model head).
    pub fn is_classifier(&self) -> bool {
        self.architectures
            .iter()
            .any(|a| a.ends_with("ForSequenceClassification"))
    }

    /// The same trunk as a single-score classifier (a reward or value model).
    pub fn to_classifier(&self) -> Self {
        let mut c = self.clone();
        c.architectures = vec![self.architecture(true).into()];
        c.id2label = Some(BTreeMap::from([("0".to_string(), "LABEL_0".to_string())]));
        c
    }

    /// The same trunk as a causal language model.
    pub fn to_causal_lm(&self) -> Self {
        let mut c = self.clone();
        c.architectures = vec![self.architecture(false).into()];
        c.id2label = None;
        c
    }

    /// Checks that the sizes fit together and that the architecture is one we run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        match (self.model_type.as_str(), self.experts()) {
            ("llama", None) => {}
            ("mixtral", Some((e, k))) => {
                if k == 0 || k > e {
                    return bad(format!(
                        "num_experts_per_tok {k} must be between 1 and num_local_experts ({e})"
                    ));
                }
                if self
                    .expert_capacity_factor
                    .is_some_and(|c| c.is_nan() || c <= 0.0)
                {
                    return bad("expert_capacity_factor must be positive".into());
                }
            }
            ("mixtral", None) => {
                return bad("a mixtral model needs num_local_experts".into());
            }
            ("llama", Some(_)) => {
                return bad(
                    "num_local_experts is set but model_type is llama (mixture-of-experts \
                     models are model_type mixtral)"
                        .into(),
                );
            }
            (other, _) => {
                return bad(format!(
                    "model_type `{other}` is not supported (llama, or mixtral for mixtures of experts)"
                ));
            }
        }
        if self.hidden_act != "silu" {
            return bad(format!(
                "hidden_act `{}` is not supported (only silu)",
                self.hidden_act
            ));
        }
        if self.attention_bias || self.mlp_bias {
            return bad("biases in attention or MLP are not supported".into());
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size, hidden_size and num_hidden_layers must be positive".into());
        }
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
            return bad(format!(
                "num_attention_heads ({h}) must be a positive multiple of num_key_value_heads ({kv})"
            ));
        }
        if self.is_classifier() {
            let labels = self.id2label.as_ref().map(|l| l.len()).unwrap_or(2);
            if labels != 1 {
                return bad(format!(
                    "a sequence classifier with {labels} labels is not supported (only one score: set id2label to one label)"
                ));
            }
        }
        if !self.head_size().is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for rotary positions",
                self.head_size()
            ));
        }
        Ok(())
    }

    /// Parameters, embeddings included (counted once when tied).
    pub fn num_params(&self) -> usize {
        let (c, f, d) = (self.hidden_size, self.intermediate_size, self.head_size());
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        let attn = c * h * d * 2 + c * kv * d * 2;
        let mlp = match self.experts() {
            Some((e, _)) => e * 3 * c * f + e * c,
            None => 3 * c * f,
        };
        let block = attn + mlp + 2 * c;
        let embed = self.vocab_size * c;
        let head = if self.is_classifier() {
            c
        } else if self.tie_word_embeddings {
            0
        } else {
            embed
        };
        embed + head + self.num_hidden_layers * block + c
    }

    /// Matmul FLOPs of one training step per token (forward + backward = 3x forward),
    /// attention scores included, as in the PaLM / nanoGPT MFU accounting.
    pub fn train_flops_per_token(&self, seq: usize) -> f64 {
        let (c, f, d) = (self.hidden_size, self.intermediate_size, self.head_size());
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        // a token passes through its k experts (and the router) only
        let mlp = match self.experts() {
            Some((e, k)) => k * 3 * c * f + e * c,
            None => 3 * c * f,
        };
        let matmul_params =
            self.num_hidden_layers * (c * h * d * 2 + c * kv * d * 2 + mlp) + self.vocab_size * c;
        let attn = self.num_hidden_layers * 2 * h * d * seq; // QK^T and PV, causal half
        6.0 * matmul_params as f64 + 6.0 * attn as f64
    }
}

fn depth(n: usize) -> (usize, usize, usize, usize, usize) {
    let width = 64 * n;
    let mlp = (width * 8 / 3).div_ceil(64) * 64;
    (n, width, n, n, mlp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixtral_routing_is_top_k_renormalised_without_capacity() {
        let base = Config::preset("tiny", 64, 32).unwrap();
        assert!(base.routing_differs_from_mixtral().is_none());
        let top2 = base.clone().with_experts(4, 2, 0.01, None).unwrap();
        assert!(top2.routing_differs_from_mixtral().is_none());
        let top1 = base.clone().with_experts(4, 1, 0.01, None).unwrap();
        assert!(top1
            .routing_differs_from_mixtral()
            .unwrap()
            .contains("top-1"));
        let capped = base.with_experts(4, 2, 0.01, Some(1.25)).unwrap();
        assert!(capped
            .routing_differs_from_mixtral()
            .unwrap()
            .contains("capacity"));
    }

    #[test]
    fn small_is_about_14m_parameters() {
        let c = Config::preset("small", 8192, 256).unwrap();
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.num_attention_heads),
            (384, 1024, 6)
        );
        let p = c.num_params();
        assert!((13_000_000..15_000_000).contains(&p), "{p}");
    }

    #[test]
    fn unknown_preset_names_the_choices() {
        let e = Config::preset("huge", 100, 16).unwrap_err().to_string();
        assert!(e.contains("tiny") && e.contains("dN"), "{e}");
    }

    #[test]
    fn reads_a_minimal_hf_config() {
        let json = r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2}"#;
        let c: Config = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        assert_eq!((c.kv_heads(), c.head_size()), (2, 4));
    }
}
