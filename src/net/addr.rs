//! Addresses: `host:port` parsing and formatting (IPv6 in brackets), percent-decoding of
//! URL components, and the TCP connect every TCP-based kind starts with.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::check::{CheckError, ErrorKind, Phases};

/// Splits `host:port` (`[v6]:port` too); the host comes back without brackets.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = unbracket(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// `host:port`, with an IPv6 host in brackets (`[::1]:80`). `host` may already carry
/// brackets (as `url::Url::host_str` gives them).
pub fn join_host_port(host: &str, port: u16) -> String {
    let host = unbracket(host);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host` without the brackets of an IPv6 literal (`[::1]` → `::1`).
pub fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A percent-decoded URL component that is not text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("URL component is not UTF-8 after percent-decoding")]
pub struct NotUtf8;

/// Percent-decodes a URL component (user, password, path).
pub fn percent_decode(s: &str) -> Result<String, NotUtf8> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| NotUtf8)
}

/// Resolves and connects to `address` (`host:port`), timing `phases.dns` and
/// `phases.connect`; every address the name resolves to is tried in turn.
pub async fn connect(address: &str, phases: &mut Phases) -> Result<TcpStream, CheckError> {
    let t0 = Instant::now();
    let addrs: Vec<SocketAddr> = match address.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => tokio::net::lookup_host(address)
            .await
            .map_err(|e| CheckError::new(ErrorKind::Dns, format!("resolve {address}: {e}")))?
            .collect(),
    };
    phases.dns = Some(t0.elapsed());
    let t1 = Instant::now();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                phases.connect = Some(t1.elapsed());
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(CheckError::io(&format!("connect {a}"), &e)),
        }
    }
    Err(last.unwrap_or_else(|| CheckError::new(ErrorKind::Dns, format!("{address}: no addresses"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("db:5432"), Some(("db", 5432)));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1", 80)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":80"), None);
    }

    #[test]
    fn joins_with_brackets_for_v6() {
        assert_eq!(join_host_port("db", 5432), "db:5432");
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert_eq!(join_host_port("[::1]", 80), "[::1]:80");
    }

    #[test]
    fn decodes_components() {
        assert_eq!(percent_decode("p%40ss").unwrap(), "p@ss");
        assert!(percent_decode("%ff").is_err());
    }
}
