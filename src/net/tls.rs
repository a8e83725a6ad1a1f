//! One TLS stack (rustls + ring) for every kind and notifier: client configs that trust
//! the OS roots and optional PEM bundles, check the chain only, or (explicitly) nothing.
//! [`RelaxedVerifier`] is the crate's only custom certificate verifier ([`CertCapture`]
//! wraps a verifier without changing what it decides).
//!
//! TLS expiry: every kind that does TLS reads the server's leaf certificate into a
//! [`PeerCert`] (from a rustls connection with [`peer_cert`], from DER bytes with
//! [`PeerCert::from_der`], or, for drivers that hide the connection, through a config
//! built by [`config_capturing`]) and hands it to `Outcome::with_peer_cert`, which puts
//! it under `details.tls`, exports its `not_after` and applies `tls_expiry_warning`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

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
    Ok(Arc::new(config(verify_for(opts)?)?))
}

/// What `opts` asks to verify against: the OS roots plus `ca_file`, or nothing.
fn verify_for(opts: &TlsOptions) -> Result<Verify, CheckError> {
    if opts.skip_verify {
        return Ok(Verify::Nothing);
    }
    let mut roots = RootCertStore::empty();
    add_native_roots(&mut roots);
    if let Some(path) = &opts.ca_file {
        add_pem_file(&mut roots, path, "ca_file")?;
    }
    Ok(Verify::Full(roots))
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

/// Default `tls_expiry_warning`: a check whose server certificate expires within 14 days
/// is `degraded` (what Gatus and blackbox_exporter users alert on).
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Most subject alternative names kept from one certificate (a CDN certificate may list
/// hundreds; the rest are counted in the message, not stored).
pub const MAX_SANS: usize = 32;

/// The facts of a server's leaf certificate that expiry monitoring needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// End of validity (`notAfter`).
    pub not_after: SystemTime,
    /// Start of validity (`notBefore`).
    pub not_before: SystemTime,
    /// Subject distinguished name, RFC 4514 (`CN=example.com,O=Example`).
    pub subject: String,
    /// Issuer distinguished name, RFC 4514.
    pub issuer: String,
    /// Subject alternative names (DNS names as written, IP addresses in text form), at
    /// most [`MAX_SANS`].
    pub sans: Vec<String>,
}

impl PeerCert {
    /// Parses a DER certificate. A certificate the peer sent that cannot be parsed is a
    /// `tls` error.
    pub fn from_der(der: &[u8]) -> Result<Self, CheckError> {
        let bad = |e: x509_cert::der::Error| {
            CheckError::new(
                ErrorKind::Tls,
                format!("unparsable server certificate: {e}"),
            )
        };
        let cert = x509_cert::Certificate::from_der(der).map_err(bad)?;
        let tbs = &cert.tbs_certificate;
        let mut sans = Vec::new();
        if let Some((_, SubjectAltName(names))) = tbs.get::<SubjectAltName>().map_err(bad)? {
            for n in names.iter().take(MAX_SANS) {
                match n {
                    GeneralName::DnsName(d) => sans.push(d.to_string()),
                    GeneralName::IpAddress(ip) => {
                        let b = ip.as_bytes();
                        let addr = match b.len() {
                            4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
                            16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
                            _ => None,
                        };
                        if let Some(a) = addr {
                            sans.push(a.to_string());
                        }
                    }
                    GeneralName::Rfc822Name(m) => sans.push(format!("email:{m}")),
                    GeneralName::UniformResourceIdentifier(u) => sans.push(format!("uri:{u}")),
                    _ => {}
                }
            }
        }
        let at = |t: x509_cert::time::Time| SystemTime::UNIX_EPOCH + t.to_unix_duration();
        Ok(Self {
            not_after: at(tbs.validity.not_after),
            not_before: at(tbs.validity.not_before),
            subject: crate::check::clip(&tbs.subject.to_string(), 512).into_owned(),
            issuer: crate::check::clip(&tbs.issuer.to_string(), 512).into_owned(),
            sans,
        })
    }

    /// Time left until `not_after` (negative when expired), in seconds.
    pub fn seconds_left(&self, now: SystemTime) -> f64 {
        crate::time::unix_secs_f64(self.not_after) - crate::time::unix_secs_f64(now)
    }

    /// `not_after` as Unix seconds (the value of
    /// `lifeline_check_tls_not_after_timestamp_seconds`).
    pub fn not_after_unix(&self) -> f64 {
        crate::time::unix_secs_f64(self.not_after)
    }

    /// `{not_after, not_before, issuer, subject, sans}` (times in RFC 3339), the value of
    /// `details.tls`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "not_after": crate::time::rfc3339(self.not_after),
            "not_before": crate::time::rfc3339(self.not_before),
            "issuer": self.issuer,
            "subject": self.subject,
            "sans": self.sans,
        })
    }
}

/// The leaf certificate of an established rustls client connection (`None` before the
/// handshake, or when it cannot be parsed). For tokio-rustls: `peer_cert(stream.get_ref().1)`.
pub fn peer_cert(conn: &rustls::ClientConnection) -> Option<PeerCert> {
    let leaf = conn.peer_certificates()?.first()?;
    PeerCert::from_der(leaf.as_ref()).ok()
}

