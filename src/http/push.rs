//! `POST` / `GET /api/v1/push/{name}`: the receiving end of `push` checks (dead man's
//! switch for cron jobs). The request carries the check's `token` (`?token=` or
//! `Authorization: Bearer`), optionally `status` (up/degraded/down), `message` and
//! `latency_ms` as query parameters, or in a JSON or form body (POST). The push is
//! recorded on the agent's [`PushBoard`](crate::check::push::PushBoard), the check is
//! forced at once (the answer carries its new state), and a timer forces it again when
//! its window (`interval + grace`) runs out without another push.
//!
//! These routes authenticate by their token: basic auth, `api_token` and the cross-site
//! rules of POST routes do not apply to them (see `guard.rs`); the body size limit does.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};

use super::{ApiError, AppState};
use crate::check::push::{MAX_MESSAGE, Push, PushRefused, PushStatus};
use crate::health::CheckState;

/// Route prefix (the guard exempts it from basic auth and the POST rules).
pub const PREFIX: &str = "/api/v1/push/";

/// The fields of a push, from the query string or the body.
#[derive(Debug, Default, serde::Deserialize)]
struct Fields {
    token: Option<String>,
    status: Option<String>,
    message: Option<String>,
    latency_ms: Option<serde_json::Value>,
}

impl Fields {
    /// Fills what `self` lacks from `other`.
    fn or(self, other: Fields) -> Fields {
        Fields {
            token: self.token.or(other.token),
            status: self.status.or(other.status),
            message: self.message.or(other.message),
            latency_ms: self.latency_ms.or(other.latency_ms),
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

fn from_map(m: HashMap<String, String>) -> Fields {
    let mut m = m;
    Fields {
        token: m.remove("token"),
        status: m.remove("status"),
        message: m.remove("message"),
        latency_ms: m.remove("latency_ms").map(serde_json::Value::String),
    }
}

/// Reads a POST body: JSON (`{"status": …}`), or `a=b&c=d` form fields.
fn body_fields(headers: &HeaderMap, body: &[u8]) -> Result<Fields, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Fields::default());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if json {
        return serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")));
    }
    let map: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    Ok(from_map(map))
}

fn latency(v: Option<serde_json::Value>) -> Result<Option<Duration>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let ms = match &v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match ms {
        Some(ms) if ms.is_finite() && (0.0..=86_400_000.0).contains(&ms) => {
            Ok(Some(Duration::from_secs_f64(ms / 1000.0)))
        }
        _ => Err(bad(
            "`latency_ms` must be a number of milliseconds from 0 to 86400000",
        )),
    }
}

/// `GET`/`POST /api/v1/push/{name}`.
pub async fn push(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CheckState>, ApiError> {
    let config = st.agent.config.load_full();
    if !config
        .checks
        .iter()
        .any(|c| c.name == name && c.kind == "push")
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no push check named `{}`", crate::check::clip(&name, 100)),
        ));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let fields = from_map(query).or(body_fields(&headers, &body)?);
    let token = bearer.or(fields.token.clone());
    let status = match fields.status.as_deref() {
        None | Some("") => PushStatus::Up,
        Some(s) => {
            PushStatus::parse(s).ok_or_else(|| bad("`status` must be up, degraded or down"))?
        }
    };
    let message: String = fields
        .message
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(MAX_MESSAGE)
        .collect();
    let p = Push {
        at: tokio::time::Instant::now(),
        status,
        message,
        latency: latency(fields.latency_ms)?,
    };
    let board = st.agent.push_board().clone();
    let window = match board.record(&name, token.as_deref().unwrap_or(""), p) {
        Ok(w) => w,
        Err(PushRefused::BadToken) => {
            st.agent
                .shared
                .metrics
                .http_rejected(crate::metrics::HttpRejected::Unauthorized);
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong push token (`?token=` or `Authorization: Bearer`)",
            ));
        }
        Err(PushRefused::Unknown) => {
            // Configured but not running here (another shard, or not built yet).
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("push check `{name}` does not run on this agent"),
            ));
        }
    };
    // Judge now, and again when the window runs out without another push.
    let agent = st.agent.clone();
    let timer_name = name.clone();
    let timer = tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(window + Duration::from_millis(20)) => {
                agent.force_one(&timer_name).await;
            }
            _ = agent.cancel.cancelled() => {}
        }
    });
    board.arm(&name, timer.abort_handle());
    st.agent.force_one(&name).await;
    st.agent
        .states()
        .state(&name)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no check named `{name}`")))
}
