//! `kind = "webhook"`: POSTs the SPEC §7 JSON; with `hmac_secret`, adds
//! `X-Lifeline-Signature: sha256=<hex>` (HMAC-SHA256 of the exact body bytes).

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use futures_util::future::BoxFuture;

/// The webhook notifier.
pub struct Webhook {
    cfg: Arc<NotifierConfig>,
    http: reqwest::Client,
}

impl Webhook {
    /// A notifier for `cfg` (must be `kind = "webhook"`).
    pub fn new(cfg: Arc<NotifierConfig>, http: reqwest::Client) -> Self {
        Self { cfg, http }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(`key`, `body`).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this branch cannot be taken.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs a JSON body; 2xx is delivered, the rest classified by [`super::http::classify`]
/// (so a 429 or 503 with `Retry-After` is retried no sooner than it asks).
pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(String, String)],
) -> Result<(), NotifyError> {
    let mut req = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    super::http::send(req).await
}

impl Notifier for Webhook {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let NotifierKind::Webhook {
                url,
                hmac_secret,
                headers,
            } = &self.cfg.kind
            else {
                return Err(NotifyError::Permanent("not a webhook notifier".into()));
            };
            let body = serde_json::to_vec(&n.to_spec_json())
                .map_err(|e| NotifyError::Permanent(e.to_string()))?;
            let mut extra: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().clone()))
                .collect();
            if let Some(key) = hmac_secret {
                extra.push((
                    "X-Lifeline-Signature".into(),
                    signature(key.expose().as_bytes(), &body),
                ));
            }
            post(&self.http, url.as_str(), body, &extra).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
