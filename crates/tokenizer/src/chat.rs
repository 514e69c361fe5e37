//! The chat template: how a conversation becomes one token sequence, and which of its
//! tokens the model is trained to predict (the assistant's words and its end-of-turn).
//!
//! `<|bos|><|system|>...<|end|><|user|>...<|end|><|assistant|>...<|end|>`
//!
//! Each content is encoded on its own, between special tokens, which is exactly what
//! encoding the rendered string gives, since special tokens are split off first, with
//! one deliberate difference: special-token strings inside a message are plain text
//! here, never control tokens (Hugging Face's `apply_chat_template` would turn a typed
//! `<|assistant|>` into the real token, letting a user forge turns).

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
        Ok(self.render(&self.encode_turns(messages)?, 0).value)
    }

    /// Renders a conversation that ends with a user turn, followed by `<|assistant|>`, so the
    /// model continues with its answer.
    pub fn encode_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let mut enc = self.encode_chat(messages)?;
        enc.ids.push(self.special().assistant);
        Ok(enc.ids)
    }

    /// Renders a conversation for training in at most `max_len` tokens. Whole turns are
    /// dropped from the front (after a leading system message) until it fits; if the last
    /// exchange alone is still too long, the end of its answer is cut at a token boundary.
    /// `None` when not one answer token fits.
    pub fn encode_chat_fitting(
        &self,
        messages: &[Message],
        max_len: usize,
    ) -> Result<Option<Fitted<ChatEncoding>>> {
        let turns = self.encode_turns(messages)?;
        let start = first_kept(&turns, max_len);
        let mut fitted = self.render(&turns, start);
        fitted.value.ids.truncate(max_len);
        fitted.value.mask.truncate(max_len);
        Ok(fitted.value.mask.iter().any(|&m| m).then_some(fitted))
    }

    /// Renders a prompt for the assistant's next answer (as [`Tokenizer::encode_prompt`])
    /// leaving room for `reserve` new tokens within `max_len`: the oldest turns after a
    /// leading system message are dropped until it fits. Errors when even the last user
    /// turn alone does not fit.
    pub fn encode_prompt_fitting(
        &self,
        messages: &[Message],
        max_len: usize,
        reserve: usize,
    ) -> Result<Fitted<Vec<u32>>> {
        let turns = self.encode_turns(messages)?;
        // one more for `<|assistant|>`
        let start = first_kept(&turns, max_len.saturating_sub(reserve + 1));
        let mut fitted = self.render(&turns, start);
        fitted.value.ids.push(self.special().assistant);
        let n = fitted.value.ids.len();
        if n + reserve > max_len {
            return Err(crate::TokenizerError::TooLong(format!(
                "the last message alone takes {n} tokens; with {reserve} for the answer that \
                 exceeds the model's context of {max_len} tokens"
            )));
        }
        Ok(Fitted {
            value: fitted.value.ids,
            dropped: fitted.dropped,
        })
    }

    /// `<|bos|>`, a leading system message if any, then messages `[start..]`.
    fn render(&self, turns: &[(Role, Vec<u32>)], start: usize) -> Fitted<ChatEncoding> {
        let mut out = ChatEncoding {
            ids: vec![self.special().bos],
            mask: vec![false],
        };
        let first_body = usize::from(turns.first().is_some_and(|t| t.0 == Role::System));
        for t in turns[..first_body]
            .iter()
            .chain(&turns[start.max(first_body)..])
        {
            let (role, ids) = t;
            out.ids.extend_from_slice(ids);
            out.mask.push(false); // the role token
            out.mask
                .extend(std::iter::repeat_n(*role == Role::Assistant, ids.len() - 1));
        }
        Fitted {
            value: out,
            dropped: start.saturating_sub(first_body),
        }
    }

    /// Each message as (role, its tokens between the role token and `<|end|>`).
    fn encode_turns(&self, messages: &[Message]) -> Result<Vec<(Role, Vec<u32>)>> {
        let s = self.special();
        messages
            .iter()
            .map(|m| {
                let mut ids = vec![self.role_token(m.role)];
                ids.extend(self.encode_plain(&m.content)?);
                ids.push(s.end);
                Ok((m.role, ids))
            })
            .collect()
    }
}

/// Something rendered to fit a length, and how many messages were dropped to make it fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted<T> {
    pub value: T,
    pub dropped: usize,
}

/// Index of the first message to keep so that `<|bos|>`, a leading system message and
/// messages `[i..]` fit in `max_len`. Only whole turns are dropped, and a kept run starts
/// at a user turn where it can, so an answer never loses the question it answers; the last
/// user turn is always kept (when nothing fits, the caller truncates or refuses).
fn first_kept(turns: &[(Role, Vec<u32>)], max_len: usize) -> usize {
    let has_system = turns.first().is_some_and(|t| t.0 == Role::System);
    let fixed = 1 + if has_system { turns[0].1.len() } else { 0 };
    let first_body = usize::from(has_system);
    let last_user = turns
        .iter()
        .rposition(|t| t.0 == Role::User)
        .unwrap_or(first_body)
        .max(first_body);
    let mut total: usize = fixed + turns[first_body..].iter().map(|t| t.1.len()).sum::<usize>();
    let mut i = first_body;
    while total > max_len && i < last_user {
        total -= turns[i].1.len();
        i += 1;
        // do not start on an answer whose question was dropped
        while i < last_user && turns[i].0 != Role::User {
            total -= turns[i].1.len();
            i += 1;
        }
    }
    i
}
