//! `plugin` (probe): a check implemented by a native plugin library (SPEC §8,
//! `plugins/lifeline_plugin.h`).
//!
//! Keys: `plugin` (library name looked up in `agent.plugin_dir`, or a path containing `/`,
//! relative to the config file), `plugin_kind` (which of the plugin's kinds; default its
//! first), `config` (table, passed to the plugin as JSON).
//!
//! At config load the library is loaded and its ABI checked, and the plugin's `create` runs
//! once (followed by `destroy`, on a thread of its own, under
//! [`crate::plugin::VALIDATE_TIMEOUT`]) so a refused config — or a `create` that does not
//! return — is a `validate` error at the `config` span. At run time each check owns one instance on its own worker thread. A call past
//! `timeout` is reported as `timeout` and the instance is not called again while that call
//! is still running (each run reports "previous call still running"); a plugin panic or
//! error is `error_kind = "plugin"`. Plugins that read the state snapshot (custom rules)
//! are re-run whenever another check reports a result.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, ErrorKind, KindSpec, Outcome, Perf, Verdict,
};
use crate::config::raw::Table;
use crate::plugin::{self, Plugin, ffi};

/// `plugin` settings.
pub struct PluginSpec {
    /// The loaded library.
    pub plugin: &'static Plugin,
    /// The kind passed to `create`.
    pub kind: String,
    /// The `config` table as JSON (may hold secrets: never printed).
    pub config_json: String,
    /// For state-reading (custom-rule) plugins: every other check, whose results trigger a
    /// re-run.
    pub watches: Vec<String>,
}

impl std::fmt::Debug for PluginSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSpec")
            .field("plugin", &self.plugin.path)
            .field("kind", &self.kind)
            .field("config_json", &"***")
            .finish()
    }
}

/// Reads `plugin`, `plugin_kind`, `config`; loads the library and lets it validate the
/// config.
pub fn parse(t: &Table<'_, '_>, cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let spec = t.req_str("plugin");
    let kind = t.str("plugin_kind");
    let config = match t.raw("config") {
        None => Some(serde_json::json!({})),
        Some(_) => match t.json("config") {
            Some(v @ serde_json::Value::Object(_)) => Some(v),
            Some(_) => {
                if let Some(v) = t.raw("config") {
                    t.error(v.span(), "`config` must be a table");
                }
                None
            }
            None => None,
        },
    };
    let spec = spec?;
    let candidates = plugin::resolve(&spec.value, cx.plugin_dir, &t.loader().base);
    if candidates.len() > 1 {
        let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
        t.error(
            spec.span,
            format!(
                "plugin `{}` not found (looked for {})",
                spec.value,
                tried.join(" and ")
            ),
        );
        return None;
    }
    let plugin = match plugin::load(&candidates[0]) {
        Ok(p) => p,
        Err(e) => {
            t.error(spec.span, format!("plugin refused: {e}"));
            return None;
        }
    };
    let kind = match kind {
        None => plugin.kinds()[0].clone(),
        Some(k) if plugin.kinds().contains(&k.value) => k.value,
        Some(k) => {
            t.error(
                k.span,
                format!(
                    "plugin `{}` has no kind `{}` (it implements: {})",
                    plugin.name(),
                    k.value,
                    plugin.kinds().join(", ")
                ),
            );
            return None;
        }
    };
    let config_json = config?.to_string();
    if let Err(msg) = plugin.validate_config(&kind, &config_json) {
        let span = t
            .raw("config")
            .map(|v| v.span())
            .unwrap_or_else(|| t.span());
        t.error(
            span,
            format!(
                "plugin `{}` refused the config: {}",
                plugin.name(),
                crate::secret::redact(&msg.to_string())
            ),
        );
        return None;
    }
    let watches = if plugin.wants_state() {
        cx.names
            .all()
            .iter()
            .filter(|n| **n != cx.check)
            .map(|n| n.to_string())
            .collect()
    } else {
        Vec::new()
    };
    Some(Arc::new(PluginSpec {
        plugin,
        kind,
        config_json,
        watches,
    }))
}

