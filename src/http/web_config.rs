//! The web configuration file (`--web.config.file` / `[agent] web_config`), in the format
//! of the Prometheus exporter-toolkit, so the file an operator gives node_exporter works
//! here unchanged: `tls_server_config`, `http_server_config.headers`, `basic_auth_users`.
//!
//! The YAML is read with positions; every problem is a [`ConfigError`] at the offending
//! key or value (`PATH:LINE:COL: message`), all of them collected. Certificates and keys
//! are read when the file is loaded (at start and on every reload), so a broken file
//! never replaces a working one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use rustls::crypto::ring::{cipher_suite as cs, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use saphyr_parser::Span;

use super::auth::BasicAuth;
use crate::config::error::{ConfigError, ConfigErrors};

/// A loaded web configuration.
pub struct WebConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// TLS server settings, when `tls_server_config` is present.
    pub tls: Option<Arc<ServerConfig>>,
    /// `client_auth_type`.
    pub client_auth: ClientAuth,
    /// `basic_auth_users`, when not empty.
    pub users: Option<Arc<BasicAuth>>,
    /// `http_server_config.headers`: added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("users", &self.users.as_ref().map(|u| u.len()))
            .field("headers", &self.headers.len())
            .finish()
    }
}

/// `client_auth_type`: the Go `tls.ClientAuthType` names rustls can honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `NoClientCert` (default): no certificate is asked for.
    #[default]
    NoClientCert,
    /// `VerifyClientCertIfGiven`: a certificate is optional but verified when sent.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`: a certificate signed by `client_ca_file` is required.
    RequireAndVerify,
}

/// Reads and checks the web configuration at `path`.
pub fn load(path: &Path) -> Result<WebConfig, ConfigErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.to_path_buf(),
            line: 1,
            col: 1,
            message: format!("cannot read web config: {e}"),
        }])
    })?;
    parse(path, &src)
}

/// Checks `src`, the text of the web configuration at `path` (relative file names in it
/// are relative to its directory, as in exporter-toolkit).
pub fn parse(path: &Path, src: &str) -> Result<WebConfig, ConfigErrors> {
    let mut cx = Cx {
        path: path.to_path_buf(),
        base: path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
        errors: Vec::new(),
    };
    let docs = match MarkedYaml::load_from_str(src) {
        Ok(d) => d,
        Err(e) => {
            let m = e.marker();
            return Err(ConfigErrors(vec![ConfigError {
                path: cx.path.clone(),
                line: m.line().max(1),
                col: m.col() + 1,
                message: format!("YAML syntax: {}", e.info()),
            }]));
        }
    };
    let mut web = WebConfig {
        path: path.to_path_buf(),
        tls: None,
        client_auth: ClientAuth::NoClientCert,
        users: None,
        headers: Vec::new(),
    };
    if let Some(root) = docs.first() {
        cx.read_root(root, &mut web);
    }
    if docs.len() > 1 {
        cx.error(&docs[1].span, "the web config must be one YAML document");
    }
    if cx.errors.is_empty() {
        Ok(web)
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.col));
        Err(ConfigErrors(cx.errors))
    }
}

struct Cx {
    path: PathBuf,
    base: PathBuf,
    errors: Vec<ConfigError>,
}

type Entries<'n, 'i> = Vec<(String, &'n MarkedYaml<'i>, &'n MarkedYaml<'i>)>;

