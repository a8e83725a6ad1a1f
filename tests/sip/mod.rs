//! `sip` against real SIP servers: SIPp UAS scenarios (Debian `sip-tester`) and Kamailio
//! (Debian `kamailio`), each started on free ports in a temp dir and killed on drop.

mod kamailio;
mod registrar;
mod sipp;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::common::*;

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}

/// A port free for both TCP and UDP a moment ago.
pub fn free_port_both() -> u16 {
    loop {
        let p = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// Waits until something has bound UDP `port` on 127.0.0.1 (our own bind fails), while
/// checking that `child` is still alive.
pub async fn wait_udp_bound(child: &mut Child, port: u16, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before binding UDP {port}: {status}");
        }
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what} did not bind UDP {port} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until TCP `port` on 127.0.0.1 accepts, while checking that `child` is alive.
pub async fn wait_tcp_listening(child: &mut Child, port: u16, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on TCP {port}: {status}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what} did not listen on TCP {port} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIP transport used by a test peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// A SIPp UAS running one scenario in the foreground, killed on drop.
pub struct Sipp {
    child: Child,
    pub port: u16,
    pub proto: Proto,
    _dir: tempfile::TempDir,
}

impl Sipp {
    /// Starts `sipp` with `tests/data/sip/<scenario>` on a free port.
    pub async fn start(scenario: &str, proto: Proto) -> Sipp {
        let bin = require_bin("sipp", "sip-tester", &[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port_both();
        let mut child = Command::new(bin)
            .current_dir(dir.path())
            .arg("-sf")
            .arg(data(&format!("sip/{scenario}")))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", if proto == Proto::Udp { "u1" } else { "t1" }])
            // Control and media sockets on free ports, so tests can run in parallel.
            .args(["-cp", &free_udp_port().to_string()])
            .args(["-mp", &free_udp_port().to_string()])
            .args(["-nostdin", "-max_socket", "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sipp");
        match proto {
            Proto::Udp => wait_udp_bound(&mut child, port, Duration::from_secs(10), "sipp").await,
            Proto::Tcp => {
                wait_tcp_listening(&mut child, port, Duration::from_secs(10), "sipp").await
            }
        }
        Sipp {
            child,
            port,
            proto,
            _dir: dir,
        }
    }

    /// `sip:127.0.0.1:<port>;transport=<proto>`.
    pub fn target(&self) -> String {
        format!(
            "sip:127.0.0.1:{};transport={}",
            self.port,
            self.proto.name()
        )
    }

    /// Kills SIPp now (the agent should notice a TCP session drop at once).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// An agent config with one `sip` check.
pub fn agent_config(name: &str, target: &str, extra: &str) -> String {
    format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
[[checks]]
name = "{name}"
kind = "sip"
target = "{target}"
{extra}
"#
    )
}

/// Path helper for configs written by tests.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