impl KindSpec for PluginSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let busy = Arc::new(AtomicBool::new(false));
        let plugin = self.plugin;
        let kind = self.kind.clone();
        let config = self.config_json.clone();
        let b = busy.clone();
        std::thread::Builder::new()
            .name(format!("plugin:{}", plugin.name()))
            .spawn(move || worker(plugin, &kind, &config, &rx, &b))
            .map_err(|e| {
                CheckError::new(
                    ErrorKind::Internal,
                    format!("cannot start plugin worker: {e}"),
                )
            })?;
        Ok(Arc::new(PluginCheck {
            plugin,
            jobs: Mutex::new(tx),
            busy,
            stuck_since: Mutex::new(None),
        }))
    }

    fn triggers(&self) -> Vec<String> {
        self.watches.clone()
    }
}

struct Job {
    state: String,
    ctx: Arc<ffi::CallCtx>,
    reply: oneshot::Sender<Reply>,
}

enum Reply {
    /// `create` refused (at run time).
    Refused(String),
    /// `check` returned.
    Done { status: i32, wall: Duration },
}

/// The worker thread: owns the instance, runs one job at a time, destroys the instance
/// when the check is dropped (the job channel closes).
// A dedicated OS thread: std's clock is the right one to time a blocking plugin call.
#[allow(clippy::disallowed_methods)]
fn worker(
    plugin: &'static Plugin,
    kind: &str,
    config: &str,
    rx: &std::sync::mpsc::Receiver<Job>,
    busy: &AtomicBool,
) {
    let mut instance: Option<ffi::Instance> = None;
    while let Ok(job) = rx.recv() {
        let start = std::time::Instant::now();
        let reply = loop {
            if let Some(inst) = instance.as_mut() {
                let status = inst.check(&job.state, &job.ctx);
                break Reply::Done {
                    status,
                    wall: start.elapsed(),
                };
            }
            match plugin.table.create(kind, config, &job.ctx) {
                Ok(i) => instance = Some(i),
                Err(e) => break Reply::Refused(e.to_string()),
            }
        };
        busy.store(false, Ordering::Release);
        let _ = job.reply.send(reply);
    }
    drop(instance);
}

struct PluginCheck {
    plugin: &'static Plugin,
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
    busy: Arc<AtomicBool>,
    stuck_since: Mutex<Option<Instant>>,
}

/// Sets the call's cancel flag if the probe is dropped or times out.
struct CancelOnDrop(Arc<ffi::CallCtx>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }
}

/// Maps a status code and what the callbacks collected to an outcome.
pub fn outcome(status: i32, collected: ffi::Collected, wall: Duration) -> Outcome {
    // A latency no `Duration` holds (a plugin reporting 1e300 s) is ignored like any other
    // nonsense value: the wall time stands (found by the `plugin_callbacks` fuzz target).
    let latency = collected
        .latency
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(wall);
    let msg = collected.message.map(|m| crate::secret::redact(&m));
    let (verdict, default) = match status {
        0 => (Verdict::Up, "OK".to_string()),
        1 => (Verdict::Warn(None), "WARNING".to_string()),
        2 => (Verdict::Down(ErrorKind::Rejected), "CRITICAL".to_string()),
        3 => (Verdict::Unknown, "UNKNOWN".to_string()),
        4 => (Verdict::Down(ErrorKind::Plugin), "plugin error".to_string()),
        n => (
            Verdict::Down(ErrorKind::Plugin),
            format!("plugin returned invalid status {n}"),
        ),
    };
    let message = match (status, msg) {
        (0..=4, Some(m)) => m,
        (0..=4, None) => default,
        (_, Some(m)) => format!("{default}: {m}"),
        (_, None) => default,
    };
    let mut o = Outcome::up(latency).with_message(message);
    o.verdict = verdict;
    o.perfdata = collected
        .perfdata
        .into_iter()
        .map(|(label, value)| Perf { label, value })
        .collect();
    o
}

