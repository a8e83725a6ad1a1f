//! Config loading: the shipped file validates; broken files give exact PATH:LINE:COL
//! messages, all in one run; missing substitutions are errors; secrets never print.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn validate(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args(["validate", "--config"])
        .arg(path)
        .env_remove("LIFELINE_NOPE")
        .output()
        .expect("run lifeline");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` as `c.toml` in `dir`; returns its path.
fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn shipped_config_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let (code, out, err) = validate(&path);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn broken_config_reports_every_error_with_position() {
    let path = data("config/broken.toml");
    let (code, _out, err) = validate(&path);
    assert_eq!(code, 2);
    let p = path.display().to_string();
    let got: Vec<String> = err
        .lines()
        .map(|l| l.replacen(&p, "broken.toml", 1))
        .collect();
    let want = [
        "broken.toml:2:10: `listen` must be HOST:PORT with an IP address, got `localhost:99999`",
        "broken.toml:3:9: `shard` must be \"i/n\" with 1 ≤ i ≤ n",
        "broken.toml:6:1: unknown key `intervall` (did you mean `interval`?)",
        "broken.toml:7:11: `timeout`: invalid duration `3 parsecs`; use a number with a unit, like 250ms, 5s, 2m, 1h",
        "broken.toml:9:1: backoff `base` must be greater than 0 and not greater than `max`",
        "broken.toml:14:8: check name `Bad Name` must match ^[a-z0-9][a-z0-9_.-]{0,62}$",
        "broken.toml:16:11: `address` must be HOST:PORT, got `nope`",
        "broken.toml:22:22: label name `check` is not a valid Prometheus label name (or is reserved: check, kind, mode)",
        "broken.toml:25:8: duplicate check name `dup`",
        "broken.toml:26:8: unknown check kind `htp`; known kinds: KINDS",
        "broken.toml:31:7: `url` must use ws or wss, got `http:`",
        "broken.toml:32:10: `expect`: invalid regex: unclosed group",
        "broken.toml:34:15: `depends_on` names unknown check `nope`",
        "broken.toml:39:8: kind `tcp` has no session mode; use mode = \"probe\"",
        "broken.toml:41:1: unknown key `adress` (did you mean `address`?)",
        "broken.toml:42:1: unknown key `token`",
        "broken.toml: 16 errors",
    ];
    let kinds: Vec<&str> = lifeline::check::registry::KINDS
        .iter()
        .map(|k| k.name)
        .collect();
    let want: Vec<String> = want
        .iter()
        .map(|l| l.replace("KINDS", &kinds.join(", ")))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn toml_syntax_error_has_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(&dir, "[agent]\nlisten = \"127.0.0.1:1\"\nx = [\n");
    let (code, _, err) = validate(&p);
    assert_eq!(code, 2);
    assert!(
        err.starts_with(&format!("{}:3:6: TOML syntax: unclosed array", p.display())),
        "{err}"
    );
}

#[test]
fn missing_env_substitution_is_an_error_at_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(&dir, "[agent]\napi_token = \"${env:LIFELINE_NOPE}\"\n");
    let (code, _, err) = validate(&p);
    assert_eq!(code, 2);
    assert!(
        err.contains(":2:13: `api_token`: environment variable `LIFELINE_NOPE` is not set"),
        "{err}"
    );
}

#[test]
fn file_substitution_and_defaults_inheritance() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("addr"), "127.0.0.1:9\n").unwrap();
    let p = write_config(
        &dir,
        r#"
[defaults]
interval = "7s"
[defaults.backoff]
max = "10s"
[[checks]]
name = "a"
kind = "tcp"
address = "${file:addr}"
timeout = "1s"
backoff = { base = "2s" }
"#,
    );
    let c = lifeline::config::load(&p).unwrap();
    let t = &c.checks[0].timing;
    assert_eq!(t.interval.as_secs(), 7);
    assert_eq!(t.timeout.as_secs(), 1);
    assert_eq!((t.backoff.base.as_secs(), t.backoff.max.as_secs()), (2, 10));
    assert_eq!(t.unhealthy_threshold, 3);
}

#[test]
fn validate_output_never_shows_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        &dir,
        "[agent]\napi_token = \"${env:LL_VALIDATE_SECRET}\"\nlisten = \"${env:LL_VALIDATE_SECRET}\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args(["validate", "--config"])
        .arg(&p)
        .env("LL_VALIDATE_SECRET", "sekrit-Kq27-value")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = output_text(&out);
    assert!(all.contains(":3:10: `listen` must be HOST:PORT"), "{all}");
    assert!(!all.contains("sekrit-Kq27-value"), "secret printed: {all}");
    assert!(all.contains("${env:LL_VALIDATE_SECRET}"), "{all}");
}

/// A value that came from `${env:…}` or `${file:…}` is never echoed in an error, even
/// for keys that are not secrets: the message quotes the source text.
#[test]
fn validate_quotes_the_source_of_substituted_values() {
    let dir = tempfile::tempdir().unwrap();
    let from_env = format!("Zq{:016x}-env-value", fastrand::u64(..));
    let from_file = format!("Wf{:016x}-file-value", fastrand::u64(..));
    std::fs::write(dir.path().join("iv"), format!("{from_file}\n")).unwrap();
    let p = write_config(
        &dir,
        r#"[[checks]]
name = "t"
kind = "tcp"
address = "host-${env:LL_SUBST_VALUE}"
timeout = "${env:LL_SUBST_VALUE}"
interval = "${file:iv}"
"#,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args(["validate", "--config"])
        .arg(&p)
        .env("LL_SUBST_VALUE", &from_env)
        .output()
        .expect("run lifeline");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    for v in [&from_env, &from_file] {
        assert!(
            !stdout.contains(v.as_str()) && !stderr.contains(v.as_str()),
            "value printed:\n{stdout}{stderr}"
        );
    }
    assert!(
        stderr.contains(":5:11: `timeout`: invalid duration `${env:LL_SUBST_VALUE}`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":6:12: `interval`: invalid duration `${file:iv}`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("got `host-${env:LL_SUBST_VALUE}`"),
        "{stderr}"
    );
}

/// Every commented example in the shipped config, uncommented, is a valid config (with its
/// `${env:…}` values set and `plugin_dir` pointing at the built example plugins).
#[test]
fn shipped_config_examples_all_validate() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")).unwrap();
    let start = text
        .find("--- Examples of every kind")
        .expect("examples marker");
    let mut out = String::new();
    let mut uncommented = 0;
    for (i, line) in text.lines().enumerate() {
        let offset: usize = text.lines().take(i).map(|l| l.len() + 1).sum();
        let body = line.strip_prefix("# ").unwrap_or("");
        let is_toml = body.starts_with('[')
            || body.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
        if offset > start && is_toml {
            out.push_str(body);
            uncommented += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(uncommented > 60, "only {uncommented} example lines found");
    let plugins = crate::plugins::plugin_dir();
    let out = out.replace(
        "plugin_dir = \"./plugins/lib\"",
        &format!("plugin_dir = \"{}\"", plugins.display()),
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    std::fs::write(&p, &out).unwrap();
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args(["validate", "--config"])
        .arg(&p)
        .envs([
            ("PG_PASSWORD", "x"),
            ("REDIS_PASSWORD", "x"),
            ("MYSQL_PASSWORD", "x"),
            ("MQTT_PASSWORD", "x"),
            ("SLACK_WEBHOOK_URL", "https://hooks.example.net/x"),
            ("HOOK_SECRET", "x"),
            ("SMTP_PASSWORD", "x"),
            ("API_TOKEN", "x"),
            ("AMI_SECRET", "x"),
            ("PAGERDUTY_ROUTING_KEY", "0123456789abcdef0123456789abcdef"),
            ("OPSGENIE_API_KEY", "x"),
            ("TEAMS_WEBHOOK_URL", "https://teams.example.net/x"),
            (
                "DISCORD_WEBHOOK_URL",
                "https://discord.example.net/api/webhooks/1/x",
            ),
            ("TELEGRAM_BOT_TOKEN", "123:abc"),
            ("NTFY_TOKEN", "x"),
            ("INCIDENTS_API_KEY", "x"),
            ("SIP_MONITOR_PASSWORD", "x"),
            ("BACKUP_PUSH_TOKEN", "0123456789abcdef"),
        ])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "uncommented examples do not validate:\n{}\n---\n{out}",
        String::from_utf8_lossy(&res.stderr)
    );
}

/// The keys of the `tls`, `dns` and `icmp` kinds and `tls_expiry_warning` report bad
/// values at their position, all in one run (exit 2).
#[test]
fn tls_dns_icmp_keys_report_bad_values_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[[checks]]
name = "t"
kind = "tls"
address = "nope"
tls_expiry_warning = "soon"
[[checks]]
name = "d"
kind = "dns"
query = "a..b"
record = "PTR"
server = "dns.example"
transport = "quic"
[[checks]]
name = "i"
kind = "icmp"
host = "10.0.0.1"
count = 0
max_loss = 150
[[checks]]
name = "h"
kind = "http"
url = "https://example.com/"
tls_expiry_warning = "off"
"#;
    let p = write_config(&dir, text);
    let (code, _out, err) = validate(&p);
    assert_eq!(code, 2, "{err}");
    let got: Vec<String> = err
        .lines()
        .map(|l| l.replacen(&p.display().to_string(), "c.toml", 1))
        .collect();
    for want in [
        "c.toml:4:11: `address` must be HOST:PORT, got `nope`",
        "c.toml:5:22: `tls_expiry_warning`: ",
        "c.toml:9:9: `query`: `a..b` is not a DNS name",
        "c.toml:10:10: `record` must be one of A, AAAA, CNAME, MX, TXT, SRV, NS, got `PTR`",
        "c.toml:11:10: `server` must be an IP address or IP:PORT, got `dns.example`",
        "c.toml:12:13: `transport` must be \"udp\" or \"tcp\", got `quic`",
        "c.toml:17:9: `count`",
        "c.toml:18:12: `max_loss`",
    ] {
        assert!(
            got.iter().any(|l| l.starts_with(want)),
            "missing `{want}` in:\n{err}"
        );
    }
    assert_eq!(
        got.last().map(String::as_str),
        Some("c.toml: 8 errors"),
        "{err}"
    );
}
