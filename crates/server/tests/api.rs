//! The server through `app()`, without a socket: the OpenAI routes against the engine run
//! alone, continuous batching, streaming, cancellation, limits, keys and the feedback
//! routes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use candle_core::Device;
use ferrochat_engine::{generate, GenerateOptions, SamplingParams};
use ferrochat_model::{weights, Config, Llama};
use ferrochat_server::{app, AppState, Auth, ServedModel, ServerConfig, Store};
use ferrochat_text::Message;
use ferrochat_tokenizer::{Tokenizer, TrainOptions};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const CTX: usize = 96;

fn tokenizer() -> Tokenizer {
    let text: Vec<String> = (0..200)
        .map(|i| match i % 3 {
            0 => format!("The capital of country {i} is a city by the river."),
            1 => format!("What is {i} plus {}? It is {}.", i + 1, 2 * i + 1),
            _ => format!("第{i}个问题的答案是{}。", i * 3),
        })
        .collect();
    let opts = TrainOptions {
        vocab_size: 320,
        ..Default::default()
    };
    Tokenizer::train(text.into_iter(), &opts).unwrap()
}

fn model(tok: &Tokenizer, seed: u64) -> Llama {
    // untied: a random model with tied embeddings greedily repeats its last input token
    // (here `<|assistant|>`, which decodes to no text)
    let cfg = Config {
        tie_word_embeddings: false,
        ..Config::preset("tiny", tok.vocab_size(), CTX).unwrap()
    };
    let w = weights::init_weights(&cfg, seed, &Device::Cpu).unwrap();
    Llama::new(&cfg, &w, &Device::Cpu).unwrap()
}

struct Server {
    router: Router,
    state: Arc<AppState>,
    tok: Tokenizer,
    /// The same model, for running the engine alone.
    solo: Llama,
    _dir: tempfile::TempDir,
}

fn server_with(config: ServerConfig, auth: Auth, max_batch: usize) -> Server {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let served =
        ServedModel::new("chat", tok.clone(), model(&tok, 7), None, max_batch, 64).unwrap();
    let other =
        ServedModel::new("other", tok.clone(), model(&tok, 8), None, max_batch, 64).unwrap();
    let store = Store::open(&dir.path().join("feedback.db")).unwrap();
    let state = Arc::new(
        AppState::new(vec![served, other], config)
            .with_auth(auth)
            .with_store(store),
    );
    Server {
        router: app(state.clone()),
        state,
        solo: model(&tok, 7),
        tok,
        _dir: dir,
    }
}

fn server() -> Server {
    server_with(ServerConfig::default(), Auth::default(), 8)
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(uri);
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    raw(router, req).await
}

async fn raw(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

/// The events of a server-sent-event body, `[DONE]` included as a string.
async fn sse(router: &Router, body: Value) -> Vec<Value> {
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_string())))
        .collect()
}

fn user(q: &str) -> Value {
    json!([{"role": "user", "content": q}])
}

/// What the engine alone says, greedily, to `q`.
fn solo_answer(s: &Server, q: &str, max: usize) -> (String, usize) {
    let prompt = s.tok.encode_prompt(&[Message::user(q)]).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: max,
        sampling: SamplingParams::greedy(),
        seed: 0,
        stop: vec![s.tok.special().end],
        watermark: None,
    };
    let g = generate(&s.solo, &prompt, &opts, |_| true).unwrap();
    (s.tok.decode(&g.tokens, false).unwrap(), prompt.len())
}

#[tokio::test]
async fn models_are_listed_and_unknown_ones_refused() {
    let s = server();
    let (st, v) = call(&s.router, "GET", "/v1/models", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat", "other"]);
    let (st, v) = call(&s.router, "GET", "/v1/models/other", None).await;
    assert_eq!((st, v["id"].as_str()), (StatusCode::OK, Some("other")));
    let (st, v) = call(&s.router, "GET", "/v1/models/nope", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "model_not_found");
    let (st, v) = call(&s.router, "GET", "/health", None).await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test]
async fn a_chat_answer_is_what_the_engine_alone_gives() {
    let s = server();
    let (want, prompt_len) = solo_answer(&s, "What is 3 plus 4?", 40);
    let body = json!({"model": "chat", "messages": user("What is 3 plus 4?"), "temperature": 0, "max_tokens": 40});
    let (st, v) = call(
        &s.router,
        "POST",
        "/v1/chat/completions",
        Some(body.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let c = &v["choices"][0];
    assert_eq!(c["message"]["role"], "assistant");
    assert_eq!(c["message"]["content"].as_str().unwrap(), want);
    assert!(["stop", "length"].contains(&c["finish_reason"].as_str().unwrap()));
    assert_eq!(v["usage"]["prompt_tokens"], prompt_len);
    let done = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=40).contains(&done));
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        prompt_len as u64 + done
    );

    // the stream carries the same text, a role first, a finish reason last, then [DONE]
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let events = sse(&s.router, stream).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, want);
    let finish: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&c["finish_reason"]]);
    let usage = &events[events.len() - 2]["usage"];
    assert_eq!(
        usage, &v["usage"],
        "the last chunk before [DONE] carries the usage"
    );
}

