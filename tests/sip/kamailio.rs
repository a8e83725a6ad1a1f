//! `sip` against Kamailio with a minimal config that answers OPTIONS (`tests/data/sip/kamailio.cfg`),
//! and the Kamailio harness `registrar.rs` uses (`tests/data/sip/kamailio-registrar.cfg`).

use std::process::Stdio;
use std::time::Duration;

use lifeline::check::ErrorKind;
use lifeline::health::Status;
use tokio::process::{Child, Command};

use super::*;

const MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
];

fn module_dir() -> &'static str {
    MODULE_DIRS
        .iter()
        .find(|d| std::path::Path::new(d).join("sl.so").is_file())
        .unwrap_or_else(|| panic!("kamailio modules (sl.so) not found in {MODULE_DIRS:?}: install the Debian package `kamailio`"))
}

/// Kamailio in the foreground (`-DD -E`) in its own process group, on a free port
/// (UDP and TCP). Dropping it stops the whole group (main process and its workers).
pub struct Kamailio {
    child: Child,
    pub port: u16,
    /// TLS port when started with [`Kamailio::start_tls`].
    pub tls_port: u16,
    dir: tempfile::TempDir,
}

impl Kamailio {
    /// UDP and TCP listeners.
    pub async fn start() -> Kamailio {
        Self::launch("sip/kamailio.cfg", false, &[]).await
    }

    /// UDP, TCP and a TLS listener with a fresh self-signed certificate for 127.0.0.1
    /// (`cert_path()`), made with the `openssl` command.
    pub async fn start_tls() -> Kamailio {
        Self::launch("sip/kamailio.cfg", true, &[]).await
    }

    /// The registrar of `tests/data/sip/kamailio-registrar.cfg`: REGISTER with digest
    /// authentication (every user's password is `password`, hashed with `algorithm`,
    /// `MD5` or `SHA-256`) over UDP, TCP, TLS, WS and WSS; bindings readable with
    /// [`Kamailio::contacts`].
    pub async fn registrar(password: &str, algorithm: &str) -> Kamailio {
        let mpath = module_dir();
        for m in ["websocket.so", "xhttp.so"] {
            assert!(
                std::path::Path::new(mpath).join(m).is_file(),
                "kamailio {m} missing: install the Debian package `kamailio-websocket-modules`"
            );
        }
        Self::launch(
            "sip/kamailio-registrar.cfg",
            true,
            &[("@PASSWORD@", password), ("@ALGORITHM@", algorithm)],
        )
        .await
    }

