//! A real PostgreSQL server for tests: `initdb` once per machine into a cached template
//! under the cargo target tmp dir, then per server a copy of it in a temp dir, started with
//! `postgres` on a free port (127.0.0.1 only, socket dir in the temp dir). When running as
//! root the server runs as the `postgres` system user. Stopped and removed on drop (also on
//! panic); its `RestartablePeer::sigkill` SIGKILLs the whole server (postmaster and backends).
//!
//! Roles (see `pg_hba.conf` below):
//! * `app` / [`APP_PASSWORD`]: scram-sha-256, owns database `appdb`;
//! * `trusty`: trust, superuser (the test's own connections);
//! * `blocked` / `blocked-pw`: a `reject` line in pg_hba (SQLSTATE 28000).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require_bin};

/// The password of role `app`.
pub const APP_PASSWORD: &str = "app-secret-pw";

const HBA: &str = "\
local all all trust
host all trusty 127.0.0.1/32 trust
host all blocked 127.0.0.1/32 reject
host all all 127.0.0.1/32 scram-sha-256
";

const SETUP_SQL: &str = "\
CREATE ROLE app LOGIN PASSWORD 'app-secret-pw';
CREATE ROLE trusty LOGIN SUPERUSER;
CREATE ROLE blocked LOGIN PASSWORD 'blocked-pw';
CREATE DATABASE appdb OWNER app;
";

/// A running (or killed) PostgreSQL server.
pub struct Pg {
    /// TCP port on [`Pg::host`].
    pub port: u16,
    /// The address it listens on: 127.0.0.1, or the namespace's address
    /// ([`Pg::start_in`]).
    pub host: String,
    ns: Option<super::netns::NsRef>,
    /// The CA that signed the server certificate (TLS servers only).
    pub ca: Option<PathBuf>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<String> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin").to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    require_bin(name, "postgresql", &refs)
}

