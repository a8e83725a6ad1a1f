//! The `icmp` kind: echoes to loopback addresses (127.0.0.0/8 answers on Linux) through
//! the kernel's real ICMP stack, loss made by `iptables` rules that drop every or every
//! other echo reply from one loopback address, an unroutable TEST-NET-3 address (a
//! blackhole route), and the socket choice (`net.ipv4.ping_group_range`, a process
//! without `CAP_NET_RAW` via `setpriv`). Rules, routes and the sysctl are the test's
//! own and are removed on drop; a test that cannot add them fails. Run as root.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lifeline::check::ErrorKind;
use lifeline::health::Status;
use serde_json::Value;

use crate::common::{TestAgent, require_bin};

const SOON: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_lifeline");

fn run(bin: &Path, args: &[&str]) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed (the icmp tests need root): {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An iptables rule in the INPUT chain, deleted on drop.
struct Rule {
    bin: std::path::PathBuf,
    spec: Vec<String>,
}

impl Rule {
    fn input(spec: &str) -> Self {
        let bin = require_bin("iptables", "iptables", &["/usr/sbin", "/sbin"]);
        let spec: Vec<String> = spec.split_whitespace().map(String::from).collect();
        let mut args = vec!["-I", "INPUT"];
        args.extend(spec.iter().map(String::as_str));
        run(&bin, &args);
        Self { bin, spec }
    }
}

impl Drop for Rule {
    fn drop(&mut self) {
        let mut args = vec!["-D", "INPUT"];
        args.extend(self.spec.iter().map(String::as_str));
        let _ = Command::new(&self.bin).args(&args).status();
    }
}

/// A blackhole route, deleted on drop.
struct Blackhole {
    bin: std::path::PathBuf,
    dest: String,
}

impl Blackhole {
    fn add(dest: &str) -> Self {
        let bin = require_bin("ip", "iproute2", &["/usr/sbin", "/sbin"]);
        run(&bin, &["route", "add", "blackhole", dest]);
        Self {
            bin,
            dest: dest.to_string(),
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .args(["route", "del", "blackhole", &self.dest])
            .status();
    }
}

const PING_GROUPS: &str = "/proc/sys/net/ipv4/ping_group_range";

/// `net.ipv4.ping_group_range` set for the test, restored on drop.
struct PingGroups(String);

impl PingGroups {
    fn set(range: &str) -> Self {
        let old = std::fs::read_to_string(PING_GROUPS).expect("read ping_group_range");
        std::fs::write(PING_GROUPS, range)
            .unwrap_or_else(|e| panic!("set {PING_GROUPS} (run as root): {e}"));
        Self(old.trim().to_string())
    }
}

impl Drop for PingGroups {
    fn drop(&mut self) {
        let _ = std::fs::write(PING_GROUPS, &self.0);
    }
}

fn icmp(name: &str, host: &str, extra: &str) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"icmp\"\nhost = \"{host}\"\ninterval = \"300ms\"\n\
         timeout = \"2s\"\nunhealthy_threshold = 1\n{extra}\n"
    )
}

const AGENT: &str = "[agent]\ndata_dir = \"{dir}/data\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_to_loopback_is_healthy_with_latency_and_loss() {
    let a = TestAgent::start(&format!(
        "{AGENT}{}{}",
        icmp("lo", "127.0.0.1", "count = 3\npayload_size = 100"),
        icmp("lo-name", "localhost", "count = 1\npayload_size = 0"),
    ))
    .await;
    let st = a.wait_status("lo", Status::Healthy, SOON).await;
    assert_eq!(st.details["received"], 3, "{:?}", st.details);
    assert_eq!(st.details["address"], "127.0.0.1");
    let socket = st.details["socket"].as_str().unwrap_or("");
    assert!(socket == "raw" || socket == "dgram", "{socket}");
    assert!(st.message.contains("3/3 replies"), "{}", st.message);
    let text = a.agent.shared.metrics.render();
    for label in ["loss", "rtt_avg", "rtt_min", "rtt_max"] {
        assert!(
            text.contains(&format!(
                "lifeline_check_perfdata{{check=\"lo\",kind=\"icmp\",label=\"{label}\"}}"
            )),
            "{label} missing"
        );
    }
    assert!(
        text.contains("lifeline_check_perfdata{check=\"lo\",kind=\"icmp\",label=\"loss\"} 0\n")
    );
    a.wait_status("lo-name", Status::Healthy, SOON).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_degrade_and_no_replies_or_no_route_fail() {
    // Every other reply from 127.0.0.2 is dropped: 50 % loss; none from 127.0.0.3.
    let _half = Rule::input(
        "-s 127.0.0.2 -p icmp --icmp-type echo-reply -m statistic --mode nth --every 2 --packet 0 -j DROP",
    );
    let _all = Rule::input("-s 127.0.0.3 -p icmp --icmp-type echo-reply -j DROP");
    let _route = Blackhole::add("203.0.113.77/32");
    let a = TestAgent::start(&format!(
        "{AGENT}{}{}{}",
        icmp("half", "127.0.0.2", "count = 4\nmax_loss = 20"),
        icmp("silent", "127.0.0.3", "count = 2"),
        icmp("no-route", "203.0.113.77", "count = 2"),
    ))
    .await;
    let st = a.wait_status("half", Status::Degraded, SOON).await;
    assert_eq!(st.error_kind, Some(ErrorKind::Timeout));
    assert!(st.message.contains("2/4 replies"), "{}", st.message);
    assert!(st.message.contains("50% loss"), "{}", st.message);
    assert_eq!(
        a.check_metric("lifeline_check_perfdata", "half"),
        Some(0.5),
        "loss ratio"
    );
    let st = a.wait_unhealthy("silent", ErrorKind::Timeout, SOON).await;
    assert!(st.message.contains("0/2 replies"), "{}", st.message);
    let st = a.wait_unhealthy("no-route", ErrorKind::Refused, SOON).await;
    assert!(
        st.message.contains("sending echo to 203.0.113.77"),
        "{}",
        st.message
    );
    a.stop().await;
}

/// `lifeline check --json` on `config`, run through `setpriv` without `CAP_NET_RAW`;
/// the one result.
fn check_without_net_raw(dir: &Path, config: &str) -> Value {
    let setpriv = require_bin("setpriv", "util-linux", &["/usr/bin", "/bin"]);
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(setpriv)
        .args([
            "--bounding-set",
            "-net_raw",
            "--",
            BIN,
            "check",
            "--json",
            "--config",
        ])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run lifeline check under setpriv");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_datagram_sockets_and_a_clear_error_without_either() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = icmp("lo", "127.0.0.1", "count = 2");
    {
        // Nobody may open ICMP datagram sockets, and the process has no CAP_NET_RAW.
        let _g = PingGroups::set("1 0");
        let r = check_without_net_raw(dir.path(), &config);
        assert_eq!(r["status"], "unhealthy", "{r}");
        assert_eq!(r["error_kind"], "internal", "{r}");
        let msg = r["message"].as_str().unwrap_or("");
        assert!(
            msg.contains("ping_group_range") && msg.contains("CAP_NET_RAW"),
            "{msg}"
        );
    }
    {
        // Group 0 may: the unprivileged datagram socket works without CAP_NET_RAW.
        let _g = PingGroups::set("0 0");
        let r = check_without_net_raw(dir.path(), &config);
        assert_eq!(r["status"], "healthy", "{r}");
        assert_eq!(r["details"]["socket"], "dgram", "{r}");
    }
}
