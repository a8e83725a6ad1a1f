//! `tls` (probe): a bare TLS handshake with `address` (`host:port`): healthy when the
//! handshake succeeds and the server certificate verifies (OS roots plus `ca_file`, host
//! name `server_name`, default the host of `address`), `degraded` with
//! `error_kind = "tls"` when the certificate expires within `tls_expiry_warning`.
//! The certificate is reported under `details.tls` even when verification fails (an
//! expired certificate shows its `not_after`).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::ParseCx;
use super::{Attempt, BoxFuture, BuildEnv, Check, CheckError, KindSpec, Outcome, Phases};
use crate::config::raw::Table;
use crate::net::addr::{connect, split_host_port};
use crate::net::tls::CertOutcome;
use crate::net::tls::{self, CertCapture, TlsOptions};

/// `tls` settings.
#[derive(Debug, Clone)]
pub struct TlsSpec {
    /// `host:port`.
    pub address: String,
    /// SNI and the name the certificate must carry (default: the host of `address`).
    pub server_name: String,
    /// Certificate handling (`ca_file`, `tls_skip_verify`).
    pub tls: TlsOptions,
    /// `tls_expiry_warning` (`None`: off).
    pub expiry_warning: Option<Duration>,
}

/// Reads `address`, `server_name`, `ca_file`, `tls_skip_verify`, `tls_expiry_warning`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let a = t.req_str("address");
    let server_name = t.str("server_name");
    let tls = t.tls_options();
    let expiry_warning = t.tls_expiry_warning();
    let a = a?;
    let Some((host, _)) = split_host_port(&a.value) else {
        t.error(
            a.span,
            format!("`address` must be HOST:PORT, got `{}`", a.value),
        );
        return None;
    };
    let server_name = match server_name {
        Some(s) if rustls::pki_types::ServerName::try_from(s.value.as_str()).is_err() => {
            t.error(
                s.span,
                format!(
                    "`server_name` must be a DNS name or an IP address, got `{}`",
                    s.value
                ),
            );
            return None;
        }
        Some(s) => s.value,
        None => crate::net::addr::unbracket(host).to_string(),
    };
    Some(Arc::new(TlsSpec {
        address: a.value,
        server_name,
        tls,
        expiry_warning,
    }))
}

impl KindSpec for TlsSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let (cfg, capture) = tls::client_config_capturing(&self.tls)?;
        Ok(Arc::new(TlsCheck {
            spec: self.clone(),
            cfg,
            capture,
        }))
    }
}

struct TlsCheck {
    spec: TlsSpec,
    cfg: Arc<rustls::ClientConfig>,
    capture: CertCapture,
}

impl Check for TlsCheck {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            let mut phases = Phases::default();
            self.capture.clear();
            let tcp = match connect(&self.spec.address, &mut phases).await {
                Ok(s) => s,
                Err(e) => return Outcome::down(e, start.elapsed()).with_phases(phases),
            };
            let r = tls::handshake(tcp, &self.spec.server_name, &self.cfg, &mut phases).await;
            let latency = start.elapsed();
            let warn = self.spec.expiry_warning;
            match r {
                Ok(mut s) => {
                    let (_, conn) = s.get_ref();
                    let version = match conn.protocol_version() {
                        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
                        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
                        _ => "TLS",
                    };
                    let cert = tls::stream_cert(&s).or_else(|| self.capture.get());
                    let msg = match &cert {
                        Some(c) => format!(
                            "{version}, certificate valid until {}",
                            crate::time::rfc3339(c.not_after)
                        ),
                        None => version.to_string(),
                    };
                    let o = Outcome::up(latency)
                        .with_phases(phases)
                        .with_message(msg)
                        .with_detail("tls_version", version)
                        .with_peer_cert(cert, warn);
                    // close_notify, bounded: the result is already known.
                    let _ = tokio::time::timeout(Duration::from_millis(200), s.shutdown()).await;
                    o
                }
                Err(e) => Outcome::down(e, latency)
                    .with_phases(phases)
                    .with_peer_cert(self.capture.get(), warn),
            }
        })
    }
}
