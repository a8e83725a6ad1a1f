//! Plugins (issue 5): `exec` (Nagios protocol), native `plugin` libraries (Rust SDK and
//! C), and declarative `rule` checks.

mod exec;
mod native;
mod rule;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lifeline::check::{Attempt, BuildEnv, Check, Outcome};
use lifeline::config::{CheckConfig, Config};
use lifeline::health::StateTable;
use tokio_util::sync::CancellationToken;

/// Rust plugin crates of the workspace (package, library name).
const RUST_PLUGINS: &[(&str, &str)] = &[
    ("lifeline-plugin-voice-rule", "voice_rule"),
    ("lifeline-plugin-http-json", "http_json"),
    ("lifeline-plugin-misbehave", "misbehave"),
];

/// C sources compiled into the plugin dir: (source, library name).
const C_PLUGINS: &[(&str, &str)] = &[
    ("plugins/examples/c-threshold/threshold.c", "c_threshold"),
    ("tests/plugins/c/wrong_abi.c", "wrong_abi"),
    ("tests/plugins/c/short_table.c", "short_table"),
    ("tests/plugins/c/not_a_plugin.c", "not_a_plugin"),
    ("tests/plugins/c/abort_build.c", "abort_build"),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory cargo puts this profile's artifacts in (`target/debug`), found from the
/// test binary (`target/debug/deps/tests-…`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// A directory (0755, process-wide) holding every test plugin: the workspace's Rust
/// plugin crates built with `cargo build -p …` (cdylibs of other members are not built by
/// `cargo test`), and the C plugins compiled with the system `cc` against the header.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lifeline-plugins-")
            .tempdir()
            .expect("tempdir")
            .keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let profile = profile_dir();
        let mut cargo = Command::new(env!("CARGO"));
        cargo.current_dir(repo()).arg("build").arg("--quiet");
        if profile.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        for (pkg, _) in RUST_PLUGINS {
            cargo.args(["-p", pkg]);
        }
        let out = cargo
            .output()
            .expect("run cargo build for the plugin crates");
        assert!(
            out.status.success(),
            "cargo build of the plugin crates failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (_, lib) in RUST_PLUGINS {
            let src = profile.join(format!("lib{lib}.so"));
            let dst = dir.join(format!("lib{lib}.so"));
            std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        for (src, lib) in C_PLUGINS {
            let dst = dir.join(format!("lib{lib}.so"));
            compile_c(&repo().join(src), &dst);
        }
        dir
    })
}

/// Compiles a C plugin with the system compiler against `plugins/lifeline_plugin.h`.
pub fn compile_c(src: &Path, out: &Path) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let res = Command::new(&cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fPIC",
            "-shared",
            "-fvisibility=hidden",
        ])
        .arg("-I")
        .arg(repo().join("plugins"))
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cc}` (install the Debian package gcc): {e}"));
    assert!(
        res.status.success(),
        "compiling {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Path of a test plugin library.
pub fn lib(name: &str) -> PathBuf {
    plugin_dir().join(format!("lib{name}.so"))
}

/// Parses `toml` as a config file in `dir`; `{plugins}` is replaced by the plugin dir.
pub fn config(dir: &Path, toml: &str) -> Result<Config, String> {
    let text = toml
        .replace("{plugins}", plugin_dir().to_str().expect("utf-8"))
        .replace("{dir}", dir.to_str().expect("utf-8"));
    let path = dir.join("config.toml");
    std::fs::write(&path, &text).expect("write config");
    lifeline::config::load(&path).map_err(|e| e.to_string())
}

/// A check built from a one-check config, with its own state table, run by hand.
pub struct Built {
    pub check: Arc<dyn Check>,
    pub config: CheckConfig,
    pub states: Arc<StateTable>,
}

impl Built {
    pub fn new(cfg: &Config, name: &str) -> Self {
        lifeline::net::tls::install_provider();
        let config = cfg
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}"))
            .as_ref()
            .clone();
        let env = BuildEnv {
            http: lifeline::net::http_client::shared(),
            push: Default::default(),
        };
        let check = config.spec.build(&env).expect("build");
        Self {
            check,
            config,
            states: Arc::new(StateTable::new()),
        }
    }

    /// One probe with the check's timeout (applied from outside, like the supervisor).
    pub async fn probe(&self) -> Outcome {
        let at = Attempt {
            check: Arc::from(self.config.name.as_str()),
            timeout: self.config.timing.timeout,
            attempt: 0,
            states: self.states.clone(),
            cancel: CancellationToken::new(),
        };
        let outer = self.config.timing.timeout + Duration::from_secs(2);
        tokio::time::timeout(outer, self.check.probe(&at))
            .await
            .expect("probe returned within its timeout (plus slack)")
    }
}

/// The value of a metric line starting with `prefix` (e.g. `lifeline_check_perfdata{…}`).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