impl Cx {
    fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: self.path.clone(),
            line: span.start.line().max(1),
            col: span.start.col() + 1,
            message: message.into(),
        });
    }

    /// The entries of a mapping node (`null` is an empty mapping), keys as strings.
    fn mapping<'n, 'i>(&mut self, node: &'n MarkedYaml<'i>, what: &str) -> Entries<'n, 'i> {
        match &node.data {
            YamlData::Mapping(m) => m
                .iter()
                .filter_map(|(k, v)| match scalar(k) {
                    Some(name) => Some((name, k, v)),
                    None => {
                        self.error(&k.span, format!("{what}: keys must be strings"));
                        None
                    }
                })
                .collect(),
            YamlData::Value(Scalar::Null) => Vec::new(),
            _ => {
                self.error(&node.span, format!("`{what}` must be a mapping"));
                Vec::new()
            }
        }
    }

    fn unknown(&mut self, key: &MarkedYaml<'_>, name: &str, section: &str, known: &[&str]) {
        let hint = known
            .iter()
            .map(|k| (strsim::jaro_winkler(k, name), *k))
            .filter(|(s, _)| *s > 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        self.error(
            &key.span,
            format!("unknown key `{name}` in {section}{hint}"),
        );
    }

    fn string(&mut self, node: &MarkedYaml<'_>, key: &str) -> Option<String> {
        match &node.data {
            YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
            YamlData::Value(Scalar::Null) => None,
            _ => {
                self.error(&node.span, format!("`{key}` must be a string"));
                None
            }
        }
    }

    fn bool(&mut self, node: &MarkedYaml<'_>, key: &str) -> Option<bool> {
        match &node.data {
            YamlData::Value(Scalar::Boolean(b)) => Some(*b),
            _ => {
                self.error(&node.span, format!("`{key}` must be true or false"));
                None
            }
        }
    }

    fn strings(&mut self, node: &MarkedYaml<'_>, key: &str) -> Vec<(String, Span)> {
        match &node.data {
            YamlData::Sequence(items) => items
                .iter()
                .filter_map(|i| self.string(i, key).map(|s| (s, i.span)))
                .collect(),
            YamlData::Value(Scalar::Null) => Vec::new(),
            _ => {
                self.error(&node.span, format!("`{key}` must be a list of strings"));
                Vec::new()
            }
        }
    }

    fn read_root(&mut self, root: &MarkedYaml<'_>, web: &mut WebConfig) {
        const KNOWN: &[&str] = &[
            "tls_server_config",
            "http_server_config",
            "basic_auth_users",
        ];
        for (name, k, v) in self.mapping(root, "web config") {
            match name.as_str() {
                "tls_server_config" => {
                    if let Some((tls, auth)) = self.read_tls(v) {
                        web.tls = Some(Arc::new(tls));
                        web.client_auth = auth;
                    }
                }
                "http_server_config" => web.headers = self.read_http(v),
                "basic_auth_users" => web.users = self.read_users(v),
                _ => self.unknown(k, &name, "the web config", KNOWN),
            }
        }
    }

    fn read_http(&mut self, node: &MarkedYaml<'_>) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (name, k, v) in self.mapping(node, "http_server_config") {
            match name.as_str() {
                // lifeline serves HTTP/1.1; the key is accepted so the file loads unchanged.
                "http2" => {
                    self.bool(v, "http2");
                }
                "headers" => {
                    for (h, hk, hv) in self.mapping(v, "headers") {
                        if let Some(pair) = self.header(&h, hk, hv) {
                            out.push(pair);
                        }
                    }
                }
                _ => self.unknown(k, &name, "http_server_config", &["http2", "headers"]),
            }
        }
        out
    }

    fn header(
        &mut self,
        name: &str,
        key: &MarkedYaml<'_>,
        value: &MarkedYaml<'_>,
    ) -> Option<(HeaderName, HeaderValue)> {
        const ALLOWED: &[&str] = &[
            "Strict-Transport-Security",
            "X-Content-Type-Options",
            "X-Frame-Options",
            "X-XSS-Protection",
            "Content-Security-Policy",
        ];
        let Some(canonical) = ALLOWED.iter().find(|a| a.eq_ignore_ascii_case(name)) else {
            self.error(
                &key.span,
                format!(
                    "header `{name}` cannot be set; allowed: {}",
                    ALLOWED.join(", ")
                ),
            );
            return None;
        };
        let v = self.string(value, name)?;
        if v.is_empty() {
            return None; // blank = unset, as in exporter-toolkit
        }
        let fixed: &[&str] = match *canonical {
            "X-Content-Type-Options" => &["nosniff"],
            "X-Frame-Options" => &["deny", "sameorigin"],
            _ => &[],
        };
        if !fixed.is_empty() && !fixed.iter().any(|f| f.eq_ignore_ascii_case(&v)) {
            self.error(
                &value.span,
                format!("`{canonical}` must be one of: {}", fixed.join(", ")),
            );
            return None;
        }
        match HeaderValue::from_str(&v) {
            Ok(hv) => Some((HeaderName::from_static(lower(canonical)), hv)),
            Err(_) => {
                self.error(
                    &value.span,
                    format!("`{canonical}`: not a valid header value"),
                );
                None
            }
        }
    }

    fn read_users(&mut self, node: &MarkedYaml<'_>) -> Option<Arc<BasicAuth>> {
        let mut users = Vec::new();
        for (user, k, v) in self.mapping(node, "basic_auth_users") {
            if user.contains(':') {
                self.error(&k.span, format!("user name `{user}` must not contain `:`"));
                continue;
            }
            let Some(hash) = self.string(v, &user) else {
                continue;
            };
            if hash.parse::<bcrypt::HashParts>().is_err() {
                self.error(
                    &v.span,
                    format!("password of `{user}` is not a bcrypt hash ($2a$, $2b$ or $2y$)"),
                );
                continue;
            }
            users.push((user, hash));
        }
        (!users.is_empty()).then(|| Arc::new(BasicAuth::new(users)))
    }

    fn path_or_pem(&mut self, node: &MarkedYaml<'_>, key: &str, inline: bool) -> Option<Vec<u8>> {
        let s = self.string(node, key)?;
        if inline {
            return Some(s.into_bytes());
        }
        let p = self.base.join(&s);
        match std::fs::read(&p) {
            Ok(b) => Some(b),
            Err(e) => {
                self.error(
                    &node.span,
                    format!("`{key}`: cannot read {}: {e}", p.display()),
                );
                None
            }
        }
    }

    fn read_tls(&mut self, node: &MarkedYaml<'_>) -> Option<(ServerConfig, ClientAuth)> {
        const KNOWN: &[&str] = &[
            "cert_file",
            "key_file",
            "cert",
            "key",
            "client_auth_type",
            "client_ca_file",
            "client_ca",
            "client_allowed_sans",
            "cipher_suites",
            "prefer_server_cipher_suites",
            "curve_preferences",
            "min_version",
            "max_version",
        ];
        let at = node.span;
        let mut cert = None;
        let mut key = None;
        let mut ca = None;
        let mut auth = (ClientAuth::NoClientCert, at);
        let mut suites: Option<Vec<SupportedCipherSuite>> = None;
        let mut groups: Option<Vec<&'static dyn SupportedKxGroup>> = None;
        let mut min = (2u8, at);
        let mut max = (3u8, at);
        let mut prefer_server = true;
        let mut ok = true;
        for (name, k, v) in self.mapping(node, "tls_server_config") {
            let before = self.errors.len();
            match name.as_str() {
                "cert_file" | "cert" => cert = self.path_or_pem(v, &name, name == "cert"),
                "key_file" | "key" => key = self.path_or_pem(v, &name, name == "key"),
                "client_ca_file" | "client_ca" => {
                    ca = self
                        .path_or_pem(v, &name, name == "client_ca")
                        .map(|b| (b, v.span))
                }
                "client_auth_type" => {
                    if let Some(s) = self.string(v, &name) {
                        auth.1 = v.span;
                        auth.0 = match s.as_str() {
                            "" | "NoClientCert" => ClientAuth::NoClientCert,
                            "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
                            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
                            "RequestClientCert" | "RequireAnyClientCert" => {
                                self.error(
                                    &v.span,
                                    format!(
                                        "client_auth_type `{s}` (a certificate that is not verified) \
                                         is not supported; use VerifyClientCertIfGiven or \
                                         RequireAndVerifyClientCert"
                                    ),
                                );
                                auth.0
                            }
                            _ => {
                                self.error(
                                    &v.span,
                                    format!(
                                        "unknown client_auth_type `{s}`; one of NoClientCert, \
                                         VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                                    ),
                                );
                                auth.0
                            }
                        };
                    }
                }
                "client_allowed_sans" => {
                    if !self.strings(v, &name).is_empty() {
                        self.error(
                            &k.span,
                            "`client_allowed_sans` is not supported by lifeline",
                        );
                    }
                }
                "cipher_suites" => {
                    let names = self.strings(v, &name);
                    suites = Some(self.cipher_suites(&names));
                }
                "curve_preferences" => {
                    let names = self.strings(v, &name);
                    groups = Some(self.curves(&names));
                }
                "prefer_server_cipher_suites" => {
                    prefer_server = self.bool(v, &name).unwrap_or(true);
                }
                "min_version" | "max_version" => {
                    if let Some(s) = self.string(v, &name) {
                        let ver = match s.as_str() {
                            "TLS10" | "TLS11" if name == "min_version" => Some(2),
                            "TLS12" => Some(2),
                            "TLS13" => Some(3),
                            "TLS10" | "TLS11" => {
                                self.error(
                                    &v.span,
                                    format!(
                                        "max_version `{s}`: only TLS12 and TLS13 are supported"
                                    ),
                                );
                                None
                            }
                            _ => {
                                self.error(
                                    &v.span,
                                    format!("`{name}` must be TLS10, TLS11, TLS12 or TLS13"),
                                );
                                None
                            }
                        };
                        if let Some(ver) = ver {
                            if name == "min_version" {
                                if s == "TLS10" || s == "TLS11" {
                                    tracing::info!(
                                        "web config min_version {s}: lifeline offers TLS 1.2 and newer only"
                                    );
                                }
                                min = (ver, v.span);
                            } else {
                                max = (ver, v.span);
                            }
                        }
                    }
                }
                _ => self.unknown(k, &name, "tls_server_config", KNOWN),
            }
            ok &= self.errors.len() == before;
        }
        if min.0 > max.0 {
            self.error(&max.1, "`max_version` is lower than `min_version`");
            ok = false;
        }
        let (Some(cert), Some(key)) = (cert, key) else {
            if ok {
                self.error(
                    &at,
                    "tls_server_config needs cert_file (or cert) and key_file (or key)",
                );
            }
            return None;
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            self.error(&at, "cert_file: no PEM certificate found");
            return None;
        }
        let key = match PrivateKeyDer::from_pem_slice(&key) {
            Ok(k) => k,
            Err(_) => {
                self.error(&at, "key_file: no PEM private key found");
                return None;
            }
        };
        if !ok {
            return None;
        }
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(s) = suites {
            // Go's cipher_suites choose among the TLS 1.2 suites; TLS 1.3 ones stay.
            provider.cipher_suites.retain(|c| c.tls13().is_some());
            provider.cipher_suites.extend(s);
        }
        if let Some(g) = groups.filter(|g| !g.is_empty()) {
            provider.kx_groups = g;
        }
        let provider: Arc<CryptoProvider> = Arc::new(provider);
        let versions: Vec<&'static SupportedProtocolVersion> =
            [(2u8, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
                .into_iter()
                .filter(|(v, _)| (min.0..=max.0).contains(v))
                .map(|(_, p)| p)
                .collect();
        let builder = match ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
        {
            Ok(b) => b,
            Err(e) => {
                self.error(&at, format!("tls_server_config: {e}"));
                return None;
            }
        };
        let builder = match auth.0 {
            ClientAuth::NoClientCert => builder.with_no_client_auth(),
            verify => {
                let Some((pem, ca_span)) = ca else {
                    self.error(
                        &auth.1,
                        "this client_auth_type needs client_ca_file (or client_ca)",
                    );
                    return None;
                };
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    self.error(&ca_span, "client_ca_file: no PEM certificate found");
                    return None;
                }
                let mut vb =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                if verify == ClientAuth::VerifyIfGiven {
                    vb = vb.allow_unauthenticated();
                }
                match vb.build() {
                    Ok(v) => builder.with_client_cert_verifier(v),
                    Err(e) => {
                        self.error(&ca_span, format!("client_ca_file: {e}"));
                        return None;
                    }
                }
            }
        };
        match builder.with_single_cert(certs, key) {
            Ok(mut cfg) => {
                cfg.ignore_client_order = prefer_server;
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some((cfg, auth.0))
            }
            Err(e) => {
                self.error(&at, format!("cert_file/key_file: {e}"));
                None
            }
        }
    }

    fn cipher_suites(&mut self, names: &[(String, Span)]) -> Vec<SupportedCipherSuite> {
        let mut out = Vec::new();
        for (n, span) in names {
            match go_cipher_suite(n) {
                Some(Some(s)) => out.push(s),
                Some(None) => {} // a TLS 1.3 suite: not configurable, as in Go
                None if n.starts_with("TLS_") => self.error(
                    span,
                    format!(
                        "cipher suite `{n}` is not available in lifeline's TLS stack (rustls); \
                         supported: {}",
                        SUPPORTED_SUITES.join(", ")
                    ),
                ),
                None => self.error(span, format!("unknown cipher suite `{n}`")),
            }
        }
        out
    }

    fn curves(&mut self, names: &[(String, Span)]) -> Vec<&'static dyn SupportedKxGroup> {
        let mut out = Vec::new();
        for (n, span) in names {
            match n.as_str() {
                "X25519" => out.push(kx_group::X25519),
                "CurveP256" => out.push(kx_group::SECP256R1),
                "CurveP384" => out.push(kx_group::SECP384R1),
                _ => self.error(
                    span,
                    format!("curve `{n}` is not supported; one of X25519, CurveP256, CurveP384"),
                ),
            }
        }
        out
    }
}