impl Check for PluginCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            if self.busy.swap(true, Ordering::AcqRel) {
                let since = self
                    .stuck_since
                    .lock()
                    .map(|s| s.elapsed())
                    .unwrap_or_default();
                return Outcome::down(
                    CheckError::new(
                        ErrorKind::Timeout,
                        format!(
                            "previous call still running (for {}); the plugin instance is not called again until it returns",
                            crate::time::fmt_duration(Duration::from_millis(since.as_millis() as u64))
                        ),
                    ),
                    Duration::ZERO,
                )
                .with_detail("plugin", self.plugin.name())
                .with_detail("stuck", true);
            }
            *self.stuck_since.lock() = None;
            // Stop a little before the supervisor's own cut-off, so this outcome (with
            // its clearer message) is the one reported.
            let budget = at.timeout.saturating_sub(at.timeout / 50);
            let deadline = SystemTime::now() + budget;
            let ctx = ffi::CallCtx::new(
                at.check.clone(),
                u64::try_from(crate::time::unix_ms(deadline)).unwrap_or(0),
            );
            let guard = CancelOnDrop(ctx.clone());
            let state = if self.plugin.wants_state() {
                at.states.snapshot_json().to_string()
            } else {
                String::new()
            };
            let (tx, rx) = oneshot::channel();
            let sent = self.jobs.lock().send(Job {
                state,
                ctx: ctx.clone(),
                reply: tx,
            });
            if sent.is_err() {
                self.busy.store(false, Ordering::Release);
                return Outcome::down(
                    CheckError::new(ErrorKind::Internal, "plugin worker thread is gone"),
                    start.elapsed(),
                );
            }
            let reply = tokio::select! {
                r = tokio::time::timeout(budget, rx) => r,
                _ = at.cancel.cancelled() => {
                    *self.stuck_since.lock() = Some(start);
                    return Outcome::down(
                        CheckError::new(ErrorKind::Timeout, "plugin call abandoned"),
                        start.elapsed(),
                    );
                }
            };
            drop(guard);
            let o = match reply {
                Err(_) => {
                    *self.stuck_since.lock() = Some(start);
                    Outcome::down(
                        CheckError::new(
                            ErrorKind::Timeout,
                            format!(
                                "plugin call timed out after {}; the instance is not called again until it returns",
                                crate::time::fmt_duration(budget)
                            ),
                        ),
                        start.elapsed(),
                    )
                }
                Ok(Err(_)) => Outcome::down(
                    CheckError::new(
                        ErrorKind::Internal,
                        "plugin worker thread ended during the call",
                    ),
                    start.elapsed(),
                ),
                Ok(Ok(Reply::Refused(msg))) => Outcome::down(
                    CheckError::new(
                        ErrorKind::Plugin,
                        format!("plugin refused to create the check: {msg}"),
                    ),
                    start.elapsed(),
                ),
                Ok(Ok(Reply::Done { status, wall })) => {
                    let collected = std::mem::take(&mut *ctx.collected.lock());
                    outcome(status, collected, wall)
                }
            };
            o.with_detail("plugin", self.plugin.name())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_too_large_for_a_duration_falls_back_to_the_wall_time() {
        for huge in [1e300, 1.8446744073709552e19, f64::MAX] {
            let c = ffi::Collected {
                message: None,
                latency: Some(huge),
                perfdata: Vec::new(),
            };
            let o = outcome(0, c, Duration::from_millis(7));
            assert_eq!(o.latency, Duration::from_millis(7), "{huge}");
        }
    }

    #[test]
    fn status_mapping() {
        let c = |m: Option<&str>| ffi::Collected {
            message: m.map(String::from),
            latency: Some(0.25),
            perfdata: vec![("x".into(), 1.0)],
        };
        let o = outcome(0, c(Some("fine")), Duration::from_secs(1));
        assert_eq!(o.verdict, Verdict::Up);
        assert_eq!(o.latency, Duration::from_millis(250));
        assert_eq!(o.message, "fine");
        assert_eq!(o.perfdata.len(), 1);
        assert_eq!(
            outcome(1, c(None), Duration::ZERO).verdict,
            Verdict::Warn(None)
        );
        assert_eq!(
            outcome(2, c(None), Duration::ZERO).verdict,
            Verdict::Down(ErrorKind::Rejected)
        );
        assert_eq!(
            outcome(3, c(None), Duration::ZERO).verdict,
            Verdict::Unknown
        );
        assert_eq!(
            outcome(4, c(None), Duration::ZERO).verdict,
            Verdict::Down(ErrorKind::Plugin)
        );
        let o = outcome(77, c(Some("x")), Duration::ZERO);
        assert_eq!(o.verdict, Verdict::Down(ErrorKind::Plugin));
        assert_eq!(o.message, "plugin returned invalid status 77: x");
    }
}
