//! Cost of one `plugin` call and one `exec` call, in agent CPU (getrusage) and wall time.
//!
//! Run: `cargo bench --bench plugin_exec` (needs `cc` and `/bin/true`). Figures go to
//! `docs/benchmarks/plugins.md`.

// Benchmarks and test harnesses time whole processes and wait for peers from plain
// threads: std's clock is the right one here (clippy.toml bans it in the agent's async code).
#![allow(clippy::disallowed_methods)]

#[path = "support/runtime.rs"]
mod runtime;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeline::check::{Attempt, BuildEnv, Check};
use lifeline::health::StateTable;
use nix::sys::resource::{UsageWho, getrusage};
use tokio_util::sync::CancellationToken;

const NOOP_C: &str = r#"
#include <string.h>
#include "lifeline_plugin.h"
static int32_t create(const lifeline_host *h, lifeline_str k, lifeline_str c, void **o) {
  (void)h; (void)k; (void)c; *o = (void *)1; return 0;
}
static int32_t check(void *i, const lifeline_host *h, lifeline_str s) {
  (void)i; (void)s;
  lifeline_str m = {(const uint8_t *)"ok", 2};
  h->set_message(h->ctx, m);
  lifeline_str l = {(const uint8_t *)"value", 5};
  h->add_perfdata(h->ctx, l, 1.0);
  return LIFELINE_OK;
}
static void destroy(void *i) { (void)i; }
static const char *const KINDS[] = {"noop", NULL};
static const lifeline_plugin_v1 TABLE = {LIFELINE_ABI_MAJOR, LIFELINE_ABI_MINOR, sizeof(lifeline_plugin_v1), 0,
  "noop", "0.0.1", KINDS, create, check, destroy};
LIFELINE_EXPORT const lifeline_plugin_v1 *lifeline_plugin_entry_v1(void) { return &TABLE; }
"#;

fn cpu(who: UsageWho) -> Duration {
    let u = getrusage(who).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

fn build(dir: &std::path::Path, check: &str) -> Arc<dyn Check> {
    let path = dir.join("config.toml");
    let text = format!(
        "[agent]\ndata_dir = \"{d}/data\"\nplugin_dir = \"{d}\"\n[[checks]]\nname = \"b\"\n{check}\n",
        d = dir.display()
    );
    std::fs::write(&path, text).expect("write config");
    let cfg = lifeline::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let env = BuildEnv {
        http: lifeline::net::http_client::shared(),
        push: Default::default(),
    };
    cfg.checks[0].spec.build(&env).expect("build")
}

async fn measure(name: &str, check: Arc<dyn Check>, n: u32) {
    let at = Attempt {
        check: Arc::from("b"),
        timeout: Duration::from_secs(5),
        attempt: 0,
        states: Arc::new(StateTable::new()),
        cancel: CancellationToken::new(),
    };
    for _ in 0..n / 10 {
        let o = check.probe(&at).await;
        assert!(o.is_success(), "{name}: {o:?}");
    }
    let (c0, k0, t0) = (
        cpu(UsageWho::RUSAGE_SELF),
        cpu(UsageWho::RUSAGE_CHILDREN),
        Instant::now(),
    );
    for _ in 0..n {
        let o = check.probe(&at).await;
        assert!(o.is_success(), "{name}: {o:?}");
    }
    let wall = t0.elapsed();
    let agent = cpu(UsageWho::RUSAGE_SELF) - c0;
    let children = cpu(UsageWho::RUSAGE_CHILDREN) - k0;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
    println!(
        "{name:<28} n={n:<6} agent CPU {:>8.1} µs/call   children CPU {:>8.1} µs/call   wall {:>8.1} µs/call",
        per(agent),
        per(children),
        per(wall)
    );
}

fn main() {
    lifeline::net::tls::install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let src = dir.path().join("noop.c");
    std::fs::write(&src, NOOP_C).expect("write");
    let so = dir.path().join("libnoop.so");
    let st = std::process::Command::new("cc")
        .args([
            "-std=c11",
            "-O2",
            "-fPIC",
            "-shared",
            "-fvisibility=hidden",
            "-I",
        ])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/plugins"))
        .arg("-o")
        .arg(&so)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(st.success(), "cc failed");
    std::fs::set_permissions(&so, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let rt = runtime::multi_thread();
    rt.block_on(async {
        let plugin = build(dir.path(), "kind = \"plugin\"\nplugin = \"noop\"");
        measure("plugin call (C no-op)", plugin, 20_000).await;
        let exec = build(dir.path(), "kind = \"exec\"\ncommand = [\"/bin/true\"]");
        measure("exec call (/bin/true)", exec, 500).await;
        let script = build(
            dir.path(),
            "kind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo 'OK | a=1ms b=2KB c=3%'\"]",
        );
        measure("exec call (sh + perfdata)", script, 500).await;
    });
}
