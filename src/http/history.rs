//! `GET /api/v1/checks/{name}/history` and `GET /api/v1/checks/{name}/uptime` (SPEC §5),
//! served from read-only connections to the history store.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::{ApiError, AppState};
use crate::store::{Reader, Store, StoreError, parse_time};

/// Rows of each list when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest `limit` honoured (larger values are capped).
pub const MAX_LIMIT: usize = 10_000;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no check named `{name}`"))
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Runs `f` on a fresh read-only connection on the blocking pool.
async fn read<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(Reader) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let Some(store) = st.store.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent runs without a history store",
        ));
    };
    tokio::task::spawn_blocking(move || Store::reader(&store).and_then(f))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(store_error)
}

/// `GET /api/v1/checks/{name}/history?since=&until=&limit=`: transitions and samples,
/// newest first. `since` defaults to 24h back, `until` (exclusive) to now; both take RFC
/// 3339 or a duration back from now. To page back, pass the oldest `at` returned as
/// `until`.
pub async fn history(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = SystemTime::now();
    let since = match q.get("since") {
        Some(s) => parse_time(s, now).map_err(|e| bad(format!("since: {e}")))?,
        None => now - Duration::from_secs(86_400),
    };
    let until = match q.get("until") {
        Some(s) => parse_time(s, now).map_err(|e| bad(format!("until: {e}")))?,
        None => now + Duration::from_millis(1),
    };
    let limit = match q.get("limit") {
        Some(s) => match s.parse::<usize>() {
            Ok(0) | Err(_) => return Err(bad("limit: a whole number of at least 1")),
            Ok(n) => n.min(MAX_LIMIT),
        },
        None => DEFAULT_LIMIT,
    };
    let live = st.agent.states().get(&name).is_some();
    let n = name.clone();
    let h = read(&st, move |r| r.history(&n, since, until, limit)).await;
    let h = match h {
        Ok(Some(h)) => h,
        Ok(None) if live => crate::store::History {
            check: name,
            transitions: Vec::new(),
            samples: Vec::new(),
        },
        Ok(None) => return Err(not_found(&name)),
        Err(e) if !live && e.status == StatusCode::SERVICE_UNAVAILABLE => {
            return Err(not_found(&name));
        }
        Err(e) => return Err(e),
    };
    Ok(Json(serde_json::to_value(h).unwrap_or_default()))
}

/// `GET /api/v1/checks/{name}/uptime?window=24h`.
pub async fn uptime(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let window = q
        .get("window")
        .map(String::as_str)
        .unwrap_or("24h")
        .to_string();
    let d = crate::time::parse_duration(&window).map_err(|e| {
        bad(format!(
            "window: `{window}` is not a duration like `24h`: {e}"
        ))
    })?;
    if d.is_zero() {
        return Err(bad("window: must be longer than 0"));
    }
    let now = SystemTime::now();
    let since = now
        .checked_sub(d)
        .ok_or_else(|| bad(format!("window: `{window}` reaches back too far")))?;
    let live = st.agent.states().get(&name).is_some();
    let n = name.clone();
    let u = read(&st, move |r| r.uptime(&n, since, now, now)).await;
    let u = match u {
        Ok(Some(u)) => u,
        Ok(None) if live => {
            return Ok(Json(serde_json::json!({
                "check": name,
                "window": window,
                "uptime_ratio": null,
                "samples": 0,
                "agent_down_seconds": null,
            })));
        }
        Ok(None) => return Err(not_found(&name)),
        Err(e) if !live && e.status == StatusCode::SERVICE_UNAVAILABLE => {
            return Err(not_found(&name));
        }
        Err(e) => return Err(e),
    };
    let mut v = serde_json::to_value(&u).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("check".into(), name.into());
        o.insert("window".into(), window.into());
    }
    Ok(Json(v))
}
