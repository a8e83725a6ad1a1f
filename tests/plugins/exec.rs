//! `exec`: the Nagios plugin protocol against scripts and real Debian plugins.

use std::time::Duration;

use lifeline::check::{ErrorKind, Verdict};
use lifeline::health::Status;

use super::{Built, config, metric};
use crate::common::api::get_text;
use crate::common::*;

fn exec_config(dir: &std::path::Path, command: &str, extra: &str) -> lifeline::config::Config {
    config(
        dir,
        &format!(
            "[agent]\ndata_dir = \"{{dir}}/data\"\n[[checks]]\nname = \"x\"\nkind = \"exec\"\ncommand = {command}\n{extra}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("config: {e}"))
}

async fn run_sh(script: &str, extra: &str) -> lifeline::check::Outcome {
    let dir = tempfile::tempdir().unwrap();
    let cmd = serde_json::to_string(&["/bin/sh", "-c", script]).unwrap();
    let cfg = exec_config(dir.path(), &cmd, extra);
    Built::new(&cfg, "x").probe().await
}

#[tokio::test]
async fn every_exit_code_maps_to_a_verdict() {
    let cases: &[(&str, Verdict, &str)] = &[
        ("echo 'OK - fine'; exit 0", Verdict::Up, "OK - fine"),
        (
            "echo 'WARNING - slow'; exit 1",
            Verdict::Warn(None),
            "WARNING - slow",
        ),
        (
            "echo 'CRITICAL - down'; exit 2",
            Verdict::Down(ErrorKind::Rejected),
            "CRITICAL - down",
        ),
        (
            "echo 'UNKNOWN - bad args'; exit 3",
            Verdict::Unknown,
            "UNKNOWN - bad args",
        ),
        (
            "echo 'odd'; exit 42",
            Verdict::Unknown,
            "exit code 42 is not a plugin status: odd",
        ),
        ("kill -9 $$", Verdict::Unknown, "killed by signal 9"),
        ("exit 0", Verdict::Up, "OK"),
        (
            "echo 'only on stderr' >&2; exit 2",
            Verdict::Down(ErrorKind::Rejected),
            "only on stderr",
        ),
    ];
    for (script, verdict, message) in cases {
        let o = run_sh(script, "").await;
        assert_eq!(&o.verdict, verdict, "{script}: {o:?}");
        assert_eq!(o.message, *message, "{script}");
    }
    let o = run_sh("exit 1", "").await;
    assert_eq!(o.details["exit_code"], 1);
}

#[tokio::test]
async fn env_is_passed_and_no_shell_is_used() {
    let dir = tempfile::tempdir().unwrap();
    // With no shell, `$GREETING` and `;` reach the program literally.
    let cfg = exec_config(
        dir.path(),
        r#"["/bin/echo", "$GREETING;", "x"]"#,
        "env = { GREETING = \"hello\" }",
    );
    let o = Built::new(&cfg, "x").probe().await;
    assert_eq!(o.message, "$GREETING; x");
    let cfg = exec_config(
        dir.path(),
        r#"["/bin/sh", "-c", "echo \"$GREETING\""]"#,
        "env = { GREETING = \"hello\" }",
    );
    assert_eq!(Built::new(&cfg, "x").probe().await.message, "hello");
}

#[tokio::test]
async fn tricky_perfdata_is_parsed_in_base_units() {
    let script = r#"printf '%s\n' "DISK OK | 'free /var'=2GB;1;0.5;0;10 time=250ms;;; load=1,5 bogus = 'it''s'=3c" "long text line" "more long text | rt=1500us cpu=95.5%;80;90" "swap=512KB U=U;1;2"; exit 0"#;
    let o = run_sh(script, "").await;
    assert_eq!(o.verdict, Verdict::Up);
    assert_eq!(o.message, "DISK OK");
    let got: Vec<(String, f64)> = o
        .perfdata
        .iter()
        .map(|p| (p.label.clone(), p.value))
        .collect();
    assert_eq!(
        got,
        vec![
            ("free /var".to_string(), 2.0 * 1024.0 * 1024.0 * 1024.0),
            ("time".to_string(), 0.25),
            ("load".to_string(), 1.5),
            ("it's".to_string(), 3.0),
            ("rt".to_string(), 0.0015),
            ("cpu".to_string(), 95.5),
            ("swap".to_string(), 512.0 * 1024.0),
        ]
    );
}

#[tokio::test]
async fn perfdata_reaches_the_metrics_endpoint() {
    let a = TestAgent::start(&agent_toml(
        r#"
[[checks]]
name = "disk"
kind = "exec"
command = ["/bin/sh", "-c", "echo 'OK | used=3MB;;;0 time=20ms'"]
interval = "100ms"
"#,
    ))
    .await;
    a.wait_status("disk", Status::Healthy, Duration::from_secs(5))
        .await;
    let text = get_text(&a.url("/metrics")).await;
    let used = metric(
        &text,
        r#"lifeline_check_perfdata{check="disk",kind="exec",label="used"}"#,
    );
    assert_eq!(used, Some(3.0 * 1024.0 * 1024.0), "{text}");
    let time = metric(
        &text,
        r#"lifeline_check_perfdata{check="disk",kind="exec",label="time"}"#,
    );
    assert_eq!(time, Some(0.02));
    a.stop().await;
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) STATE ...
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group_and_reaps_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The child and a grandchild both ignore SIGTERM; only SIGKILL to the group ends them.
    let script = format!(
        "trap '' TERM; sh -c \"trap '' TERM; echo \\$\\$ > {d}/grandchild.pid; exec sleep 30\" & echo $$ > {d}/child.pid; echo started; sleep 30; wait"
    );
    let cmd = serde_json::to_string(&["/bin/sh", "-c", &script]).unwrap();
    let cfg = exec_config(dir.path(), &cmd, "timeout = \"700ms\"");
    let b = Built::new(&cfg, "x");
    let started = std::time::Instant::now();
    let o = b.probe().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(o.verdict, Verdict::Down(ErrorKind::Timeout), "{o:?}");
    assert!(o.message.contains("process group killed"), "{}", o.message);
    let read = |f: &str| -> i32 {
        std::fs::read_to_string(dir.path().join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .trim()
            .parse()
            .unwrap()
    };
    let child = read("child.pid");
    let grandchild = read("grandchild.pid");
    let me = std::process::id() as i32;
    // The child was ours: it must be reaped (gone), not a zombie.
    wait_for(Duration::from_secs(3), "the child to be reaped", || {
        proc_state(child).is_none().then_some(())
    })
    .await;
    // The grandchild was re-parented; it must at least be dead (a zombie of init is fine,
    // a zombie of ours is not).
    wait_for(
        Duration::from_secs(3),
        "the grandchild to die",
        || match proc_state(grandchild) {
            None => Some(()),
            Some('Z') if ppid(grandchild) != Some(me) => Some(()),
            _ => None,
        },
    )
    .await;
}

#[tokio::test]
async fn huge_output_is_capped_and_drained() {
    // 20 MB on one line: far more than a pipe holds, so the command only finishes if the
    // agent keeps draining after the cap.
    let o = run_sh(
        "head -c 20000000 /dev/zero | tr '\\0' x; echo ' | big=1'; echo 'next line'; exit 1",
        "timeout = \"10s\"",
    )
    .await;
    assert_eq!(
        o.verdict,
        Verdict::Warn(None),
        "{}",
        &o.message[..o.message.len().min(200)]
    );
    assert_eq!(o.details["output_truncated"], true);
    assert!(
        o.message.len() <= 1100,
        "message is {} bytes",
        o.message.len()
    );
    assert!(o.message.starts_with("xxxx"));
}

#[tokio::test]
async fn real_debian_plugins_check_dummy_and_check_tcp() {
    let dummy = require_bin(
        "check_dummy",
        "monitoring-plugins-basic",
        &["/usr/lib/nagios/plugins"],
    );
    let dir = tempfile::tempdir().unwrap();
    for (code, verdict) in [
        ("0", Verdict::Up),
        ("1", Verdict::Warn(None)),
        ("2", Verdict::Down(ErrorKind::Rejected)),
        ("3", Verdict::Unknown),
    ] {
        let cmd =
            serde_json::to_string(&[dummy.to_str().unwrap(), code, "from check_dummy"]).unwrap();
        let cfg = exec_config(dir.path(), &cmd, "");
        let o = Built::new(&cfg, "x").probe().await;
        assert_eq!(o.verdict, verdict, "{o:?}");
        assert!(o.message.ends_with("from check_dummy"), "{}", o.message);
    }

    // check_tcp against a real listener, end to end through the agent.
    let check_tcp = require_bin(
        "check_tcp",
        "monitoring-plugins-basic",
        &["/usr/lib/nagios/plugins"],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        }
    });
    let a = TestAgent::start(&agent_toml(&format!(
        r#"
[[checks]]
name = "tcp-plugin"
kind = "exec"
command = ["{}", "-H", "127.0.0.1", "-p", "{port}"]
interval = "200ms"
unhealthy_threshold = 1
"#,
        check_tcp.display()
    )))
    .await;
    let s = a
        .wait_status("tcp-plugin", Status::Healthy, Duration::from_secs(10))
        .await;
    assert!(s.message.starts_with("TCP OK"), "{}", s.message);
    let text = get_text(&a.url("/metrics")).await;
    let t = metric(
        &text,
        r#"lifeline_check_perfdata{check="tcp-plugin",kind="exec",label="time"}"#,
    );
    assert!(t.is_some_and(|t| (0.0..5.0).contains(&t)), "{text}");
    accept.abort();
    let _ = accept.await;
    let s = a
        .wait_status("tcp-plugin", Status::Unhealthy, Duration::from_secs(10))
        .await;
    assert_eq!(s.error_kind, Some(ErrorKind::Rejected), "{}", s.message);
    a.stop().await;
}

#[tokio::test]
async fn bad_exec_config_is_reported_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let e = config(
        dir.path(),
        "[agent]\ndata_dir = \"{dir}/data\"\n[[checks]]\nname = \"x\"\nkind = \"exec\"\ncommand = \"check_x -H host\"\n",
    )
    .unwrap_err();
    assert!(
        e.contains("config.toml:6:11: `command` must be an array of strings"),
        "{e}"
    );
    let e = config(
        dir.path(),
        "[agent]\ndata_dir = \"{dir}/data\"\n[[checks]]\nname = \"x\"\nkind = \"exec\"\ncommand = [\"./nope/check_x\"]\n",
    )
    .unwrap_err();
    assert!(
        e.contains("config.toml:6:12: `command`: no such program"),
        "{e}"
    );
    let e = config(
        dir.path(),
        "[agent]\ndata_dir = \"{dir}/data\"\n[[checks]]\nname = \"x\"\nkind = \"exec\"\ncommand = []\n",
    )
    .unwrap_err();
    assert!(
        e.contains("config.toml:6:11: `command` must name a program"),
        "{e}"
    );
}
