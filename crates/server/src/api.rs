//! The OpenAI routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, ApiResult};
use crate::openai::{self, ChatRequest, CompletionRequest, PromptIn, Usage};
use crate::run::{Run, Update};
use crate::state::{AppState, ServedModel};

pub type Shared = Arc<AppState>;

/// The request body, at most the configured size.
pub async fn read_body(state: &AppState, body: Body) -> ApiResult<Bytes> {
    let limit = state.config.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_big = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_big {
            ApiError::too_large(format!(
                "the request body is larger than this server's limit of {limit} bytes"
            ))
        } else {
            ApiError::invalid(format!("cannot read the request body: {e}"))
        }
    })
}

pub async fn models(State(st): State<Shared>) -> Json<Value> {
    let data: Vec<Value> = st.models.iter().map(|m| model_json(m)).collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn model(State(st): State<Shared>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let m = st.model(&name)?;
    Ok(Json(model_json(&m)))
}

fn model_json(m: &ServedModel) -> Value {
    json!({
        "id": m.name,
        "object": "model",
        "created": m.created,
        "owned_by": "ferrochat",
        "context_length": m.context,
    })
}

/// What differs between the chat and the plain completion endpoints.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Text,
}

impl Kind {
    fn object(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    /// A whole choice: a chat message, or the completion's text.
    fn choice(self, index: usize, text: &str, finish: Option<&str>) -> Value {
        let message = json!({"role": "assistant", "content": text});
        self.shaped(index, "message", message, text, finish)
    }

    /// A streamed piece of a choice: a chat delta, or the completion's new text.
    fn delta(self, index: usize, delta: Value, text: &str, finish: Option<&str>) -> Value {
        self.shaped(index, "delta", delta, text, finish)
    }

    /// A choice object: chat carries `body` under `key`, text completion carries `text`.
    fn shaped(
        self,
        index: usize,
        key: &str,
        body: Value,
        text: &str,
        finish: Option<&str>,
    ) -> Value {
        let mut v = json!({"index": index, "logprobs": null, "finish_reason": finish});
        match self {
            Kind::Chat => v[key] = body,
            Kind::Text => v["text"] = json!(text),
        }
        v
    }
}

pub async fn chat_completions(State(st): State<Shared>, req: Request) -> ApiResult<Response> {
    let body = read_body(&st, req.into_body()).await?;
    let r: ChatRequest = openai::parse_body(&body)?;
    let m = st.model(&r.model)?;
    let mut gen = r.sampling.check(&st.config.limits)?;
    gen.watermark = st.config.watermark;
    let messages = openai::messages(&r.messages, &st.config.limits)?;
    if st.config.log_prompts {
        tracing::info!(target: "ferrochat::prompts", "{} {:?}", m.name, messages);
    }
    let encode_err = |e: ferrochat_tokenizer::TokenizerError| {
        ApiError::param("messages", format!("cannot encode the messages: {e}"))
    };
    let limit = st.config.limits.max_tokens;
    let (prompt, dropped, max_new) = match r.truncation.as_deref() {
        None | Some("disabled") => {
            let prompt = m.tokenizer.encode_prompt(&messages).map_err(encode_err)?;
            let max_new = openai::fit(prompt.len(), gen.max_tokens, m.context, limit)?;
            (prompt, 0, max_new)
        }
        Some("auto") => {
            // room for the answer, but never more than half the context: the oldest turns
            // go first, then the answer is cut to what is left
            let want = gen.max_tokens.unwrap_or(limit);
            let reserve = want.min(m.context / 2).max(1);
            let fitted = match m
                .tokenizer
                .encode_prompt_fitting(&messages, m.context, reserve)
            {
                Ok(f) => f,
                Err(ferrochat_tokenizer::TokenizerError::TooLong(why)) => {
                    return Err(
                        ApiError::param("messages", why).with_code("context_length_exceeded")
                    )
                }
                Err(e) => return Err(encode_err(e)),
            };
            let max_new = want.min(m.context - fitted.value.len());
            (fitted.value, fitted.dropped, max_new)
        }
        Some(other) => {
            return Err(ApiError::param(
                "truncation",
                format!("truncation is `{other}`; use auto or disabled"),
            ))
        }
    };
    let run = Run::start(m, vec![prompt], vec![max_new], &gen)?;
    let include_usage = r.stream_options.is_some_and(|o| o.include_usage);
    let mut res = respond(st, run, Kind::Chat, r.stream, include_usage).await?;
    // how many of the oldest messages `truncation: auto` left out
    res.headers_mut()
        .insert("x-ferrochat-dropped-messages", dropped.into());
    Ok(res)
}

pub async fn completions(State(st): State<Shared>, req: Request) -> ApiResult<Response> {
    let body = read_body(&st, req.into_body()).await?;
    let r: CompletionRequest = openai::parse_body(&body)?;
    let m = st.model(&r.model)?;
    let mut gen = r.sampling.check(&st.config.limits)?;
    gen.watermark = st.config.watermark;
    let mut prompts = Vec::new();
    let mut max_new = Vec::new();
    for p in openai::prompts(&r.prompt, m.vocab)? {
        let ids = match p {
            // text continues a document, which starts with <|bos|> as in pretraining
            PromptIn::Text(t) => {
                if st.config.log_prompts {
                    tracing::info!(target: "ferrochat::prompts", "{} {t:?}", m.name);
                }
                let mut ids = vec![m.tokenizer.special().bos];
                ids.extend(m.tokenizer.encode(&t).map_err(|e| {
                    ApiError::param("prompt", format!("cannot encode the prompt: {e}"))
                })?);
                ids
            }
            PromptIn::Tokens(ids) if ids.is_empty() => {
                return Err(ApiError::param("prompt", "a prompt of no tokens"))
            }
            PromptIn::Tokens(ids) => ids,
        };
        let fits = openai::fit(
            ids.len(),
            gen.max_tokens,
            m.context,
            st.config.limits.max_tokens,
        )
        .map_err(|e| e.with_param("prompt"))?;
        max_new.push(fits);
        prompts.push(ids);
    }
    if prompts.len() * gen.n > st.config.limits.max_n {
        return Err(ApiError::param(
            "n",
            format!(
                "{} prompts with n = {} make {} answers; this server gives at most {} per request",
                prompts.len(),
                gen.n,
                prompts.len() * gen.n,
                st.config.limits.max_n
            ),
        ));
    }
    let run = Run::start(m, prompts, max_new, &gen)?;
    let include_usage = r.stream_options.is_some_and(|o| o.include_usage);
    respond(st, run, Kind::Text, r.stream, include_usage).await
}

async fn respond(
    st: Shared,
    run: Run,
    kind: Kind,
    stream: bool,
    include_usage: bool,
) -> ApiResult<Response> {
    let id = openai::new_id(match kind {
        Kind::Chat => "chatcmpl",
        Kind::Text => "cmpl",
    });
    let created = openai::unix_now();
    if stream {
        return Ok(stream_response(st, run, kind, id, created, include_usage));
    }
    let (choices, run) = run.collect().await?;
    let model = run.model().name.clone();
    let usage = Usage::new(run.prompt_tokens, run.completion_tokens());
    st.metrics.generation(
        run.first_token.map(|t| (t - run.started).as_secs_f64()),
        run.started.elapsed().as_secs_f64(),
    );
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, (text, reason))| kind.choice(i, text, Some(reason)))
        .collect();
    Ok(Json(json!({
        "id": id,
        "object": kind.object(false),
        "created": created,
        "model": model,
        "system_fingerprint": null,
        "choices": choices,
        "usage": usage,
    }))
    .into_response())
}

