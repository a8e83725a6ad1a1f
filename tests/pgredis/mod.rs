//! `postgres` and `redis` kinds against real servers (tests/common/postgres.rs, redis.rs).

mod postgres;
mod redis;
pub mod stale;

use std::time::Duration;

use lifeline::check::ErrorKind;
use lifeline::health::CheckState;

use crate::common::{TestAgent, silent_listener};

/// A `[[checks]]` table of `kind` named `name` in `mode`, its target `key = "target"`
/// (`dsn` or `url`), then `timing` and `extra` lines.
pub fn check_toml(
    kind: &str,
    key: &str,
    name: &str,
    mode: &str,
    target: &str,
    timing: &str,
    extra: &str,
) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"{kind}\"\nmode = \"{mode}\"\n{key} = \"{target}\"\n{timing}\n{extra}\n"
    )
}

/// A probe check as [`check_toml`] whose retry is a minute away, so its status must come
/// from attempt 1.
pub fn one_attempt(kind: &str, key: &str, name: &str, target: &str) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"{kind}\"\n{key} = \"{target}\"\nbackoff = {{ base = \"1m\", max = \"1m\" }}\n"
    )
}

/// Waits for each of `names` to be unhealthy with `auth_failed` after exactly one attempt;
/// returns their states.
pub async fn assert_auth_failed_once(a: &TestAgent, names: &[&str]) -> Vec<CheckState> {
    let mut out = Vec::new();
    for name in names {
        let s = a.wait_unhealthy(name, ErrorKind::AuthFailed, SOON).await;
        assert_eq!(
            s.consecutive_failures, 1,
            "{name}: unhealthy after one attempt"
        );
        out.push(s);
    }
    out
}

/// Asserts the metrics hold a `lifeline_check_phase_seconds` series of `check` for every
/// one of `phases`.
pub fn assert_phases(a: &TestAgent, check: &str, phases: &[&str]) {
    let text = a.agent.shared.metrics.render();
    for phase in phases {
        assert!(
            text.lines()
                .any(|l| l.starts_with("lifeline_check_phase_seconds{")
                    && l.contains(&format!("check=\"{check}\""))
                    && l.contains(&format!("phase=\"{phase}\""))),
            "no {phase} phase of {check} in metrics"
        );
    }
}

/// A check of `kind` whose target `key = target(port)` is a server that accepts and never
/// answers times out after one attempt.
pub async fn silent_server_times_out(kind: &str, key: &str, target: impl FnOnce(u16) -> String) {
    let (port, _l) = silent_listener().await;
    let a = TestAgent::start(&format!(
        "{AGENT}[[checks]]\nname = \"c\"\nkind = \"{kind}\"\n{key} = \"{}\"\ninterval = \"200ms\"\ntimeout = \"300ms\"\nunhealthy_threshold = 1\n",
        target(port)
    ))
    .await;
    a.wait_unhealthy("c", ErrorKind::Timeout, SOON).await;
    a.stop().await;
}

/// Timing shared by these tests: fast interval, short backoff without jitter.
pub const FAST: &str = r#"interval = "200ms"
timeout = "2s"
backoff = { base = "100ms", max = "800ms", multiplier = 2.0, jitter = "0ms" }"#;

/// For detection tests: heartbeats far apart, so only the watch on the driver task can
/// notice a dead connection within the deadline.
pub const SLOW_BEATS: &str = r#"interval = "10s"
timeout = "2s"
backoff = { base = "100ms", max = "800ms", multiplier = 2.0, jitter = "0ms" }
heartbeat = { poor_after = "20s", stale_after = "30s" }"#;

/// The `[agent]` header.
pub const AGENT: &str = "[agent]\ndata_dir = \"{dir}/data\"\n";

/// Deadline for things that need one attempt or a few.
pub const SOON: Duration = Duration::from_secs(10);
