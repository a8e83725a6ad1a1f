//! JSON and text handlers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::health::CheckState;

/// `GET /metrics`.
pub async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let gzip = accepts_gzip(&headers);
    let body = axum::body::Body::from_stream(st.agent.shared.metrics.render_stream(gzip));
    let mut r = (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::VARY, "accept-encoding"),
        ],
        body,
    )
        .into_response();
    if gzip {
        r.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    r
}

/// Whether `Accept-Encoding` lists `gzip` (or `*`) with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

fn uptime(st: &AppState) -> f64 {
    st.agent
        .started
        .elapsed()
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `GET /health`: overall status, score, each check's status.
pub async fn health(State(st): State<AppState>) -> Response {
    json_off_worker("health-json", move || {
        let states = st.agent.states().all();
        let o = crate::health::overall(states.iter());
        let checks: serde_json::Map<String, serde_json::Value> = states
            .iter()
            .map(|s| (s.name.clone(), serde_json::Value::from(s.status.as_str())))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "status": o.status.as_str(),
            "score": o.score,
            "checks": checks,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": uptime(&st),
        }))
    })
    .await
}

/// `/health/detailed`, serialised straight from the states (no JSON tree of 10,000 checks
/// in between).
#[derive(serde::Serialize)]
struct Detailed<'a> {
    status: &'static str,
    score: Option<f64>,
    version: &'static str,
    uptime_seconds: f64,
    checks: &'a [CheckState],
    agent: serde_json::Value,
}

fn detailed_body(st: &AppState) -> serde_json::Result<Vec<u8>> {
    let states = st.agent.states().all();
    let o = crate::health::overall(states.iter());
    serde_json::to_vec(&Detailed {
        status: o.status.as_str(),
        score: o.score,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: uptime(st),
        checks: &states,
        agent: agent_section(st),
    })
}

/// A JSON answer built by `f` on a background thread ([`crate::metrics::background`]): at
/// 10,000 checks `/health/detailed` is 4 MB, and building it on a runtime worker would hold
/// up the probes queued behind it.
async fn json_off_worker(
    name: &'static str,
    f: impl FnOnce() -> serde_json::Result<Vec<u8>> + Send + 'static,
) -> Response {
    match crate::metrics::background::run(name, f).await {
        Some(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Some(Err(e)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
        None => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the answer could not be built",
        )
        .into_response(),
    }
}

/// The agent's own health: each store in `data_dir` (`up`, `errors`, `last_error`, what it
/// does meanwhile) and whether it keeps the checks' cadence (`scheduler`). A broken store
/// or a starved machine never stops checks; this is where it shows.
fn agent_section(st: &AppState) -> serde_json::Value {
    let storage = st.agent.shared.metrics.storage_report();
    let scheduler = st.agent.shared.lag.report();
    let degraded = storage.values().any(|s| !s.up) || scheduler.behind;
    serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "storage": storage,
        "scheduler": scheduler,
    })
}

/// `GET /health/detailed`.
pub async fn detailed(State(st): State<AppState>) -> Response {
    json_off_worker("health-json", move || detailed_body(&st)).await
}

fn one(st: &AppState, name: &str) -> Result<CheckState, ApiError> {
    st.agent
        .states()
        .state(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no check named `{name}`")))
}

/// `GET /health/service/{name}`.
pub async fn service(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<CheckState>, ApiError> {
    one(&st, &name).map(Json)
}

/// `POST /health/force-check`.
pub async fn force_all(State(st): State<AppState>) -> Response {
    st.agent.force_all().await;
    json_off_worker("health-json", move || detailed_body(&st)).await
}

/// `POST /health/service/{name}/check`.
pub async fn force_one(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<CheckState>, ApiError> {
    one(&st, &name)?;
    if !st.agent.force_one(&name).await {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no check named `{name}`"),
        ));
    }
    one(&st, &name).map(Json)
}

/// `POST /-/reload`.
pub async fn reload(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match st.agent.reload().await {
        Ok(Some(done)) => Ok(Json(serde_json::json!({
            "status": "reloaded",
            "started": done.started,
            "stopped": done.stopped,
        }))),
        // A later reload superseded this one, or the agent is stopping.
        Ok(None) => Ok(Json(serde_json::json!({"status": "reloaded"}))),
        Err(errs) => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid configuration; the running configuration stays".into(),
            detail: errs
                .0
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .into(),
        }),
    }
}
