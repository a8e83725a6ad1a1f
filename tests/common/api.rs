//! HTTP requests from tests to the agent's API (or any other JSON endpoint): a client with
//! a 10 s timeout, answers as `(status, parsed JSON body)`. Every failure panics naming the
//! request.

use std::time::Duration;

use serde_json::Value;

/// A client with a 10 s timeout (the rustls provider installed first).
pub fn client() -> reqwest::Client {
    lifeline::net::tls::install_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// Sends `req`; returns the status and the body parsed as JSON (panics if it is not JSON).
pub async fn send_json(req: reqwest::RequestBuilder) -> (u16, Value) {
    let (client, req) = req.build_split();
    let req = req.expect("a well-formed request");
    let what = format!("{} {}", req.method(), req.url());
    let r = client
        .execute(req)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = r.status().as_u16();
    let bytes = r
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{what}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, body)
}

/// GET `url`; returns (status, JSON body).
pub async fn get_json(url: &str) -> (u16, Value) {
    send_json(client().get(url)).await
}

/// POST `url`, with `token` as bearer token and `body` as JSON body when given; returns
/// (status, JSON body).
pub async fn post_json(url: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut req = client().post(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    send_json(req).await
}

/// DELETE `url`; returns (status, JSON body).
pub async fn delete_json(url: &str) -> (u16, Value) {
    send_json(client().delete(url)).await
}

/// GET `url`; returns the body as text (whatever the status).
pub async fn get_text(url: &str) -> String {
    let r = client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    r.text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"))
}
