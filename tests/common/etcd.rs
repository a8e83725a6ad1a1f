//! A real etcd cluster for tests: `n` members of the Debian `etcd-server` on 127.0.0.1
//! with free client and peer ports, data dirs and logs in one temp dir, fast elections
//! (heartbeat 50 ms, election timeout 500 ms). Members can be killed (SIGKILL), stopped
//! and continued (SIGSTOP/SIGCONT) and restarted on the same ports and data; drop kills
//! every member the cluster started. [`EtcdCluster::start_tls`] adds an `https` client
//! listener per member that requires a client certificate (certificates made by
//! openssl; the plain listener stays for health checks and set-up).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{free_port, require_bin};

/// How long a (re)started cluster may take to report healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

/// One member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// The `https` client port ([`EtcdCluster::start_tls`]).
    tls_port: Option<u16>,
    child: Option<Child>,
}

/// The certificates of a TLS cluster (all PEM, in the cluster's temp dir).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A client certificate (`CN=root`) the members accept.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// A running cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    token: String,
    tls: Option<TlsFiles>,
}

fn etcd_bin() -> PathBuf {
    for d in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = PathBuf::from(d).join("etcd");
        if p.is_file() {
            return p;
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("etcd not installed: run scripts/test.sh"))
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one answers `/health` with
    /// `{"health":"true"}` (panics with the logs' tails otherwise).
    pub async fn start(n: usize) -> Self {
        Self::launch(n, false).await
    }

    /// As [`EtcdCluster::start`], each member also serving `https://localhost:PORT`
    /// ([`EtcdCluster::tls_endpoints`]) with a certificate for `localhost` and requiring
    /// client certificates signed by [`TlsFiles::ca`].
    pub async fn start_tls(n: usize) -> Self {
        Self::launch(n, true).await
    }

    async fn launch(n: usize, tls: bool) -> Self {
        assert!(n > 0, "a cluster has members");
        lifeline::net::tls::install_provider();
        let bin = etcd_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        // Two fresh ports per member, all distinct.
        let per = if tls { 3 } else { 2 };
        let mut ports: Vec<u16> = Vec::with_capacity(per * n);
        while ports.len() < per * n {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[per * i],
                peer_port: ports[per * i + 1],
                tls_port: tls.then(|| ports[per * i + 2]),
                child: None,
            })
            .collect();
        let token = format!(
            "lifeline-test-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or("x")
        );
        let tls = tls.then(|| make_tls(dir.path()));
        let mut c = Self {
            members,
            dir,
            bin,
            token,
            tls,
        };
        for i in 0..n {
            c.spawn(i, "new");
        }
        c.wait_healthy(&(0..n).collect::<Vec<_>>()).await;
        c
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// `http://127.0.0.1:PORT` of each member, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// `https://localhost:PORT` of each member ([`EtcdCluster::start_tls`] clusters).
    pub fn tls_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| {
                let p = m.tls_port.expect("a cluster started with start_tls");
                format!("https://localhost:{p}")
            })
            .collect()
    }

    /// The certificates of a [`EtcdCluster::start_tls`] cluster.
    pub fn tls(&self) -> &TlsFiles {
        self.tls.as_ref().expect("a cluster started with start_tls")
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// The index of the member with client URL `endpoint`.
    pub fn index_of(&self, endpoint: &str) -> usize {
        (0..self.members.len())
            .find(|i| self.endpoint(*i) == endpoint.trim_end_matches('/'))
            .unwrap_or_else(|| panic!("{endpoint} is no member of this cluster"))
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    fn spawn(&mut self, i: usize, state: &str) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        let initial = self.initial_cluster();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("etcd log file");
        let m = &self.members[i];
        let mut client = format!("http://127.0.0.1:{}", m.client_port);
        let mut advertise = client.clone();
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(&self.bin);
        if let (Some(p), Some(t)) = (m.tls_port, &self.tls) {
            client.push_str(&format!(",https://127.0.0.1:{p}"));
            advertise.push_str(&format!(",https://localhost:{p}"));
            let d = self.dir.path();
            cmd.arg("--cert-file")
                .arg(d.join("server.crt"))
                .arg("--key-file")
                .arg(d.join("server.key"))
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&t.ca);
        }
        let child = cmd
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("{}.etcd", m.name)))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &advertise])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// Waits until each member of `which` reports healthy.
    async fn wait_healthy(&self, which: &[usize]) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(1000))
            .build()
            .expect("client");
        let deadline = tokio::time::Instant::now() + HEALTHY_WITHIN;
        for &i in which {
            let url = format!("{}/health", self.endpoint(i));
            loop {
                let ok = match client.get(&url).send().await {
                    Ok(r) => r
                        .text()
                        .await
                        .is_ok_and(|t| t.replace(' ', "").contains(r#""health":"true""#)),
                    Err(_) => false,
                };
                if ok {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    panic!(
                        "etcd member {i} not healthy within {HEALTHY_WITHIN:?}\n{}",
                        self.logs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The index of the current leader, as the running members see it (`None` while
    /// none answers or they disagree).
    pub async fn leader(&self) -> Option<usize> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(1000))
            .build()
            .expect("client");
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                ids.push(None);
                continue;
            }
            let url = format!("{}/v3/maintenance/status", self.endpoint(i));
            let v: Option<serde_json::Value> = match client.post(&url).body("{}").send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let v = v.unwrap_or_default();
            ids.push(v["header"]["member_id"].as_str().map(str::to_string));
            if let Some(l) = v["leader"].as_str() {
                leaders.push(l.to_string());
            }
        }
        let first = leaders.first()?;
        if leaders.iter().any(|l| l != first) {
            return None;
        }
        ids.iter()
            .position(|id| id.as_deref() == Some(first.as_str()))
    }

    /// The last lines of every member's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.members.len() {
            let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            out.push_str(&format!(
                "--- {} (last {} lines)\n{}\n",
                self.members[i].name,
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }

    /// The PID of running member `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.members[i]
            .child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("member {i} is not running"))
    }

    fn signal(&self, i: usize, sig: Signal) {
        let p = Pid::from_raw(i32::try_from(self.pid(i)).expect("pid fits i32"));
        kill(p, sig).unwrap_or_else(|e| panic!("{sig} member {i}: {e}"));
    }

    /// SIGKILLs member `i` (by its own PID) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            // A stopped process dies of SIGKILL too.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOPs member `i`: it keeps its sockets but answers nothing.
    pub fn stop(&self, i: usize) {
        self.signal(i, Signal::SIGSTOP);
    }

    /// SIGCONTs member `i`.
    pub fn cont(&self, i: usize) {
        self.signal(i, Signal::SIGCONT);
    }

    /// Kills member `i` if it runs, starts it again on its ports and data dir
    /// (`--initial-cluster-state existing`) and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
        self.wait_healthy(&[i]).await;
    }

    /// Kills every member.
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Kills every member, starts them all again (existing data) and waits until all are
    /// healthy.
    pub async fn restart_all(&mut self) {
        self.kill_all();
        for i in 0..self.members.len() {
            self.spawn(i, "existing");
        }
        self.wait_healthy(&(0..self.members.len()).collect::<Vec<_>>())
            .await;
    }
}

/// A CA, a member certificate for `localhost` and a client certificate (`CN=root`) in
/// `dir`. The member certificate is for client auth too: etcd 3.4's gateway presents it
/// when it dials its own TLS listener, which requires client certificates.
fn make_tls(dir: &std::path::Path) -> TlsFiles {
    let openssl = require_bin("openssl", "openssl", &[]);
    let run = |args: &[&str], what: &str| {
        let out = Command::new(&openssl)
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what}: {}",
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
        "30",
        "-subj",
        "/CN=lifeline etcd test CA",
    ]);
    run(&ca, "openssl CA");
    let leaf = |name: &str, cn: &str, ext: &str| {
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
        let (key, csr, crt, extf, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
            format!("/CN={cn}"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        run(&req, "openssl CSR");
        run(
            &[
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
                "30",
                "-extfile",
                &extf,
            ],
            "openssl sign",
        );
    };
    leaf(
        "server",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
    );
    leaf(
        "client",
        "root",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    TlsFiles {
        ca: dir.join("ca.crt"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
