//! A model's own Jinja chat template (one imported from a Hugging Face folder), rendered
//! the way `transformers`' `apply_chat_template` renders it: the same Jinja settings
//! (`trim_blocks`, `lstrip_blocks`, Python string methods), the same variables
//! (`messages`, `bos_token`, `eos_token`, `add_generation_prompt`), and the rendered text
//! split on the vocabulary's added tokens before the rest is encoded, as `tokenizers` does.
//!
//! Two things differ on purpose:
//! - message text is always plain text: a user who types `<|im_start|>` gets those
//!   characters, never the control token. Contents are rendered as placeholders first, so
//!   the places where the template's own text ends and a message's begins are known.
//! - the loss mask: an assistant message's tokens and the template's end-of-turn token
//!   after it are the targets (what `{% generation %}` marks in templates that have it;
//!   those tags are accepted and need not be present).

use std::ops::Range;

use ferrochat_text::{Message, Role};
use minijinja::{Environment, Error, ErrorKind, Value};

use crate::{Result, TokenizerError};

const TEMPLATE_NAME: &str = "chat_template";
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// A Jinja chat template with the end-of-turn and start tokens it names.
#[derive(Debug)]
pub struct ChatTemplate {
    source: String,
    env: Environment<'static>,
    pub(crate) bos_token: String,
    pub(crate) eos_token: String,
}

/// A rendered conversation as text: its byte ranges that are message contents (in message
/// order; a message the template left out has none) and the assistant messages among them.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub text: String,
    /// (message index, byte range of its content in `text`)
    pub contents: Vec<(usize, Range<usize>)>,
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token`/`eos_token` are the strings the template may use
    /// (`tokenizer_config.json`'s); the end-of-turn token is `eos_token`.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(source))
            .map_err(|e| {
                TokenizerError::Template(format!("the chat template does not parse: {e:#}"))
            })?;
        Ok(Self {
            source: source.to_string(),
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn render_raw(&self, messages: &[Message], contents: &[String], gen: bool) -> Result<String> {
        let msgs: Vec<Value> = messages
            .iter()
            .zip(contents)
            .map(|(m, c)| {
                Value::from_serialize(serde_json::json!({
                    "role": role_name(m.role),
                    "content": c,
                }))
            })
            .collect();
        let tpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TokenizerError::Template(e.to_string()))?;
        tpl.render(minijinja::context! {
            messages => msgs,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            add_generation_prompt => gen,
            tools => Value::from(()),
            documents => Value::from(()),
        })
        .map_err(|e| TokenizerError::Template(format!("the chat template failed to render: {e:#}")))
    }

    /// Renders `messages`, knowing where each content lies. Errors when the template
    /// rewrites message text in a way that placeholders cannot follow.
    pub(crate) fn render(&self, messages: &[Message], gen: bool) -> Result<Rendered> {
        let marks: Vec<String> = (0..messages.len())
            .map(|i| format!("{OPEN}{i}{CLOSE}"))
            .collect();
        let marked = self.render_raw(messages, &marks, gen)?;
        let mut text = String::with_capacity(marked.len());
        let mut contents = Vec::new();
        let mut rest = marked.as_str();
        while let Some(open) = rest.find(OPEN) {
            text.push_str(&rest[..open]);
            let after = &rest[open + OPEN.len_utf8()..];
            let close = after.find(CLOSE).ok_or_else(garbled)?;
            let i: usize = after[..close].parse().map_err(|_| garbled())?;
            let m = messages.get(i).ok_or_else(garbled)?;
            let start = text.len();
            text.push_str(&m.content);
            contents.push((i, start..text.len()));
            rest = &after[close + CLOSE.len_utf8()..];
        }
        text.push_str(rest);
        // the template must treat text as text: rendering the real contents gives the same
        let real: Vec<String> = messages.iter().map(|m| m.content.clone()).collect();
        if self.render_raw(messages, &real, gen)? != text {
            return Err(TokenizerError::Template(
                "the chat template changes the message text it inserts (slices or edits it), so \
                 its answer tokens cannot be told apart; import with --native-template"
                    .into(),
            ));
        }
        Ok(Rendered { text, contents })
    }
}

fn garbled() -> TokenizerError {
    TokenizerError::Template(
        "the chat template cut a message's placeholder apart; it edits message text, which \
         ferrochat cannot follow (import with --native-template)"
            .into(),
    )
}

pub(crate) fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// Removes `{% generation %}` / `{% endgeneration %}` (transformers' marks for the
/// assistant's tokens, which plain Jinja does not know), keeping their whitespace control.
fn strip_generation_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(i) = rest.find("{%") {
        let Some(j) = rest[i..].find("%}") else { break };
        let tag = &rest[i + 2..i + j];
        let name = tag.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..i]);
        if name == "generation" || name == "endgeneration" {
            // keep `{%- -%}` trimming with an empty statement that does the same
            let l = if tag.starts_with('-') { "-" } else { "" };
            let r = if tag.ends_with('-') { "-" } else { "" };
            out.push_str(&format!("{{%{l} if true %}}{{% endif {r}%}}"));
        } else {
            out.push_str(&rest[i..i + j + 2]);
        }
        rest = &rest[i + j + 2..];
    }
    out.push_str(rest);
    out
}

/// The chat template in `tokenizer_config.json`'s value: a string, or Hugging Face's list
/// of named templates (the one named `default`).
pub fn template_from_config(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// A token string from `tokenizer_config.json`: a string or an `AddedToken` object.
pub fn token_from_config(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_are_removed_with_their_trimming() {
        let s = strip_generation_tags("a{%- generation %}b{% endgeneration -%} c");
        let mut env = Environment::new();
        env.add_template_owned("t", s).unwrap();
        assert_eq!(env.get_template("t").unwrap().render(()).unwrap(), "abc");
    }
}
