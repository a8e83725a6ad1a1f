//! The email notifier against a real SMTP server (Debian `python3-aiosmtpd`).

use std::time::Duration;

use super::{AlertAgent, Target, agent_section, tcp_check};
use crate::common::receivers::SmtpServer;

const T: Duration = Duration::from_secs(15);

fn config(dir: &std::path::Path, port: u16, target: &str, extra: &str) -> String {
    format!(
        r#"{}
[[notifiers]]
name = "mail"
kind = "email"
smtp_url = "smtp://127.0.0.1:{port}"
from = "lifeline <lifeline@example.test>"
to = ["oncall@example.test", "dba@example.test"]
retry_base = "100ms"
{extra}

[[routes]]
notifiers = ["mail"]
for = "0s"
group_wait = "0s"
{}"#,
        agent_section(dir),
        tcp_check("db", target, ""),
    )
}

#[tokio::test]
async fn email_gets_firing_and_resolved_with_text_and_html_parts() {
    let smtp = SmtpServer::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut target = Target::up().await;
    let a = AlertAgent::start(
        dir.path(),
        &config(dir.path(), smtp.port, &target.addr(), ""),
    )
    .await;
    a.wait_status("db", lifeline::health::Status::Healthy, T)
        .await;
    target.stop().await;
    let mails = smtp.wait_mails(1, T).await;
    let m = &mails[0];
    assert_eq!(m.mail_from, "lifeline@example.test");
    assert_eq!(m.rcpt_tos, vec!["oncall@example.test", "dba@example.test"]);
    assert!(m.content.contains("Subject: [FIRING] db"), "{}", m.content);
    assert!(
        m.content
            .contains("To: oncall@example.test, dba@example.test"),
        "{}",
        m.content
    );
    assert!(m.content.contains("multipart/alternative"), "{}", m.content);
    assert!(
        m.content.contains("Content-Type: text/plain"),
        "{}",
        m.content
    );
    assert!(
        m.content.contains("Content-Type: text/html"),
        "{}",
        m.content
    );
    assert!(m.content.contains("unhealthy since"), "{}", m.content);

    target.start().await;
    let mails = smtp.wait_mails(2, T).await;
    assert!(
        mails[1].content.contains("Subject: [RESOLVED] db"),
        "{}",
        mails[1].content
    );
    a.stop().await;
}

#[tokio::test]
async fn email_upgrades_with_starttls_when_offered() {
    let smtp = SmtpServer::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::down();
    // The test server's certificate is self-signed for this run.
    let a = AlertAgent::start(
        dir.path(),
        &config(
            dir.path(),
            smtp.port,
            &target.addr(),
            "tls_skip_verify = true\ntitle = \"{{ status | upper }}: {{ checks }} ({{ count }})\"",
        ),
    )
    .await;
    let mails = smtp.wait_mails(1, T).await;
    assert!(mails[0].tls, "the session used STARTTLS");
    assert!(
        mails[0].content.contains("Subject: FIRING: db (1)"),
        "{}",
        mails[0].content
    );
    a.stop().await;
}

