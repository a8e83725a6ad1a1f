//! One TLS stack (rustls + ring) for every kind: client configs with the OS roots, an
//! optional extra CA file, or (explicitly) no verification.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{CheckError, ErrorKind};

/// How a check verifies the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsOptions {
    /// Extra PEM CA bundle trusted besides the OS roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any certificate (logged at warn once at start).
    pub skip_verify: bool,
}

/// Installs the ring provider as the process default (idempotent).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a client config for `opts`.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, CheckError> {
    install_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CheckError::new(ErrorKind::Tls, e.to_string()))?;
    let cfg = if opts.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        add_native_roots(&mut roots);
        if let Some(path) = &opts.ca_file {
            add_pem_file(&mut roots, path, "ca_file")?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(cfg))
}

/// Adds the operating system's trust roots (unreadable ones are skipped).
pub fn add_native_roots(roots: &mut rustls::RootCertStore) {
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
}

/// Adds every certificate of the PEM bundle at `path`; `what` names the config key in
/// error messages. Returns how many were added.
pub fn add_pem_file(
    roots: &mut rustls::RootCertStore,
    path: &std::path::Path,
    what: &str,
) -> Result<usize, CheckError> {
    let pem = std::fs::read(path).map_err(|e| {
        CheckError::new(
            ErrorKind::Tls,
            format!("cannot read {what} {}: {e}", path.display()),
        )
    })?;
    let mut n = 0;
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| CheckError::new(ErrorKind::Tls, format!("bad {what}: {e}")))?;
        roots
            .add(c)
            .map_err(|e| CheckError::new(ErrorKind::Tls, format!("bad {what}: {e}")))?;
        n += 1;
    }
    Ok(n)
}

/// Accepts every certificate (still checks handshake signatures).
#[derive(Debug)]
pub struct NoVerify(pub Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads the common `ca_file` / `tls_skip_verify` keys.
pub fn read_options(t: &crate::config::raw::Table<'_, '_>) -> TlsOptions {
    let ca_file = t.str("ca_file").map(|s| t.loader().base.join(s.value));
    let skip_verify = t.bool("tls_skip_verify").unwrap_or(false);
    if skip_verify {
        tracing::warn!("tls_skip_verify = true: server certificates are not verified");
    }
    TlsOptions {
        ca_file,
        skip_verify,
    }
}