/// `(uid, gid)` of the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn server_owner() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd.lines().find(|l| l.starts_with("postgres:")).expect(
        "running as root but there is no `postgres` user: install the Debian package `postgresql`",
    );
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().expect("uid"), f[3].parse().expect("gid")))
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_tree(path: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .expect("chown");
        assert!(st.success(), "chown {} failed", path.display());
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The initialised data directory every server copies (built once, cached).
fn template(owner: Option<(u32, u32)>) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let initdb = pg_bin("initdb");
    let version = initdb
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let done = root.join(format!("lifeline-pg-template-{version}-v1"));
    if done.join("data/PG_VERSION").is_file() {
        return done;
    }
    let tmp = root.join(format!("lifeline-pg-template.tmp.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("mkdir template");
    chown_tree(&tmp, owner);
    let data = tmp.join("data");
    run(
        as_owner(
            Command::new(&initdb)
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
            owner,
        ),
        "initdb",
    );
    let mut single = as_owner(
        Command::new(pg_bin("postgres"))
            .arg("--single")
            .arg("-D")
            .arg(&data)
            .args(["-F", "-c", "exit_on_error=true", "postgres"]),
        owner,
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("postgres --single");
    {
        use std::io::Write;
        let mut stdin = single.stdin.take().expect("stdin");
        stdin
            .write_all(SETUP_SQL.as_bytes())
            .expect("write setup sql");
    }
    let out = single.wait_with_output().expect("single-user postgres");
    assert!(
        out.status.success(),
        "single-user setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(data.join("pg_hba.conf"), HBA).expect("pg_hba.conf");
    chown_tree(&tmp, owner);
    if std::fs::rename(&tmp, &done).is_err() {
        // Another test process won the race; use its template.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    done
}

impl Pg {
    /// A plain server.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// A server with `ssl = on`, its certificate (for `localhost` only) signed by [`Pg::ca`].
    pub async fn start_tls() -> Self {
        Self::launch(true).await
    }

    /// A plain server inside the network namespace `ns`, listening on its address; the
    /// test's own (trust) connections and `app` (scram) may come from 10.0.0.0/8.
    pub async fn start_in(ns: &super::netns::NsRef) -> Self {
        Self::launch_in(false, Some(ns.clone())).await
    }

    async fn launch(tls: bool) -> Self {
        Self::launch_in(tls, None).await
    }

    async fn launch_in(tls: bool, ns: Option<super::netns::NsRef>) -> Self {
        let owner = server_owner();
        let template = template(owner);
        let dir = tempfile::tempdir().expect("tempdir");
        run(
            Command::new("cp")
                .arg("-a")
                .arg(template.join("data"))
                .arg(dir.path().join("data")),
            "copy template",
        );
        let ca = tls.then(|| make_certs(dir.path()));
        if ns.is_some() {
            std::fs::write(
                dir.path().join("data/pg_hba.conf"),
                format!(
                    "{HBA}host all trusty 10.0.0.0/8 trust\nhost all all 10.0.0.0/8 scram-sha-256\n"
                ),
            )
            .expect("pg_hba.conf");
        }
        chown_tree(dir.path(), owner);
        let host = ns
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_string(), |n| n.peer_ip.to_string());
        let mut pg = Pg {
            port: free_port(),
            host,
            ns,
            ca,
            dir,
            bin: pg_bin("postgres"),
            owner,
            child: None,
        };
        pg.spawn();
        pg.wait_ready().await;
        pg
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("server.log"))
            .expect("log file");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-D")
            .arg(d.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(d)
            .arg("-c")
            .arg(format!("listen_addresses={}", self.host))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "shared_buffers=16MB",
                "-c",
                "max_connections=40",
                "-c",
                "logging_collector=off",
            ]);
        if self.ca.is_some() {
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!("ssl_cert_file={}", d.join("server.crt").display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", d.join("server.key").display()));
        }
        as_owner(&mut cmd, self.owner)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(match &self.ns {
            Some(ns) => ns.spawn(&mut cmd),
            None => cmd.spawn().expect("spawn postgres"),
        });
    }

    /// Waits until the server accepts logins.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.client().await.is_ok() {
                return;
            }
            if let Some(c) = &mut self.child
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("postgres exited ({st}):\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "postgres on port {} not ready in 30 s:\n{}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The postmaster first, then its children (backends included), for
    /// [`super::stale::Frozen`]; empty once killed.
    pub fn pids(&self) -> Vec<u32> {
        let pm = self.child.as_ref().map(Child::id);
        pm.into_iter()
            .chain(pm.into_iter().flat_map(children))
            .collect()
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB?QUERY`.
    pub fn dsn(&self, user: &str, password: Option<&str>, db: &str, query: &str) -> String {
        let auth = match password {
            Some(p) => format!("{user}:{p}"),
            None => user.to_string(),
        };
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("postgres://{auth}@{}:{}/{db}{q}", self.host, self.port)
    }

    /// A DSN for `app` with its password on `appdb`.
    pub fn app_dsn(&self) -> String {
        self.dsn("app", Some(APP_PASSWORD), "appdb", "sslmode=disable")
    }

    /// A superuser connection (trust, no TLS) for the test's own queries.
    pub async fn client(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user("trusty")
            .dbname("postgres")
            .application_name("lifeline-test")
            .connect_timeout(Duration::from_secs(2));
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Runs `sql` as the superuser; the first column of every row, as text.
    pub async fn query(&self, sql: &str) -> Vec<String> {
        let c = self.client().await.expect("test connection to postgres");
        c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect()
    }

    /// Backends whose `application_name` is `lifeline` (the agent's connections).
    pub async fn lifeline_backends(&self) -> Vec<String> {
        self.query("SELECT pid::text FROM pg_stat_activity WHERE application_name = 'lifeline'")
            .await
    }
}

impl super::scenarios::RestartablePeer for Pg {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    /// SIGKILLs the postmaster and every backend. (Backends call `setsid()`, so they are
    /// not in the postmaster's process group: they are found through /proc while the
    /// postmaster is stopped and cannot fork.) Returns once all of them are gone.
    async fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            hard_kill(&mut c);
        }
    }

    /// Starts the server again on the same port and data.
    async fn start_again(&mut self) {
        assert!(self.child.is_none(), "restart a running server");
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Fast shutdown so the server removes its shared memory; SIGKILL if it lingers.
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            hard_kill(&mut c);
        }
    }
}

/// `(state, ppid)` of a process, from /proc.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|p| proc_stat(*p).is_some_and(|(_, pp)| pp == pid))
                .collect()
        })
        .unwrap_or_default()
}

fn signal(sig: &str, pids: &[u32]) {
    let _ = Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Stops the postmaster (no more forks), SIGKILLs it and its children, waits for all.
fn hard_kill(c: &mut Child) {
    let pm = c.id();
    signal("-STOP", &[pm]);
    let mut all = children(pm);
    all.push(pm);
    signal("-KILL", &all);
    let _ = c.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while all
        .iter()
        .any(|p| proc_stat(*p).is_some_and(|(st, _)| st != 'Z'))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Writes a CA (`ca.crt`) and a server certificate for DNS name `localhost`
/// (`server.crt`, `server.key`) valid for 90 days into `dir` (outside every kind's
/// default `tls_expiry_warning`); returns the CA path.
pub fn make_certs(dir: &Path) -> PathBuf {
    make_certs_valid(dir, 90)
}

/// As [`make_certs`], with a server certificate that expires in `days` days.
pub fn make_certs_valid(dir: &Path, days: u32) -> PathBuf {
    let days = days.to_string();
    let openssl = require_bin("openssl", "openssl", &[]);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(
        Command::new(&openssl)
            .current_dir(dir)
            .args(["req", "-x509"])
            .args(ec)
            .args([
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "365",
                "-subj",
                "/CN=lifeline test CA",
            ]),
        "openssl CA",
    );
    run(
        Command::new(&openssl)
            .current_dir(dir)
            .arg("req")
            .args(ec)
            .args([
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ]),
        "openssl CSR",
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext file");
    run(
        Command::new(&openssl).current_dir(dir).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            &days,
            "-extfile",
            "server.ext",
        ]),
        "openssl sign",
    );
    let mut perms = std::fs::metadata(dir.join("server.key"))
        .expect("key")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(dir.join("server.key"), perms).expect("chmod key");
    dir.join("ca.crt")
}
