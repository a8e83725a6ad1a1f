//! `GET /api/v1/cluster`: the members, this member's role, and for each check its
//! runners, notifier of record and each runner's status (`crate::cluster::report`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, AppState};

/// The cluster report, or `404` when the agent has no `[cluster]`.
pub async fn cluster(
    State(st): State<AppState>,
) -> Result<Json<crate::cluster::report::Report>, ApiError> {
    match &st.cluster {
        Some(c) => Ok(Json(c.report())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this agent is not in a cluster (no [cluster] section)",
        )),
    }
}
