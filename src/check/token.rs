//! Bearer tokens for websocket/socketio (SPEC §3 `token`): fetched from an HTTP endpoint
//! before connecting, cached until `expires_in` (or `ttl`), and refetched only when expired
//! or when the server rejected it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{CheckError, ErrorKind};
use crate::config::raw::Table;
use crate::net::capped::{AtCap, CappedBuf};
use crate::net::http_client::{classify, describe};
use crate::secret::Secret;

/// `token = { url, method, header, json_pointer, ttl, headers, body }`.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Token endpoint.
    pub url: url::Url,
    /// Method (default POST).
    pub method: http::Method,
    /// Header the token is sent in on the handshake (default `Authorization`, as
    /// `Bearer <token>`; any other header gets the bare token).
    pub header: String,
    /// Where the token is in the JSON answer (default `/access_token`).
    pub json_pointer: String,
    /// Lifetime when the answer has no `expires_in` (default 5m).
    pub ttl: Duration,
    /// Headers of the token request (e.g. client credentials).
    pub headers: std::collections::BTreeMap<String, Secret<String>>,
    /// Request body (JSON text), if any.
    pub body: Option<Secret<String>>,
}

/// Reads a `token` inline table.
pub fn parse(t: &Table<'_, '_>) -> Option<Option<TokenSpec>> {
    let Some(tt) = t.table("token") else {
        return Some(None);
    };
    let url = tt.url("url", &["http", "https"]);
    let method = match tt.str("method") {
        None => Some(http::Method::POST),
        Some(m) => http::Method::from_bytes(m.value.to_ascii_uppercase().as_bytes())
            .map_err(|_| tt.error(m.span, "`method`: invalid HTTP method"))
            .ok(),
    };
    let header = tt
        .str("header")
        .map(|s| s.value)
        .unwrap_or_else(|| "Authorization".into());
    let json_pointer = tt
        .str("json_pointer")
        .map(|s| s.value)
        .unwrap_or_else(|| "/access_token".into());
    let ttl = tt.duration("ttl").unwrap_or(Duration::from_secs(300));
    let headers = tt.headers("headers");
    let body = tt.secret("body");
    tt.finish();
    Some(Some(TokenSpec {
        url: url?,
        method: method?,
        header,
        json_pointer,
        ttl,
        headers: headers?,
        body,
    }))
}

/// What a handshake sends: the configured headers, then the token's header.
pub struct HandshakeHeaders {
    /// Header names and values, ready to send.
    pub headers: Vec<(String, String)>,
    /// The token that went into them, if a source is configured.
    pub token: Option<Arc<Secret<String>>>,
    /// How long getting the token took (zero without a source).
    pub token_time: Duration,
}

/// The configured `headers` (exposed for sending), followed by the header of the token
/// from `source` (cached or fetched within `timeout`) when one is configured.
pub async fn handshake_headers(
    headers: &BTreeMap<String, Secret<String>>,
    source: Option<&TokenSource>,
    timeout: Duration,
) -> Result<HandshakeHeaders, CheckError> {
    let mut out = HandshakeHeaders {
        headers: headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().clone()))
            .collect(),
        token: None,
        token_time: Duration::ZERO,
    };
    if let Some(src) = source {
        let t = Instant::now();
        let tok = src.get(timeout).await?;
        out.token_time = t.elapsed();
        out.headers.push(src.header_value(&tok));
        out.token = Some(tok);
    }
    Ok(out)
}

/// A cached token source.
pub struct TokenSource {
    spec: TokenSpec,
    http: reqwest::Client,
    cached: Mutex<Option<(Arc<Secret<String>>, Instant)>>,
}

impl TokenSource {
    /// A source using the shared client.
    pub fn new(spec: TokenSpec, http: reqwest::Client) -> Self {
        Self {
            spec,
            http,
            cached: Mutex::new(None),
        }
    }

