//! `sip` against Kamailio with a minimal config that answers OPTIONS (`tests/data/sip/kamailio.cfg`).

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

/// Kamailio in the foreground (`-DD -E`) in its own process group, on a free port
/// (UDP and TCP). Dropping it stops the whole group (main process and its workers).
pub struct Kamailio {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    pub async fn start() -> Kamailio {
        let bin = require_bin("kamailio", "kamailio", &["/usr/sbin", "/usr/local/sbin"]);
        let mpath = MODULE_DIRS
            .iter()
            .find(|d| std::path::Path::new(d).join("sl.so").is_file())
            .unwrap_or_else(|| panic!("kamailio modules (sl.so) not found in {MODULE_DIRS:?}: install the Debian package `kamailio`"));
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port_both();
        let cfg = std::fs::read_to_string(data("sip/kamailio.cfg"))
            .expect("kamailio.cfg")
            .replace("@PORT@", &port.to_string())
            .replace("@MPATH@", mpath);
        let cfg_path = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).expect("write cfg");
        let run = dir.path().join("run");
        std::fs::create_dir(&run).expect("run dir");
        let mut child = Command::new(bin)
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
        Kamailio {
            child,
            port,
            _dir: dir,
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
