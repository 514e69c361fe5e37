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

use crate::template::Rendered;
use crate::{ChatTemplate, Result, Tokenizer};
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

/// `tokenizer_config.json`: ferrochat's template and tokens, or a model's own template
/// with the start and end tokens it names.
pub(crate) fn tokenizer_config(own: Option<&ChatTemplate>) -> serde_json::Value {
    let (template, bos, eos) = match own {
        Some(t) => (t.source(), t.bos_token.as_str(), t.eos_token.as_str()),
        None => (
            CHAT_TEMPLATE_JINJA,
            crate::special::BOS,
            crate::special::END,
        ),
    };
    serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": crate::special::PAD,
        "unk_token": null,
        "add_bos_token": false,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1_000_000,
        "chat_template": template,
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
        self.encode_chat_with(messages, false)
    }

    /// Renders a conversation, followed by the start of the assistant's turn when
    /// `add_generation_prompt` (as `apply_chat_template` does).
    pub fn encode_chat_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<ChatEncoding> {
        if let Some(t) = self.template() {
            return self.encode_rendered(&t.render(messages, add_generation_prompt)?, messages);
        }
        let mut enc = self.render(&self.encode_turns(messages)?, 0).value;
        if add_generation_prompt {
            enc.ids.push(self.special().assistant);
            enc.mask.push(false);
        }
        Ok(enc)
    }

    /// Renders a conversation that ends with a user turn, followed by the start of the
    /// assistant's turn (`<|assistant|>`), so the model continues with its answer.
    pub fn encode_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        Ok(self.encode_chat_with(messages, true)?.ids)
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
        let mut fitted = match self.template() {
            Some(t) => self.fit_template(t, messages, max_len, false)?,
            None => {
                let turns = self.encode_turns(messages)?;
                let start = first_kept(&turns, max_len);
                self.render(&turns, start)
            }
        };
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
        let fitted = match self.template() {
            Some(t) => self.fit_template(t, messages, max_len.saturating_sub(reserve), true)?,
            None => {
                let turns = self.encode_turns(messages)?;
                // one more for `<|assistant|>`
                let start = first_kept(&turns, max_len.saturating_sub(reserve + 1));
                let mut fitted = self.render(&turns, start);
                fitted.value.ids.push(self.special().assistant);
                fitted.value.mask.push(false);
                fitted
            }
        };
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

    /// A model's own template: the conversation with its oldest turns dropped (after a
    /// leading system message, starting at a user turn, the last user turn always kept)
    /// until it renders in `max_len` tokens; the shortest if none does.
    fn fit_template(
        &self,
        t: &ChatTemplate,
        messages: &[Message],
        max_len: usize,
        gen: bool,
    ) -> Result<Fitted<ChatEncoding>> {
        let first_body = usize::from(messages.first().is_some_and(|m| m.role == Role::System));
        let last_user = messages
            .iter()
            .rposition(|m| m.role == Role::User)
            .unwrap_or(first_body)
            .max(first_body);
        let starts = std::iter::once(first_body)
            .chain((first_body + 1..=last_user).filter(|&i| messages[i].role == Role::User));
        let mut last = None;
        for start in starts {
            let kept: Vec<Message> = messages[..first_body]
                .iter()
                .chain(&messages[start..])
                .cloned()
                .collect();
            let enc = self.encode_rendered(&t.render(&kept, gen)?, &kept)?;
            let fits = enc.ids.len() <= max_len;
            last = Some(Fitted {
                value: enc,
                dropped: start - first_body,
            });
            if fits {
                break;
            }
        }
        Ok(last.expect("at least one start"))
    }

    /// Token ids of a rendered template: split on the vocabulary's added tokens where the
    /// template's own text has them, message contents as plain text. Targets: each
    /// assistant content and the end-of-turn token after it.
    fn encode_rendered(&self, r: &Rendered, messages: &[Message]) -> Result<ChatEncoding> {
        let text = r.text.as_str();
        // where the template's own text holds an added token
        let mut cuts: Vec<(std::ops::Range<usize>, u32)> = Vec::new();
        let mut gap_start = 0;
        let gaps = r
            .contents
            .iter()
            .map(|(_, c)| c.clone())
            .chain(std::iter::once(text.len()..text.len()));
        for content in gaps {
            let mut i = gap_start;
            while i < content.start {
                let hit = self
                    .added
                    .iter()
                    .find(|(s, _)| text[i..content.start].starts_with(s.as_str()));
                match hit {
                    Some((s, id)) => {
                        cuts.push((i..i + s.len(), *id));
                        i += s.len();
                    }
                    None => i += text[i..].chars().next().map_or(1, char::len_utf8),
                }
            }
            gap_start = content.end;
        }
        // answer spans: an assistant content, through the end-of-turn token that follows it
        let end = self.special().end;
        let mut targets: Vec<std::ops::Range<usize>> = Vec::new();
        for (k, (i, c)) in r.contents.iter().enumerate() {
            if messages[*i].role != Role::Assistant {
                continue;
            }
            let next = r.contents.get(k + 1).map_or(text.len(), |n| n.1.start);
            let stop = cuts
                .iter()
                .find(|(span, id)| span.start >= c.end && span.start < next && *id == end)
                .map_or(c.end, |(span, _)| span.end);
            targets.push(c.start..stop);
        }
        let is_target = |pos: usize| targets.iter().any(|t| t.contains(&pos));
        let mut out = ChatEncoding::default();
        let mut at = 0;
        let piece = |from: usize, to: usize, out: &mut ChatEncoding| -> Result<()> {
            if from == to {
                return Ok(());
            }
            let enc = self.encode_plain_offsets(&text[from..to])?;
            for (&id, &(s, _)) in enc.get_ids().iter().zip(enc.get_offsets()) {
                out.ids.push(id);
                out.mask.push(is_target(from + s));
            }
            Ok(())
        };
        for (span, id) in &cuts {
            piece(at, span.start, &mut out)?;
            out.ids.push(*id);
            out.mask.push(is_target(span.start));
            at = span.end;
        }
        piece(at, text.len(), &mut out)?;
        Ok(out)
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
