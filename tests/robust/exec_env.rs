//! Exec checks start with a clean environment (`PATH`, `LANG`, `TZ`, `HOME` + the check's
//! `env`); `inherit_env = true` passes the rest, but never the agent's own secrets
//! (`LIFELINE_*`, variables the config reads with `${env:…}`, values that are secrets).
//! Real processes: the agent binary runs a script that dumps its environment.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Proc, agent_port};
use crate::common::wait_for;

fn read_env(path: &std::path::Path) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    // Written by `env > tmp; mv tmp path`: complete once it exists.
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_env_is_clean_and_never_carries_the_agents_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("dump.sh");
    crate::common::write_script(
        &script,
        "#!/bin/sh\nenv > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\necho OK\n",
    );
    let (clean, inherit) = (dir.path().join("clean.env"), dir.path().join("inherit.env"));
    let port = agent_port();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[agent]
listen = "127.0.0.1:{port}"
data_dir = "{d}/data"
api_token = "${{env:AGENT_TOKEN_VAR}}"
[[checks]]
name = "clean"
kind = "exec"
command = ["{s}", "{clean}"]
env = {{ CHECK_VAR = "given" }}
interval = "200ms"
[[checks]]
name = "inherit"
kind = "exec"
command = ["{s}", "{inherit}"]
inherit_env = true
interval = "200ms"
"#,
            d = dir.path().display(),
            s = script.display(),
            clean = clean.display(),
            inherit = inherit.display(),
        ),
    )
    .unwrap();
    let token = "tok-9f8e7d6c5b4a-never-in-children";
    let p = Proc::spawn(
        &cfg,
        port,
        &[
            ("AGENT_TOKEN_VAR", token),
            ("LIFELINE_API_TOKEN", "lifeline-own-secret-123"),
            ("COPY_OF_TOKEN", token),
            ("UNRELATED_VAR", "hello"),
            ("LANG", "C.UTF-8"),
            ("TZ", "UTC"),
            ("HOME", "/root"),
        ],
    );
    let within = Duration::from_secs(20);
    let c = wait_for(within, "the clean check's env dump", || read_env(&clean)).await;
    let i = wait_for(within, "the inheriting check's env dump", || {
        read_env(&inherit)
    })
    .await;
    for k in ["PATH", "LANG", "TZ", "HOME"] {
        assert!(c.contains_key(k), "clean env lacks {k}: {c:?}");
    }
    assert_eq!(c.get("LANG").map(String::as_str), Some("C.UTF-8"));
    assert_eq!(c.get("CHECK_VAR").map(String::as_str), Some("given"));
    assert!(!c.contains_key("UNRELATED_VAR"), "{c:?}");
    assert_eq!(i.get("UNRELATED_VAR").map(String::as_str), Some("hello"));
    for env in [&c, &i] {
        for k in ["AGENT_TOKEN_VAR", "LIFELINE_API_TOKEN", "COPY_OF_TOKEN"] {
            assert!(!env.contains_key(k), "{k} reached a child: {env:?}");
        }
        assert!(
            !env.values().any(|v| v.contains(token)),
            "the token's value reached a child"
        );
    }
    drop(p);
}
