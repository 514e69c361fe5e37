//! The OpenAI wire format: request bodies as clients send them, checked into what the
//! engine runs, and the response objects.
//!
//! Numbers are read wide (`f64`, `i64`) so an out-of-range value gets a message naming
//! the field and its range rather than a type error. Fields OpenAI defines but this
//! server does not implement are refused when set to anything but their neutral value,
//! never silently ignored.

use ferrochat_engine::SamplingParams;
use ferrochat_text::{Message, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// Server-side limits on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most new tokens per choice.
    pub max_tokens: usize,
    /// Most choices per request (`n`).
    pub max_n: usize,
    /// Most stop strings, and most bytes in one.
    pub max_stop: usize,
    pub max_stop_len: usize,
    /// Most messages in a conversation.
    pub max_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tokens: 1024,
            max_n: 8,
            max_stop: 16,
            max_stop_len: 256,
            max_messages: 512,
        }
    }
}

/// Sampling fields shared by both completion endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct SamplingIn {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub stop: Option<Value>,
    pub seed: Option<i64>,
    pub n: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<Value>,
    pub logit_bias: Option<Value>,
    pub tools: Option<Value>,
    pub functions: Option<Value>,
    pub response_format: Option<Value>,
    pub best_of: Option<Value>,
    pub echo: Option<Value>,
    pub suffix: Option<Value>,
    /// Extensions (as vLLM and llama.cpp's server accept them).
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    /// Keep generating past the end token (for benchmarks: every answer runs to max_tokens).
    pub ignore_eos: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Value>,
    /// `"auto"`: drop the oldest turns (after a system message) until the prompt fits
    /// with room for the answer (`max_tokens`, at most half the context), as OpenAI's
    /// Responses API does, and cut the answer to the room left; `"disabled"` (the
    /// default): a prompt and `max_tokens` that do not fit are an error.
    pub truncation: Option<String>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub sampling: SamplingIn,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Value,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub sampling: SamplingIn,
}

/// What to generate, checked.
#[derive(Debug, Clone)]
pub struct GenParams {
    pub n: usize,
    /// As asked; `None` lets the answer run to the model's context (within the limit).
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub seed: u64,
    pub stops: Vec<String>,
    pub ignore_eos: bool,
    /// The server's watermark, when it plants one.
    pub watermark: Option<ferrochat_engine::Watermark>,
}

/// Parses a JSON body; the error says where it is malformed.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            "the request body is empty: send a JSON object",
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::invalid(format!(
            "the request body is not UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(format!("invalid JSON in the request body: {e}")))
}

fn range(param: &str, ok: bool, want: &str, got: impl std::fmt::Display) -> ApiResult<()> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::param(
            param,
            format!("{param} must be {want}, got {got}"),
        ))
    }
}

fn unsupported(param: &str, why: &str) -> ApiError {
    ApiError::param(
        param,
        format!("{param} is not supported by this server{why}"),
    )
    .with_code("unsupported_parameter")
}