const SUPPORTED_SUITES: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// A Go cipher suite name: `Some(Some(_))` a TLS 1.2 suite rustls has, `Some(None)` a
/// TLS 1.3 suite (always on), `None` not available.
fn go_cipher_suite(name: &str) -> Option<Option<SupportedCipherSuite>> {
    Some(Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return Some(None);
        }
        _ => return None,
    }))
}

fn lower(h: &'static str) -> &'static str {
    match h {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

/// The scalar text of a mapping key.
fn scalar(node: &MarkedYaml<'_>) -> Option<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str) -> Vec<String> {
        match parse(Path::new("web.yml"), src) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn empty_file_and_basic_auth_only_load() {
        assert!(errors("").is_empty());
        let hash = bcrypt::hash("pw", 4).unwrap_or_default();
        let w = parse(
            Path::new("w.yml"),
            &format!("basic_auth_users:\n  alice: {hash}\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.users.map(|u| u.len()), Some(1));
        assert!(w.tls.is_none());
    }

    #[test]
    fn errors_point_at_the_key_or_value() {
        let e = errors("tls_server_config:\n  cert_fil: x\n");
        assert!(
            e[0].starts_with("web.yml:2:3: unknown key `cert_fil`"),
            "{e:?}"
        );
        assert!(e[0].contains("did you mean `cert_file`"), "{e:?}");
        let e = errors("basic_auth_users:\n  bob: plain\n");
        assert!(e[0].starts_with("web.yml:2:8: password of `bob`"), "{e:?}");
        let e = errors("tls_server_config:\n  client_auth_type: Whatever\n");
        assert!(
            e[0].starts_with("web.yml:2:21: unknown client_auth_type"),
            "{e:?}"
        );
        let e = errors("a: [\n");
        assert!(e[0].starts_with("web.yml:"), "{e:?}");
        assert!(e[0].contains("YAML syntax"), "{e:?}");
    }

    #[test]
    fn cipher_suites_rustls_cannot_honour_are_refused_by_name() {
        let e = errors(
            "tls_server_config:\n  cipher_suites:\n    - TLS_RSA_WITH_AES_128_CBC_SHA\n    - TLS_AES_128_GCM_SHA256\n",
        );
        assert_eq!(e.len(), 1, "{e:?}"); // the missing cert/key is not reported on top
        assert!(e[0].starts_with("web.yml:3:7: cipher suite `TLS_RSA_WITH_AES_128_CBC_SHA`"));
    }

    #[test]
    fn headers_are_limited_to_the_exporter_toolkit_set() {
        let e = errors("http_server_config:\n  headers:\n    Set-Cookie: a\n");
        assert!(e[0].contains("cannot be set"), "{e:?}");
        let w = parse(
            Path::new("w.yml"),
            "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.headers.len(), 1);
    }
}
