//! TLS certificate expiry (issue 16): the `tls` kind against `openssl s_server`, and
//! `details.tls` / `tls_expiry_warning` / the not-after metric on the kinds that do TLS
//! (http against `openssl s_server -www`, wss against an in-process tokio-rustls +
//! tungstenite server, rediss against redis-server, ami over TLS
//! against the transcript fake). Certificates are made by `openssl` in temp dirs: one
//! that expires in 2 days (inside the default 14-day warning) and one in 90 days.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lifeline::check::ErrorKind;
use lifeline::health::Status;

use crate::common::fake_ami::{FakeAmi, FakeAmiConfig};
use crate::common::postgres::make_certs_valid;
use crate::common::redis::Redis;
use crate::common::*;

const SOON: Duration = Duration::from_secs(10);
const DAY: f64 = 86_400.0;

/// Certificates in a temp dir: `ca.crt`, `server.crt` (CN and SAN `localhost`, expiring
/// in `days`), `server.key`.
struct Certs {
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl Certs {
    fn valid_for(days: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = make_certs_valid(dir.path(), days);
        Self { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> String {
        self.ca.display().to_string()
    }

    /// A rustls server config with the server certificate (for in-process peers).
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        crate::common::tls_peer::server_config(self.dir.path())
    }
}

/// `openssl s_server` (Debian `openssl`) on a free port with `certs`; `-www` answers
/// `GET /` with HTTP 200. Killed (by its handle) on drop.
struct SServer {
    child: Child,
    port: u16,
}

impl SServer {
    async fn start(certs: &Certs) -> Self {
        let openssl = require_bin("openssl", "openssl", &[]);
        let port = free_port();
        let child = Command::new(openssl)
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(certs.path("server.crt"))
            .arg("-key")
            .arg(certs.path("server.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_server");
        let s = Self { child, port };
        wait_listening(&format!("127.0.0.1:{port}"), SOON).await;
        s
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const AGENT: &str = "[agent]\ndata_dir = \"{dir}/data\"\n";

fn check(name: &str, kind: &str, body: &str) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"{kind}\"\ninterval = \"200ms\"\ntimeout = \"3s\"\n\
         unhealthy_threshold = 1\nbackoff = {{ base = \"100ms\", max = \"200ms\", jitter = \"0s\" }}\n{body}\n"
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// The not-after metric of `name` is about `days` from now.
fn assert_not_after_in(a: &TestAgent, name: &str, days: f64) {
    let v = a
        .check_metric("lifeline_check_tls_not_after_timestamp_seconds", name)
        .unwrap_or_else(|| panic!("{name}: no lifeline_check_tls_not_after_timestamp_seconds"));
    let left = (v - unix_now()) / DAY;
    assert!((left - days).abs() < 1.0, "{name}: expires in {left} days");
}

fn path_of(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_kind_reports_the_certificate_and_warns_before_it_expires() {
    let long = Certs::valid_for(90);
    let short = Certs::valid_for(2);
    let (s90, s2) = (SServer::start(&long).await, SServer::start(&short).await);
    let mut cfg = AGENT.to_string();
    let with_ca =
        |c: &Certs, port: u16| format!("address = \"localhost:{port}\"\nca_file = \"{}\"", c.ca());
    cfg.push_str(&check("tls-90", "tls", &with_ca(&long, s90.port)));
    cfg.push_str(&check("tls-2", "tls", &with_ca(&short, s2.port)));
    cfg.push_str(&check(
        "tls-2-off",
        "tls",
        &format!("{}\ntls_expiry_warning = \"off\"", with_ca(&short, s2.port)),
    ));
    cfg.push_str(&check(
        "tls-2-1d",
        "tls",
        &format!("{}\ntls_expiry_warning = \"1d\"", with_ca(&short, s2.port)),
    ));
    // By IP with an explicit SNI name: the certificate is for `localhost`.
    cfg.push_str(&check(
        "tls-sni",
        "tls",
        &format!(
            "address = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nca_file = \"{}\"",
            s90.port,
            long.ca()
        ),
    ));
    cfg.push_str(&check(
        "tls-untrusted",
        "tls",
        &format!("address = \"localhost:{}\"", s90.port),
    ));
    cfg.push_str(&check(
        "tls-skip",
        "tls",
        &format!(
            "address = \"localhost:{}\"\ntls_skip_verify = true",
            s2.port
        ),
    ));
    let a = TestAgent::start(&cfg).await;

    let st = a.wait_status("tls-90", Status::Healthy, SOON).await;
    let tls = &st.details["tls"];
    assert_eq!(tls["subject"], "CN=localhost", "{tls}");
    assert_eq!(tls["issuer"], "CN=lifeline test CA", "{tls}");
    assert_eq!(tls["sans"], serde_json::json!(["localhost"]));
    let not_after = tls["not_after"].as_str().expect("not_after");
    assert!(not_after.ends_with('Z'), "RFC 3339: {not_after}");
    assert!(
        st.details["tls_version"]
            .as_str()
            .unwrap_or("")
            .starts_with("TLS 1.")
    );
    assert_not_after_in(&a, "tls-90", 90.0);

    let st = a.wait_status("tls-2", Status::Degraded, SOON).await;
    assert_eq!(st.error_kind, Some(ErrorKind::Tls), "{st:?}");
    assert!(
        st.message.contains("certificate expires in 1d"),
        "{}",
        st.message
    );
    assert_not_after_in(&a, "tls-2", 2.0);

    a.wait_status("tls-2-off", Status::Healthy, SOON).await;
    a.wait_status("tls-2-1d", Status::Healthy, SOON).await;
    a.wait_status("tls-sni", Status::Healthy, SOON).await;
    // A certificate the check refuses is still reported.
    let st = a
        .wait_unhealthy("tls-untrusted", ErrorKind::Tls, SOON)
        .await;
    assert_eq!(st.details["tls"]["subject"], "CN=localhost");
    // Not verified, but the warning still applies.
    let st = a.wait_status("tls-skip", Status::Degraded, SOON).await;
    assert_eq!(st.error_kind, Some(ErrorKind::Tls));
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_kind_against_a_plain_tcp_peer_is_a_tls_failure() {
    let (addr, _task) = tcp_sink().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check("tls-plain", "tls", &format!("address = \"{addr}\""))
    ))
    .await;
    a.wait_unhealthy("tls-plain", ErrorKind::Tls, SOON).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_rediss_checks_report_expiry() {
    let short = Certs::valid_for(2);
    let long = Certs::valid_for(90);
    let (s2, s90) = (SServer::start(&short).await, SServer::start(&long).await);
    let r = Redis::start_tls_valid(2).await;
    let rca = path_of(r.ca.as_deref().expect("ca"));
    let mut cfg = AGENT.to_string();
    let https = |c: &Certs, port: u16| {
        format!(
            "url = \"https://localhost:{port}/\"\nca_file = \"{}\"",
            c.ca()
        )
    };
    cfg.push_str(&check("https-2", "http", &https(&short, s2.port)));
    cfg.push_str(&check("https-90", "http", &https(&long, s90.port)));
    cfg.push_str(&check(
        "rediss-2",
        "redis",
        &format!(
            "url = \"rediss://localhost:{}\"\nca_file = \"{rca}\"",
            r.port
        ),
    ));
    cfg.push_str(&check(
        "rediss-2-session",
        "redis",
        &format!(
            "url = \"rediss://localhost:{}\"\nca_file = \"{rca}\"\nmode = \"session\"",
            r.port
        ),
    ));
    let a = TestAgent::start(&cfg).await;
    let st = a.wait_status("https-2", Status::Degraded, SOON).await;
    assert_eq!(st.error_kind, Some(ErrorKind::Tls));
    assert_eq!(st.details["status_code"], 200);
    assert_eq!(st.details["tls"]["subject"], "CN=localhost");
    assert_not_after_in(&a, "https-2", 2.0);
    a.wait_status("https-90", Status::Healthy, SOON).await;
    assert_not_after_in(&a, "https-90", 90.0);
    for name in ["rediss-2", "rediss-2-session"] {
        let st = a.wait_status(name, Status::Degraded, SOON).await;
        assert_eq!(st.error_kind, Some(ErrorKind::Tls), "{name}");
        assert_not_after_in(&a, name, 2.0);
    }
    // The session keeps warning on its heartbeats.
    wait_for(SOON, "session heartbeats", || {
        (a.state("rediss-2-session").consecutive_successes >= 3).then_some(())
    })
    .await;
    assert_eq!(a.state("rediss-2-session").status, Status::Degraded);
    a.stop().await;
}

fn ami_check(name: &str, fake: &FakeAmi, mode: &str, extra: &str) -> String {
    check(
        name,
        "ami",
        &format!(
            "address = \"localhost:{}\"\nusername = \"monitor\"\nsecret = \"amisecret\"\ntls = true\nmode = \"{mode}\"\n{extra}",
            fake.addr.port()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ami_over_tls_logs_in_and_reports_expiry() {
    let long = Certs::valid_for(90);
    let short = Certs::valid_for(2);
    let tls = |c: &Certs| FakeAmiConfig {
        tls: Some(c.server_config()),
        ..FakeAmiConfig::default()
    };
    let f90 = FakeAmi::start(tls(&long)).await;
    let f2 = FakeAmi::start(tls(&short)).await;
    let plain = FakeAmi::start(FakeAmiConfig::default()).await;
    let ca = |c: &Certs| format!("ca_file = \"{}\"", c.ca());
    let mut cfg = AGENT.to_string();
    cfg.push_str(&ami_check("ami-tls", &f90, "session", &ca(&long)));
    cfg.push_str(&ami_check("ami-tls-probe", &f90, "probe", &ca(&long)));
    cfg.push_str(&ami_check("ami-tls-2", &f2, "session", &ca(&short)));
    cfg.push_str(&ami_check("ami-untrusted", &f90, "probe", ""));
    cfg.push_str(&ami_check("ami-plain-peer", &plain, "probe", &ca(&long)));
    let a = TestAgent::start(&cfg).await;
    let st = a.wait_status("ami-tls", Status::Healthy, SOON).await;
    assert_eq!(st.details["version"], "10.0.0");
    assert_eq!(st.details["tls"]["subject"], "CN=localhost");
    assert_not_after_in(&a, "ami-tls", 90.0);
    a.wait_status("ami-tls-probe", Status::Healthy, SOON).await;
    let st = a.wait_status("ami-tls-2", Status::Degraded, SOON).await;
    assert_eq!(st.error_kind, Some(ErrorKind::Tls));
    a.wait_unhealthy("ami-untrusted", ErrorKind::Tls, SOON)
        .await;
    a.wait_unhealthy("ami-plain-peer", ErrorKind::Tls, SOON)
        .await;
    // The login went through the TLS connection.
    assert!(!f90.received("Login").is_empty());
    a.stop().await;
}

/// A `wss://` server in-process: TLS (certificate expiring in `days`) then a WebSocket
/// upgrade (tungstenite) that answers pings. Returns the port, the CA and the handles.
async fn wss_server(days: u32) -> (u16, PathBuf, tempfile::TempDir, tokio::task::JoinHandle<()>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = make_certs_valid(dir.path(), days);
    let acceptor =
        tokio_rustls::TlsAcceptor::from(crate::common::tls_peer::server_config(dir.path()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let a = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = a.accept(s).await else { return };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                use futures_util::StreamExt;
                // Pings are answered by tungstenite while the stream is read.
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    (port, ca, dir, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_probe_and_session_warn_before_the_certificate_expires() {
    let (p2, ca2, _d2, t2) = wss_server(2).await;
    let (p90, ca90, _d90, t90) = wss_server(90).await;
    let ws = |port: u16, ca: &Path, mode: &str| {
        format!(
            "url = \"wss://localhost:{port}/\"\nca_file = \"{}\"\nmode = \"{mode}\"",
            ca.display()
        )
    };
    let mut cfg = AGENT.to_string();
    cfg.push_str(&check("wss-2", "websocket", &ws(p2, &ca2, "probe")));
    cfg.push_str(&check(
        "wss-2-session",
        "websocket",
        &ws(p2, &ca2, "session"),
    ));
    cfg.push_str(&check("wss-90", "websocket", &ws(p90, &ca90, "session")));
    let a = TestAgent::start(&cfg).await;
    for name in ["wss-2", "wss-2-session"] {
        let st = a.wait_status(name, Status::Degraded, SOON).await;
        assert_eq!(st.error_kind, Some(ErrorKind::Tls), "{name}");
        assert_eq!(st.details["tls"]["subject"], "CN=localhost");
        assert_not_after_in(&a, name, 2.0);
    }
    a.wait_status("wss-90", Status::Healthy, SOON).await;
    assert_not_after_in(&a, "wss-90", 90.0);
    // Heartbeats on the session keep the warning.
    wait_for(SOON, "wss session heartbeats", || {
        (a.state("wss-2-session").consecutive_successes >= 3).then_some(())
    })
    .await;
    assert_eq!(a.state("wss-2-session").status, Status::Degraded);
    a.stop().await;
    t2.abort();
    t90.abort();
}
