//! `plugin`: native libraries through the C ABI (Rust SDK examples, a C example, and
//! test-only plugins that panic, hang or are not plugins at all).

use std::process::Command;
use std::time::Duration;

use lifeline::check::{ErrorKind, Verdict};
use lifeline::health::Status;

use super::{Built, config, lib, plugin_dir};
use crate::common::api::get_text;
use crate::common::*;

fn one_check(dir: &std::path::Path, keys: &str) -> Result<lifeline::config::Config, String> {
    config(
        dir,
        &format!(
            "[agent]\ndata_dir = \"{{dir}}/data\"\nplugin_dir = \"{{plugins}}\"\n[[checks]]\nname = \"p\"\nkind = \"plugin\"\n{keys}\n"
        ),
    )
}

#[tokio::test]
async fn c_example_loads_through_the_header_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let value = dir.path().join("value");
    std::fs::write(&value, "42.5 more\n").unwrap();
    let cfg = one_check(
        dir.path(),
        &format!(
            "plugin = \"c_threshold\"\nconfig = {{ file = \"{}\", warn = 50, crit = 90 }}",
            value.display()
        ),
    )
    .unwrap();
    let b = Built::new(&cfg, "p");
    let o = b.probe().await;
    assert_eq!(o.verdict, Verdict::Up, "{o:?}");
    assert_eq!(o.message, "OK: value 42.5 (warn 50, crit 90)");
    assert_eq!(o.perfdata.len(), 1);
    assert_eq!(
        (o.perfdata[0].label.as_str(), o.perfdata[0].value),
        ("value", 42.5)
    );
    assert_eq!(o.details["plugin"], "c_threshold");
    std::fs::write(&value, "60").unwrap();
    assert_eq!(b.probe().await.verdict, Verdict::Warn(None));
    std::fs::write(&value, "99").unwrap();
    let o = b.probe().await;
    assert_eq!(o.verdict, Verdict::Down(ErrorKind::Rejected));
    assert_eq!(o.message, "CRITICAL: value 99 (warn 50, crit 90)");
    std::fs::remove_file(&value).unwrap();
    let o = b.probe().await;
    assert_eq!(o.verdict, Verdict::Unknown);
    assert!(o.message.contains("No such file"), "{}", o.message);

    // The plugin's own config check is a validate error at the `config` value.
    let e = one_check(
        dir.path(),
        "plugin = \"c_threshold\"\nconfig = { warn = 1, crit = 2 }",
    )
    .unwrap_err();
    assert!(
        e.contains("config.toml:8:10: plugin `c_threshold` refused the config: config needs `file` (a path)"),
        "{e}"
    );
}

/// A minimal HTTP server answering every request with `body` (JSON).
async fn json_server(body: &'static str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    crate::common::accept_each(move |mut s| {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let resp = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    })
    .await
}

#[tokio::test]
async fn rust_probe_example_checks_a_json_field() {
    let (addr, server) = json_server(r#"{"queue":{"state":"ok","depth":7}}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_check(
        dir.path(),
        &format!(
            "plugin = \"http_json\"\nconfig = {{ url = \"http://{addr}/status\", pointer = \"/queue/state\", equals = \"ok\" }}\n[[checks]]\nname = \"depth\"\nkind = \"plugin\"\nplugin = \"http_json\"\nconfig = {{ url = \"http://{addr}/\", pointer = \"/queue/depth\", warn_above = 5 }}"
        ),
    )
    .unwrap();
    let o = Built::new(&cfg, "p").probe().await;
    assert_eq!(o.verdict, Verdict::Up, "{o:?}");
    assert_eq!(o.message, "/queue/state = \"ok\"");
    let o = Built::new(&cfg, "depth").probe().await;
    assert_eq!(o.verdict, Verdict::Warn(None), "{o:?}");
    assert_eq!(o.perfdata[0].value, 7.0);
    server.abort();
    let _ = server.await;
    let o = Built::new(&cfg, "p").probe().await;
    assert_eq!(o.verdict, Verdict::Down(ErrorKind::Rejected), "{o:?}");
    assert!(o.message.contains("connect"), "{}", o.message);
}