fn stream_response(
    st: Shared,
    mut run: Run,
    kind: Kind,
    id: String,
    created: u64,
    include_usage: bool,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let model = run.model().name.clone();
    tokio::spawn(async move {
        let chunk = |choices: Vec<Value>, usage: Option<Usage>| {
            let mut v = json!({
                "id": id,
                "object": kind.object(true),
                "created": created,
                "model": model,
                "system_fingerprint": null,
                "choices": choices,
            });
            if include_usage {
                v["usage"] = json!(usage);
            }
            Ok(SseEvent::default().data(v.to_string()))
        };
        // a send fails once the client has gone: dropping `run` then cancels its sequences
        if let Kind::Chat = kind {
            for i in 0..run.choices() {
                let first = kind.delta(i, json!({"role": "assistant", "content": ""}), "", None);
                if tx.send(chunk(vec![first], None)).await.is_err() {
                    return;
                }
            }
        }
        while let Some(u) = run.next().await {
            let event = match u {
                Update::Delta { text, .. } if text.is_empty() => continue,
                Update::Delta { index, text } => chunk(
                    vec![kind.delta(index, json!({"content": text}), &text, None)],
                    None,
                ),
                Update::Finished { index, reason } => {
                    chunk(vec![kind.delta(index, json!({}), "", Some(reason))], None)
                }
                Update::Failed(e) => {
                    let body = ApiError::internal(e).body();
                    let _ = tx
                        .send(Ok(SseEvent::default().data(body.to_string())))
                        .await;
                    return;
                }
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
        st.metrics.generation(
            run.first_token.map(|t| (t - run.started).as_secs_f64()),
            run.started.elapsed().as_secs_f64(),
        );
        if include_usage {
            let usage = Usage::new(run.prompt_tokens, run.completion_tokens());
            if tx.send(chunk(Vec::new(), Some(usage))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
