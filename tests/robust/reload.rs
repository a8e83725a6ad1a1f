//! Reload and shutdown with the real binary: reloads run off the signal loop, a plugin
//! whose `create` blocks cannot hang validation (timeout), overlapping reloads never
//! interleave and the later one wins, and SIGTERM during a slow reload exits within 5 s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{Proc, agent_port};
use crate::common::wait_for;

const WITHIN: Duration = Duration::from_secs(20);

fn agent(port: u16, dir: &Path) -> String {
    format!(
        "[agent]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{d}/data\"\nplugin_dir = \"{p}\"\n",
        d = dir.display(),
        p = crate::plugins::plugin_dir().display()
    )
}

fn tcp(name: &str, target: &str) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"tcp\"\naddress = \"{target}\"\ninterval = \"100ms\"\n"
    )
}

/// A plugin check whose `create` writes `marker` ("create", then "done") and blocks `ms`.
fn slow_plugin(name: &str, marker: &Path, ms: u64) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"plugin\"\nplugin = \"misbehave\"\ninterval = \"1s\"\nconfig = {{ create_touch = \"{m}\", create_sleep_ms = {ms} }}\n",
        m = marker.display()
    )
}

async fn check_names(p: &Proc) -> Option<Vec<String>> {
    let (code, h) = crate::common::api::get_json(&p.url("/health")).await;
    if code != 200 {
        return None;
    }
    let mut v: Vec<String> = h["checks"].as_object()?.keys().cloned().collect();
    v.sort();
    Some(v)
}

fn marker_is(path: &Path, what: &str) -> Option<()> {
    (std::fs::read_to_string(path).ok()? == what).then_some(())
}

/// The real binary running one tcp check on a listener this holds open, with its config
/// file, so a test can rewrite the config and reload.
struct Running {
    dir: tempfile::TempDir,
    _target: std::net::TcpListener,
    t: String,
    port: u16,
    cfg: PathBuf,
    p: Proc,
}

impl Running {
    /// Starts the agent with one tcp check `name`; waits until it serves `/metrics`.
    async fn start(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let t = target.local_addr().unwrap().to_string();
        let port = agent_port();
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!("{}{}", agent(port, dir.path()), tcp(name, &t)),
        )
        .unwrap();
        let p = Proc::spawn(&cfg, port, &[]);
        p.wait_up(WITHIN).await;
        Self {
            dir,
            _target: target,
            t,
            port,
            cfg,
            p,
        }
    }

    /// Rewrites the config: the `[agent]` table, then `checks`.
    fn write(&self, checks: &str) {
        std::fs::write(
            &self.cfg,
            format!("{}{checks}", agent(self.port, self.dir.path())),
        )
        .unwrap();
    }

    /// Reloads (SIGHUP) into tcp check `name` plus a plugin check `plugin` whose create
    /// blocks `ms`; returns once the reload is inside that create, with its marker file.
    async fn reload_into_slow_create(&self, name: &str, plugin: &str, ms: u64) -> PathBuf {
        let marker = self.dir.path().join(format!("{plugin}.marker"));
        self.write(&format!(
            "{}{}",
            tcp(name, &self.t),
            slow_plugin(plugin, &marker, ms)
        ));
        self.p.signal(Signal::SIGHUP);
        wait_for(WITHIN, "the reload to enter the plugin's create", || {
            marker_is(&marker, "create")
        })
        .await;
        marker
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_reload_exits_within_5s() {
    let mut r = Running::start("svc").await;
    r.reload_into_slow_create("svc", "slow", 60_000).await;
    // The agent still answers while the reload is stuck.
    assert_eq!(check_names(&r.p).await, Some(vec!["svc".to_string()]));
    let t0 = Instant::now();
    r.p.signal(Signal::SIGTERM);
    let st = tokio::time::timeout(Duration::from_secs(10), r.p.child.wait())
        .await
        .expect("the agent exits after SIGTERM")
        .expect("wait");
    let took = t0.elapsed();
    eprintln!(
        "SIGTERM during a slow reload: exited in {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(st.success(), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_reloads_never_interleave_and_the_later_one_runs() {
    let mut r = Running::start("v1").await;
    // Reload 1: slow (its plugin's create takes 1.5 s while validating).
    let marker = r.reload_into_slow_create("v2", "v2-plugin", 1_500).await;
    // Reload 2, asked for while reload 1 is still loading: fast.
    r.write(&tcp("v3", &r.t));
    r.p.signal(Signal::SIGHUP);
    let t0 = Instant::now();
    let mut v3_at: Option<Instant> = None;
    let deadline = Instant::now() + WITHIN;
    let mut seen = Vec::new();
    let mut done_at: Option<Instant> = None;
    loop {
        if let Some(names) = check_names(&r.p).await
            && seen.last() != Some(&names)
        {
            seen.push(names);
        }
        if v3_at.is_none() && seen.last().is_some_and(|s| s == &["v3"]) {
            v3_at = Some(Instant::now());
        }
        if done_at.is_none() && marker_is(&marker, "done").is_some() {
            done_at = Some(Instant::now());
        }
        // Observe for a while after reload 1 finished loading: it must not apply.
        if done_at.is_some_and(|d| d.elapsed() > Duration::from_millis(700)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload 1 never finished: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The later reload runs; the earlier one never applies (no v2 in between or after).
    assert_eq!(seen.last(), Some(&vec!["v3".to_string()]), "{seen:?}");
    assert!(
        seen.iter().all(|s| s == &["v1"] || s == &["v3"]),
        "{seen:?}"
    );
    // Reload 2 did not wait for reload 1's slow validation.
    let (v3_at, done_at) = (v3_at.expect("v3 seen"), done_at.expect("reload 1 done"));
    assert!(
        v3_at < done_at,
        "v3 applied only after reload 1 finished loading"
    );
    eprintln!(
        "overlapping reloads: v3 running {} ms after its SIGHUP (reload 1 still validating)",
        (v3_at - t0).as_millis()
    );
    let m = r.p.metrics().await;
    assert_eq!(
        super::metric(&m, "lifeline_config_last_reload_successful"),
        Some(1.0)
    );
    r.p.signal(Signal::SIGTERM);
    let _ = tokio::time::timeout(Duration::from_secs(10), r.p.child.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_whose_create_blocks_fails_validation_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let marker = dir.path().join("m");
    std::fs::write(
        &cfg,
        format!(
            "{}{}",
            agent(agent_port(), dir.path()),
            slow_plugin("stuck", &marker, 60_000)
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(super::BIN)
            .args(["validate", "--config"])
            .arg(&cfg)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("validate returns")
    .expect("run lifeline validate");
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "validate with a blocking create: exit {:?} after {} ms",
        out.status.code(),
        took.as_millis()
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("create did not return within 5s"), "{err}");
    assert!(
        took < lifeline::plugin::VALIDATE_TIMEOUT + Duration::from_secs(3),
        "{took:?}"
    );
}