#[tokio::test]
async fn rust_custom_rule_example_reads_the_state_snapshot() {
    let sip = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sip_addr = sip.local_addr().unwrap();
    let ami = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ami_addr = ami.local_addr().unwrap();
    let a = TestAgent::start(&agent_toml(&format!(
        r#"
plugin_dir = "{plugins}"
[[checks]]
name = "pbx-sip"
kind = "tcp"
address = "{sip_addr}"
interval = "100ms"
unhealthy_threshold = 1
[[checks]]
name = "pbx-ami"
kind = "tcp"
address = "{ami_addr}"
interval = "100ms"
unhealthy_threshold = 1
[[checks]]
name = "voice"
kind = "plugin"
plugin = "voice_rule"
config = {{ up = ["pbx-sip", "pbx-ami"], max_latency_ms = {{ "pbx-sip" = 1000 }} }}
interval = "100ms"
unhealthy_threshold = 1
"#,
        plugins = plugin_dir().display()
    )))
    .await;
    let s = a
        .wait_status("voice", Status::Healthy, Duration::from_secs(5))
        .await;
    assert_eq!(s.message, "all required checks are up and fast");
    drop(ami);
    let s = a
        .wait_status("voice", Status::Unhealthy, Duration::from_secs(5))
        .await;
    assert_eq!(s.message, "pbx-ami is unhealthy");
    assert_eq!(s.error_kind, Some(ErrorKind::Rejected));
    let text = get_text(&a.url("/metrics")).await;
    assert!(
        text.contains(r#"lifeline_plugin_info{abi="1.0",plugin="voice_rule",version="0.1.0"} 1"#),
        "{text}"
    );
    drop(sip);
    a.stop().await;
}

#[tokio::test]
async fn snapshot_passed_to_state_wanting_plugins_has_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_check(
        dir.path(),
        "plugin = \"misbehave\"\nconfig = { echo_state = true }",
    )
    .unwrap();
    let b = Built::new(&cfg, "p");
    b.states.replace(
        &["p"],
        vec![(
            "p".into(),
            std::sync::Arc::new(lifeline::health::Entry {
                state: parking_lot::Mutex::new(lifeline::health::CheckState::new(&cfg.checks[0])),
            }),
        )],
    );
    let o = b.probe().await;
    let v: serde_json::Value = serde_json::from_str(&o.message).expect("state JSON");
    assert_eq!(v["p"]["status"], "unknown");
    for k in [
        "up",
        "score",
        "latency_ms",
        "labels",
        "error_kind",
        "consecutive_failures",
    ] {
        assert!(v["p"].get(k).is_some(), "missing {k} in {v}");
    }
}

#[tokio::test]
async fn a_panic_is_a_plugin_failure_and_the_next_call_works() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_check(
        dir.path(),
        "plugin = \"misbehave\"\nconfig = { panic_on = [1, 3], latency_ms = 5 }",
    )
    .unwrap();
    let b = Built::new(&cfg, "p");
    let o = b.probe().await;
    assert_eq!(o.verdict, Verdict::Down(ErrorKind::Plugin), "{o:?}");
    assert!(
        o.message.starts_with("plugin panicked: boom on call 1 at "),
        "{}",
        o.message
    );
    let o = b.probe().await;
    assert_eq!(o.verdict, Verdict::Up, "{o:?}");
    assert_eq!(o.message, "call 2");
    assert_eq!(o.latency, Duration::from_millis(5));
    assert_eq!(o.perfdata[0].value, 2.0);
    assert_eq!(b.probe().await.verdict, Verdict::Down(ErrorKind::Plugin));
    assert_eq!(b.probe().await.message, "call 4");

    // An `Err` from the plugin is a plugin failure too; statuses map like exec.
    let cfg = one_check(
        dir.path(),
        "plugin = \"misbehave\"\nconfig = { error = \"lost my marbles\" }",
    )
    .unwrap();
    let o = Built::new(&cfg, "p").probe().await;
    assert_eq!(
        (o.verdict, o.message.as_str()),
        (Verdict::Down(ErrorKind::Plugin), "lost my marbles")
    );
    let cfg = one_check(
        dir.path(),
        "plugin = \"misbehave\"\nplugin_kind = \"misbehave_alt\"\nconfig = { status = 3 }",
    )
    .unwrap();
    assert_eq!(
        Built::new(&cfg, "p").probe().await.verdict,
        Verdict::Unknown
    );
}