/// The last leaf certificate a config built by [`config_capturing`] was shown, for
/// drivers that do not expose their rustls connection (tokio-postgres, tonic). One per
/// check: a check runs one attempt at a time, so "last" is this attempt's certificate.
#[derive(Debug, Clone, Default)]
pub struct CertCapture(Arc<Mutex<Option<CertificateDer<'static>>>>);

impl CertCapture {
    /// Forgets the certificate seen so far (call before connecting).
    pub fn clear(&self) {
        *self.0.lock() = None;
    }

    /// The certificate seen by the last handshake, parsed.
    pub fn get(&self) -> Option<PeerCert> {
        let der = self.0.lock().clone()?;
        PeerCert::from_der(der.as_ref()).ok()
    }
}

/// Like [`config`], but every leaf certificate the verifier is shown is also kept in the
/// returned [`CertCapture`] (whatever the verdict, so an expired certificate is reported
/// too). What is accepted does not change.
pub fn config_capturing(verify: Verify) -> Result<(ClientConfig, CertCapture), CheckError> {
    install_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = |roots: RootCertStore| {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| CheckError::new(ErrorKind::Tls, format!("trust roots: {e}")))
    };
    let inner: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Full(roots) => webpki(roots)?,
        Verify::Chain(roots) => Arc::new(RelaxedVerifier {
            provider: provider.clone(),
            chain: Some(webpki(roots)?),
        }),
        Verify::Nothing => Arc::new(RelaxedVerifier {
            provider: provider.clone(),
            chain: None,
        }),
    };
    let capture = CertCapture::default();
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CheckError::new(ErrorKind::Tls, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capturing {
            inner,
            seen: capture.clone(),
        }))
        .with_no_client_auth();
    Ok((cfg, capture))
}

/// [`client_config`] with a [`CertCapture`].
pub fn client_config_capturing(
    opts: &TlsOptions,
) -> Result<(Arc<ClientConfig>, CertCapture), CheckError> {
    let (cfg, cap) = config_capturing(verify_for(opts)?)?;
    Ok((Arc::new(cfg), cap))
}

/// Records the leaf certificate, then asks the real verifier.
#[derive(Debug)]
struct Capturing {
    inner: Arc<dyn ServerCertVerifier>,
    seen: CertCapture,
}

impl ServerCertVerifier for Capturing {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.0.lock() = Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// A TLS client stream over any transport.
pub type ClientStream<S> = tokio_rustls::client::TlsStream<S>;

/// The TLS handshake over a connected `stream`, with SNI (and host-name verification)
/// for `server_name` (a DNS name or an IP literal), timed into `phases.tls`. Failures
/// are `tls`. Returns the stream; [`stream_cert`] reads its certificate.
pub async fn handshake<S>(
    stream: S,
    server_name: &str,
    cfg: &Arc<ClientConfig>,
    phases: &mut crate::check::Phases,
) -> Result<ClientStream<S>, CheckError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name =
        ServerName::try_from(super::addr::unbracket(server_name).to_string()).map_err(|e| {
            CheckError::new(
                ErrorKind::Tls,
                format!("invalid TLS server name {server_name}: {e}"),
            )
        })?;
    let t = tokio::time::Instant::now();
    let s = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, stream)
        .await
        .map_err(|e| CheckError::new(ErrorKind::Tls, format!("TLS handshake: {e}")))?;
    phases.tls = Some(t.elapsed());
    Ok(s)
}

/// The leaf certificate of a tokio-rustls client stream ([`peer_cert`]).
pub fn stream_cert<S>(s: &ClientStream<S>) -> Option<PeerCert> {
    peer_cert(s.get_ref().1)
}

/// What a kind does with the certificate it read: `outcome.with_peer_cert(cert, warning)`.
pub trait CertOutcome {
    /// Records the server's certificate (`details.tls`, the not-after metric) and applies
    /// `tls_expiry_warning`: a success whose certificate expires within `warning` (or has
    /// expired, when verification is off) becomes `Warn(tls)`. `None` certificates leave
    /// the outcome as it is; a `None` warning only reports.
    fn with_peer_cert(self, cert: Option<PeerCert>, warning: Option<Duration>) -> Self;
}

impl CertOutcome for crate::check::Outcome {
    fn with_peer_cert(mut self, cert: Option<PeerCert>, warning: Option<Duration>) -> Self {
        let Some(cert) = cert else {
            return self;
        };
        self.details.insert("tls".to_string(), cert.to_json());
        let left = cert.seconds_left(std::time::SystemTime::now());
        if let Some(w) = warning
            && self.verdict == crate::check::Verdict::Up
            && left < w.as_secs_f64()
        {
            let when = crate::time::rfc3339(cert.not_after);
            let note = if left <= 0.0 {
                format!("certificate expired {} ago ({when})", days_hours(-left))
            } else {
                format!("certificate expires in {} ({when})", days_hours(left))
            };
            self.verdict = crate::check::Verdict::Warn(Some(ErrorKind::Tls));
            self.message = if self.message.is_empty() {
                note
            } else {
                format!("{}; {note}", self.message)
            };
        }
        self.tls_not_after = Some(cert.not_after);
        self
    }
}

/// `3d 4h`, `5h 10m`, `12m`: a time left, as people read it.
fn days_hours(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}
