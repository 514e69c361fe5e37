//! ferrochat's server: the OpenAI API over continuously batched models, the web chat page,
//! and the feedback store that carries people's ratings back into training.
//!
//! [`app`] builds the whole router over an [`AppState`]; tests call it without a socket,
//! and [`serve`] runs it on one with graceful shutdown.

pub mod api;
pub mod auth;
pub mod detok;
pub mod error;
pub mod feedback;
pub mod metrics;
pub mod openai;
pub mod run;
pub mod scheduler;
pub mod state;
pub mod store;
#[doc(hidden)]
pub mod testing;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::Auth;
pub use error::ApiError;
pub use openai::Limits;
pub use state::{AppState, ServedModel, ServerConfig};
pub use store::Store;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
/// The API's description (OpenAPI 3.0), served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");

/// Every route over `state`.
pub fn app(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/chat/completions", post(api::chat_completions))
        .route("/completions", post(api::completions))
        .route("/models", get(api::models))
        .route("/models/{model}", get(api::model))
        .route("/conversations", get(feedback::list_conversations))
        .route(
            "/conversations/{id}",
            get(feedback::get_conversation)
                .put(feedback::put_conversation)
                .delete(feedback::delete_conversation),
        )
        .route("/feedback/ratings", post(feedback::add_rating))
        .route("/feedback/comparisons", post(feedback::add_comparison))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    let mut router = Router::new()
        .nest("/v1", v1)
        .route(
            "/",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/assets/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/style.css",
            get(|| async { page(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/openapi.json",
            get(|| async { page(OPENAPI_JSON, "application/json") }),
        )
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("the server failed on this request").into_response()
        }));
    if let Some(cors) = cors(&state.config.cors_origins) {
        router = router.layer(cors);
    }
    router.with_state(state)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

fn page(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
            ),
        ],
        body,
    )
        .into_response()
}

async fn authorize(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let h = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match st.auth.check(h) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Counts every request by route and status (and logs it when asked).
async fn count(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let t = std::time::Instant::now();
    let res = next.run(req).await;
    st.metrics.request(&route, res.status().as_u16());
    if st.config.access_log {
        tracing::info!(
            target: "ferrochat::access",
            "{method} {route} {} {:.1}ms",
            res.status().as_u16(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    res
}

async fn health(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let models: Vec<&str> = st.models.iter().map(|m| m.name.as_str()).collect();
    axum::Json(serde_json::json!({
        "status": "ok",
        "models": models,
        "uptime_seconds": st.started.elapsed().as_secs_f64(),
    }))
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(&st),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
        .with_code("unknown_url")
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::invalid(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Serves `router` on `listener` until `shutdown` resolves; then no new connection is
/// taken and streams in flight get `grace` to finish before the server returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        _ = async { let _ = stopping_rx.await; tokio::time::sleep(grace).await } => {
            tracing::warn!("streams still open after {grace:?}: closing them");
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
