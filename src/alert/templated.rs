//! `kind = "template"`: any HTTP endpoint, for services without a dedicated notifier.
//! `method` (default POST) to `url` (itself a template whose values are
//! percent-encoded, e.g. `…/incidents/{{ dedupe_key }}`) with `headers` and a minijinja
//! `body` template
//! rendered with the notification (the same context as `title`/`text`, see
//! [`super::template::context`]). With a JSON `content_type` (the default), printed
//! values are escaped as JSON string content, and the body must render to valid JSON for
//! a sample notification when the config is loaded.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::template::{Escape, Template};
use super::{Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use crate::config::raw::Table;
use crate::secret::Secret;
use futures_util::future::BoxFuture;

/// Methods a template notifier may use.
pub const METHODS: [&str; 5] = ["POST", "PUT", "PATCH", "GET", "DELETE"];

/// Rendered bodies larger than this are not sent (a message that cannot be built).
pub const BODY_MAX: usize = 1024 * 1024;

/// `kind = "template"` keys.
#[derive(Debug)]
pub struct TemplatedConfig {
    /// Target URL as written (may carry a token: a secret).
    pub url: Secret<String>,
    /// `url` compiled as a template (values percent-encoded).
    pub url_template: Template,
    /// HTTP method.
    pub method: reqwest::Method,
    /// Extra request headers (values are secrets).
    pub headers: BTreeMap<String, Secret<String>>,
    /// `Content-Type` of the body (default `application/json`).
    pub content_type: String,
    /// The body template.
    pub body: Template,
}

/// True for `application/json` and `application/<x>+json`.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads the keys of a `kind = "template"` notifier.
pub(super) fn read(t: &Table<'_, '_>) -> Option<TemplatedConfig> {
    let url = super::http::secret_url(t, "url");
    let url_template = url.as_ref().and_then(|u| url_template(t, u.expose()));
    let method = match t.str("method") {
        None => Some(reqwest::Method::POST),
        Some(m) => {
            let upper = m.value.to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                reqwest::Method::from_bytes(upper.as_bytes()).ok()
            } else {
                t.error(
                    m.span,
                    format!("`method` must be one of {}", METHODS.join(", ")),
                );
                None
            }
        }
    };
    let headers = t.headers("headers");
    let content_type = match t.str("content_type") {
        None => Some("application/json".to_string()),
        Some(c) if http::HeaderValue::from_str(&c.value).is_ok() && !c.value.is_empty() => {
            Some(c.value)
        }
        Some(c) => {
            t.error(c.span, "`content_type` is not a valid header value");
            None
        }
    };
    let content_type = content_type?;
    let escape = if is_json(&content_type) {
        Escape::Json
    } else {
        Escape::None
    };
    let body = t.req_str("body").and_then(|s| {
        let tpl = match Template::compile_for(&s.value, escape) {
            Ok(tpl) => tpl,
            Err(e) => {
                t.error(s.span, format!("`body`: template error: {e}"));
                return None;
            }
        };
        // Catch a body that can never be valid now, not at the first outage.
        let sample = Notification::test_sample();
        match tpl.render(&sample) {
            Err(e) => {
                t.error(s.span, format!("`body`: template error: {e}"));
                None
            }
            Ok(text) if escape == Escape::Json => {
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(_) => Some(tpl),
                    Err(e) => {
                        t.error(
                            s.span,
                            format!("`body` does not render to valid JSON for a sample notification ({e}); print values inside quotes or with `| tojson`"),
                        );
                        None
                    }
                }
            }
            Ok(_) => Some(tpl),
        }
    });
    Some(TemplatedConfig {
        url: url?,
        url_template: url_template?,
        method: method?,
        headers: headers?,
        content_type,
        body: body?,
    })
}

/// Compiles `url` and checks that it renders to an http(s) URL for a sample notification.
fn url_template(t: &Table<'_, '_>, url: &str) -> Option<Template> {
    let span = t.str("url").map(|s| s.span).unwrap_or(t.span());
    // Never echo the URL: it may carry the credential.
    let tpl = match Template::compile_for(url, Escape::Url) {
        Ok(tpl) => tpl,
        Err(_) => {
            t.error(span, "`url`: template syntax error");
            return None;
        }
    };
    let ok = tpl
        .render(&Notification::test_sample())
        .ok()
        .and_then(|u| url::Url::parse(&u).ok())
        .is_some_and(|u| u.scheme() == "http" || u.scheme() == "https");
    if !ok {
        t.error(span, "`url` does not render to an http(s) URL");
        return None;
    }
    Some(tpl)
}

/// The template notifier.
pub struct Templated {
    cfg: Arc<NotifierConfig>,
    http: reqwest::Client,
}

impl Templated {
    /// A notifier for `cfg` (must be `kind = "template"`).
    pub fn new(cfg: Arc<NotifierConfig>, http: reqwest::Client) -> Self {
        Self { cfg, http }
    }
}

impl Notifier for Templated {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let NotifierKind::Template(c) = &self.cfg.kind else {
                return Err(NotifyError::Permanent("not a template notifier".into()));
            };
            let body = c
                .body
                .render(n)
                .map_err(|e| NotifyError::Permanent(format!("body template: {e}")))?;
            if body.len() > BODY_MAX {
                return Err(NotifyError::Permanent(format!(
                    "rendered body is {} bytes, more than {BODY_MAX}",
                    body.len()
                )));
            }
            let url = c
                .url_template
                .render(n)
                .map_err(|e| NotifyError::Permanent(format!("url template: {e}")))?;
            let mut req = self
                .http
                .request(c.method.clone(), url.as_str())
                .header(reqwest::header::CONTENT_TYPE, c.content_type.as_str());
            for (k, v) in &c.headers {
                req = req.header(k.as_str(), v.expose().as_str());
            }
            if !body.is_empty() {
                req = req.body(body);
            }
            super::http::send(req).await
        })
    }
}
