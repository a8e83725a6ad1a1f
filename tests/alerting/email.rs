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
    target.stop();
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
