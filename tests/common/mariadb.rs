//! A real MariaDB server (Debian `mariadb-server`) for tests: `mariadb-install-db` into a
//! temp dir, then `mariadbd` on 127.0.0.1:<free port> with its socket, pid file and log in
//! that dir (as root, `--user=root`), users made by an `--init-file`; SIGKILLed through its
//! child handle on drop. [`MariaDb::start_tls`] adds openssl-made certificates.
//!
//! Users: [`USER`] / [`PASSWORD`] (all privileges), [`TLS_USER`] / [`PASSWORD`]
//! (`REQUIRE SSL`); database [`DATABASE`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, require_bin, wait_listening};

/// The monitoring user.
pub const USER: &str = "monitor";
/// The password of [`USER`] and [`TLS_USER`].
pub const PASSWORD: &str = "maria-secret-pw";
/// A user that may only log in over TLS.
pub const TLS_USER: &str = "tlsonly";
/// A database that exists.
pub const DATABASE: &str = "app";

/// Keeps InnoDB's files small (the default system tablespace and logs take ~100 MB).
const SMALL: [&str; 3] = [
    "--innodb-log-file-size=4M",
    "--innodb-data-file-path=ibdata1:8M:autoextend",
    "--innodb-buffer-pool-size=16M",
];

/// A running (or killed) mariadbd.
pub struct MariaDb {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The CA of the server certificate (TLS servers; the certificate is for `localhost`).
    pub ca: Option<PathBuf>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    tls: bool,
    child: Option<Child>,
}

/// A freshly installed data directory (`mariadb-install-db`), made once and kept in
/// cargo's scratch dir for integration tests; every server starts from a copy of it, which
/// is much cheaper than bootstrapping each time.
fn template() -> PathBuf {
    static TEMPLATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
            let done = root.join("mariadb-template");
            if done.join("mysql").is_dir() {
                return done;
            }
            let install = require_bin("mariadb-install-db", "mariadb-server", &[]);
            let work = tempfile::tempdir_in(root).expect("tempdir for the template");
            let data = work.path().join("data");
            run(
                Command::new(install)
                    .arg("--no-defaults")
                    .arg(format!("--datadir={}", data.display()))
                    .args([
                        "--user=root",
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db",
                    ])
                    .args(&SMALL[..2]),
                "mariadb-install-db",
            );
            // Another test binary may have won the race; either copy is fine.
            let _ = std::fs::rename(&data, &done);
            done
        })
        .clone()
}

/// `cp -a from to`.
fn copy_dir(from: &Path, to: &Path) {
    run(
        Command::new("cp").arg("-a").arg(from).arg(to),
        "cp -a (MariaDB data dir)",
    );
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        super::output_text(&out)
    );
}

impl MariaDb {
    /// Plain TCP.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// With `--ssl-cert`/`--ssl-key`.
    pub async fn start_tls() -> Self {
        Self::launch(true).await
    }

    async fn launch(tls: bool) -> Self {
        let bin = require_bin("mariadbd", "mariadb-server", &["/usr/sbin"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        copy_dir(&template(), &d.join("data"));
        let ca = tls.then(|| super::postgres::make_certs(d));
        std::fs::write(
            d.join("init.sql"),
            format!(
                "CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';\n\
                 GRANT ALL ON *.* TO '{USER}'@'%';\n\
                 CREATE USER IF NOT EXISTS '{TLS_USER}'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL;\n\
                 GRANT SELECT ON *.* TO '{TLS_USER}'@'%';\n\
                 CREATE DATABASE IF NOT EXISTS {DATABASE};\n"
            ),
        )
        .expect("init.sql");
        let mut m = MariaDb {
            port: free_port(),
            ca,
            dir,
            bin,
            tls,
            child: None,
        };
        m.spawn().await;
        m
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn spawn(&mut self) {
        let arg = |k: &str, p: &Path| format!("--{k}={}", p.display());
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--no-defaults")
            .arg(arg("datadir", &self.path("data")))
            .arg(arg("socket", &self.path("mysqld.sock")))
            .arg(arg("pid-file", &self.path("mysqld.pid")))
            .arg(arg("log-error", &self.path("error.log")))
            .arg(arg("init-file", &self.path("init.sql")))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-log-bin",
                "--skip-name-resolve",
            ])
            .args(SMALL);
        if self.tls {
            cmd.arg(arg("ssl-cert", &self.path("server.crt")))
                .arg(arg("ssl-key", &self.path("server.key")))
                .arg(arg("ssl-ca", &self.path("ca.crt")));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        self.child = Some(child);
        wait_listening(&format!("127.0.0.1:{}", self.port), Duration::from_secs(30)).await;
    }

    /// Runs `sql` as root over the server's socket with the `mariadb` client; its output
    /// (tab-separated, no column names).
    pub fn sql(&self, sql: &str) -> String {
        let client = require_bin("mariadb", "mariadb-client", &[]);
        let out = Command::new(client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.path("mysqld.sock").display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .expect("run mariadb");
        assert!(
            out.status.success(),
            "mariadb -e {sql:?}:\n{}",
            super::output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Ids of the connections of `user`.
    pub fn connections_of(&self, user: &str) -> Vec<u64> {
        self.sql(&format!(
            "SELECT id FROM information_schema.processlist WHERE user = '{user}'"
        ))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
    }

    /// The server's process id (for [`super::stale::Frozen`]); empty once killed.
    pub fn pids(&self) -> Vec<u32> {
        self.child.iter().map(Child::id).collect()
    }

    /// The server's error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("error.log")).unwrap_or_default()
    }

    fn kill_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl super::scenarios::RestartablePeer for MariaDb {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    async fn sigkill(&mut self) {
        self.kill_child();
    }

    async fn start_again(&mut self) {
        assert!(self.child.is_none(), "restart a running server");
        self.spawn().await;
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill_child();
    }
}