/// An SMTP server that offers AUTH even without TLS (tests/data/alerting/smtp_auth_sink.py)
/// and records every AUTH attempt: a refusal to authenticate is then the agent's doing.
struct AuthSink {
    port: u16,
    dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl AuthSink {
    async fn start(starttls: bool) -> Self {
        let py = std::path::PathBuf::from("/usr/bin/python3");
        let ok = std::process::Command::new(&py)
            .args(["-c", "import aiosmtpd"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "python module aiosmtpd missing: install the Debian package `python3-aiosmtpd`"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::common::free_port();
        let mut cmd = tokio::process::Command::new(&py);
        cmd.env("PYTHONPATH", crate::common::data("alerting"))
            .arg(crate::common::data("alerting/smtp_auth_sink.py"))
            .arg(port.to_string())
            .arg(dir.path());
        if starttls {
            let openssl = crate::common::require_bin("openssl", "openssl", &[]);
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            let st = std::process::Command::new(openssl)
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
                .args(["-subj", "/CN=127.0.0.1", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("run openssl");
            assert!(st.success(), "openssl could not make a certificate");
            cmd.arg(&cert).arg(&key);
        }
        let child = cmd
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn the SMTP AUTH sink");
        crate::common::wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10)).await;
        Self { port, dir, child }
    }

    /// Every AUTH attempt so far (`login`, `mechanism`, `tls`).
    fn auths(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("auth.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("auth line"))
            .collect()
    }

    /// How many messages were accepted.
    fn mails(&self) -> Vec<serde_json::Value> {
        let mut v: Vec<(u64, serde_json::Value)> = std::fs::read_dir(self.dir.path())
            .expect("read sink dir")
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let n: u64 = name.strip_suffix(".json")?.parse().ok()?;
                let text = std::fs::read_to_string(e.path()).ok()?;
                Some((n, serde_json::from_str(&text).ok()?))
            })
            .collect();
        v.sort_by_key(|(n, _)| *n);
        v.into_iter().map(|(_, m)| m).collect()
    }

    async fn wait_mails(&self, n: usize) -> Vec<serde_json::Value> {
        crate::common::wait_for(T, &format!("{n} emails"), || {
            let m = self.mails();
            (m.len() >= n).then_some(m)
        })
        .await
    }
}

impl Drop for AuthSink {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

const CREDENTIALS: &str = "username = \"lifeline\"\npassword = \"s3cret-smtp-pass\"";

#[tokio::test]
async fn credentials_without_starttls_are_refused_and_the_server_gets_nothing() {
    let sink = AuthSink::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::down();
    let text = config(dir.path(), sink.port, &target.addr(), CREDENTIALS);
    // One attempt by hand: the error says why, and it is not retried.
    let path = dir.path().join("direct.toml");
    std::fs::write(&path, text.replace("{port}", "0")).unwrap();
    let cfg = lifeline::config::load(&path).expect("config is valid");
    let notifier = lifeline::alert::build_notifier(
        &cfg.alerting.notifiers[0],
        &lifeline::net::http_client::shared(),
    );
    let n = lifeline::alert::Notification::test_sample();
    match notifier.send(&n).await {
        Err(lifeline::alert::NotifyError::Permanent(msg)) => {
            assert_eq!(msg, lifeline::alert::email::CLEARTEXT_REFUSED);
            assert!(msg.contains("does not offer STARTTLS"), "{msg}");
            assert!(!msg.contains("s3cret"), "{msg}");
        }
        other => panic!("expected a permanent refusal, got {other:?}"),
    }
    // The same through the agent: dropped (not retried), nothing reaches the server.
    let a = AlertAgent::start(dir.path(), &text).await;
    a.wait_notifications("mail", "dropped", T, |v| v >= 1.0)
        .await;
    assert_eq!(
        super::metric(&a.metrics(), &super::notifications_series("mail", "failed")),
        0.0,
        "a refusal is not retried"
    );
    a.stop().await;
    assert!(sink.auths().is_empty(), "AUTH was sent: {:?}", sink.auths());
    assert!(sink.mails().is_empty(), "a message was sent");
}

#[tokio::test]
async fn tls_none_sends_credentials_in_clear_text_when_asked_explicitly() {
    let m = one_authenticated_mail(false, "tls = \"none\"").await;
    assert_eq!(m.auths[0]["login"], "lifeline");
    assert_eq!(m.auths[0]["tls"], false);
    m.agent.stop().await;
}

#[tokio::test]
async fn credentials_go_over_starttls_when_the_server_offers_it() {
    let m = one_authenticated_mail(true, "tls_skip_verify = true").await;
    assert_eq!(m.auths[0]["tls"], true, "AUTH only after STARTTLS");
    m.agent.stop().await;
}

#[test]
fn email_tls_settings_that_would_leak_or_contradict_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = format!(
        r#"[[notifiers]]
name = "a"
kind = "email"
smtp_url = "smtp://mail.example.test:587"
from = "a@example.test"
to = ["b@example.test"]
username = "u"
password = "p"
tls = "opportunistic"

[[notifiers]]
name = "b"
kind = "email"
smtp_url = "smtps://mail.example.test"
from = "a@example.test"
to = ["b@example.test"]
tls = "none"

[[notifiers]]
name = "c"
kind = "email"
smtp_url = "smtp://mail.example.test"
from = "a@example.test"
to = ["b@example.test"]
tls = "sometimes"

[[notifiers]]
name = "d"
kind = "email"
smtp_url = "smtp://mail.example.test"
from = "a@example.test"
to = ["b@example.test"]
ca_file = "{}"
"#,
        dir.path().join("missing-ca.pem").display()
    );
    let errs: Vec<String> = match lifeline::config::parse(std::path::Path::new("c.toml"), &src) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    };
    let has = |prefix: &str, text: &str| {
        errs.iter()
            .any(|e| e.starts_with(prefix) && e.contains(text))
    };
    assert!(has("c.toml:9:7:", "clear text"), "{errs:#?}");
    assert!(has("c.toml:17:7:", "smtp:// only"), "{errs:#?}");
    assert!(
        has("c.toml:25:7:", "unknown value `sometimes`"),
        "{errs:#?}"
    );
    assert!(has("c.toml:33:11:", "cannot read ca_file"), "{errs:#?}");
    assert_eq!(errs.len(), 4, "{errs:#?}");
}

/// An agent that sent one mail through an AUTH sink, with what the sink logged.
struct AuthedMail {
    agent: AlertAgent,
    auths: Vec<serde_json::Value>,
    _sink: AuthSink,
    _target: Target,
    _dir: tempfile::TempDir,
}

/// Starts an agent whose email notifier logs in to an AUTH sink (`starttls`: whether the
/// sink offers STARTTLS) with `extra` notifier keys, and waits for its one mail. Asserts
/// the mail's TLS state matches the sink's and that exactly one AUTH was made.
async fn one_authenticated_mail(starttls: bool, extra: &str) -> AuthedMail {
    let sink = AuthSink::start(starttls).await;
    let dir = tempfile::tempdir().unwrap();
    let target = Target::down();
    let agent = AlertAgent::start(
        dir.path(),
        &config(
            dir.path(),
            sink.port,
            &target.addr(),
            &format!("{CREDENTIALS}\n{extra}"),
        ),
    )
    .await;
    let mails = sink.wait_mails(1).await;
    assert_eq!(mails[0]["tls"], starttls);
    let auths = sink.auths();
    assert_eq!(auths.len(), 1, "{auths:?}");
    AuthedMail {
        agent,
        auths,
        _sink: sink,
        _target: target,
        _dir: dir,
    }
}
