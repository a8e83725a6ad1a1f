//! Loading native check plugins (SPEC §8, `plugins/lifeline_plugin.h`).
//!
//! A library is opened once per path (`RTLD_NOW | RTLD_LOCAL`), its ABI checked before
//! anything else in it is called, and it is never unloaded: code of a plugin may still be
//! running on a stuck worker thread, and thread-local destructors of its runtime point into
//! it. Loaded plugins are kept in a process-wide registry that the agent publishes as
//! `lifeline_plugin_info`.
//!
//! All `unsafe` lives in [`ffi`].

pub mod ffi;

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use parking_lot::Mutex;

/// Why a library was refused. The message names the file and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct PluginLoadError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl PluginLoadError {
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// A loaded, validated plugin library (lives for the rest of the process).
#[derive(Debug)]
pub struct Plugin {
    /// Canonical path of the library.
    pub path: PathBuf,
    /// The validated table.
    pub table: ffi::Table,
    /// A validation `create` is running (set until it returns, even after its timeout).
    validating: std::sync::atomic::AtomicBool,
}

/// How long `create` may take while a config is validated (load, reload, `validate`,
/// `check`). A plugin stuck in `create` makes the config invalid instead of hanging the
/// load; its thread is left to finish (at most one per plugin).
pub const VALIDATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Plugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.table.name
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.table.version
    }

    /// `major.minor` of the ABI it was built for.
    pub fn abi(&self) -> String {
        format!("{}.{}", self.table.abi_major, self.table.abi_minor)
    }

    /// Kinds it implements.
    pub fn kinds(&self) -> &[String] {
        &self.table.kinds
    }

    /// Whether `check` gets the state snapshot.
    pub fn wants_state(&self) -> bool {
        self.table.flags & ffi::FLAG_WANTS_STATE != 0
    }

    /// Names of the set flags.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let f = self.table.raw_flags();
        [
            (ffi::FLAG_THREAD_SAFE, "thread_safe"),
            (ffi::FLAG_PANIC_UNWIND, "panic_unwind"),
            (ffi::FLAG_WANTS_STATE, "wants_state"),
            (ffi::FLAG_RUST_SDK, "rust_sdk"),
        ]
        .into_iter()
        .filter(|(bit, _)| f & bit != 0)
        .map(|(_, n)| n)
        .collect()
    }

    /// Runs `create` then `destroy` on a thread of its own, waiting at most
    /// [`VALIDATE_TIMEOUT`]: checks that the plugin accepts a check's config (config load
    /// uses this; nothing else runs). Blocks the calling thread (config loading runs off
    /// the async workers).
    pub fn validate_config(
        &'static self,
        kind: &str,
        config_json: &str,
    ) -> Result<(), ffi::CreateError> {
        self.validate_within(kind, config_json, VALIDATE_TIMEOUT)
    }

    /// As [`Plugin::validate_config`], with the timeout given.
    pub fn validate_within(
        &'static self,
        kind: &str,
        config_json: &str,
        timeout: std::time::Duration,
    ) -> Result<(), ffi::CreateError> {
        use std::sync::atomic::Ordering;
        if self.validating.swap(true, Ordering::AcqRel) {
            return Err(ffi::CreateError::StillRunning);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (kind, config_json) = (kind.to_string(), config_json.to_string());
        let spawned = std::thread::Builder::new()
            .name("lifeline-plugin-validate".into())
            .spawn(move || {
                let ctx = ffi::CallCtx::new("validate".into(), 0);
                let r = self.table.create(&kind, &config_json, &ctx).map(drop);
                self.validating.store(false, Ordering::Release);
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            self.validating.store(false, Ordering::Release);
            return Err(ffi::CreateError::Thread(e.to_string()));
        }
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(plugin = %self.name(), timeout_ms = timeout.as_millis() as u64,
                    "plugin create did not return during config validation; the config is refused");
                Err(ffi::CreateError::TimedOut(timeout))
            }
        }
    }
}

