//! The middleware every request passes (`docs/security.md` is the user-facing side):
//! `Host` allow-list, basic auth for reads, the bearer token for writes, cross-site
//! protection of POST routes and event streams, the streaming-client cap, the body size
//! cap, `http_server_config.headers`, and `lifeline_http_requests_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::serve::ConnInfo;
use super::{ApiError, AppState};
use crate::config::Config;
use crate::metrics::HttpRejected;

/// Liveness and readiness routes: always public, always `OK`.
pub const PROBE_PATHS: [&str; 2] = ["/-/healthy", "/-/ready"];
/// Routes that stream events (`Origin` checked, `max_streams` applies).
pub const STREAM_PATHS: [&str; 2] = ["/api/v1/events", "/ws"];

/// What the middleware shares across requests of one router.
#[derive(Clone)]
pub struct Guard {
    /// The handlers' state (the running config is read per request).
    pub st: AppState,
    /// Streaming clients now.
    pub streams: Arc<AtomicUsize>,
}

/// Holds one streaming slot until dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn reject(g: &Guard, reason: HttpRejected, status: StatusCode, msg: &str) -> Response {
    g.st.agent.shared.metrics.http_rejected(reason);
    let mut r = ApiError::new(status, msg).into_response();
    if reason == HttpRejected::Unauthorized {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"lifeline\", charset=\"UTF-8\""),
        );
    }
    r
}

/// The middleware (see the module docs).
pub async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let cfg = g.st.agent.config.load_full();
    let mut res = check(&g, &cfg, req, next).await;
    if let Some(w) = &cfg.agent.web {
        for (k, v) in &w.headers {
            res.headers_mut().insert(k.clone(), v.clone());
        }
    }
    g.st.agent
        .shared
        .metrics
        .http_request(&route, res.status().as_u16());
    res
}

async fn check(g: &Guard, cfg: &Config, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let probe = PROBE_PATHS.contains(&path.as_str());
    let a = &cfg.agent;
    if !probe && !a.allowed_hosts.is_empty() && !host_allowed(req.headers(), &a.allowed_hosts) {
        return reject(
            g,
            HttpRejected::Host,
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not served here (allowed_hosts)",
        );
    }
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let token_ok = match (&a.api_token, &auth) {
        (Some(tok), Some(h)) => h
            .strip_prefix("Bearer ")
            .is_some_and(|given| constant_time_eq(given.as_bytes(), tok.expose().as_bytes())),
        _ => false,
    };
    // Push routes authenticate by their check's token (`http/push.rs`), not basic auth
    // or `api_token`, so cron jobs need no agent credentials.
    let push = path.starts_with(super::push::PREFIX);
    let users = a.web.as_ref().and_then(|w| w.users.clone());
    if let Some(users) = users
        && !probe
        && !push
        && !is_public(&path, &a.public_paths)
        && !(cfg.status_page.public && super::page::is_public_page(&path))
        && !token_ok
        && !users.check(auth.as_deref()).await
    {
        return reject(
            g,
            HttpRejected::Unauthorized,
            StatusCode::UNAUTHORIZED,
            "authentication required",
        );
    }
    let write = req.method() == Method::POST || req.method() == Method::DELETE;
    if write {
        if push {
            // Token-authenticated: a cross-site page cannot know the token, so forms
            // (`curl -d status=down`) are fine here.
        } else if a.api_token.is_some() {
            if !token_ok {
                return ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
                    .into_response();
            }
        } else {
            // No token: a browser on another site must not be able to trigger this. Forms
            // send one of the "simple" content types; everything else a browser sends
            // cross-site carries an Origin.
            if simple_content_type(req.headers()) {
                return reject(
                    g,
                    HttpRejected::ContentType,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "POST routes take application/json (or no body), not a form",
                );
            }
            if !origin_allowed(
                req.headers(),
                req.extensions().get::<Arc<ConnInfo>>(),
                &a.allowed_origins,
            ) {
                return reject(
                    g,
                    HttpRejected::Origin,
                    StatusCode::FORBIDDEN,
                    "cross-origin request refused (allowed_origins)",
                );
            }
        }
        let max = a.http.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return reject(
                g,
                HttpRejected::BodyTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large (max_body_bytes)",
            );
        }
        let req = req.map(|b| Body::new(http_body_util::Limited::new(b, max)));
        let res = next.run(req).await;
        if res.status() == StatusCode::PAYLOAD_TOO_LARGE {
            g.st.agent
                .shared
                .metrics
                .http_rejected(HttpRejected::BodyTooLarge);
        }
        return res;
    }
    if STREAM_PATHS.contains(&path.as_str()) {
        let conn = req.extensions().get::<Arc<ConnInfo>>().cloned();
        if !origin_allowed(req.headers(), conn.as_ref(), &a.allowed_origins) {
            return reject(
                g,
                HttpRejected::Origin,
                StatusCode::FORBIDDEN,
                "cross-origin event stream refused (allowed_origins)",
            );
        }
        let now = g.streams.fetch_add(1, Ordering::AcqRel);
        let slot = StreamSlot(g.streams.clone());
        if now >= a.http.max_streams {
            drop(slot);
            return reject(
                g,
                HttpRejected::StreamLimit,
                StatusCode::SERVICE_UNAVAILABLE,
                "too many event stream clients (max_streams)",
            );
        }
        let res = next.run(req).await;
        return match (path.as_str(), conn) {
            // A WebSocket outlives its response: the slot goes with the connection.
            ("/ws", Some(c)) if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
                c.hold(Box::new(slot));
                res
            }
            _ => res.map(|b| {
                Body::new(b.map_frame(move |f| {
                    let _ = &slot;
                    f
                }))
            }),
        };
    }
    next.run(req).await
}

