//! One TLS stack (rustls + ring) for every kind and notifier: client configs that trust
//! the OS roots and optional PEM bundles, check the chain only, or (explicitly) nothing.
//! [`RelaxedVerifier`] is the crate's only custom certificate verifier.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::check::{CheckError, ErrorKind};

/// How a check or notifier verifies the server (the `ca_file` / `tls_skip_verify` keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsOptions {
    /// Extra PEM CA bundle trusted besides the OS roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (logged at warn once at start).
    pub skip_verify: bool,
}

/// What a client config checks of the server's certificate.
#[derive(Debug)]
pub enum Verify {
    /// Nothing: any certificate is accepted (handshake signatures are still checked).
    Nothing,
    /// The chain must lead to one of these roots; the host name is not checked
    /// (libpq `verify-ca`).
    Chain(RootCertStore),
    /// Chain and host name (the WebPKI default).
    Full(RootCertStore),
}

/// Installs the ring provider as the process default (idempotent).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a client config for `opts`: the OS roots plus `ca_file`, or no verification.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, CheckError> {
    let verify = if opts.skip_verify {
        Verify::Nothing
    } else {
        let mut roots = RootCertStore::empty();
        add_native_roots(&mut roots);
        if let Some(path) = &opts.ca_file {
            add_pem_file(&mut roots, path, "ca_file")?;
        }
        Verify::Full(roots)
    };
    Ok(Arc::new(config(verify)?))
}

/// Builds a client config (ring provider, safe default protocol versions, no client
/// auth) that verifies as `verify` says.
pub fn config(verify: Verify) -> Result<ClientConfig, CheckError> {
    install_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CheckError::new(ErrorKind::Tls, e.to_string()))?;
    let relaxed = match verify {
        Verify::Full(roots) => {
            return Ok(builder.with_root_certificates(roots).with_no_client_auth());
        }
        Verify::Nothing => RelaxedVerifier {
            provider,
            chain: None,
        },
        Verify::Chain(roots) => {
            let chain =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| CheckError::new(ErrorKind::Tls, format!("trust roots: {e}")))?;
            RelaxedVerifier {
                provider,
                chain: Some(chain),
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(relaxed))
        .with_no_client_auth())
}

/// Adds the operating system's trust roots (unreadable ones are skipped).
pub fn add_native_roots(roots: &mut RootCertStore) {
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
}

/// Adds every certificate of the PEM bundle at `path`; `what` names the config key in
/// error messages. Returns how many were added.
pub fn add_pem_file(
    roots: &mut RootCertStore,
    path: &Path,
    what: &str,
) -> Result<usize, CheckError> {
    let pem = std::fs::read(path).map_err(|e| {
        CheckError::new(
            ErrorKind::Tls,
            format!("cannot read {what} {}: {e}", path.display()),
        )
    })?;
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| CheckError::new(ErrorKind::Tls, format!("bad {what}: {e}")))?;
        roots
            .add(c)
            .map_err(|e| CheckError::new(ErrorKind::Tls, format!("bad {what}: {e}")))?;
        n += 1;
    }
    Ok(n)
}

/// A verifier weaker than WebPKI's, for what the user asked for explicitly: with a chain
/// verifier, everything but the host name is checked ([`Verify::Chain`]); without one,
/// any certificate passes ([`Verify::Nothing`]). Handshake signatures are always checked.
#[derive(Debug)]
pub struct RelaxedVerifier {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for RelaxedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
