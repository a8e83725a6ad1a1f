//! `http` (probe): a request to `url`; healthy when the status is accepted
//! (`expect_status`, default 200–399) and the body matches `expect_body` (regex) if set.
//! The body read is capped (`max_body`, default 1 MiB).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use tokio::time::Instant;

use super::ParseCx;
use super::tls::{self, TlsOptions};
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, ErrorKind, KindSpec, Outcome, Phases,
};
use crate::config::raw::Table;
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
    let url = parse_url(t, "url", &["http", "https"]);
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
    let headers = read_headers(t, "headers");
    let expect_status = read_status_ranges(t, "expect_status").unwrap_or_else(|| vec![200..=399]);
    let expect_body = read_regex(t, "expect_body");
    let max_body = t
        .int("max_body", 1..=64 * 1024 * 1024)
        .unwrap_or(1024 * 1024) as usize;
    let follow_redirects = t.bool("follow_redirects").unwrap_or(true);
    let tls = tls::read_options(t);
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

/// Reads a URL key and checks its scheme.
pub fn parse_url(t: &Table<'_, '_>, key: &'static str, schemes: &[&str]) -> Option<url::Url> {
    let s = t.req_str(key)?;
    match url::Url::parse(&s.value) {
        Ok(u) if schemes.contains(&u.scheme()) => {
            if let Some(p) = u.password() {
                crate::secret::register(p);
            }
            Some(u)
        }
        Ok(u) => {
            t.error(
                s.span,
                format!(
                    "`{key}` must use {}, got `{}:`",
                    schemes.join(" or "),
                    u.scheme()
                ),
            );
            None
        }
        Err(e) => {
            t.error(s.span, format!("`{key}`: invalid URL: {e}"));
            None
        }
    }
}

/// Reads a header table; values are secrets.
pub fn read_headers(
    t: &Table<'_, '_>,
    key: &'static str,
) -> Option<BTreeMap<String, Secret<String>>> {
    let Some(map) = t.str_map(key) else {
        return if t.has(key) {
            None
        } else {
            Some(BTreeMap::new())
        };
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, v) in map {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(&v.value).is_err()
        {
            t.error(v.span.clone(), format!("`{key}`: invalid header `{k}`"));
            ok = false;
        }
        out.insert(k, Secret::registered(v.value));
    }
    ok.then_some(out)
}

/// Reads a regex key; `Some(None)` when absent.
pub fn read_regex(t: &Table<'_, '_>, key: &'static str) -> Option<Option<regex::Regex>> {
    let Some(s) = t.str(key) else {
        return Some(None);
    };
    match regex::RegexBuilder::new(&s.value)
        .size_limit(1 << 20)
        .build()
    {
        Ok(r) => Some(Some(r)),
        Err(e) => {
            let msg = e.to_string();
            let last = msg
                .lines()
                .last()
                .unwrap_or("")
                .trim_start_matches("error: ");
            t.error(s.span, format!("`{key}`: invalid regex: {last}"));
            None
        }
    }
}

/// Reads status codes: `200`, `[200, 204]`, `["2xx", "300-302"]`.
pub fn read_status_ranges(
    t: &Table<'_, '_>,
    key: &'static str,
) -> Option<Vec<RangeInclusive<u16>>> {
    let v = t.raw(key)?;
    use toml::de::DeValue;
    let one = |x: &DeValue<'_>| -> Option<RangeInclusive<u16>> {
        match x {
            DeValue::Integer(i) => {
                let n: u16 = i.as_str().parse().ok()?;
                (100..=699).contains(&n).then_some(n..=n)
            }
            DeValue::String(s) => parse_status_range(s),
            _ => None,
        }
    };
    let items: Vec<Option<RangeInclusive<u16>>> = match v.get_ref() {
        DeValue::Array(a) => a.iter().map(|x| one(x.get_ref())).collect(),
        other => vec![one(other)],
    };
    if items.iter().any(Option::is_none) || items.is_empty() {
        t.error(
            v.span(),
            format!("`{key}` must be a status code, \"2xx\", \"200-299\", or an array of them"),
        );
        return None;
    }
    Some(items.into_iter().flatten().collect())
}

fn parse_status_range(s: &str) -> Option<RangeInclusive<u16>> {
    let s = s.trim();
    if let Some(d) = s.strip_suffix("xx") {
        let d: u16 = d.parse().ok()?;
        return (1..=6).contains(&d).then(|| d * 100..=d * 100 + 99);
    }
    if let Some((a, b)) = s.split_once('-') {
        let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        return (100 <= a && a <= b && b <= 699).then_some(a..=b);
    }
    let n: u16 = s.parse().ok()?;
    (100..=699).contains(&n).then_some(n..=n)
}

/// Classifies a reqwest error by its source chain.
pub fn classify(e: &reqwest::Error) -> ErrorKind {
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut text = String::new();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let k = ErrorKind::from_io(io);
            if k != ErrorKind::Internal {
                return k;
            }
        }
        if s.downcast_ref::<rustls::Error>().is_some() {
            return ErrorKind::Tls;
        }
        text.push_str(&s.to_string().to_ascii_lowercase());
        text.push(' ');
        src = s.source();
    }
    if text.contains("dns") || text.contains("lookup") || text.contains("resolve") {
        ErrorKind::Dns
    } else if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
        ErrorKind::Tls
    } else if text.contains("refused") || e.is_connect() {
        ErrorKind::Refused
    } else {
        ErrorKind::Protocol
    }
}

/// A readable, redacted message for a reqwest error (the whole source chain).
pub fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    crate::secret::redact(&msg)
}

impl KindSpec for HttpSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let tls = tls::client_config(&self.tls)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .redirect(if self.follow_redirects {
                reqwest::redirect::Policy::limited(5)
            } else {
                reqwest::redirect::Policy::none()
            })
            .user_agent(concat!("lifeline/", env!("CARGO_PKG_VERSION")))
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
            let mut body = Vec::new();
            let mut truncated = false;
            if self.spec.expect_body.is_some() {
                loop {
                    match resp.chunk().await {
                        Ok(Some(c)) => {
                            let room = self.spec.max_body - body.len();
                            body.extend_from_slice(&c[..c.len().min(room)]);
                            if c.len() >= room {
                                truncated = true;
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            return Outcome::down(
                                CheckError::new(classify(&e), describe(&e)),
                                start.elapsed(),
                            );
                        }
                    }
                }
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
            if let Some(re) = &self.spec.expect_body {
                let text = String::from_utf8_lossy(&body);
                if !re.is_match(&text) {
                    let note = if truncated {
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
            }
            base(Outcome::up(latency).with_message(format!("HTTP {status}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("2xx"), Some(200..=299));
        assert_eq!(parse_status_range("200-204"), Some(200..=204));
        assert_eq!(parse_status_range("404"), Some(404..=404));
        assert_eq!(parse_status_range("9xx"), None);
        assert_eq!(parse_status_range("300-200"), None);
    }
}