#[tokio::test]
async fn a_hung_call_times_out_and_the_instance_is_not_reentered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_check(
        dir.path(),
        "plugin = \"misbehave\"\nconfig = { sleep_ms = 1500, sleep_on = [1] }\ntimeout = \"300ms\"",
    )
    .unwrap();
    let b = Built::new(&cfg, "p");
    let t0 = std::time::Instant::now();
    let o = b.probe().await;
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(o.verdict, Verdict::Down(ErrorKind::Timeout), "{o:?}");
    assert!(o.message.contains("timed out after"), "{}", o.message);
    // While call 1 is stuck, runs are refused without touching the instance.
    let o = b.probe().await;
    assert_eq!(o.verdict, Verdict::Down(ErrorKind::Timeout));
    assert!(
        o.message.starts_with("previous call still running"),
        "{}",
        o.message
    );
    assert_eq!(o.details["stuck"], true);
    // Once it returns, the instance is used again: this is call 2, not 3.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let o = b.probe().await;
        if o.verdict == Verdict::Up {
            assert_eq!(o.message, "call 2");
            break;
        }
        assert!(
            o.message.starts_with("previous call still running"),
            "{}",
            o.message
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck call never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_hanging_plugin_does_not_stop_the_agent_serving_metrics() {
    let a = TestAgent::start(&agent_toml(&format!(
        r#"
plugin_dir = "{}"
[[checks]]
name = "stuck"
kind = "plugin"
plugin = "misbehave"
config = {{ sleep_ms = 600000 }}
interval = "100ms"
timeout = "200ms"
unhealthy_threshold = 1
"#,
        plugin_dir().display()
    )))
    .await;
    let s = a
        .wait_status("stuck", Status::Unhealthy, Duration::from_secs(5))
        .await;
    assert_eq!(s.error_kind, Some(ErrorKind::Timeout));
    // Later runs report the stuck call.
    let mut ev = a.events();
    wait_event(&mut ev, Duration::from_secs(5), "a skipped run", |e| {
        e.data["check"] == "stuck"
            && e.data["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("previous call still running"))
    })
    .await;
    let text = get_text(&a.url("/metrics")).await;
    assert!(
        text.contains(r#"lifeline_check_up{check="stuck""#),
        "{text}"
    );
    assert!(text.contains(r#"plugin="misbehave""#), "{text}");
    let t0 = std::time::Instant::now();
    a.stop().await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn bad_libraries_are_refused_with_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pd = plugin_dir().display().to_string();
    let cases = [
        (
            "wrong_abi",
            format!("{pd}/libwrong_abi.so: plugin ABI 2.0 is not supported"),
        ),
        (
            "short_table",
            format!("{pd}/libshort_table.so: plugin table is 16 bytes, ABI 1 needs at least 64"),
        ),
        (
            "not_a_plugin",
            format!(
                "{pd}/libnot_a_plugin.so: not a lifeline plugin: no `lifeline_plugin_entry_v1` symbol"
            ),
        ),
        (
            "abort_build",
            format!("{pd}/libabort_build.so: built with panic = \"abort\""),
        ),
        (
            "/nonexistent/libx.so",
            "/nonexistent/libx.so: cannot open: No such file or directory".to_string(),
        ),
    ];
    for (plugin, want) in cases {
        let e = one_check(dir.path(), &format!("plugin = \"{plugin}\"")).unwrap_err();
        assert!(
            e.contains(&format!("config.toml:7:10: plugin refused: {want}")),
            "{plugin}: {e}"
        );
    }
    let e = one_check(dir.path(), "plugin = \"nosuch\"").unwrap_err();
    assert!(
        e.contains(&format!(
            "plugin `nosuch` not found (looked for {pd}/libnosuch.so and {pd}/nosuch.so)"
        )),
        "{e}"
    );
    // A random system library (not built against the header at all).
    let e = one_check(
        dir.path(),
        "plugin = \"/usr/lib/x86_64-linux-gnu/libz.so.1\"",
    );
    if std::path::Path::new("/usr/lib/x86_64-linux-gnu/libz.so.1").exists() {
        assert!(e.unwrap_err().contains("not a lifeline plugin"));
    }
    let e = one_check(dir.path(), "plugin = \"misbehave\"\nplugin_kind = \"nope\"").unwrap_err();
    assert!(e.contains("config.toml:8:15: plugin `misbehave` has no kind `nope` (it implements: misbehave, misbehave_alt)"), "{e}");
    let e = one_check(
        dir.path(),
        "plugin = \"misbehave\"\nconfig = { fail_create = \"no way\" }",
    )
    .unwrap_err();
    assert!(
        e.contains("config.toml:8:10: plugin `misbehave` refused the config: no way"),
        "{e}"
    );

    // A group-writable library could be swapped by someone else: refused.
    let writable = dir.path().join("plugins");
    std::fs::create_dir(&writable).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = writable.join("libcopy.so");
    std::fs::copy(lib("c_threshold"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o775)).unwrap();
    let e = lifeline::plugin::load(&copy).unwrap_err();
    assert!(
        e.to_string()
            .contains("refusing to load a group- or world-writable library"),
        "{e}"
    );
}

#[test]
fn plugin_inspect_prints_the_table_or_refuses() {
    let bin = env!("CARGO_BIN_EXE_lifeline");
    let out = Command::new(bin)
        .args(["plugin", "inspect"])
        .arg(lib("voice_rule"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "name:    voice_rule",
        "version: 0.1.0",
        "abi:     1.0",
        "kinds:   all_up",
        "flags:   panic_unwind, wants_state, rust_sdk",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    let out = Command::new(bin)
        .args(["plugin", "inspect"])
        .arg(lib("c_threshold"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kinds:   threshold"));
    for (file, reason) in [
        (lib("wrong_abi"), "plugin ABI 2.0 is not supported"),
        (lib("not_a_plugin"), "no `lifeline_plugin_entry_v1` symbol"),
        ("/nonexistent/libx.so".into(), "No such file or directory"),
    ] {
        let out = Command::new(bin)
            .args(["plugin", "inspect"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{}: ", file.display())) && stderr.contains(reason),
            "{stderr}"
        );
    }
}

#[test]
fn the_sdk_refuses_to_build_with_panic_abort() {
    let target = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "--offline",
            "-p",
            "lifeline-plugin-sdk",
            "--config",
            "profile.dev.panic=\"abort\"",
        ])
        .env("CARGO_TARGET_DIR", target.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a panic=abort build must fail");
    assert!(
        stderr.contains("lifeline plugins must be built with panic = \\\"unwind\\\"")
            || stderr.contains("lifeline plugins must be built with panic = \"unwind\""),
        "{stderr}"
    );
}