    /// The header name and value to send on the handshake.
    pub fn header_value(&self, token: &Secret<String>) -> (String, String) {
        let v = if self.spec.header.eq_ignore_ascii_case("authorization") {
            format!("Bearer {}", token.expose())
        } else {
            token.expose().clone()
        };
        (self.spec.header.clone(), v)
    }

    /// The cached token, or a fresh one if none is cached or it expired.
    pub async fn get(&self, timeout: Duration) -> Result<Arc<Secret<String>>, CheckError> {
        if let Some((tok, until)) = self.cached.lock().as_ref()
            && Instant::now() < *until
        {
            return Ok(tok.clone());
        }
        let (tok, ttl) = self.fetch(timeout).await?;
        *self.cached.lock() = Some((tok.clone(), Instant::now() + ttl));
        Ok(tok)
    }

    /// Forgets the cached token (the server rejected it).
    pub fn invalidate(&self) {
        *self.cached.lock() = None;
    }

    /// Forgets the cached token when `e` is `auth_failed` (the server refused the
    /// handshake), so the next attempt fetches a fresh one.
    pub fn forget_if_refused(&self, e: &CheckError) {
        if e.kind == ErrorKind::AuthFailed {
            self.invalidate();
        }
    }

    async fn fetch(
        &self,
        timeout: Duration,
    ) -> Result<(Arc<Secret<String>>, Duration), CheckError> {
        let mut req = self
            .http
            .request(self.spec.method.clone(), self.spec.url.clone())
            .timeout(timeout);
        for (k, v) in &self.spec.headers {
            req = req.header(k, v.expose());
        }
        if let Some(b) = &self.spec.body {
            req = req
                .header("content-type", "application/json")
                .body(b.expose().clone());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CheckError::new(classify(&e), format!("token fetch: {}", describe(&e))))?;
        let status = resp.status();
        if status == 401 || status == 403 {
            return Err(CheckError::new(
                ErrorKind::AuthFailed,
                format!("token endpoint answered {status}"),
            ));
        }
        if !status.is_success() {
            return Err(CheckError::new(
                ErrorKind::Protocol,
                format!("token endpoint answered {status}"),
            ));
        }
        let bytes = read_capped(resp, 64 * 1024).await?;
        let (tok, ttl) = parse_answer(&bytes, &self.spec.json_pointer, self.spec.ttl)?;
        // Leased, not registered for good: the set of redacted values stays bounded by the
        // tokens in use however often this one is refreshed.
        Ok((crate::secret::lease(tok), ttl))
    }
}

/// Reads a token endpoint's answer: the string at `json_pointer` and the lifetime from
/// `expires_in` (seconds, capped at a year), else `default_ttl`. What [`TokenSource`]
/// does with every answer; public for the fuzz targets.
pub fn parse_answer(
    body: &[u8],
    json_pointer: &str,
    default_ttl: Duration,
) -> Result<(String, Duration), CheckError> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        CheckError::new(
            ErrorKind::Protocol,
            format!("token answer is not JSON: {e}"),
        )
    })?;
    let tok = json
        .pointer(json_pointer)
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            CheckError::new(
                ErrorKind::Protocol,
                format!("token answer has no string at {json_pointer}"),
            )
        })?
        .to_string();
    let ttl = json
        .get("expires_in")
        .and_then(|v| v.as_f64())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0 * 365.0)))
        .unwrap_or(default_ttl);
    Ok((tok, ttl))
}

/// The whole response body, failing (`protocol`) if it is longer than `cap` bytes.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, CheckError> {
    // One byte past the cap tells an oversized answer from one that fits exactly.
    let mut body = CappedBuf::new(cap.saturating_add(1));
    body.fill(&mut resp, AtCap::Stop)
        .await
        .map_err(|e| CheckError::new(classify(&e), describe(&e)))?;
    if body.len() > cap {
        return Err(CheckError::new(
            ErrorKind::Protocol,
            format!("answer larger than {cap} bytes"),
        ));
    }
    Ok(body.into_bytes())
}
