//! `http` (probe): a request to `url`; healthy when the status is accepted
//! (`expect_status`, default 200–399) and the body matches `expect_body` (regex) if set.
//! The body read is capped (`max_body`, default 1 MiB).
//!
//! Redirects (`follow_redirects`, default on, at most [`MAX_REDIRECTS`] hops) are followed
//! here rather than by reqwest, so that *secret* headers go to the configured origin only
//! (scheme, host and port of `url`), as browsers and curl do with credentials: a hop to
//! another origin gets the non-secret headers and nothing else. A header is secret when
//! its value came from `${env:…}`/`${file:…}`, when it is named in `secret_headers`, or
//! when it is `Authorization`, `Proxy-Authorization` or `Cookie`.

use std::collections::{BTreeMap, BTreeSet};
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
use crate::net::tls::CertOutcome;
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
    /// Lower-case names of the headers sent to the configured origin only.
    pub secret_headers: BTreeSet<String>,
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
    /// `tls_expiry_warning` for `https` (`None`: off).
    pub tls_expiry_warning: Option<std::time::Duration>,
}

/// Hops followed before the check fails with `protocol`.
pub const MAX_REDIRECTS: usize = 5;

/// Headers that are always secret (credentials by definition).
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Reads `url`, `method`, `headers`, `secret_headers`, `expect_status`, `expect_body`,
/// `max_body`, `follow_redirects`, `ca_file`, `tls_skip_verify`, `tls_expiry_warning`.
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
    let headers = t.headers_with_origin("headers");
    let secret_headers = secret_headers(t, headers.as_ref());
    let headers = headers.map(|h| {
        h.into_iter()
            .map(|(k, v)| (k, v.value))
            .collect::<BTreeMap<_, _>>()
    });
    let expect_status = t
        .status_ranges("expect_status")
        .unwrap_or_else(|| vec![200..=399]);
    let expect_body = t.regex("expect_body");
    let max_body = t
        .int("max_body", 1..=64 * 1024 * 1024)
        .unwrap_or(1024 * 1024) as usize;
    let follow_redirects = t.bool("follow_redirects").unwrap_or(true);
    let tls = t.tls_options();
    let tls_expiry_warning = t.tls_expiry_warning();
    Some(Arc::new(HttpSpec {
        url: url?,
        method: method?,
        headers: headers?,
        secret_headers: secret_headers?,
        expect_status,
        expect_body: expect_body.unwrap_or(None),
        max_body,
        follow_redirects,
        tls,
        tls_expiry_warning,
    }))
}

/// The lower-case names of the secret headers (see the module docs); `secret_headers`
/// must name configured headers.
fn secret_headers(
    t: &Table<'_, '_>,
    headers: Option<&BTreeMap<String, crate::config::readers::ConfigHeader>>,
) -> Option<BTreeSet<String>> {
    let mut out: BTreeSet<String> = headers
        .into_iter()
        .flatten()
        .filter(|(k, h)| {
            h.substituted || CREDENTIAL_HEADERS.contains(&k.to_ascii_lowercase().as_str())
        })
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    let mut ok = true;
    if let Some(list) = t.str_list("secret_headers") {
        for name in list {
            let configured = headers
                .into_iter()
                .flatten()
                .any(|(k, _)| k.eq_ignore_ascii_case(&name.value));
            if !configured {
                t.error(
                    name.span.clone(),
                    format!("`secret_headers`: `{}` is not in `headers`", name.value),
                );
                ok = false;
            }
            out.insert(name.value.to_ascii_lowercase());
        }
    } else if t.has("secret_headers") {
        ok = false;
    }
    ok.then_some(out)
}

/// `scheme://host:port` of a URL equal to that of another (default ports filled in).
fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The method of the next hop: 303 turns everything but HEAD into GET, 301/302 turn POST
/// into GET (as browsers do), 307/308 keep it.
fn redirected_method(status: u16, m: &http::Method) -> http::Method {
    match status {
        303 if *m != http::Method::HEAD => http::Method::GET,
        301 | 302 if *m == http::Method::POST => http::Method::GET,
        _ => m.clone(),
    }
}

impl KindSpec for HttpSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = tls::client_config(&self.tls)?;
        // Redirects are followed by `HttpCheck::send`, which decides per hop which headers go.
        let client = http_client::builder(&tls)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .tls_info(true)
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

impl HttpCheck {
    /// Sends the request, following redirects (when enabled) within `budget` overall;
    /// secret headers go only to hops on the configured origin.
    async fn send(
        &self,
        start: Instant,
        budget: std::time::Duration,
    ) -> Result<reqwest::Response, CheckError> {
        let deadline = start + budget;
        let mut url = self.spec.url.clone();
        let mut method = self.spec.method.clone();
        let mut hops = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CheckError::new(
                    ErrorKind::Timeout,
                    format!("no final answer within {budget:?} ({hops} redirects)"),
                ));
            }
            let trusted = same_origin(&url, &self.spec.url);
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .timeout(left);
            for (k, v) in &self.spec.headers {
                if trusted || !self.spec.secret_headers.contains(&k.to_ascii_lowercase()) {
                    req = req.header(k, v.expose());
                }
            }
            let resp = req
                .send()
                .await
                .map_err(|e| CheckError::new(classify(&e), describe(&e)))?;
            let status = resp.status().as_u16();
            if !self.spec.follow_redirects || !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let Some(location) = resp.headers().get(http::header::LOCATION) else {
                return Ok(resp);
            };
            let next = location
                .to_str()
                .ok()
                .and_then(|l| url.join(l).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    CheckError::new(
                        ErrorKind::Protocol,
                        format!("HTTP {status} with an unusable Location header"),
                    )
                })?;
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(CheckError::new(
                    ErrorKind::Protocol,
                    format!("more than {MAX_REDIRECTS} redirects"),
                ));
            }
            method = redirected_method(status, &method);
            url = next;
        }
    }
}

impl Check for HttpCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let mut resp = match self.send(start, at.timeout).await {
                Ok(r) => r,
                Err(e) => return Outcome::down(e, start.elapsed()),
            };
            let status = resp.status().as_u16();
            // The certificate of the connection that gave the final answer.
            let cert = resp
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|i| i.peer_certificate())
                .and_then(|der| tls::PeerCert::from_der(der).ok());
            let warn = self.spec.tls_expiry_warning;
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
                    .with_peer_cert(cert.clone(), warn)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(same_origin(&u("http://a:80/x"), &u("http://a/y?z")));
        assert!(!same_origin(&u("http://a/"), &u("https://a/")));
        assert!(!same_origin(&u("http://a:8080/"), &u("http://a:8081/")));
        assert!(!same_origin(&u("http://a/"), &u("http://b/")));
    }

    #[test]
    fn redirect_methods_follow_the_browsers() {
        use http::Method;
        assert_eq!(redirected_method(303, &Method::PUT), Method::GET);
        assert_eq!(redirected_method(303, &Method::HEAD), Method::HEAD);
        assert_eq!(redirected_method(302, &Method::POST), Method::GET);
        assert_eq!(redirected_method(307, &Method::POST), Method::POST);
        assert_eq!(redirected_method(301, &Method::GET), Method::GET);
    }
}
