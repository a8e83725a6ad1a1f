//! The HTTP interface (SPEC §5): `app(state)` builds the router that tests call directly.

pub mod api;
pub mod auth;
pub mod badge;
pub mod client;
pub mod cluster;
pub mod events;
pub mod guard;
pub mod history;
pub mod page;
pub mod push;
pub mod serve;
pub mod silences;
pub mod web_config;

pub use serve::{raise_nofile_limit, serve};

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
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
    /// The cluster membership, with `[cluster]`.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
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

/// The router: every SPEC §5 route, `/-/healthy` and `/-/ready`, behind the
/// [`guard`] middleware. `request_timeout` is read from the config at build time.
pub fn app(state: AppState) -> Router {
    let request_timeout = state.agent.config.load().agent.http.request_timeout;
    let timed = Router::new()
        .route("/", get(page::status_page))
        .route("/client.js", get(client::client_js))
        .route("/api/v1/checks/{name}/badge/status.svg", get(badge::status))
        .route("/api/v1/checks/{name}/badge/uptime.svg", get(badge::uptime))
        .route(
            "/api/v1/checks/{name}/badge/latency.svg",
            get(badge::latency),
        )
        .route("/metrics", get(api::metrics))
        .route("/health", get(api::health))
        .route("/health/detailed", get(api::detailed))
        .route("/health/service/{name}", get(api::service))
        .route("/health/force-check", post(api::force_all))
        .route("/health/service/{name}/check", post(api::force_one))
        .route("/-/reload", post(api::reload))
        .route("/api/v1/push/{name}", get(push::push).post(push::push))
        .route("/api/v1/cluster", get(cluster::cluster))
        .route("/-/healthy", get(ok))
        .route("/-/ready", get(ok))
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
            request_timeout,
        ));
    let streaming = Router::new()
        .route("/api/v1/events", get(events::sse))
        .route("/ws", get(events::ws));
    let g = guard::Guard {
        st: state.clone(),
        streams: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    timed
        .merge(streaming)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(g, guard::guard))
        .layer(middleware::from_fn_with_state(state.clone(), client::cors))
        .with_state(state)
}

/// `GET /-/healthy`, `GET /-/ready`: the server answers (nothing else is said).
async fn ok() -> &'static str {
    "OK"
}