/// `public_paths` entries match exactly, or as a prefix when they end in `*`.
fn is_public(path: &str, public: &[String]) -> bool {
    public.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == p,
    })
}

fn host_allowed(h: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let bare = strip_port(host);
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(bare))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..h.len() + 1])
            .unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The content types a cross-site HTML form (or a CORS "simple request") can send.
fn simple_content_type(h: &HeaderMap) -> bool {
    let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
    )
}

/// No `Origin` (not a browser, or same-origin GET) is allowed; otherwise it must be the
/// agent's own origin (scheme, `Host`) or listed in `allowed_origins` (`*` = any).
fn origin_allowed(h: &HeaderMap, conn: Option<&Arc<ConnInfo>>, allowed: &[String]) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let scheme = if conn.is_some_and(|c| c.tls) {
        "https"
    } else {
        "http"
    };
    let Ok(o) = url::Url::parse(origin) else {
        return false;
    };
    let Ok(own) = url::Url::parse(&format!("{scheme}://{host}")) else {
        return false;
    };
    o.scheme() == own.scheme()
        && o.host_str().map(str::to_ascii_lowercase) == own.host_str().map(str::to_ascii_lowercase)
        && o.port_or_known_default() == own.port_or_known_default()
}

/// Compares without stopping at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                *k,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn origin_same_listed_foreign_and_absent() {
        let own = headers(&[
            ("host", "127.0.0.1:9477"),
            ("origin", "http://127.0.0.1:9477"),
        ]);
        assert!(origin_allowed(&own, None, &[]));
        let foreign = headers(&[
            ("host", "127.0.0.1:9477"),
            ("origin", "http://evil.example"),
        ]);
        assert!(!origin_allowed(&foreign, None, &[]));
        assert!(origin_allowed(
            &foreign,
            None,
            &["http://evil.example".into()]
        ));
        assert!(origin_allowed(&headers(&[("host", "x")]), None, &[]));
        let port = headers(&[("host", "a:80"), ("origin", "http://a")]);
        assert!(origin_allowed(&port, None, &[]));
    }

    #[test]
    fn hosts_public_paths_and_form_types() {
        let h = headers(&[("host", "mon.example:9477")]);
        assert!(host_allowed(&h, &["mon.example".into()]));
        assert!(!host_allowed(&h, &["other.example".into()]));
        assert_eq!(strip_port("[::1]:9477"), "[::1]");
        assert!(is_public("/metrics", &["/metrics".into()]));
        assert!(is_public("/api/v1/checks/a/uptime", &["/api/v1/*".into()]));
        assert!(!is_public("/metricsx", &["/metrics".into()]));
        assert!(simple_content_type(&headers(&[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8"
        )])));
        assert!(!simple_content_type(&headers(&[(
            "content-type",
            "application/json"
        )])));
    }
}
