//! Name resolution against real resolvers: Debian `dnsmasq` on a free port (answers,
//! NXDOMAIN, A + AAAA), and a silent resolver (UDP and TCP sockets that never answer).
//! The agent is the real binary with `[agent] dns_servers` pointing at them (the resolver
//! is process-wide, so these tests never configure it in the test process).

mod kind;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::process::Command;

use crate::common::receivers::HttpReceiver;
use crate::common::{free_port, require_bin};

const BIN: &str = env!("CARGO_BIN_EXE_lifeline");

/// A UDP+TCP port on 127.0.0.1 that was free a moment ago (a DNS server needs both).
fn free_dns_port() -> u16 {
    for _ in 0..100 {
        let Ok(u) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = u.local_addr().map(|a| a.port()) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP+TCP port on 127.0.0.1");
}

/// A DNS query for `name` (type A); the response code, or `None` without an answer.
async fn rcode(port: u16, name: &str) -> Option<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let mut q = vec![0x4c, 0x4c, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send_to(&q, ("127.0.0.1", port)).await.ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    (n >= 4).then_some(buf[3] & 0x0f)
}

/// dnsmasq on 127.0.0.1:<free port>, answering only from its command line: names under
/// `lifeline.test` not given by `records` are NXDOMAIN. Killed on drop (by handle).
struct Dnsmasq {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    async fn start(records: &[String]) -> Self {
        let bin = require_bin("dnsmasq", "dnsmasq", &["/usr/sbin"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_dns_port();
        let out = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let child = std::process::Command::new(bin)
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--log-queries",
                "--local=/lifeline.test/",
                "-u",
                "root",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-facility={}",
                dir.path().join("log").display()
            ))
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn dnsmasq");
        let mut d = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if rcode(port, "probe.lifeline.test").await.is_some() {
                return d;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("dnsmasq exited ({st}): {}", d.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not answer on port {port}: {}",
                d.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A resolver that never answers: a UDP socket and a TCP listener on one port that
/// nobody reads (TCP connections complete in the kernel and then hear nothing).
struct SilentResolver {
    _udp: UdpSocket,
    _tcp: TcpListener,
    port: u16,
}

impl SilentResolver {
    async fn start() -> Self {
        for _ in 0..100 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
            let port = udp.local_addr().expect("addr").port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                return Self {
                    _udp: udp,
                    _tcp: tcp,
                    port,
                };
            }
        }
        panic!("no free UDP+TCP port for the silent resolver");
    }

    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A listener that accepts and drops every connection; its port. Stops when aborted.
async fn accepting(addr: &str) -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind(addr).await.expect("bind listener");
    let port = l.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    (port, task)
}

/// One check's result from `lifeline check --json`.
#[derive(Debug)]
struct Res {
    status: String,
    error_kind: Option<String>,
    latency: Duration,
    message: String,
}

/// Runs `lifeline check --json` on `config` in `dir`; the results by name and the wall
/// time of the whole run.
async fn check_once(
    dir: &Path,
    config: &str,
) -> (std::collections::HashMap<String, Res>, Duration) {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write config");
    let t = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(BIN)
            .args(["check", "--json", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("lifeline check finishes")
    .expect("run lifeline check");
    let wall = t.elapsed();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json output: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut m = std::collections::HashMap::new();
    for c in v.as_array().expect("array") {
        m.insert(
            c["name"].as_str().expect("name").to_string(),
            Res {
                status: c["status"].as_str().unwrap_or("").to_string(),
                error_kind: c["error_kind"].as_str().map(str::to_string),
                latency: Duration::from_secs_f64(c["latency_ms"].as_f64().unwrap_or(0.0) / 1e3),
                message: c["message"].as_str().unwrap_or("").to_string(),
            },
        );
    }
    (m, wall)
}

fn tcp(name: &str, address: &str, extra: &str) -> String {
    format!("[[checks]]\nname = \"{name}\"\nkind = \"tcp\"\naddress = \"{address}\"\n{extra}\n")
}

fn http(name: &str, url: &str, extra: &str) -> String {
    format!("[[checks]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{url}\"\n{extra}\n")
}

#[tokio::test]
async fn names_resolve_through_dns_servers_and_unknown_names_fail_as_dns() {
    let dns = Dnsmasq::start(&["--address=/ok.lifeline.test/127.0.0.1".into()]).await;
    let (port, _l) = accepting("127.0.0.1:0").await;
    let rx = HttpReceiver::start().await;
    let web = rx.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[agent]\ndns_servers = [\"{}\"]\n{}{}{}{}{}",
        dns.server(),
        tcp(
            "ok",
            &format!("ok.lifeline.test:{port}"),
            "timeout = \"2s\""
        ),
        tcp(
            "nx",
            &format!("nx.lifeline.test:{port}"),
            "timeout = \"2s\""
        ),
        tcp("lo", &format!("localhost:{port}"), "timeout = \"2s\""),
        http(
            "web-ok",
            &format!("http://ok.lifeline.test:{web}/x"),
            "timeout = \"2s\""
        ),
        http(
            "web-nx",
            &format!("http://nx.lifeline.test:{web}/x"),
            "timeout = \"2s\""
        ),
    );
    let (r, _) = check_once(dir.path(), &config).await;
    assert_eq!(r["ok"].status, "healthy", "{:?}", r["ok"]);
    assert_eq!(r["lo"].status, "healthy", "{:?}", r["lo"]);
    assert_eq!(r["web-ok"].status, "healthy", "{:?}", r["web-ok"]);
    assert_eq!(
        rx.delivered("/x").len(),
        1,
        "the http check reached the receiver"
    );
    for nx in ["nx", "web-nx"] {
        assert_eq!(r[nx].error_kind.as_deref(), Some("dns"), "{:?}", r[nx]);
        assert!(r[nx].message.contains("no such host"), "{:?}", r[nx]);
    }
    // Every name went to dnsmasq; `localhost` never did.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dns.log().contains("nx.lifeline.test") {
        assert!(Instant::now() < deadline, "dnsmasq log: {}", dns.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = dns.log();
    assert!(log.contains("query[A] ok.lifeline.test"), "{log}");
    assert!(!log.contains("localhost"), "localhost was queried: {log}");
}

#[tokio::test]
async fn a_silent_resolver_fails_as_dns_within_the_check_timeout() {
    let silent = SilentResolver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(1);
    let config = format!(
        "[agent]\ndns_servers = [\"{}\"]\n{}{}",
        silent.server(),
        tcp("tcp", "db.lifeline.test:5432", "timeout = \"1s\""),
        http(
            "http",
            "http://api.lifeline.test/health",
            "timeout = \"1s\""
        ),
    );
    let (r, wall) = check_once(dir.path(), &config).await;
    for name in ["tcp", "http"] {
        let c = &r[name];
        eprintln!(
            "silent resolver, {name}: {} after {:?}",
            c.message, c.latency
        );
        assert_eq!(c.error_kind.as_deref(), Some("dns"), "{c:?}");
        assert!(c.message.contains("no answer within"), "{c:?}");
        assert!(c.latency < timeout, "{name}: dns after {:?}", c.latency);
        assert!(
            c.latency >= timeout / 2,
            "{name}: gave up early: {:?}",
            c.latency
        );
    }
    eprintln!("silent resolver: `lifeline check` ran in {wall:?}");
}

/// A listener on `[::1]:port` whose accept queue is full: further SYNs are dropped, so a
/// connect to it never answers (a blackholed address, without firewall rules).
async fn blackhole_v6() -> (u16, TcpListener, Vec<TcpStream>) {
    let sock = TcpSocket::new_v6().expect("IPv6 socket (is IPv6 disabled on lo?)");
    sock.bind("[::1]:0".parse().unwrap())
        .expect("bind [::1] (is IPv6 disabled on lo?)");
    let port = sock.local_addr().expect("addr").port();
    let listener = sock.listen(0).expect("listen");
    let mut held = Vec::new();
    let to: SocketAddr = ([0u16, 0, 0, 0, 0, 0, 0, 1], port).into();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(to)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("filling the accept queue of [::1]:{port}: {e}"),
            // Full: keep the listener (never accepting) and the queued connections.
            Err(_) => return (port, listener, held),
        }
    }
    panic!("[::1]:{port} kept accepting with a full queue (tcp_abort_on_overflow?)");
}

#[tokio::test]
async fn happy_eyeballs_moves_past_an_address_that_never_answers() {
    let (port, _hole, _held) = blackhole_v6().await;
    let (_, _ok) = accepting(&format!("127.0.0.1:{port}")).await;
    let dns = Dnsmasq::start(&["--host-record=he.lifeline.test,127.0.0.1,::1".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[agent]\ndns_servers = [\"{}\"]\n{}{}",
        dns.server(),
        tcp(
            "he",
            &format!("he.lifeline.test:{port}"),
            "timeout = \"2s\""
        ),
        tcp("hole", &format!("[::1]:{port}"), "timeout = \"1s\""),
    );
    let (r, _) = check_once(dir.path(), &config).await;
    // The AAAA address is tried first and never answers on its own …
    assert_eq!(
        r["hole"].error_kind.as_deref(),
        Some("timeout"),
        "{:?}",
        r["hole"]
    );
    // … yet the name connects, through the A address started 250 ms later.
    let he = &r["he"];
    eprintln!(
        "happy eyeballs: connected after {:?} (timeout 2s)",
        he.latency
    );
    assert_eq!(he.status, "healthy", "{he:?}");
    assert!(he.latency >= Duration::from_millis(200), "{he:?}");
    assert!(he.latency < Duration::from_secs(1), "{he:?}");
}

fn agent_config(dir: &Path, port: u16, dns: &str, hook: &str, flip: u16) -> String {
    let mut c = format!(
        "[agent]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\ndns_servers = [\"{dns}\"]\n\
         [[notifiers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{hook}\"\n\
         [[routes]]\nnotifiers = [\"hook\"]\nmatch = {{ role = \"flip\" }}\nfor = \"0s\"\ngroup_wait = \"0s\"\n",
        dir.join("data").display()
    );
    c.push_str(&tcp(
        "flip",
        &format!("127.0.0.1:{flip}"),
        "interval = \"100ms\"\ntimeout = \"500ms\"\nunhealthy_threshold = 1\nlabels = { role = \"flip\" }",
    ));
    for i in 0..50 {
        c.push_str(&tcp(
            &format!("silent-{i}"),
            &format!("s{i}.lifeline.test:80"),
            "interval = \"200ms\"\ntimeout = \"1s\"\nunhealthy_threshold = 1\nbackoff = { base = \"100ms\", max = \"200ms\", jitter = \"0s\" }",
        ));
    }
    c
}

async fn get(url: &str) -> (u16, Value, Duration) {
    let t = Instant::now();
    let r = reqwest::get(url).await.expect("agent answers");
    let code = r.status().as_u16();
    let v = r.json().await.unwrap_or(Value::Null);
    (code, v, t.elapsed())
}

#[tokio::test]
async fn a_silent_resolver_does_not_delay_notifications_reload_or_history() {
    lifeline::net::tls::install_provider();
    let silent = SilentResolver::start().await;
    let rx = HttpReceiver::start().await;
    let (flip, flip_task) = accepting("127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg: PathBuf = dir.path().join("config.toml");
    let text = agent_config(dir.path(), port, &silent.server(), &rx.url("/hook"), flip);
    std::fs::write(&cfg, &text).unwrap();
    let agent = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lifeline");
    let base = format!("http://127.0.0.1:{port}");

    // Every silent check fails as `dns` (while the 50 lookups keep coming back).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = true;
        for i in [0, 17, 49] {
            let ok = match reqwest::get(format!("{base}/health/service/silent-{i}")).await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .is_some_and(|v| v["error_kind"] == "dns"),
                Err(_) => false,
            };
            all &= ok;
        }
        let flip_ok = match reqwest::get(format!("{base}/health/service/flip")).await {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .is_some_and(|v| v["status"] == "healthy"),
            Err(_) => false,
        };
        if all && flip_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "silent checks never reported dns"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The lookups in flight hold no threads (getaddrinfo would hold one each on the
    // blocking pool).
    let pid = agent.id().expect("agent running");
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("agent /proc status")
        .lines()
        .find_map(|l| {
            l.strip_prefix("Threads:")
                .map(|n| n.trim().parse::<usize>())
        })
        .expect("Threads line")
        .expect("thread count");
    eprintln!("agent threads with 50 lookups on a silent resolver: {threads}");
    assert!(
        threads < 40,
        "{threads} threads: lookups are holding threads"
    );

    // A notification for another check is not held up by the lookups in flight.
    flip_task.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (note, arrived) = loop {
        if let Some(p) = rx.delivered("/hook").into_iter().next() {
            break (p.json, SystemTime::now());
        }
        assert!(Instant::now() < deadline, "no notification for `flip`");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(note["status"], "firing", "{note}");
    assert_eq!(note["alerts"][0]["check"], "flip", "{note}");
    let started = note["alerts"][0]["started_at"]
        .as_str()
        .and_then(lifeline::time::parse_rfc3339)
        .expect("started_at");
    let delay = arrived.duration_since(started).unwrap_or_default();
    eprintln!(
        "notification delivered {delay:?} after the state change (50 lookups on a silent resolver)"
    );
    assert!(
        delay < Duration::from_secs(1),
        "notification took {delay:?}"
    );

    // History reads and a reload answer at once.
    let (code, _, took) = get(&format!("{base}/api/v1/checks/silent-3/history")).await;
    eprintln!("history read: {code} in {took:?}");
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1), "history took {took:?}");
    let t = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .expect("reload answers");
    let took = t.elapsed();
    eprintln!("reload: {} in {took:?}", r.status());
    assert_eq!(r.status().as_u16(), 200);
    assert!(took < Duration::from_secs(2), "reload took {took:?}");
    let (code, v, _) = get(&format!("{base}/health/service/silent-3")).await;
    assert_eq!(code, 200);
    assert_eq!(v["error_kind"], "dns", "{v}");
    let msg = v["last_error"].as_str().unwrap_or("");
    assert!(msg.contains("no answer within"), "{v}");
}

#[test]
fn dns_servers_are_ips_with_an_optional_port() {
    let parse = |v: &str| {
        lifeline::config::parse(
            Path::new("c.toml"),
            &format!("[agent]\ndns_servers = {v}\n"),
        )
    };
    let c = parse(r#"["10.0.0.2", "127.0.0.1:5353", "[::1]:53", "::1"]"#).expect("valid");
    let want: Vec<SocketAddr> = ["10.0.0.2:53", "127.0.0.1:5353", "[::1]:53", "[::1]:53"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(c.agent.dns_servers, want);
    let errs = parse(r#"["dns.example.com"]"#).expect_err("a name is not a server address");
    let text = errs.to_string();
    assert!(
        text.contains("c.toml:2:16:") && text.contains("`dns_servers`"),
        "{text}"
    );
}
