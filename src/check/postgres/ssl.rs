//! TLS for `postgres`: how `sslmode` and `sslrootcert` become a rustls config, and the one
//! place that knows tokio-postgres-rustls (a connector wrapped so the handshake is timed and
//! its failures can be told apart from login failures).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::dsn::{Dsn, RootCert, SslMode};
use super::tls;
use crate::check::{BoxFuture, CheckError, ErrorKind};

/// The rustls config for `dsn`'s sslmode, or `None` for `disable`.
///
/// | sslmode | TLS | verification |
/// |---|---|---|
/// | disable | never | – |
/// | prefer | if offered | none (libpq) |
/// | require | required | none; chain only (as verify-ca) when `sslrootcert` is set (libpq) |
/// | verify-ca | required | chain to `sslrootcert` (or OS roots), host name not checked |
/// | verify-full | required | chain and host name |
pub fn tls_config(dsn: &Dsn) -> Result<Option<rustls::ClientConfig>, CheckError> {
    super::tls::install_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CheckError::new(ErrorKind::Tls, e.to_string()))?;
    let verify = match (dsn.sslmode, &dsn.sslrootcert) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Prefer, _) | (SslMode::Require, None) => Verify::Nothing,
        (SslMode::Require, Some(_)) | (SslMode::VerifyCa, _) => Verify::Chain,
        (SslMode::VerifyFull, _) => Verify::Full,
    };
    let mut cfg = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(super::tls::NoVerify(provider)))
            .with_no_client_auth(),
        Verify::Chain | Verify::Full => {
            let roots = Arc::new(roots(dsn.sslrootcert.as_ref())?);
            if verify == Verify::Full {
                builder.with_root_certificates(roots).with_no_client_auth()
            } else {
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| CheckError::new(ErrorKind::Tls, format!("sslrootcert: {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                    .with_no_client_auth()
            }
        }
    };
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(cfg))
}

#[derive(PartialEq)]
enum Verify {
    Nothing,
    Chain,
    Full,
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

/// `verify-ca`: the full WebPKI check except the host name.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
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
