//! A real gRPC server for tests: `tests/peers/grpc/health_server.py` (PyPI `grpcio` +
//! `grpcio-health-checking`, installed by `scripts/test-deps/grpc.sh`) serving
//! `grpc.health.v1.Health` on 127.0.0.1, plaintext or TLS (certificate for `localhost`
//! made by openssl). The test flips statuses through the script's stdin; the server is
//! killed through its child handle on drop (and exits when its stdin closes).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The service every server knows besides the empty one.
pub const SERVICE: &str = "lifeline.Test";

/// A running (or killed) health server.
pub struct GrpcServer {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// The CA of the certificate (TLS servers).
    pub ca: Option<PathBuf>,
    dir: tempfile::TempDir,
    tls: bool,
    child: Option<(Child, ChildStdin, Lines<BufReader<ChildStdout>>)>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/grpc/health_server.py")
}

impl GrpcServer {
    /// Plaintext (h2c).
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// TLS.
    pub async fn start_tls() -> Self {
        Self::launch(true).await
    }

    async fn launch(tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = tls.then(|| super::postgres::make_certs(dir.path()));
        let mut s = GrpcServer {
            port: 0,
            ca,
            dir,
            tls,
            child: None,
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        // scripts/test-deps/grpc.sh makes a venv when the system python lacks grpcio.
        let venv = script().with_file_name("venv/bin/python3");
        let python = if venv.is_file() {
            venv
        } else {
            super::require_bin("python3", "python3", &[])
        };
        let mut cmd = Command::new(python);
        cmd.arg(script())
            .args(["--port", &self.port.to_string(), "--serving", SERVICE]);
        if self.tls {
            let d = self.dir.path();
            cmd.arg("--cert")
                .arg(d.join("server.crt"))
                .arg("--key")
                .arg(d.join("server.key"));
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python3 health_server.py");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let port = match first {
            Ok(Ok(Some(l))) => l.strip_prefix("PORT ").and_then(|p| p.trim().parse().ok()),
            _ => None,
        };
        let Some(port) = port else {
            let _ = child.start_kill();
            let out = child
                .wait_with_output()
                .await
                .expect("health server output");
            panic!(
                "the gRPC health server did not start (install its PyPI packages with scripts/test-deps/grpc.sh):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        self.port = port;
        self.child = Some((child, stdin, lines));
        super::wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10)).await;
    }

    /// Sets the serving status of `service` (`""`: the server as a whole) to `status`
    /// (`SERVING`, `NOT_SERVING`, `SERVICE_UNKNOWN`).
    pub async fn set(&mut self, service: &str, status: &str) {
        let (_, stdin, lines) = self.child.as_mut().expect("server running");
        let name = if service.is_empty() { "-" } else { service };
        stdin
            .write_all(format!("set {name} {status}\n").as_bytes())
            .await
            .expect("write to health server");
        let reply = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("health server answers in time")
            .expect("read health server");
        assert_eq!(reply.as_deref(), Some("ok"), "set {service} {status}");
    }

    /// The server's process id (for [`super::stale::Frozen`]); empty once killed.
    pub fn pids(&self) -> Vec<u32> {
        self.child.iter().filter_map(|(c, _, _)| c.id()).collect()
    }

    async fn kill_child(&mut self) {
        if let Some((mut c, _, _)) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

impl super::scenarios::RestartablePeer for GrpcServer {
    fn kind(&self) -> &'static str {
        "grpc"
    }

    async fn sigkill(&mut self) {
        self.kill_child().await;
    }

    /// Starts again on the same port.
    async fn start_again(&mut self) {
        assert!(self.child.is_none(), "restart a running server");
        self.spawn().await;
    }
}