fn registry() -> &'static Mutex<HashMap<PathBuf, &'static Plugin>> {
    static R: OnceLock<Mutex<HashMap<PathBuf, &'static Plugin>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Every plugin loaded so far (for `lifeline_plugin_info`).
pub fn loaded() -> Vec<&'static Plugin> {
    let mut v: Vec<&'static Plugin> = registry().lock().values().copied().collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// Where `plugin = "…"` points: a value containing `/` is a path (relative to the config
/// file's directory `base`); otherwise a library name looked up as
/// `<plugin_dir>/lib<name>.so`, then `<plugin_dir>/<name>.so` (`<plugin_dir>/<name>` when it
/// already ends in `.so`). `LD_LIBRARY_PATH` is never searched. Returns every candidate
/// tried, first the one to use.
pub fn resolve(spec: &str, plugin_dir: &Path, base: &Path) -> Vec<PathBuf> {
    if spec.contains('/') {
        let p = Path::new(spec);
        return vec![if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }];
    }
    if spec.ends_with(".so") {
        return vec![plugin_dir.join(spec)];
    }
    let candidates = vec![
        plugin_dir.join(format!("lib{spec}.so")),
        plugin_dir.join(format!("{spec}.so")),
    ];
    match candidates.iter().position(|c| c.exists()) {
        Some(i) => vec![candidates[i].clone()],
        None => candidates,
    }
}

/// Refuses files an unprivileged user could swap: loading runs the library's code with the
/// agent's privileges.
fn check_permissions(path: &Path) -> Result<(), PluginLoadError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| PluginLoadError::new(path, format!("cannot open: {e}")))?;
    if !meta.is_file() {
        return Err(PluginLoadError::new(path, "not a regular file"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(PluginLoadError::new(
            path,
            format!(
                "refusing to load a group- or world-writable library (mode {:o}); chmod go-w it",
                mode & 0o7777
            ),
        ));
    }
    if let Some(dir) = path.parent()
        && let Ok(dm) = std::fs::metadata(dir)
    {
        let m = dm.permissions().mode();
        if m & 0o022 != 0 && m & 0o1000 == 0 {
            return Err(PluginLoadError::new(
                path,
                format!(
                    "refusing to load from a group- or world-writable directory {} (mode {:o})",
                    dir.display(),
                    m & 0o7777
                ),
            ));
        }
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(PluginLoadError::new(
            path,
            format!(
                "refusing to load a library owned by uid {} (not root or the agent's user)",
                meta.uid()
            ),
        ));
    }
    Ok(())
}

/// Loads the library at `path` (once per canonical path) and validates it.
pub fn load(path: &Path) -> Result<&'static Plugin, PluginLoadError> {
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| PluginLoadError::new(path, format!("cannot open: {e}")))?;
    let mut reg = registry().lock();
    if let Some(p) = reg.get(&canonical) {
        return Ok(p);
    }
    check_permissions(&canonical)?;
    let table = ffi::open(&canonical).map_err(|r| {
        PluginLoadError::new(
            path,
            match r {
                ffi::Refusal::Open(e) => format!("cannot load library: {e}"),
                ffi::Refusal::NotAPlugin(e) | ffi::Refusal::BadTable(e) => e,
            },
        )
    })?;
    let plugin: &'static Plugin = Box::leak(Box::new(Plugin {
        validating: std::sync::atomic::AtomicBool::new(false),
        path: canonical.clone(),
        table,
    }));
    tracing::info!(
        path = %canonical.display(),
        plugin = plugin.name(),
        version = plugin.version(),
        abi = %plugin.abi(),
        "plugin loaded"
    );
    reg.insert(canonical, plugin);
    Ok(plugin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution() {
        let dir = Path::new("/opt/pl");
        let base = Path::new("/etc/lifeline");
        assert_eq!(
            resolve("./x/libfoo.so", dir, base),
            vec![PathBuf::from("/etc/lifeline/./x/libfoo.so")]
        );
        assert_eq!(
            resolve("/abs/libfoo.so", dir, base),
            vec![PathBuf::from("/abs/libfoo.so")]
        );
        assert_eq!(
            resolve("foo.so", dir, base),
            vec![PathBuf::from("/opt/pl/foo.so")]
        );
        assert_eq!(
            resolve("foo", dir, base),
            vec![
                PathBuf::from("/opt/pl/libfoo.so"),
                PathBuf::from("/opt/pl/foo.so")
            ]
        );
    }

    #[test]
    fn missing_file_is_refused_with_its_name() {
        let e = load(Path::new("/nonexistent/libx.so")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/libx.so: cannot open: "),
            "{e}"
        );
    }
}
