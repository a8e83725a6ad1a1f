//! The agent's own HTTP surface (issue 13): TLS and basic auth from an exporter-toolkit
//! web config (scraped by a real Prometheus), limits, browser safety, gzip.

mod browser;
mod limits;
mod tls_auth;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;

/// Certificates made by `openssl` in a temp dir: a CA, a server certificate for
/// 127.0.0.1/localhost and a client certificate, all signed by the CA.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn make() -> Self {
        let openssl = crate::common::require_bin("openssl", "openssl", &[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=lifeline test CA",
        ]);
        run(&ca);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("write ext");
        for who in ["server", "client"] {
            let mut req = vec!["req"];
            req.extend(ec);
            let key = format!("{who}.key");
            let csr = format!("{who}.csr");
            let crt = format!("{who}.crt");
            let ext = format!("{who}.ext");
            let subj = format!("/CN={who}");
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&req);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client trusting the test CA, optionally presenting the client certificate.
    pub fn client(&self, with_cert: bool) -> reqwest::Client {
        lifeline::net::tls::install_provider();
        let mut roots = rustls::RootCertStore::empty();
        lifeline::net::tls::add_pem_file(&mut roots, &self.path("ca.crt"), "ca").expect("ca");
        let b = rustls::ClientConfig::builder().with_root_certificates(roots);
        let cfg = if with_cert {
            use rustls::pki_types::pem::PemObject;
            let certs =
                rustls::pki_types::CertificateDer::pem_slice_iter(&read(&self.path("client.crt")))
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert");
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(&read(&self.path("client.key")))
                    .expect("client key");
            b.with_client_auth_cert(certs, key).expect("client auth")
        } else {
            b.with_no_client_auth()
        };
        reqwest::Client::builder()
            .tls_backend_preconfigured(cfg)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// A plain client.
pub fn client() -> reqwest::Client {
    lifeline::net::tls::install_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A client for event streams: no total deadline (a stream lives as long as the test needs
/// it), but each read must make progress within 10 s.
pub fn stream_client() -> reqwest::Client {
    lifeline::net::tls::install_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A bcrypt hash of `pw` (cost 4: fast tests; real files use 10+).
pub fn hash(pw: &str) -> String {
    bcrypt::hash(pw, 4).expect("bcrypt")
}

/// `Authorization: Basic …`.
pub fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// The value of the series `name` (exact text before the value) in an exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `/metrics` of a running in-process agent, read without HTTP.
pub fn metrics_of(a: &crate::common::TestAgent) -> String {
    a.agent.shared.metrics.render()
}
