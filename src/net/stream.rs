//! A byte stream to a peer, plain or TLS, for kinds that speak their own wire protocol
//! (`grpc`, `mysql`, `mqtt`): a timed TCP connect through [`super::addr::connect`], reads
//! counted against a [`ReadBudget`], and an optional timed TLS handshake (also usable
//! mid-stream, as MySQL's `SSLRequest` needs) with a connector built from
//! [`super::tls::client_config`].

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::capped::{Capped, ReadBudget};
use super::tls::{self, TlsOptions};
use crate::check::{CheckError, ErrorKind, Phases};

/// Anything a kind can read from and write to (TCP, TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// A TLS connector for `opts` (OS roots + `ca_file`, or no verification), offering the
/// ALPN protocols `alpn` (empty: none). The client config comes from
/// [`tls::client_config`], so whatever that facility adds applies here too.
pub fn connector(opts: &TlsOptions, alpn: &[&[u8]]) -> Result<TlsConnector, CheckError> {
    let base = tls::client_config(opts)?;
    if alpn.is_empty() {
        return Ok(TlsConnector::from(base));
    }
    let mut cfg = (*base).clone();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// [`connector`] when `tls` is on (a kind's `tls = true`), else `None`.
pub fn connector_if(
    tls: bool,
    opts: &TlsOptions,
    alpn: &[&[u8]],
) -> Result<Option<TlsConnector>, CheckError> {
    tls.then(|| connector(opts, alpn)).transpose()
}

/// Connects to `address` (timing `dns` and `connect`), counting reads against `budget`,
/// then, with a connector, runs the TLS handshake for `host` (timing `tls`).
pub async fn open(
    address: &str,
    host: &str,
    tls: Option<&TlsConnector>,
    budget: Arc<ReadBudget>,
    phases: &mut Phases,
) -> Result<BoxIo, CheckError> {
    Ok(open_with_cert(address, host, tls, budget, phases).await?.0)
}

/// [`open`], also returning the server certificate the TLS handshake saw (for
/// `tls_expiry_warning`; `None` without TLS).
pub async fn open_with_cert(
    address: &str,
    host: &str,
    tls: Option<&TlsConnector>,
    budget: Arc<ReadBudget>,
    phases: &mut Phases,
) -> Result<(BoxIo, Option<super::tls::PeerCert>), CheckError> {
    let tcp = super::addr::connect(address, phases).await?;
    let io: BoxIo = Box::new(Capped::new(tcp, budget));
    match tls {
        None => Ok((io, None)),
        Some(c) => upgrade_with_cert(io, host, c, phases).await,
    }
}

/// Runs a TLS handshake for `host` over `io`, timing `phases.tls`; failures are `tls`.
pub async fn upgrade(
    io: BoxIo,
    host: &str,
    connector: &TlsConnector,
    phases: &mut Phases,
) -> Result<BoxIo, CheckError> {
    Ok(upgrade_with_cert(io, host, connector, phases).await?.0)
}

/// [`upgrade`], also returning the server certificate.
pub async fn upgrade_with_cert(
    io: BoxIo,
    host: &str,
    connector: &TlsConnector,
    phases: &mut Phases,
) -> Result<(BoxIo, Option<super::tls::PeerCert>), CheckError> {
    let name = ServerName::try_from(super::addr::unbracket(host).to_string())
        .map_err(|e| CheckError::new(ErrorKind::Tls, format!("invalid TLS server name: {e}")))?;
    let t = Instant::now();
    let s = connector
        .connect(name, io)
        .await
        .map_err(|e| CheckError::new(ErrorKind::Tls, format!("TLS handshake: {e}")))?;
    phases.tls = Some(t.elapsed());
    let cert = super::tls::stream_cert(&s);
    Ok((Box::new(s), cert))
}

/// Reads `host:port` or a bare `host` (then `default_port`), IPv6 in brackets; `None` if
/// the host is empty or the port is not a number.
pub fn host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some((host, port)) = super::addr::split_host_port(s) {
        return Some((host.to_string(), port));
    }
    let bare = super::addr::unbracket(s);
    let plain_v6 = s.starts_with('[') && s.ends_with(']');
    let ok = !bare.is_empty() && (plain_v6 || !bare.contains(':'));
    ok.then(|| (bare.to_string(), default_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_defaults() {
        assert_eq!(host_port("db:3307", 3306), Some(("db".into(), 3307)));
        assert_eq!(host_port("db", 3306), Some(("db".into(), 3306)));
        assert_eq!(host_port("[::1]", 1883), Some(("::1".into(), 1883)));
        assert_eq!(host_port("[::1]:8883", 1883), Some(("::1".into(), 8883)));
        assert_eq!(host_port("db:x", 1), None);
        assert_eq!(host_port("", 1), None);
    }
}
