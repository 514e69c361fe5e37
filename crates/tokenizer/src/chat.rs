//! The chat template: how a conversation becomes one token sequence, and which of its
//! tokens the model is trained to predict (the assistant's words and its end-of-turn).
//!
//! `<|bos|><|system|>...<|end|><|user|>...<|end|><|assistant|>...<|end|>`
//!
//! Each content is encoded on its own, between special tokens, which is exactly what
//! encoding the rendered string gives, since special tokens are split off first.

use crate::{Result, Tokenizer};
use ferrochat_text::{Message, Role};

/// The same template in Jinja, for `tokenizer_config.json` (Hugging Face `apply_chat_template`).
pub const CHAT_TEMPLATE_JINJA: &str = "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

/// A rendered conversation: ids, and for each id whether it is a training target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatEncoding {
    pub ids: Vec<u32>,
    /// `mask[i]` is true when `ids[i]` is predicted (assistant content and its `<|end|>`).
    pub mask: Vec<bool>,
}

pub(crate) fn tokenizer_config() -> serde_json::Value {
    serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": crate::special::BOS,
        "eos_token": crate::special::END,
        "pad_token": crate::special::PAD,
        "unk_token": null,
        "add_bos_token": false,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1_000_000,
        "chat_template": CHAT_TEMPLATE_JINJA,
    })
}

impl Tokenizer {
    fn role_token(&self, role: Role) -> u32 {
        let s = self.special();
        match role {
            Role::System => s.system,
            Role::User => s.user,
            Role::Assistant => s.assistant,
        }
    }

    /// Renders a whole conversation for training; only assistant turns are targets.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<ChatEncoding> {
        let mut out = ChatEncoding {
            ids: vec![self.special().bos],
            mask: vec![false],
        };
        for m in messages {
            let train = m.role == Role::Assistant;
            out.ids.push(self.role_token(m.role));
            out.mask.push(false);
            let ids = self.encode(&m.content)?;
            out.mask.extend(std::iter::repeat_n(train, ids.len()));
            out.ids.extend(ids);
            out.ids.push(self.special().end);
            out.mask.push(train);
        }
        Ok(out)
    }

    /// Renders a conversation that ends with a user turn, followed by `<|assistant|>`, so the
    /// model continues with its answer.
    pub fn encode_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let mut enc = self.encode_chat(messages)?;
        enc.ids.push(self.special().assistant);
        Ok(enc.ids)
    }
}
