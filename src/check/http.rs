//! `http` (probe): a request to `url`; healthy when the status is accepted
//! (`expect_status`, default 200–399) and the body matches `expect_body` (regex) if set.
//! The body read is capped (`max_body`, default 1 MiB).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use tokio::time::Instant;

use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, ErrorKind, KindSpec, Outcome, Phases,
};
use crate::config::raw::Table;
use crate::net::capped::{AtCap, CappedBuf};
use crate::net::http_client::{self, classify, describe};
use crate::net::tls::{self, TlsOptions};
use crate::secret::Secret;

/// `http` settings.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// Target URL.
    pub url: url::Url,
    /// Method (default GET).
    pub method: http::Method,
    /// Request headers (values are secrets: they often carry credentials).
    pub headers: BTreeMap<String, Secret<String>>,
    /// Accepted status codes.
    pub expect_status: Vec<RangeInclusive<u16>>,
    /// Body regex.
    pub expect_body: Option<regex::Regex>,
    /// Body read cap in bytes.
    pub max_body: usize,
    /// Follow redirects (default true, up to 5).
    pub follow_redirects: bool,
    /// Certificate handling.
    pub tls: TlsOptions,
}

/// Reads `url`, `method`, `headers`, `expect_status`, `expect_body`, `max_body`,
/// `follow_redirects`, `ca_file`, `tls_skip_verify`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let url = t.url("url", &["http", "https"]);
    let method = match t.str("method") {
        None => Some(http::Method::GET),
        Some(m) => match http::Method::from_bytes(m.value.to_ascii_uppercase().as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                t.error(
                    m.span,
                    format!("`method`: invalid HTTP method `{}`", m.value),
                );
                None
            }
        },
    };
    let headers = t.headers("headers");
    let expect_status = t
        .status_ranges("expect_status")
        .unwrap_or_else(|| vec![200..=399]);
    let expect_body = t.regex("expect_body");
    let max_body = t
        .int("max_body", 1..=64 * 1024 * 1024)
        .unwrap_or(1024 * 1024) as usize;
    let follow_redirects = t.bool("follow_redirects").unwrap_or(true);
    let tls = t.tls_options();
    Some(Arc::new(HttpSpec {
        url: url?,
        method: method?,
        headers: headers?,
        expect_status,
        expect_body: expect_body.unwrap_or(None),
        max_body,
        follow_redirects,
        tls,
    }))
}

impl KindSpec for HttpSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = tls::client_config(&self.tls)?;
        let client = http_client::builder(&tls)
            .redirect(if self.follow_redirects {
                reqwest::redirect::Policy::limited(5)
            } else {
                reqwest::redirect::Policy::none()
            })
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| CheckError::new(ErrorKind::Internal, describe(&e)))?;
        Ok(Arc::new(HttpCheck {
            spec: self.clone(),
            client,
        }))
    }
}

struct HttpCheck {
    spec: HttpSpec,
    client: reqwest::Client,
}

impl Check for HttpCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let mut req = self
                .client
                .request(self.spec.method.clone(), self.spec.url.clone())
                .timeout(at.timeout);
            for (k, v) in &self.spec.headers {
                req = req.header(k, v.expose());
            }
            let mut resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return Outcome::down(
                        CheckError::new(classify(&e), describe(&e)),
                        start.elapsed(),
                    );
                }
            };
            let status = resp.status().as_u16();
            let mut body = CappedBuf::new(self.spec.max_body);
            if self.spec.expect_body.is_some()
                && let Err(e) = body.fill(&mut resp, AtCap::Stop).await
            {
                return Outcome::down(CheckError::new(classify(&e), describe(&e)), start.elapsed());
            }
            let latency = start.elapsed();
            let phases = Phases {
                exchange: Some(latency),
                ..Phases::default()
            };
            let base = |o: Outcome| {
                o.with_phases(phases.clone())
                    .with_detail("status_code", status)
            };
            if !self.spec.expect_status.iter().any(|r| r.contains(&status)) {
                let kind = if status == 401 || status == 403 {
                    ErrorKind::AuthFailed
                } else {
                    ErrorKind::Rejected
                };
                return base(Outcome::down(
                    CheckError::new(kind, format!("unexpected HTTP status {status}")),
                    latency,
                ));
            }
            if let Some(re) = &self.spec.expect_body
                && !re.is_match(&body.text())
            {
                let note = if body.truncated() {
                    " (body truncated at max_body)"
                } else {
                    ""
                };
                return base(Outcome::down(
                    CheckError::new(
                        ErrorKind::Protocol,
                        format!("body does not match `{}`{note}", re.as_str()),
                    ),
                    latency,
                ));
            }
            base(Outcome::up(latency).with_message(format!("HTTP {status}")))
        })
    }
}
