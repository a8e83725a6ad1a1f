//! Readers for values that kinds and notifiers share, as [`Table`] methods: URLs (with a
//! scheme check), header tables, regexes, HTTP/SIP status ranges and the TLS keys. Like
//! every getter they record problems in the load's diagnostics and return `None`.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use toml::de::DeValue;

use super::raw::Table;
use crate::net::tls::TlsOptions;
use crate::secret::Secret;

/// One configured request header.
#[derive(Debug, Clone)]
pub struct ConfigHeader {
    /// The value (a secret: headers often carry credentials).
    pub value: Secret<String>,
    /// True if part of the value came from `${env:…}`/`${file:…}`.
    pub substituted: bool,
}

impl Table<'_, '_> {
    /// A required URL whose scheme is one of `schemes`; its password, if any, is
    /// registered as a secret.
    pub fn url(&self, key: &'static str, schemes: &[&str]) -> Option<url::Url> {
        let s = self.req_str(key)?;
        match url::Url::parse(&s.value) {
            Ok(u) if schemes.contains(&u.scheme()) => {
                if let Some(p) = u.password() {
                    crate::secret::register(p);
                }
                Some(u)
            }
            Ok(u) => {
                self.error(
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
                self.error(s.span, format!("`{key}`: invalid URL: {e}"));
                None
            }
        }
    }

    /// A header table (empty when absent); values are secrets.
    pub fn headers(&self, key: &'static str) -> Option<BTreeMap<String, Secret<String>>> {
        self.headers_with_origin(key)
            .map(|m| m.into_iter().map(|(k, h)| (k, h.value)).collect())
    }

    /// As [`Table::headers`], remembering which values came from `${env:…}`/`${file:…}`
    /// (the http check keeps those from other origins on a redirect).
    pub fn headers_with_origin(&self, key: &'static str) -> Option<BTreeMap<String, ConfigHeader>> {
        let Some(map) = self.str_map(key) else {
            return if self.has(key) {
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
                self.error(v.span.clone(), format!("`{key}`: invalid header `{k}`"));
                ok = false;
            }
            out.insert(
                k,
                ConfigHeader {
                    substituted: v.substituted,
                    value: Secret::registered(v.value),
                },
            );
        }
        ok.then_some(out)
    }

    /// A regex; `Some(None)` when absent.
    pub fn regex(&self, key: &'static str) -> Option<Option<regex::Regex>> {
        let Some(s) = self.str(key) else {
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
                self.error(s.span, format!("`{key}`: invalid regex: {last}"));
                None
            }
        }
    }

    /// Status codes: `200`, `[200, 204]`, `["2xx", "300-302"]`; `None` when absent or
    /// invalid.
    pub fn status_ranges(&self, key: &'static str) -> Option<Vec<RangeInclusive<u16>>> {
        let v = self.raw(key)?;
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
            self.error(
                v.span(),
                format!("`{key}` must be a status code, \"2xx\", \"200-299\", or an array of them"),
            );
            return None;
        }
        Some(items.into_iter().flatten().collect())
    }

    /// The common `ca_file` (relative to the config file) and `tls_skip_verify` keys.
    pub fn tls_options(&self) -> TlsOptions {
        let ca_file = self
            .str("ca_file")
            .map(|s| self.loader().base.join(s.value));
        let skip_verify = self.bool("tls_skip_verify").unwrap_or(false);
        if skip_verify {
            tracing::warn!("tls_skip_verify = true: server certificates are not verified");
        }
        TlsOptions {
            ca_file,
            skip_verify,
        }
    }

    /// `tls_expiry_warning`: how long before the server certificate's `notAfter` a TLS
    /// check turns `degraded` (`error_kind = "tls"`); a duration such as `"14d"`, or
    /// `"off"`. Default [`crate::net::tls::DEFAULT_EXPIRY_WARNING`]. `None` means off.
    pub fn tls_expiry_warning(&self) -> Option<std::time::Duration> {
        let default = Some(crate::net::tls::DEFAULT_EXPIRY_WARNING);
        let Some(s) = self.str("tls_expiry_warning") else {
            return default;
        };
        if s.value.trim().eq_ignore_ascii_case("off") {
            return None;
        }
        match crate::time::parse_duration(&s.value) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                self.error(s.span, format!("`tls_expiry_warning`: {e} (or \"off\")"));
                default
            }
        }
    }
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
