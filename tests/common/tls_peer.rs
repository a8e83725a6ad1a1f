//! An in-process TLS server (tokio-rustls) with a certificate `openssl` makes that
//! expires in a given number of days: accepts, completes the handshake, closes. For
//! tests that need a `tls` check with a known `notAfter` and no external daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

/// A running peer; stops on drop.
pub struct TlsPeer {
    pub addr: SocketAddr,
    /// The CA that signed the server certificate (for `ca_file`).
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
    task: JoinHandle<()>,
}

impl Drop for TlsPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The rustls server config for `server.crt` / `server.key` in `dir`.
pub fn server_config(dir: &std::path::Path) -> Arc<rustls::ServerConfig> {
    lifeline::net::tls::install_provider();
    let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .expect("server.crt")
        .collect::<Result<Vec<_>, _>>()
        .expect("server.crt");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config"),
    )
}

impl TlsPeer {
    /// On 127.0.0.1:<free port>, certificate for `localhost` expiring in `days`.
    pub async fn start(days: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = super::postgres::make_certs_valid(dir.path(), days);
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(dir.path()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS peer");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let a = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = a.accept(s).await {
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    }
                });
            }
        });
        Self {
            addr,
            ca,
            _dir: dir,
            task,
        }
    }
}
