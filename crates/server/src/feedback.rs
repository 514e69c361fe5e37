//! The chat page's routes: stored conversations, ratings and comparisons.
//! Every write answers only once the row is on disk.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::Json;
use ferrochat_text::{Message, Role};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{read_body, Shared};
use crate::error::{ApiError, ApiResult};
use crate::openai::parse_body;
use crate::store::{Comparison, Rating, Store, StoredConversation};

const MAX_TEXT: usize = 100_000;

/// Runs a store call off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> anyhow::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(format!("the store task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("the feedback store failed: {e:#}")))
}

fn check_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::param(
            "id",
            "a conversation id is 1 to 64 characters of A-Z, a-z, 0-9, - and _",
        ))
    }
}

fn check_text(param: &str, s: &str) -> ApiResult<()> {
    if s.len() > MAX_TEXT {
        return Err(ApiError::param(
            param,
            format!("{param} is {} bytes; the limit is {MAX_TEXT}", s.len()),
        ));
    }
    Ok(())
}

/// A prompt for feedback: it ends with the user's turn that the answer answers.
fn check_prompt(messages: &[Message]) -> ApiResult<()> {
    match messages.last() {
        Some(m) if m.role == Role::User => {}
        _ => {
            return Err(ApiError::param(
                "messages",
                "messages must be the prompt of the answer: the conversation up to and including the user's last turn",
            ))
        }
    }
    for (i, m) in messages.iter().enumerate() {
        check_text(&format!("messages[{i}].content"), &m.content)?;
    }
    Ok(())
}

fn check_answer(param: &str, a: &str) -> ApiResult<()> {
    if a.trim().is_empty() {
        return Err(ApiError::param(param, format!("{param} is empty")));
    }
    check_text(param, a)
}

pub async fn list_conversations(State(st): State<Shared>) -> ApiResult<Json<Value>> {
    let list = blocking(st.store()?, |s| s.conversations(200)).await?;
    Ok(Json(json!({"object": "list", "data": list})))
}

pub async fn get_conversation(
    State(st): State<Shared>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let key = id.clone();
    match blocking(st.store()?, move |s| s.conversation(&key)).await? {
        Some(c) => Ok(Json(json!(c))),
        None => Err(ApiError::not_found(format!("no conversation `{id}`"))),
    }
}

#[derive(Deserialize)]
struct ConversationIn {
    #[serde(default)]
    title: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    system: String,
    messages: Vec<Message>,
}

pub async fn put_conversation(
    State(st): State<Shared>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let body = read_body(&st, req.into_body()).await?;
    let c: ConversationIn = parse_body(&body)?;
    check_text("title", &c.title)?;
    check_text("system", &c.system)?;
    for (i, m) in c.messages.iter().enumerate() {
        check_text(&format!("messages[{i}].content"), &m.content)?;
    }
    let mut c = StoredConversation {
        id,
        title: c.title.chars().take(200).collect(),
        model: c.model,
        system: c.system,
        messages: c.messages,
        updated: 0,
    };
    let stored = c.clone();
    c.updated = blocking(st.store()?, move |s| s.put_conversation(&stored)).await?;
    Ok(Json(json!(c)))
}

pub async fn delete_conversation(
    State(st): State<Shared>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let key = id.clone();
    if blocking(st.store()?, move |s| s.delete_conversation(&key)).await? {
        Ok(Json(
            json!({"id": id, "object": "conversation.deleted", "deleted": true}),
        ))
    } else {
        Err(ApiError::not_found(format!("no conversation `{id}`")))
    }
}

#[derive(Deserialize)]
struct RatingIn {
    conversation_id: Option<String>,
    #[serde(default)]
    model: String,
    messages: Vec<Message>,
    answer: String,
    rating: String,
    #[serde(default)]
    comment: String,
}

pub async fn add_rating(
    State(st): State<Shared>,
    req: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = read_body(&st, req.into_body()).await?;
    let r: RatingIn = parse_body(&body)?;
    if let Some(id) = &r.conversation_id {
        check_id(id).map_err(|e| e.with_param("conversation_id"))?;
    }
    check_prompt(&r.messages)?;
    check_answer("answer", &r.answer)?;
    check_text("comment", &r.comment)?;
    let up = match r.rating.as_str() {
        "up" => true,
        "down" => false,
        other => {
            return Err(ApiError::param(
                "rating",
                format!("rating is `{other}`; use up or down"),
            ))
        }
    };
    let rating = Rating {
        conversation_id: r.conversation_id,
        model: r.model,
        messages: r.messages,
        answer: r.answer,
        up,
        comment: r.comment,
    };
    let id = blocking(st.store()?, move |s| s.add_rating(&rating)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "object": "feedback.rating"})),
    ))
}

#[derive(Deserialize)]
struct ComparisonIn {
    conversation_id: Option<String>,
    #[serde(default)]
    model: String,
    messages: Vec<Message>,
    answers: Vec<String>,
    preferred: Option<i64>,
    #[serde(default)]
    comment: String,
}

pub async fn add_comparison(
    State(st): State<Shared>,
    req: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = read_body(&st, req.into_body()).await?;
    let c: ComparisonIn = parse_body(&body)?;
    if let Some(id) = &c.conversation_id {
        check_id(id).map_err(|e| e.with_param("conversation_id"))?;
    }
    check_prompt(&c.messages)?;
    let [a, b]: [String; 2] = c.answers.try_into().map_err(|a: Vec<String>| {
        ApiError::param(
            "answers",
            format!("answers must hold exactly two answers, got {}", a.len()),
        )
    })?;
    check_answer("answers[0]", &a)?;
    check_answer("answers[1]", &b)?;
    check_text("comment", &c.comment)?;
    let preferred = match c.preferred {
        None => None,
        Some(p @ 0..=1) => Some(p as u8),
        Some(p) => {
            return Err(ApiError::param(
                "preferred",
                format!("preferred is {p}; use 0 (the first), 1 (the second) or null (a tie)"),
            ))
        }
    };
    let cmp = Comparison {
        conversation_id: c.conversation_id,
        model: c.model,
        messages: c.messages,
        answers: [a, b],
        preferred,
        comment: c.comment,
    };
    let id = blocking(st.store()?, move |s| s.add_comparison(&cmp)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "object": "feedback.comparison"})),
    ))
}