#[tokio::test]
async fn concurrent_requests_share_decode_steps_and_get_their_own_answers() {
    let s = server();
    let questions: Vec<String> = (0..6)
        .map(|i| format!("What is {i} plus {}?", i * 7))
        .collect();
    let wants: Vec<String> = questions.iter().map(|q| solo_answer(&s, q, 32).0).collect();
    let mut tasks = Vec::new();
    for q in &questions {
        let router = s.router.clone();
        let body = json!({"model": "chat", "messages": user(q), "temperature": 0, "max_tokens": 32, "stream": q.len() % 2 == 0});
        tasks.push(tokio::spawn(async move {
            if body["stream"] == true {
                let events = sse(&router, body).await;
                events
                    .iter()
                    .filter_map(|e| e["choices"].get(0)?["delta"]["content"].as_str())
                    .collect::<String>()
            } else {
                let (st, v) = call(&router, "POST", "/v1/chat/completions", Some(body)).await;
                assert_eq!(st, StatusCode::OK, "{v}");
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
        }));
    }
    assert!(wants.iter().any(|w| !w.is_empty()), "{wants:?}");
    for (t, want) in tasks.into_iter().zip(&wants) {
        assert_eq!(&t.await.unwrap(), want);
    }
    let stats = s.state.models[0].scheduler.stats();
    let steps = stats
        .decode_steps
        .load(std::sync::atomic::Ordering::Relaxed);
    let seqs = stats
        .step_sequences
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        seqs > steps,
        "requests never shared a decode step ({seqs} sequences over {steps} steps)"
    );
    let (_, metrics) = call(&s.router, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("ferrochat_decode_steps_total{model=\"chat\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("ferrochat_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrochat_time_to_first_token_seconds_count 6"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sampling_with_a_seed_repeats_and_n_gives_several_answers() {
    let s = server();
    let body = json!({"model": "chat", "messages": user("第3个问题"), "temperature": 1.0, "top_p": 0.9, "seed": 11, "n": 3, "max_tokens": 24});
    let (st, a) = call(
        &s.router,
        "POST",
        "/v1/chat/completions",
        Some(body.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let (_, b) = call(&s.router, "POST", "/v1/chat/completions", Some(body)).await;
    let texts = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["message"]["content"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts(&a).len(), 3);
    assert_eq!(texts(&a), texts(&b), "the same seed gives the same answers");
    let idx: Vec<u64> = a["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [0, 1, 2]);
    // streamed choices come tagged by index and each ends once
    let events = sse(&s.router, json!({"model": "chat", "messages": user("hi"), "n": 2, "stream": true, "max_tokens": 8, "seed": 1})).await;
    for i in 0..2 {
        let ends = events
            .iter()
            .filter_map(|e| e["choices"].get(0))
            .filter(|c| c["index"] == i && !c["finish_reason"].is_null())
            .count();
        assert_eq!(ends, 1, "choice {i}");
    }
}

#[tokio::test]
async fn a_stop_string_ends_the_answer_before_it() {
    let s = server();
    // a question the random model answers at some length
    let (q, full) = (0..40)
        .map(|i| format!("What is {i} plus 2?"))
        .map(|q| {
            let a = solo_answer(&s, &q, 48).0;
            (q, a)
        })
        .find(|(_, a)| a.chars().count() >= 6)
        .expect("some answer of six characters or more");
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[3..5].iter().collect();
    let cut = &full[..full.find(&stop).unwrap()];
    for stream in [false, true] {
        let body = json!({"model": "chat", "messages": user(&q), "temperature": 0, "max_tokens": 48, "stop": [stop, "never-said"], "stream": stream});
        let (text, finish) = if stream {
            let events = sse(&s.router, body).await;
            let text: String = events
                .iter()
                .filter_map(|e| e["choices"].get(0)?["delta"]["content"].as_str())
                .collect();
            let finish = events
                .iter()
                .filter_map(|e| e["choices"].get(0)?["finish_reason"].as_str())
                .next()
                .unwrap()
                .to_string();
            (text, finish)
        } else {
            let (_, v) = call(&s.router, "POST", "/v1/chat/completions", Some(body)).await;
            (
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                v["choices"][0]["finish_reason"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        };
        assert_eq!(text, cut, "stream {stream}");
        assert_eq!(finish, "stop");
    }
}

#[tokio::test]
async fn truncation_auto_leaves_out_the_oldest_turns() {
    let s = server();
    let turn = "The capital of country 12 is a city by the river.";
    let mut messages = vec![json!({"role": "system", "content": "brief"})];
    for i in 0..6 {
        messages.push(json!({"role": "user", "content": format!("{turn} {i}")}));
        messages.push(json!({"role": "assistant", "content": "It is."}));
    }
    messages.push(json!({"role": "user", "content": "And the last?"}));
    let body = json!({"model": "chat", "messages": messages, "max_tokens": 16});
    let (st, v) = call(
        &s.router,
        "POST",
        "/v1/chat/completions",
        Some(body.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let mut auto = body;
    auto["truncation"] = json!("auto");
    let req = Request::post("/v1/chat/completions")
        .body(Body::from(auto.to_string()))
        .unwrap();
    let res = s.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let dropped: usize = res.headers()["x-ferrochat-dropped-messages"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        dropped >= 2 && dropped.is_multiple_of(2),
        "whole exchanges are dropped: {dropped}"
    );
    let v: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let used = v["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert!(used + 16 <= CTX, "{used}");
    // max_tokens as large as the context: the answer gets what is left, not an error
    let mut greedy = auto.clone();
    greedy["max_tokens"] = json!(CTX);
    greedy["ignore_eos"] = json!(true);
    let (st, v) = call(&s.router, "POST", "/v1/chat/completions", Some(greedy)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["usage"]["total_tokens"], CTX,
        "the answer fills the context: {v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    auto["truncation"] = json!("middle");
    let (st, _) = call(&s.router, "POST", "/v1/chat/completions", Some(auto)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn completions_continue_text_and_token_prompts() {
    let s = server();
    let (st, v) = call(&s.router, "POST", "/v1/completions", Some(json!({"model": "chat", "prompt": ["The capital", "第1"], "max_tokens": 5, "temperature": 0}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert!(v["choices"][1]["text"].is_string());
    let (st, v) = call(
        &s.router,
        "POST",
        "/v1/completions",
        Some(json!({"model": "chat", "prompt": [1, 20, 30], "max_tokens": 3, "temperature": 0})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 3);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_frees_its_slot() {
    let s = server();
    let body = json!({"model": "chat", "messages": user("hello"), "max_tokens": 80, "temperature": 1.0, "seed": 3, "stream": true});
    let req = Request::post("/v1/chat/completions")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = s.router.clone().oneshot(req).await.unwrap();
    let mut body = res.into_body();
    // read the first event, then hang up
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    let stats = s.state.models[0].scheduler.stats();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let running = stats.running.load(std::sync::atomic::Ordering::Relaxed);
        let gone = stats.cancelled.load(std::sync::atomic::Ordering::Relaxed)
            + stats.finished.load(std::sync::atomic::Ordering::Relaxed);
        if running == 0 && gone >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sequence still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // and the server goes on serving
    let (st, _) = call(
        &s.router,
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": "chat", "messages": user("hi"), "max_tokens": 4})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn bad_requests_get_the_right_status_and_a_message() {
    let config = ServerConfig {
        max_body_bytes: 4096,
        ..ServerConfig::default()
    };
    let s = server_with(config, Auth::default(), 4);
    let ok = json!({"model": "chat", "messages": user("hi"), "max_tokens": 4});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let long_prompt = "The capital of country 12 is a city by the river. ".repeat(20);
    let cases: Vec<(&str, Body, u16, &str)> = vec![
        ("not json", Body::from("{nope"), 400, "invalid JSON"),
        ("empty body", Body::empty(), 400, "empty"),
        ("not utf-8", Body::from(vec![b'{', 0xff, 0xfe, b'}']), 400, "UTF-8"),
        ("array body", Body::from("[1,2]"), 400, "invalid JSON"),
        ("no model", Body::from(json!({"messages": user("hi")}).to_string()), 400, "model"),
        ("unknown model", Body::from(with("model", json!("gpt-9")).to_string()), 404, "does not exist"),
        ("no messages", Body::from(with("messages", json!([])).to_string()), 400, "messages is empty"),
        ("messages not a list", Body::from(with("messages", json!("hi")).to_string()), 400, "invalid JSON"),
        ("bad role", Body::from(with("messages", json!([{"role": "robot", "content": "x"}])).to_string()), 400, "robot"),
        ("no content", Body::from(with("messages", json!([{"role": "user"}])).to_string()), 400, "content is missing"),
        ("image part", Body::from(with("messages", json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])).to_string()), 400, "only text"),
        ("system only", Body::from(with("messages", json!([{"role": "system", "content": "x"}])).to_string()), 400, "no user message"),
        ("late system", Body::from(with("messages", json!([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}])).to_string()), 400, "only come first"),
        ("temperature", Body::from(with("temperature", json!(-1)).to_string()), 400, "temperature must be"),
        ("temperature type", Body::from(with("temperature", json!("hot")).to_string()), 400, "invalid JSON"),
        ("top_p 0", Body::from(with("top_p", json!(0)).to_string()), 400, "top_p must be"),
        ("top_p 2", Body::from(with("top_p", json!(2)).to_string()), 400, "top_p must be"),
        ("top_p 0 in f32", Body::from(with("top_p", json!(1e-300)).to_string()), 400, "top_p must be"),
        ("n 0", Body::from(with("n", json!(0)).to_string()), 400, "n must be"),
        ("n 100", Body::from(with("n", json!(100)).to_string()), 400, "n must be"),
        ("max_tokens 0", Body::from(with("max_tokens", json!(0)).to_string()), 400, "max_tokens must be"),
        ("max_tokens huge", Body::from(with("max_tokens", json!(1u64 << 40)).to_string()), 400, "max_tokens must be"),
        ("max_tokens past context", Body::from(with("max_tokens", json!(CTX)).to_string()), 400, "maximum context length"),
        ("prompt too long", Body::from(with("messages", user(&long_prompt)).to_string()), 400, "maximum context length"),
        ("negative seed", Body::from(with("seed", json!(-5)).to_string()), 400, "seed must be"),
        ("too many stops", Body::from(with("stop", json!(vec!["x"; 1000])).to_string()), 400, "at most"),
        ("empty stop", Body::from(with("stop", json!("")).to_string()), 400, "stop string is empty"),
        ("stop number", Body::from(with("stop", json!(5)).to_string()), 400, "stop must be"),
        ("logprobs", Body::from(with("logprobs", json!(true)).to_string()), 400, "not supported"),
        ("tools", Body::from(with("tools", json!([{"type": "function"}])).to_string()), 400, "not supported"),
        ("frequency penalty", Body::from(with("frequency_penalty", json!(1.5)).to_string()), 400, "not supported"),
        ("repetition penalty", Body::from(with("repetition_penalty", json!(0)).to_string()), 400, "repetition_penalty must be"),
        ("both max tokens", Body::from(with("max_completion_tokens", json!(3)).to_string()), 400, "not both"),
        ("too big", Body::from(format!("{{\"model\":\"chat\",\"x\":\"{}\"}}", "a".repeat(10_000))), 413, "larger than"),
        ("deep json", Body::from(format!("{}{}", "[".repeat(5000), "]".repeat(5000)).replace("[]", "[1]")), 413, "larger than"),
    ];
    assert!(cases.len() >= 20);
    for (name, body, status, needle) in cases {
        let req = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let (st, v) = raw(&s.router, req).await;
        assert_eq!(st.as_u16(), status, "{name}: {v}");
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no error message in {v}"));
        assert!(msg.contains(needle), "{name}: `{msg}` lacks `{needle}`");
        assert!(v["error"]["type"].is_string(), "{name}: {v}");
    }
    // deep nesting within the size limit is refused by the parser, not a crash
    let deep = format!(
        "{{\"model\":\"chat\",\"messages\":{}{}}}",
        "[".repeat(1000),
        "]".repeat(1000)
    );
    let (st, _) = call(&s.router, "POST", "/v1/chat/completions", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let req = Request::post("/v1/chat/completions")
        .body(Body::from(deep))
        .unwrap();
    assert_eq!(raw(&s.router, req).await.0, StatusCode::BAD_REQUEST);
    // routes and methods that do not exist
    let (st, v) = call(&s.router, "GET", "/v1/nothing", None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_url"))
    );
    let (st, _) = call(&s.router, "GET", "/v1/chat/completions", None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    // still serving
    let (st, v) = call(&s.router, "POST", "/v1/chat/completions", Some(ok)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn api_keys_are_required_when_set_and_rate_limited() {
    let s = server_with(
        ServerConfig::default(),
        Auth::new(&["sk-test".into()], Some(3)),
        4,
    );
    let get = |key: Option<&str>| {
        let mut r = Request::get("/v1/models");
        if let Some(k) = key {
            r = r.header("authorization", format!("Bearer {k}"));
        }
        r.body(Body::empty()).unwrap()
    };
    let (st, v) = raw(&s.router, get(None)).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_api_key"))
    );
    assert_eq!(
        raw(&s.router, get(Some("sk-wrong"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    for _ in 0..3 {
        assert_eq!(raw(&s.router, get(Some("sk-test"))).await.0, StatusCode::OK);
    }
    let (st, v) = raw(&s.router, get(Some("sk-test"))).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    // the page and the health check need no key
    assert_eq!(call(&s.router, "GET", "/", None).await.0, StatusCode::OK);
    assert_eq!(
        call(&s.router, "GET", "/health", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn feedback_and_conversations_are_stored_and_exported() {
    let s = server();
    let prompt =
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]);
    let (st, v) = call(&s.router, "PUT", "/v1/conversations/abc-1", Some(json!({"title": "sums", "model": "chat", "system": "be brief", "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, list) = call(&s.router, "GET", "/v1/conversations", None).await;
    assert_eq!(list["data"][0]["id"], "abc-1");
    let (_, c) = call(&s.router, "GET", "/v1/conversations/abc-1", None).await;
    assert_eq!(c["messages"][1]["content"], "4");
    for (answer, rating) in [("4", "up"), ("5", "down")] {
        let (st, v) = call(&s.router, "POST", "/v1/feedback/ratings", Some(json!({"conversation_id": "abc-1", "model": "chat", "messages": prompt, "answer": answer, "rating": rating, "comment": "checked"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert_eq!(v["object"], "feedback.rating");
    }
    let (st, v) = call(
        &s.router,
        "POST",
        "/v1/feedback/comparisons",
        Some(
            json!({"model": "chat", "messages": prompt, "answers": ["four", "4"], "preferred": 1}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    for (bad, needle) in [
        (
            json!({"model": "chat", "messages": prompt, "answer": "4", "rating": "meh"}),
            "use up or down",
        ),
        (
            json!({"model": "chat", "messages": [{"role": "assistant", "content": "x"}], "answer": "4", "rating": "up"}),
            "prompt of the answer",
        ),
        (
            json!({"model": "chat", "messages": prompt, "answer": "  ", "rating": "up"}),
            "answer is empty",
        ),
    ] {
        let (st, v) = call(&s.router, "POST", "/v1/feedback/ratings", Some(bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    let (st, _) = call(
        &s.router,
        "POST",
        "/v1/feedback/comparisons",
        Some(json!({"model": "chat", "messages": prompt, "answers": ["a"], "preferred": 0})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(&s.router, "GET", "/v1/conversations/bad%20id", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let store = s.state.store.as_ref().unwrap();
    assert_eq!(store.counts().unwrap(), (2, 1));
    let (records, counts) = store.export().unwrap();
    assert_eq!((counts.from_comparisons, counts.from_ratings), (1, 1));
    assert_eq!(records[0]["chosen"], "4");
    assert_eq!(records[0]["prompt"][0]["role"], "system");
    let (st, _) = call(&s.router, "DELETE", "/v1/conversations/abc-1", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        call(&s.router, "GET", "/v1/conversations/abc-1", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_page_is_served_with_its_assets() {
    let s = server();
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let res = s
            .router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.len() > 1000, "{path} is {} bytes", body.len());
    }
}

#[tokio::test]
async fn cors_lets_only_the_named_origins_in() {
    let config = ServerConfig {
        cors_origins: vec!["https://app.example".into()],
        ..ServerConfig::default()
    };
    let s = server_with(config, Auth::default(), 2);
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/chat/completions")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    let res = s
        .router
        .clone()
        .oneshot(preflight("https://app.example"))
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let res = s
        .router
        .clone()
        .oneshot(preflight("https://evil.example"))
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    // without the setting, no cross-origin access at all
    let s = server();
    let res = s
        .router
        .clone()
        .oneshot(preflight("https://app.example"))
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

/// A server whose `chat` model drafts with `draft` (k = 3).
fn drafted_server(draft: Llama) -> Server {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let d = ferrochat_server::scheduler::Draft { model: draft, k: 3 };
    let served = ServedModel::new("chat", tok.clone(), model(&tok, 7), Some(d), 8, 64).unwrap();
    let state = Arc::new(AppState::new(vec![served], ServerConfig::default()));
    Server {
        router: app(state.clone()),
        state,
        solo: model(&tok, 7),
        tok,
        _dir: dir,
    }
}

fn spec_counts(s: &Server) -> [u64; 4] {
    let st = s.state.models[0].scheduler.stats();
    let r = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    [
        r(&st.spec_rounds),
        r(&st.spec_drafted),
        r(&st.spec_accepted),
        r(&st.spec_tokens),
    ]
}

#[tokio::test]
async fn a_draft_model_speeds_a_lone_request_without_changing_its_answer() {
    // a draft that disagrees with the model: most drafts are refused, the text is the model's
    let tok = tokenizer();
    let s = drafted_server(model(&tok, 9));
    let (want, _) = solo_answer(&s, "What is 3 plus 4?", 40);
    let body = json!({"model": "chat", "messages": user("What is 3 plus 4?"), "temperature": 0, "max_tokens": 40});
    let (st, v) = call(
        &s.router,
        "POST",
        "/v1/chat/completions",
        Some(body.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"].as_str().unwrap(),
        want
    );
    let [rounds, drafted, accepted, tokens] = spec_counts(&s);
    assert!(
        rounds > 0 && drafted >= rounds && accepted <= drafted,
        "{rounds} {drafted} {accepted}"
    );
    assert_eq!(tokens, v["usage"]["completion_tokens"].as_u64().unwrap());
    // streamed: the same text and finish
    let mut stream = body;
    stream["stream"] = json!(true);
    let events = sse(&s.router, stream).await;
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, want);
    let (_, metrics) = call(&s.router, "GET", "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("ferrochat_spec_accepted_tokens_total{model=\"chat\"}"),
        "{metrics}"
    );

    // the model drafting for itself: every draft is kept, k + 1 tokens per pass
    let s = drafted_server(model(&tok, 7));
    let (want, _) = solo_answer(&s, "What is 5 plus 6?", 40);
    let body = json!({"model": "chat", "messages": user("What is 5 plus 6?"), "temperature": 0, "max_tokens": 40});
    let (_, v) = call(&s.router, "POST", "/v1/chat/completions", Some(body)).await;
    assert_eq!(
        v["choices"][0]["message"]["content"].as_str().unwrap(),
        want
    );
    let [rounds, drafted, accepted, tokens] = spec_counts(&s);
    assert_eq!(accepted, drafted);
    assert!(tokens > 2 * rounds, "{tokens} tokens in {rounds} passes");
}

#[tokio::test]
async fn drafted_and_batched_requests_all_get_their_own_answers() {
    use std::sync::atomic::Ordering::Relaxed;
    let tok = tokenizer();
    let s = drafted_server(model(&tok, 9));
    let questions: Vec<String> = (0..6)
        .map(|i| format!("What is {i} plus {}?", i * 7))
        .collect();
    let wants: Vec<String> = questions.iter().map(|q| solo_answer(&s, q, 32).0).collect();
    let ask = |q: &String| {
        let router = s.router.clone();
        let body =
            json!({"model": "chat", "messages": user(q), "temperature": 0, "max_tokens": 32});
        tokio::spawn(async move {
            let (st, v) = call(&router, "POST", "/v1/chat/completions", Some(body)).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
    };
    // the first runs alone (so drafted); the rest arrive while it runs or after it, and
    // whichever way the timing falls (it joins their batch, or they batch on their own),
    // every answer is the model's own
    let st = s.state.models[0].scheduler.stats();
    let mut tasks = vec![ask(&questions[0])];
    let t0 = std::time::Instant::now();
    while st.running.load(Relaxed) == 0 && st.finished.load(Relaxed) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the first request never ran"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    tasks.extend(questions[1..].iter().map(ask));
    for (t, want) in tasks.into_iter().zip(&wants) {
        assert_eq!(&t.await.unwrap(), want);
    }
    let [rounds, ..] = spec_counts(&s);
    assert!(rounds > 0, "the lone first request was not drafted");
    // the worker updates its gauges after it has answered: they settle at zero
    let t0 = std::time::Instant::now();
    while st.running.load(Relaxed) + st.waiting.load(Relaxed) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "sequences left behind"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
