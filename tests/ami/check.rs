//! The `ami` kind end to end: an in-process agent against the fake AMI server.

use std::time::Duration;

use lifeline::check::ErrorKind;
use lifeline::health::Status;

use crate::common::fake_ami::{AmiUser, FakeAmi, FakeAmiConfig};
use crate::common::*;

fn config(fake: &FakeAmi, mode: &str, extra: &str) -> String {
    format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
[[checks]]
name = "pbx-ami"
kind = "ami"
mode = "{mode}"
address = "{addr}"
username = "monitor"
secret = "amisecret"
interval = "100ms"
timeout = "3s"
backoff = {{ base = "100ms", max = "200ms", jitter = "0s" }}
{extra}
"#,
        addr = fake.address()
    )
}

async fn wait_pings(fake: &FakeAmi, n: usize) {
    wait_for(Duration::from_secs(5), &format!("{n} pings"), || {
        (fake.received("Ping").len() >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn login_and_ping_session_is_healthy_and_logs_off() {
    let fake = FakeAmi::start(FakeAmiConfig::default()).await;
    let a = TestAgent::start(&config(&fake, "session", "")).await;
    let st = a
        .wait_status("pbx-ami", Status::Healthy, Duration::from_secs(5))
        .await;
    assert_eq!(st.details["version"], "10.0.0");
    wait_pings(&fake, 4).await;
    assert_eq!(fake.connections(), 1, "one session, heartbeats on it");
    let login = &fake.received("Login")[0];
    assert_eq!(
        login.raw,
        b"Action: Login\r\nActionID: lifeline-1\r\nUsername: monitor\r\nSecret: amisecret\r\nEvents: off\r\n\r\n",
        "same request shape as the transcript's section 11"
    );
    // Every ping carries a fresh ActionID.
    let ids: Vec<String> = fake
        .received("Ping")
        .iter()
        .map(|p| p.get("ActionID").unwrap_or("").to_string())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    assert!(fake.received("Logoff").is_empty());
    a.stop().await;
    wait_for(Duration::from_secs(3), "Logoff on shutdown", || {
        (!fake.received("Logoff").is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn probe_runs_the_extra_action_and_logs_off() {
    let fake = FakeAmi::start(FakeAmiConfig::default()).await;
    let a = TestAgent::start(&config(&fake, "probe", "action = \"CoreStatus\"")).await;
    a.wait_status("pbx-ami", Status::Healthy, Duration::from_secs(5))
        .await;
    wait_for(Duration::from_secs(5), "two probes", || {
        (fake.received("Logoff").len() >= 2).then_some(())
    })
    .await;
    assert!(fake.received("CoreStatus").len() >= 2);
    assert!(
        fake.connections() >= 2,
        "a probe opens a connection each time"
    );
    a.stop().await;
}

#[tokio::test]
async fn wrong_secret_is_auth_failed_even_though_the_server_closes() {
    // Default fake: Authentication failed after ~1 s, then the server closes at once.
    let fake = FakeAmi::start(FakeAmiConfig::default()).await;
    let cfg = config(&fake, "session", "").replace("amisecret", "wrong");
    let a = TestAgent::start(&cfg).await;
    let mut ev = a.events();
    let e = wait_event(&mut ev, Duration::from_secs(6), "auth_failed", |e| {
        is_event(e, "connection:auth_failed", "pbx-ami")
    })
    .await;
    assert_eq!(e.data["check"], "pbx-ami");
    let st = a.state("pbx-ami");
    assert_eq!(st.status, Status::Unhealthy);
    assert_eq!(st.error_kind, Some(ErrorKind::AuthFailed));
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains("Authentication failed"),
        "{:?}",
        st.last_error
    );
    assert!(
        !st.last_error.unwrap_or_default().contains("wrong"),
        "secret leaked"
    );
    a.stop().await;
}

#[tokio::test]
async fn md5_challenge_login() {
    let fake = FakeAmi::start(FakeAmiConfig::default()).await;
    let a = TestAgent::start(&config(&fake, "session", "auth = \"md5\"")).await;
    a.wait_status("pbx-ami", Status::Healthy, Duration::from_secs(5))
        .await;
    let ch = &fake.received("Challenge")[0];
    assert_eq!(ch.get("AuthType"), Some("MD5"));
    let login = &fake.received("Login")[0];
    assert_eq!(login.get("AuthType"), Some("MD5"));
    assert_eq!(login.get("Key").map(str::len), Some(32));
    assert_eq!(
        login.get("Secret"),
        None,
        "the secret never goes on the wire"
    );
    a.stop().await;
}

#[tokio::test]
async fn server_close_is_detected_at_once_and_reconnected_with_backoff() {
    let fake = FakeAmi::start(FakeAmiConfig::default()).await;
    // Heartbeats every 10 s: the drop must be seen from the socket, not from a heartbeat.
    let cfg = config(&fake, "session", "").replace("interval = \"100ms\"", "interval = \"10s\"");
    let a = TestAgent::start(&cfg).await;
    a.wait_status("pbx-ami", Status::Healthy, Duration::from_secs(5))
        .await;
    let mut ev = a.events();
    let t = tokio::time::Instant::now();
    fake.kick_all();
    let e = wait_event(&mut ev, Duration::from_secs(2), "disconnected", |e| {
        is_event(e, "connection:disconnected", "pbx-ami")
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "drop seen after {:?}",
        t.elapsed()
    );
    assert_eq!(e.data["check"], "pbx-ami");
    let st = a.state("pbx-ami");
    assert_eq!(st.error_kind, Some(ErrorKind::Closed));
    let r = wait_event(&mut ev, Duration::from_secs(2), "reconnecting", |e| {
        is_event(e, "connection:reconnecting", "pbx-ami")
    })
    .await;
    assert_eq!(r.data["delay_ms"], 100, "backoff base");
    wait_event(&mut ev, Duration::from_secs(3), "reconnected", |e| {
        is_event(e, "connection:reconnected", "pbx-ami")
    })
    .await;
    assert_eq!(fake.connections(), 2);
    assert_eq!(fake.received("Login").len(), 2);
    a.stop().await;
}

#[tokio::test]
async fn permission_denied_action_is_auth_failed_and_unknown_action_is_rejected() {
    let mut cfg = FakeAmiConfig::default();
    cfg.users.push(AmiUser {
        name: "nopriv".into(),
        secret: "np".into(),
        read_system: false,
        write_command: false,
    });
    let fake = FakeAmi::start(cfg).await;
    let text = format!(
        r#"
[agent]
data_dir = "{{dir}}/data"
[[checks]]
name = "denied"
kind = "ami"
address = "{addr}"
username = "nopriv"
secret = "np"
action = "CoreStatus"
interval = "100ms"
unhealthy_threshold = 1
[[checks]]
name = "unknown"
kind = "ami"
address = "{addr}"
username = "monitor"
secret = "amisecret"
action = "NoSuchAction"
interval = "100ms"
unhealthy_threshold = 1
"#,
        addr = fake.address()
    );
    let a = TestAgent::start(&text).await;
    let d = a
        .wait_status("denied", Status::Unhealthy, Duration::from_secs(5))
        .await;
    assert_eq!(d.error_kind, Some(ErrorKind::AuthFailed));
    assert!(
        d.last_error
            .unwrap_or_default()
            .contains("Permission denied")
    );
    let u = a
        .wait_status("unknown", Status::Unhealthy, Duration::from_secs(5))
        .await;
    assert_eq!(u.error_kind, Some(ErrorKind::Rejected));
    assert!(
        u.last_error
            .unwrap_or_default()
            .contains("Invalid/unknown command")
    );
    a.stop().await;
}

#[tokio::test]
async fn interleaved_events_and_foreign_replies_do_not_confuse_correlation() {
    // The chatty fake precedes every reply with events (one carrying our own ActionID) and a
    // reply to another client's ActionID, written 7 bytes at a time.
    let fake = FakeAmi::start(FakeAmiConfig {
        chatty: true,
        ..FakeAmiConfig::default()
    })
    .await;
    let a = TestAgent::start(&config(&fake, "session", "action = \"CoreStatus\"")).await;
    let mut ev = a.events();
    a.wait_status("pbx-ami", Status::Healthy, Duration::from_secs(5))
        .await;
    wait_pings(&fake, 8).await;
    while let Ok(e) = ev.try_recv() {
        assert_ne!(e.event, "connection:failed", "{:?}", e.data);
    }
    let st = a.state("pbx-ami");
    assert_eq!(st.status, Status::Healthy);
    assert_eq!(st.consecutive_failures, 0);
    assert_eq!(fake.connections(), 1);
    a.stop().await;
}

#[tokio::test]
async fn a_peer_that_is_not_asterisk_is_a_protocol_error() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        }
    });
    let a = TestAgent::start(&agent_toml(&format!(
        r#"
[[checks]]
name = "x"
kind = "ami"
address = "{addr}"
username = "u"
secret = "s"
interval = "100ms"
unhealthy_threshold = 1
"#
    )))
    .await;
    let st = a
        .wait_status("x", Status::Unhealthy, Duration::from_secs(5))
        .await;
    assert_eq!(st.error_kind, Some(ErrorKind::Protocol));
    assert!(
        st.last_error
            .unwrap_or_default()
            .contains("not an AMI server")
    );
    a.stop().await;
    server.abort();
}
