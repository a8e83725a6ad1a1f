//! reqwest clients: how every one is built (user agent, the crate's TLS config), the
//! shared client that token fetches and notifiers use, and what a reqwest error means
//! ([`classify`]) and says ([`describe`]).

use std::time::Duration;

use crate::check::ErrorKind;

/// `lifeline/<version>`, sent by every client.
pub const USER_AGENT: &str = concat!("lifeline/", env!("CARGO_PKG_VERSION"));

/// A client builder with the user agent, `tls` and the agent's resolver
/// ([`super::dns::ReqwestResolver`]) set.
pub fn builder(tls: &rustls::ClientConfig) -> reqwest::ClientBuilder {
    plain_builder().tls_backend_preconfigured(tls.clone())
}

/// Every client starts here: user agent and the agent's resolver (never getaddrinfo).
fn plain_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .dns_resolver(super::dns::ReqwestResolver)
}

/// The shared client (OS roots, 10 s request and 5 s connect timeouts), built once per
/// agent and cloned into token sources and notifiers.
pub fn shared() -> reqwest::Client {
    let b = match super::tls::client_config(&Default::default()) {
        Ok(tls) => builder(&tls),
        Err(_) => plain_builder(),
    };
    b.timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// Classifies a reqwest error by its source chain.
pub fn classify(e: &reqwest::Error) -> ErrorKind {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.downcast_ref::<super::dns::DnsError>().is_some() {
            return ErrorKind::Dns;
        }
        src = s.source();
    }
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
