//! The HTTP interface (SPEC §5): `app(state)` builds the router that tests call directly.

pub mod api;
pub mod events;
pub mod history;
pub mod page;
pub mod silences;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;

use crate::app::Agent;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The agent.
    pub agent: Arc<Agent>,
    /// The history store (history and uptime routes answer 503 without one).
    pub store: Option<Arc<crate::store::Store>>,
    /// The alert engine (silences API), when alerting runs.
    pub alerts: Option<Arc<crate::alert::AlertEngine>>,
}

/// A JSON error `{"error", "detail"}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Short text.
    pub error: String,
    /// Anything structured.
    pub detail: serde_json::Value,
}

impl ApiError {
    /// A new error without detail.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            detail: serde_json::Value::Null,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({"error": self.error, "detail": self.detail})),
        )
            .into_response()
    }
}

/// The router: every SPEC §5 route.
pub fn app(state: AppState) -> Router {
    let timed = Router::new()
        .route("/", get(page::status_page))
        .route("/metrics", get(api::metrics))
        .route("/health", get(api::health))
        .route("/health/detailed", get(api::detailed))
        .route("/health/service/{name}", get(api::service))
        .route("/health/force-check", post(api::force_all))
        .route("/health/service/{name}/check", post(api::force_one))
        .route("/-/reload", post(api::reload))
        .route("/api/v1/checks/{name}/history", get(history::history))
        .route("/api/v1/checks/{name}/uptime", get(history::uptime))
        .route(
            "/api/v1/silences",
            get(silences::list).post(silences::create),
        )
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(silences::expire),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(60),
        ));
    let streaming = Router::new()
        .route("/api/v1/events", get(events::sse))
        .route("/ws", get(events::ws));
    timed
        .merge(streaming)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// POST (and DELETE) routes need `Authorization: Bearer <api_token>` when one is set.
async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST || req.method() == Method::DELETE {
        let cfg = st.agent.config.load();
        if let Some(tok) = &cfg.agent.api_token {
            let given = req
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !constant_time_eq(given.as_bytes(), tok.expose().as_bytes()) {
                return ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
                    .into_response();
            }
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `app` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
