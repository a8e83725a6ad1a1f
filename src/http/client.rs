//! The browser client for applications: `GET /client.js`, a dependency-free ES module
//! (types in `docs/client.d.ts`), and the CORS headers that let pages on the origins in
//! `[agent] allowed_origins` load it and call the routes it uses.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// The module's source.
pub const CLIENT_JS: &str = include_str!("client.js");

/// Routes a page on an allowed origin may read: the module and what it calls.
pub fn cors_path(path: &str) -> bool {
    matches!(
        path,
        "/client.js" | "/api/v1/events" | "/health" | "/health/detailed"
    ) || path.starts_with("/health/service/") && !path.ends_with("/check")
}

/// Whether `origin` is listed in `allowed_origins` (`*` = any). The agent's own origin
/// needs no CORS headers.
pub fn listed(origin: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// `GET /client.js`.
pub async fn client_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        CLIENT_JS,
    )
        .into_response()
}

/// Middleware (outside the guard): on [`cors_path`] routes, a request from a listed origin
/// gets `Access-Control-Allow-Origin` (and `Vary: Origin`), and its preflight an answer.
/// Other origins get no CORS headers, so browsers keep them out; the guard still refuses
/// their event streams.
pub async fn cors(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let allowed = match &origin {
        Some(o) if cors_path(req.uri().path()) => {
            listed(o, &st.agent.config.load().agent.allowed_origins)
        }
        _ => false,
    };
    let value = origin
        .filter(|_| allowed)
        .and_then(|o| HeaderValue::from_str(&o).ok());
    if req.method() == Method::OPTIONS && value.is_some() {
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        if let Some(v) = value {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("cache-control, last-event-id, authorization"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        return res;
    }
    let mut res = next.run(req).await;
    if let Some(v) = value {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_covers_the_client_routes_only() {
        for p in [
            "/client.js",
            "/api/v1/events",
            "/health",
            "/health/detailed",
            "/health/service/db",
        ] {
            assert!(cors_path(p), "{p}");
        }
        for p in [
            "/",
            "/metrics",
            "/-/reload",
            "/health/service/db/check",
            "/api/v1/silences",
        ] {
            assert!(!cors_path(p), "{p}");
        }
        let list = vec!["https://app.example".to_string()];
        assert!(listed("https://APP.example", &list));
        assert!(!listed("https://evil.example", &list));
        assert!(listed("https://any.example", &["*".to_string()]));
    }

    #[test]
    fn the_module_is_an_es_module_without_imports() {
        assert!(CLIENT_JS.contains("export function subscribe"));
        assert!(
            !CLIENT_JS
                .lines()
                .any(|l| l.trim_start().starts_with("import ")),
            "the client has no dependencies"
        );
    }
}
