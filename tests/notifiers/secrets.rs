//! No credential of a service notifier is printed: the real binary runs with every kind
//! pointed at a receiver that answers `500` and echoes back the request line, the auth
//! headers and the body (a hostile or misconfigured proxy would), and the JSON logs at
//! debug level must not contain any of them.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{Receiver, Reply};
use crate::common::{free_port, lifeline_run, wait_for};

const PD_KEY: &str = "PDkey0123456789abcdefNEVERPRINTx";
const OG_KEY: &str = "og-key-NeverPrint-4ba2";
const DC_TOKEN: &str = "dc-token-NeverPrint-55aa";
const TM_SIG: &str = "tm-sig-NeverPrint-77bb";
const TG_TOKEN: &str = "42:tg-token-NeverPrint-99cc";
const NT_TOKEN: &str = "tk_ntfy-NeverPrint-11dd";
const NT_TOPIC: &str = "topic-NeverPrint-22ee";
const TP_KEY: &str = "tp-key-NeverPrint-33ff";

#[tokio::test]
async fn credentials_never_reach_the_logs_even_when_a_receiver_echoes_them() {
    let rx = Receiver::start(|req| {
        let echo = format!(
            "{} {}?{} auth={} key={} body={}",
            req.method,
            req.path,
            req.query,
            req.header("authorization"),
            req.header("x-api-key"),
            String::from_utf8_lossy(&req.body)
        );
        Reply::text(500, &echo)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dead = free_port();
    let u = |p: &str| rx.url(p);
    let config = format!(
        r#"
[agent]
listen = "127.0.0.1:{port}"
data_dir = "{d}/data"

[[checks]]
name = "db"
kind = "tcp"
address = "127.0.0.1:{dead}"
interval = "100ms"
timeout = "500ms"
unhealthy_threshold = 1

[[notifiers]]
name = "pd"
kind = "pagerduty"
url = "{pd}"
routing_key = "{PD_KEY}"
retry_base = "100ms"

[[notifiers]]
name = "og"
kind = "opsgenie"
api_url = "{og}"
api_key = "{OG_KEY}"
retry_base = "100ms"

[[notifiers]]
name = "dc"
kind = "discord"
webhook_url = "{dc}"
retry_base = "100ms"

[[notifiers]]
name = "tm"
kind = "teams"
webhook_url = "{tm}"
retry_base = "100ms"

[[notifiers]]
name = "tg"
kind = "telegram"
api_url = "{tg}"
bot_token = "{TG_TOKEN}"
chat_id = 1
retry_base = "100ms"

[[notifiers]]
name = "nt"
kind = "ntfy"
url = "{nt}"
topic = "{NT_TOPIC}"
token = "{NT_TOKEN}"
retry_base = "100ms"

[[notifiers]]
name = "tp"
kind = "template"
url = "{tp}"
headers = {{ X-Api-Key = "{TP_KEY}" }}
body = '{{"t": "{{{{ title }}}}"}}'
retry_base = "100ms"

[[routes]]
notifiers = ["pd", "og", "dc", "tm", "tg", "nt", "tp"]
for = "0s"
group_wait = "0s"
"#,
        d = dir.path().display(),
        pd = u("/v2/enqueue"),
        og = u(""),
        dc = u(&format!("/api/webhooks/1/{DC_TOKEN}")),
        tm = u(&format!(
            "/workflows/x/triggers/manual/paths/invoke?api-version=1&sig={TM_SIG}"
        )),
        tg = u(""),
        nt = u("/"),
        tp = u("/hook"),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();
    let mut child = lifeline_run(&path, "debug", &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lifeline");
    // Collect the logs while the agent runs, until every notifier has logged a failed
    // attempt with the receiver's echo in it.
    let logs = std::sync::Arc::new(parking_lot::Mutex::new(String::new()));
    let mut err = child.stderr.take().expect("stderr");
    let sink = logs.clone();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 8192];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    wait_for(super::T, "a logged failure per notifier", || {
        let l = logs.lock();
        ["pd", "og", "dc", "tm", "tg", "nt", "tp"]
            .iter()
            .all(|n| {
                l.lines().any(|line| {
                    line.contains(&format!("\"notifier\":\"{n}\""))
                        && line.contains("will retry")
                        && line.contains("HTTP 500")
                })
            })
            .then_some(())
    })
    .await;
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    let logs = logs.lock().clone();
    assert!(logs.contains("HTTP 500"), "the echoes were logged: {logs}");
    for s in [
        PD_KEY, OG_KEY, DC_TOKEN, TM_SIG, TG_TOKEN, NT_TOKEN, NT_TOPIC, TP_KEY,
    ] {
        assert!(!logs.contains(s), "secret {s} in logs");
    }
}
