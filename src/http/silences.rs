//! `POST/GET/DELETE /api/v1/silences` (SPEC §7): maintenance windows that hold
//! notifications for matching checks.
//!
//! `POST` takes `{"matchers": {"check": "db"}, "starts_at": RFC 3339 (default now),
//! "ends_at": RFC 3339 or a duration from `starts_at` like "2h", "comment": "…"}` and
//! answers with the silence (its `id`). `GET` lists every silence with its `status`
//! (`pending`, `active`, `expired`). `DELETE /api/v1/silences/{id}` expires one now.
//!
//! API silences are bounded: at most `[alerting] max_silences` (default 1000) not yet
//! ended, each at most `max_silence_duration` (default 90 days) long; past either the
//! answer is `400` naming the setting.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiError, AppState};
use crate::alert::engine::AddSilenceError;
use crate::alert::{AlertEngine, Silence};

/// The `POST` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Label equality (`check`, `kind`, or a check label).
    pub matchers: BTreeMap<String, String>,
    /// RFC 3339; default now.
    pub starts_at: Option<String>,
    /// RFC 3339, or a duration after `starts_at`.
    pub ends_at: String,
    /// Free text.
    #[serde(default)]
    pub comment: String,
}

fn engine(st: &AppState) -> Result<&std::sync::Arc<AlertEngine>, ApiError> {
    st.alerts
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "alerting is not running"))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

/// `POST /api/v1/silences`.
pub async fn create(
    State(st): State<AppState>,
    body: Result<Json<NewSilence>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let e = engine(&st)?;
    let Json(b) = body.map_err(|r| bad(format!("invalid silence: {}", r.body_text())))?;
    if b.matchers.is_empty() {
        return Err(bad("`matchers` needs at least one label"));
    }
    if b.matchers.len() > 64 || b.comment.len() > 4096 {
        return Err(bad("silence too large"));
    }
    let now = SystemTime::now();
    let starts_at = match &b.starts_at {
        None => now,
        Some(s) => crate::time::parse_rfc3339(s)
            .ok_or_else(|| bad(format!("`starts_at`: `{s}` is not an RFC 3339 time")))?,
    };
    let ends_at = match crate::time::parse_rfc3339(&b.ends_at) {
        Some(t) => t,
        None => match crate::time::parse_duration(&b.ends_at) {
            Ok(d) => starts_at + d,
            Err(_) => {
                return Err(bad(format!(
                    "`ends_at`: `{}` is neither an RFC 3339 time nor a duration",
                    b.ends_at
                )));
            }
        },
    };
    if ends_at <= starts_at || ends_at <= now {
        return Err(bad("`ends_at` must be after `starts_at` and in the future"));
    }
    let s = Silence {
        id: format!("{:016x}", fastrand::u64(..)),
        matchers: b.matchers,
        starts_at,
        ends_at,
        comment: b.comment,
        from_config: false,
    };
    let s = e.add_silence(s).await.map_err(|err| match err {
        AddSilenceError::Limit(msg) => bad(msg),
        AddSilenceError::Store(e) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    })?;
    tracing::info!(id = %s.id, matchers = ?s.matchers, "silence created");
    Ok(Json(s.to_json(now)))
}

/// `GET /api/v1/silences`.
pub async fn list(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let e = engine(&st)?;
    let now = SystemTime::now();
    Ok(Json(serde_json::Value::Array(
        e.silences().iter().map(|s| s.to_json(now)).collect(),
    )))
}

/// `DELETE /api/v1/silences/{id}`.
pub async fn expire(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let e = engine(&st)?;
    match e.expire_silence(&id).await {
        Ok(Some(s)) => {
            tracing::info!(id = %s.id, "silence expired");
            Ok(Json(s.to_json(SystemTime::now())))
        }
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no silence `{id}`"),
        )),
        Err(msg) => Err(ApiError::new(StatusCode::CONFLICT, msg)),
    }
}
