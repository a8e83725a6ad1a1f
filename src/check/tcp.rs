//! `tcp` (probe): healthy when a TCP connection to `address` succeeds.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, ErrorKind, KindSpec, Outcome, Phases,
};
use crate::config::raw::Table;

/// `tcp` settings.
#[derive(Debug, Clone)]
pub struct TcpSpec {
    /// `host:port`.
    pub address: String,
}

/// Reads `address`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let a = t.req_str("address")?;
    if split_host_port(&a.value).is_none() {
        t.error(
            a.span,
            format!("`address` must be HOST:PORT, got `{}`", a.value),
        );
        return None;
    }
    Some(Arc::new(TcpSpec { address: a.value }))
}

/// Splits `host:port` (`[v6]:port` too).
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

impl KindSpec for TcpSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        Ok(Arc::new(TcpCheck {
            address: self.address.clone(),
        }))
    }
}

struct TcpCheck {
    address: String,
}

/// Resolves and connects, timing both phases; used by every TCP-based kind.
pub async fn connect(address: &str, phases: &mut Phases) -> Result<TcpStream, CheckError> {
    let t0 = Instant::now();
    let addrs: Vec<std::net::SocketAddr> = match address.parse::<std::net::SocketAddr>() {
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

impl Check for TcpCheck {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let mut phases = Phases::default();
            match connect(&self.address, &mut phases).await {
                Ok(stream) => {
                    drop(stream);
                    Outcome::up(start.elapsed()).with_phases(phases)
                }
                Err(e) => Outcome::down(e, start.elapsed()).with_phases(phases),
            }
        })
    }
}

/// Default when a kind needs a duration nobody configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

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
}