impl SamplingIn {
    /// Checks every field against its range and the server's limits.
    pub fn check(&self, limits: &Limits) -> ApiResult<GenParams> {
        // checked as the engine will see them (f32): 1e-300 is positive in f64 but 0 in f32
        let temperature = self.temperature.unwrap_or(1.0) as f32;
        range(
            "temperature",
            (0.0..=2.0).contains(&temperature),
            "between 0 and 2",
            temperature,
        )?;
        let top_p = self.top_p.unwrap_or(1.0) as f32;
        range("top_p", top_p > 0.0 && top_p <= 1.0, "in (0, 1]", top_p)?;
        let top_k = self.top_k.unwrap_or(0);
        range("top_k", top_k >= 0, "0 (no limit) or more", top_k)?;
        let min_p = self.min_p.unwrap_or(0.0) as f32;
        range("min_p", (0.0..1.0).contains(&min_p), "in [0, 1)", min_p)?;
        let rep = self.repetition_penalty.unwrap_or(1.0) as f32;
        range(
            "repetition_penalty",
            rep > 0.0 && rep <= 10.0,
            "in (0, 10]",
            rep,
        )?;
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = v {
                range(name, (-2.0..=2.0).contains(&v), "between -2 and 2", v)?;
                if v != 0.0 {
                    return Err(unsupported(name, " (use repetition_penalty)"));
                }
            }
        }
        let n = self.n.unwrap_or(1);
        range(
            "n",
            n >= 1 && n as usize <= limits.max_n,
            &format!("between 1 and {}", limits.max_n),
            n,
        )?;
        let max_tokens = match (self.max_tokens, self.max_completion_tokens) {
            (Some(_), Some(_)) => {
                return Err(ApiError::param(
                    "max_tokens",
                    "give max_tokens or max_completion_tokens, not both",
                ))
            }
            (Some(m), None) => Some(("max_tokens", m)),
            (None, Some(m)) => Some(("max_completion_tokens", m)),
            (None, None) => None,
        };
        let max_tokens = match max_tokens {
            Some((name, m)) => {
                range(
                    name,
                    m >= 1 && m as u64 <= limits.max_tokens as u64,
                    &format!("between 1 and {} (this server's limit)", limits.max_tokens),
                    m,
                )?;
                Some(m as usize)
            }
            None => None,
        };
        let seed = match self.seed {
            Some(s) => {
                range("seed", s >= 0, "0 or more", s)?;
                s as u64
            }
            None => rand::random::<u64>() >> 1,
        };
        let stops = stops(self.stop.as_ref(), limits)?;
        let neutral = |v: &Option<Value>| match v {
            None | Some(Value::Null) | Some(Value::Bool(false)) => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        for (name, v) in [
            ("logprobs", &self.logprobs),
            ("top_logprobs", &self.top_logprobs),
            ("logit_bias", &self.logit_bias),
            ("tools", &self.tools),
            ("functions", &self.functions),
            ("echo", &self.echo),
            ("suffix", &self.suffix),
        ] {
            if !neutral(v) {
                return Err(unsupported(name, ""));
            }
        }
        if let Some(b) = &self.best_of {
            if b.as_i64() != Some(1) && !b.is_null() {
                return Err(unsupported("best_of", " (ask for n answers instead)"));
            }
        }
        if let Some(f) = &self.response_format {
            if f.get("type").and_then(Value::as_str) != Some("text") {
                return Err(unsupported(
                    "response_format",
                    " (only {\"type\": \"text\"})",
                ));
            }
        }
        let sampling = SamplingParams {
            temperature,
            top_k: top_k as usize,
            top_p,
            min_p,
            repetition_penalty: rep,
        };
        // whatever slipped past the checks above is still a bad request, not a failure
        sampling.validate().map_err(ApiError::invalid)?;
        Ok(GenParams {
            n: n as usize,
            max_tokens,
            sampling,
            seed,
            stops,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            watermark: None,
        })
    }
}

fn stops(v: Option<&Value>, limits: &Limits) -> ApiResult<Vec<String>> {
    let list: Vec<&Value> = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(one) => vec![one],
    };
    if list.len() > limits.max_stop {
        return Err(ApiError::param(
            "stop",
            format!(
                "stop may hold at most {} strings, got {}",
                limits.max_stop,
                list.len()
            ),
        ));
    }
    list.into_iter()
        .map(|s| match s.as_str() {
            Some(s) if !s.is_empty() && s.len() <= limits.max_stop_len => Ok(s.to_string()),
            Some("") => Err(ApiError::param("stop", "a stop string is empty")),
            Some(s) => Err(ApiError::param(
                "stop",
                format!(
                    "a stop string is {} bytes; the limit is {}",
                    s.len(),
                    limits.max_stop_len
                ),
            )),
            None => Err(ApiError::param(
                "stop",
                format!("stop must be a string or a list of strings, got {s}"),
            )),
        })
        .collect()
}

