//! TLS for `postgres`: how `sslmode` and `sslrootcert` become a rustls config, and the one
//! place that knows tokio-postgres-rustls (a connector wrapped so the handshake is timed and
//! its failures can be told apart from login failures).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::dsn::{Dsn, RootCert, SslMode};
use crate::check::{BoxFuture, CheckError, ErrorKind};
use crate::net::tls::{self, CertCapture, Verify};

/// The rustls config for `dsn`'s sslmode, or `None` for `disable`.
///
/// | sslmode | TLS | verification |
/// |---|---|---|
/// | disable | never | – |
/// | prefer | if offered | none (libpq) |
/// | require | required | none; chain only (as verify-ca) when `sslrootcert` is set (libpq) |
/// | verify-ca | required | chain to `sslrootcert` (or OS roots), host name not checked |
/// | verify-full | required | chain and host name |
///
/// The [`CertCapture`] sees the server certificate of each handshake (tokio-postgres does
/// not expose the connection), for `details.tls` and `tls_expiry_warning`.
pub fn tls_config(dsn: &Dsn) -> Result<Option<(rustls::ClientConfig, CertCapture)>, CheckError> {
    let verify = match (dsn.sslmode, &dsn.sslrootcert) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Prefer, _) | (SslMode::Require, None) => Verify::Nothing,
        (SslMode::Require, Some(_)) | (SslMode::VerifyCa, _) => {
            Verify::Chain(roots(dsn.sslrootcert.as_ref())?)
        }
        (SslMode::VerifyFull, _) => Verify::Full(roots(dsn.sslrootcert.as_ref())?),
    };
    let (mut cfg, capture) = tls::config_capturing(verify)?;
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some((cfg, capture)))
}

fn roots(src: Option<&RootCert>) -> Result<rustls::RootCertStore, CheckError> {
    let mut roots = rustls::RootCertStore::empty();
    match src {
        None | Some(RootCert::System) => tls::add_native_roots(&mut roots),
        Some(RootCert::File(path)) => {
            if tls::add_pem_file(&mut roots, path, "sslrootcert")? == 0 {
                return Err(CheckError::new(
                    ErrorKind::Tls,
                    format!("sslrootcert {} holds no certificate", path.display()),
                ));
            }
        }
    }
    Ok(roots)
}

/// What the TLS wrapper saw: how long the handshake took and whether it failed.
#[derive(Default)]
pub(super) struct TlsRecord {
    pub(super) took: Mutex<Option<Duration>>,
    pub(super) started: Mutex<bool>,
    pub(super) failed: Mutex<bool>,
}

/// The TLS connector handed to tokio-postgres: tokio-postgres-rustls, timed.
pub(super) struct TimedTls {
    make: MakeRustlsConnect,
    host: String,
    record: Arc<TlsRecord>,
}

/// The one function that builds the tokio-postgres-rustls glue.
pub(super) fn tls_connector(
    cfg: &rustls::ClientConfig,
    host: &str,
    record: Arc<TlsRecord>,
) -> TimedTls {
    TimedTls {
        make: MakeRustlsConnect::new(cfg.clone()),
        host: host.to_string(),
        record,
    }
}

impl<S> TlsConnect<S> for TimedTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<Self::Stream, Self::Error>>;

    fn connect(mut self, stream: S) -> Self::Future {
        *self.record.started.lock() = true;
        let connector = MakeTlsConnect::<S>::make_tls_connect(&mut self.make, &self.host);
        let record = self.record;
        Box::pin(async move {
            let connector = match connector {
                Ok(c) => c,
                Err(never) => match never {},
            };
            let t = Instant::now();
            let r = connector.connect(stream).await;
            *record.took.lock() = Some(t.elapsed());
            *record.failed.lock() = r.is_err();
            r.map_err(Into::into)
        })
    }
}