    /// The contacts Kamailio's location table holds for `aor` (user part), read with
    /// `kamcmd ul.lookup` over the ctl socket: each contact's `Address` and `CSeq`.
    /// Empty when the AOR has none.
    pub async fn contacts(&self, aor: &str) -> Vec<(String, u32)> {
        let bin = require_bin("kamcmd", "kamailio", &["/usr/sbin", "/usr/local/sbin"]);
        let sock = format!("unix:{}", path_str(&self.dir.path().join("ctl.sock")));
        let out = tokio::time::timeout(
            Duration::from_secs(5),
            Command::new(bin)
                .args(["-s", &sock, "ul.lookup", "location", aor])
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .expect("kamcmd answers within 5 s")
        .expect("run kamcmd");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if text.contains("AOR not found") || text.contains("AOR has no contacts") {
            return Vec::new();
        }
        let mut contacts = Vec::new();
        let mut address = None;
        for line in text.lines().map(str::trim) {
            if let Some(a) = line.strip_prefix("Address: ") {
                address = Some(a.to_string());
            } else if let Some(c) = line.strip_prefix("CSeq: ") {
                let c = c.trim().parse().expect("numeric CSeq");
                contacts.push((address.take().expect("Address before CSeq"), c));
            }
        }
        assert!(
            !contacts.is_empty(),
            "unexpected kamcmd ul.lookup output:\n{text}"
        );
        contacts
    }

    /// The certificate the TLS listener presents (PEM).
    pub fn cert_path(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    async fn launch(cfg_file: &str, tls: bool, vars: &[(&str, &str)]) -> Kamailio {
        let bin = require_bin("kamailio", "kamailio", &["/usr/sbin", "/usr/local/sbin"]);
        let mpath = module_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port_both();
        let tls_port = if tls { free_port() } else { 0 };
        let dir_s = path_str(dir.path()).to_string();
        let mut cfg = std::fs::read_to_string(data(cfg_file))
            .expect("kamailio config")
            .replace("@PORT@", &port.to_string())
            .replace("@TLSPORT@", &tls_port.to_string())
            .replace("@DIR@", &dir_s)
            .replace("@MPATH@", mpath);
        for (k, v) in vars {
            cfg = cfg.replace(k, v);
        }
        if tls {
            assert!(
                std::path::Path::new(mpath).join("tls.so").is_file(),
                "kamailio tls.so missing: install the Debian package `kamailio-tls-modules`"
            );
            let openssl = require_bin("openssl", "openssl", &[]);
            let ok = std::process::Command::new(openssl)
                .current_dir(dir.path())
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-days", "90", "-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .args(["-keyout", "key.pem", "-out", "cert.pem"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run openssl");
            assert!(ok.success(), "openssl could not make a test certificate");
            let profile = std::fs::read_to_string(data("sip/kamailio-tls.cfg"))
                .expect("kamailio-tls.cfg")
                .replace("@DIR@", &dir_s);
            std::fs::write(dir.path().join("tls.cfg"), profile).expect("write tls.cfg");
        }
        let cfg_path = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).expect("write cfg");
        let run = dir.path().join("run");
        std::fs::create_dir(&run).expect("run dir");
        let mut cmd = Command::new(bin);
        if tls {
            cmd.args(["-A", "WITH_TLS"]);
        }
        let mut child = cmd
            .current_dir(dir.path())
            .args(["-DD", "-E", "-m", "32", "-M", "8"])
            .arg("-f")
            .arg(&cfg_path)
            .arg("-w")
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .arg("-Y")
            .arg(&run)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kamailio");
        wait_udp_bound(&mut child, port, Duration::from_secs(10), "kamailio").await;
        wait_tcp_listening(&mut child, port, Duration::from_secs(10), "kamailio").await;
        if tls {
            wait_tcp_listening(&mut child, tls_port, Duration::from_secs(10), "kamailio").await;
        }
        Kamailio {
            child,
            port,
            tls_port,
            dir,
        }
    }

    pub fn target(&self, proto: Proto) -> String {
        format!("sip:127.0.0.1:{};transport={}", self.port, proto.name())
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SIGTERM to the process group we created: Kamailio's main process and workers.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

#[tokio::test]
async fn kamailio_answers_options_over_udp_and_tcp() {
    let k = Kamailio::start().await;
    let a = TestAgent::start(&format!(
        "{}\n[[checks]]\nname = \"kam-tcp\"\nkind = \"sip\"\ntarget = \"{}\"\nmode = \"session\"\ninterval = \"200ms\"\n",
        agent_config("kam-udp", &k.target(Proto::Udp), "interval = \"200ms\""),
        k.target(Proto::Tcp),
    ))
    .await;
    let s = a
        .wait_status("kam-udp", Status::Healthy, Duration::from_secs(10))
        .await;
    assert_eq!(s.details["status_code"], 200);
    assert_eq!(s.details["server"], "kamailio-lifeline-test");
    assert_eq!(s.details["transport"], "udp");
    let s = a
        .wait_status("kam-tcp", Status::Healthy, Duration::from_secs(10))
        .await;
    assert_eq!(s.details["server"], "kamailio-lifeline-test");
    assert_eq!(s.details["transport"], "tcp");
    wait_for(Duration::from_secs(10), "tcp heartbeats", || {
        (a.state("kam-tcp").consecutive_successes >= 3).then_some(())
    })
    .await;
    a.stop().await;
}

#[tokio::test]
async fn kamailio_gone_is_refused_over_udp() {
    let k = Kamailio::start().await;
    let target = k.target(Proto::Udp);
    drop(k);
    let a = TestAgent::start(&agent_config(
        "kam",
        &target,
        "interval = \"200ms\"\ntimeout = \"2s\"",
    ))
    .await;
    let st = a.agent.states().clone();
    wait_for(Duration::from_secs(10), "a refused attempt", || {
        st.state("kam")
            .filter(|s| s.error_kind == Some(ErrorKind::Refused))
    })
    .await;
    a.stop().await;
}

#[tokio::test]
async fn kamailio_answers_options_over_tls() {
    let k = Kamailio::start_tls().await;
    let target = format!("sip:127.0.0.1:{};transport=tls", k.tls_port);
    let ca = k.cert_path();
    let a = TestAgent::start(&format!(
        "{}\n[[checks]]\nname = \"tls-session\"\nkind = \"sip\"\ntarget = \"{target}\"\nca_file = \"{ca}\"\nmode = \"session\"\ninterval = \"200ms\"\n\
         [[checks]]\nname = \"tls-untrusted\"\nkind = \"sip\"\ntarget = \"{target}\"\ninterval = \"200ms\"\n",
        agent_config("tls-probe", &target, &format!("interval = \"200ms\"\nca_file = \"{}\"", path_str(&ca))),
        ca = path_str(&ca),
    ))
    .await;
    let s = a
        .wait_status("tls-probe", Status::Healthy, Duration::from_secs(10))
        .await;
    assert_eq!(s.details["transport"], "tls");
    assert_eq!(s.details["server"], "kamailio-lifeline-test");
    assert_eq!(s.details["tls"]["sans"], serde_json::json!(["127.0.0.1"]));
    assert!(
        a.check_metric(
            "lifeline_check_tls_not_after_timestamp_seconds",
            "tls-probe"
        )
        .is_some()
    );
    a.wait_status("tls-session", Status::Healthy, Duration::from_secs(10))
        .await;
    wait_for(Duration::from_secs(10), "tls heartbeats", || {
        (a.state("tls-session").consecutive_successes >= 3).then_some(())
    })
    .await;
    // Without the CA the self-signed certificate is refused by the agent.
    let st = a.agent.states().clone();
    wait_for(
        Duration::from_secs(10),
        "an untrusted-certificate failure",
        || {
            st.state("tls-untrusted")
                .filter(|s| s.error_kind == Some(ErrorKind::Tls))
        },
    )
    .await;
    a.stop().await;
}
