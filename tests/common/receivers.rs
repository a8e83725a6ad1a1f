//! Real notification receivers for the alerting tests: an HTTP receiver that records
//! every POST (and can answer 503 on demand), an SMTP server (Debian `python3-aiosmtpd`)
//! that saves every message, and a real Alertmanager (Debian `prometheus-alertmanager`).
//! Each is started on a free port in a temp dir and killed on drop (by handle).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::{free_port, require_bin, wait_for, wait_listening};

/// One request the HTTP receiver got.
#[derive(Debug, Clone)]
pub struct Post {
    /// Request path.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// The body as JSON (Null if it was not JSON).
    pub json: serde_json::Value,
    /// What the receiver answered.
    pub answered: u16,
    /// When it arrived (wall clock, comparable with timestamps in the payload).
    pub received: std::time::SystemTime,
}

/// An HTTP receiver on 127.0.0.1.
pub struct HttpReceiver {
    pub addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
    fail: Arc<AtomicUsize>,
    fail_status: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpReceiver {
    /// Starts on a free port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts on `port` (0 = any).
    pub async fn start_on(port: u16) -> Self {
        Self::start_at(std::net::Ipv4Addr::LOCALHOST, port).await
    }

    /// Starts on `ip:port` (0 = any port), e.g. the host end of a test namespace's veth.
    pub async fn start_at(ip: std::net::Ipv4Addr, port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
        let fail = Arc::new(AtomicUsize::new(0));
        let fail_status = Arc::new(AtomicUsize::new(503));
        let (p, f, fs) = (posts.clone(), fail.clone(), fail_status.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let (p, f, fs) = (p.clone(), f.clone(), fs.clone());
                async move {
                    let failing = f
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let status = if failing {
                        fs.load(Ordering::SeqCst) as u16
                    } else {
                        200
                    };
                    p.lock().push(Post {
                        path: uri.path().to_string(),
                        headers,
                        json: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                        body,
                        answered: status,
                        received: std::time::SystemTime::now(),
                    });
                    (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), "ok")
                }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            posts,
            fail,
            fail_status,
            task,
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers the next `n` requests with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.fail_status.store(status as usize, Ordering::SeqCst);
        self.fail.store(n, Ordering::SeqCst);
    }

    /// Every request so far.
    pub fn all(&self) -> Vec<Post> {
        self.posts.lock().clone()
    }

    /// Requests answered 200 on `path`.
    pub fn delivered(&self, path: &str) -> Vec<Post> {
        self.posts
            .lock()
            .iter()
            .filter(|p| p.answered == 200 && p.path == path)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` requests on `path` were answered 200.
    pub async fn wait_delivered(&self, path: &str, n: usize, within: Duration) -> Vec<Post> {
        wait_for(within, &format!("{n} delivered POSTs on {path}"), || {
            let d = self.delivered(path);
            (d.len() >= n).then_some(d)
        })
        .await
    }

    /// Stops listening (the port is closed).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn python3() -> PathBuf {
    // The Debian package installs the module for the system interpreter.
    let p = PathBuf::from("/usr/bin/python3");
    if p.is_file() {
        p
    } else {
        require_bin("python3", "python3", &[])
    }
}

/// An SMTP server (aiosmtpd) saving messages into a temp dir.
pub struct SmtpServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: tokio::process::Child,
}

/// One message the SMTP server accepted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub tls: bool,
    pub content: String,
}

impl SmtpServer {
    /// Starts aiosmtpd on a free port; with `starttls`, it offers STARTTLS with a fresh
    /// self-signed certificate (made with the `openssl` command).
    pub async fn start(starttls: bool) -> Self {
        let py = python3();
        let ok = std::process::Command::new(&py)
            .args(["-c", "import aiosmtpd"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "python module aiosmtpd missing: install the Debian package `python3-aiosmtpd`"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("mail");
        std::fs::create_dir_all(&out).expect("mkdir");
        let port = free_port();
        let mut cmd = tokio::process::Command::new(&py);
        cmd.env("PYTHONPATH", super::data("alerting"))
            .args(["-m", "aiosmtpd", "-n", "-c", "smtp_capture.Handler", "-l"])
            .arg(format!("127.0.0.1:{port}"));
        if starttls {
            let openssl = require_bin("openssl", "openssl", &[]);
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            let st = std::process::Command::new(openssl)
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("run openssl");
            assert!(st.success(), "openssl could not make a certificate");
            cmd.arg("--tlscert").arg(&cert).arg("--tlskey").arg(&key);
        }
        cmd.arg(&out)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null());
        let child = cmd.spawn().expect("spawn aiosmtpd");
        wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10)).await;
        Self { port, dir, child }
    }

    /// Messages received so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        let out = self.dir.path().join("mail");
        let mut v: Vec<(u64, Mail)> = std::fs::read_dir(&out)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        let n: u64 = name.strip_suffix(".json")?.parse().ok()?;
                        let text = std::fs::read_to_string(e.path()).ok()?;
                        Some((n, serde_json::from_str(&text).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|(n, _)| *n);
        v.into_iter().map(|(_, m)| m).collect()
    }

    /// Waits for at least `n` messages.
    pub async fn wait_mails(&self, n: usize, within: Duration) -> Vec<Mail> {
        wait_for(within, &format!("{n} emails"), || {
            let m = self.mails();
            (m.len() >= n).then_some(m)
        })
        .await
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A real Alertmanager with a do-nothing receiver.
pub struct Alertmanager {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Alertmanager {
    /// Starts `prometheus-alertmanager` on a free port, clustering off.
    pub async fn start() -> Self {
        Self::start_with(
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
            &["--cluster.listen-address=".to_string()],
        )
        .await
    }

    /// Two Alertmanagers peered on loopback (HA: they gossip alerts and the
    /// notification log, so a group is notified once), both sending to `webhook_url`
    /// with `group_wait` 1 s.
    pub async fn pair(webhook_url: &str) -> (Self, Self) {
        let cfg = format!(
            "route:\n  receiver: hook\n  group_by: ['check']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: '{webhook_url}'\n        send_resolved: true\n"
        );
        let (p1, p2) = (free_port(), free_port());
        let args = |me: u16, peer: u16| {
            vec![
                format!("--cluster.listen-address=127.0.0.1:{me}"),
                format!("--cluster.peer=127.0.0.1:{peer}"),
                "--cluster.peer-timeout=1s".to_string(),
                "--cluster.gossip-interval=50ms".to_string(),
                "--cluster.pushpull-interval=1s".to_string(),
            ]
        };
        let a = Self::start_with(&cfg, &args(p1, p2)).await;
        let b = Self::start_with(&cfg, &args(p2, p1)).await;
        (a, b)
    }

    async fn start_with(config: &str, cluster_args: &[String]) -> Self {
        let bin = require_bin("prometheus-alertmanager", "prometheus-alertmanager", &[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("alertmanager.yml");
        std::fs::write(&cfg, config).expect("write config");
        let port = free_port();
        let child = tokio::process::Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(cluster_args)
            .arg("--log.level=warn")
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn alertmanager");
        let am = Self { port, dir, child };
        let client = lifeline::net::http_client::shared();
        let url = am.url("/-/ready");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "alertmanager did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        am
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// `GET /api/v2/alerts` (active ones).
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let r = lifeline::net::http_client::shared()
            .get(self.url("/api/v2/alerts"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("query alertmanager");
        r.json::<Vec<serde_json::Value>>()
            .await
            .expect("alert list")
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