/// A chat message's text: a string, or a list of parts of which only text is taken.
fn content_text(i: usize, c: Option<&Value>) -> ApiResult<String> {
    let param = format!("messages[{i}].content");
    match c {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    (Some(kind), _) if kind != "text" => {
                        return Err(ApiError::param(
                            &param,
                            format!(
                                "{param}[{j}] is of type {kind}; only text parts are supported"
                            ),
                        ))
                    }
                    _ => {
                        return Err(ApiError::param(
                            &param,
                            format!("{param}[{j}] must be {{\"type\": \"text\", \"text\": ...}}"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        None | Some(Value::Null) => Err(ApiError::param(&param, format!("{param} is missing"))),
        Some(other) => Err(ApiError::param(
            &param,
            format!("{param} must be a string or a list of text parts, got {other}"),
        )),
    }
}

/// The conversation, checked: known roles, text content, a system message only first,
/// and something for the assistant to answer.
pub fn messages(raw: &[Value], limits: &Limits) -> ApiResult<Vec<Message>> {
    if raw.is_empty() {
        return Err(ApiError::param(
            "messages",
            "messages is empty: send at least one user message",
        ));
    }
    if raw.len() > limits.max_messages {
        return Err(ApiError::param(
            "messages",
            format!(
                "{} messages; this server takes at most {}",
                raw.len(),
                limits.max_messages
            ),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let param = format!("messages[{i}].role");
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(ApiError::param(
                    &param,
                    format!("{param} is `{other}`; use system, user or assistant"),
                ))
            }
            None => return Err(ApiError::param(&param, format!("{param} is missing"))),
        };
        if role == Role::System && i > 0 {
            return Err(ApiError::param(
                &param,
                format!("{param}: a system message may only come first"),
            ));
        }
        out.push(Message::new(role, content_text(i, m.get("content"))?));
    }
    if out.iter().all(|m| m.role == Role::System) {
        return Err(ApiError::param(
            "messages",
            "messages holds no user message to answer",
        ));
    }
    Ok(out)
}

/// `prompt` of `/v1/completions`: a string, a list of strings, a list of token ids, or a
/// list of lists of token ids.
pub enum PromptIn {
    Text(String),
    Tokens(Vec<u32>),
}

pub fn prompts(v: &Value, vocab: usize) -> ApiResult<Vec<PromptIn>> {
    let bad = || {
        ApiError::param(
            "prompt",
            "prompt must be a string, a list of strings, a list of token ids or a list of such lists",
        )
    };
    let tokens = |a: &[Value]| -> ApiResult<Vec<u32>> {
        a.iter()
            .map(|t| match t.as_u64() {
                Some(t) if (t as usize) < vocab => Ok(t as u32),
                Some(t) => Err(ApiError::param(
                    "prompt",
                    format!("token id {t} is outside the vocabulary of {vocab}"),
                )),
                None => Err(bad()),
            })
            .collect()
    };
    let out = match v {
        Value::String(s) => vec![PromptIn::Text(s.clone())],
        Value::Array(a) if a.is_empty() => return Err(bad()),
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .map(|s| PromptIn::Text(s.as_str().unwrap_or_default().to_string()))
            .collect(),
        Value::Array(a) if a.iter().all(Value::is_number) => vec![PromptIn::Tokens(tokens(a)?)],
        Value::Array(a) if a.iter().all(Value::is_array) => a
            .iter()
            .map(|p| tokens(p.as_array().expect("array")).map(PromptIn::Tokens))
            .collect::<ApiResult<_>>()?,
        _ => return Err(bad()),
    };
    Ok(out)
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The context check of the OpenAI API: the prompt and the answer's room must fit.
pub fn fit(
    prompt_len: usize,
    max_tokens: Option<usize>,
    context: usize,
    limit: usize,
) -> ApiResult<usize> {
    let room = context.saturating_sub(prompt_len);
    let err = |asked: usize| {
        ApiError::invalid(format!(
            "this model's maximum context length is {context} tokens; the request needs {} \
             ({prompt_len} in the prompt, {asked} for the answer): shorten the prompt or \
             lower max_tokens",
            prompt_len + asked
        ))
        .with_param("messages")
        .with_code("context_length_exceeded")
    };
    match max_tokens {
        Some(m) if m > room => Err(err(m)),
        Some(m) => Ok(m),
        None if room == 0 => Err(err(1)),
        None => Ok(room.min(limit)),
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A response id: the prefix and 24 random hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:024x}", rand::random::<u128>() >> 32)
}
