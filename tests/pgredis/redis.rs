use lifeline::check::ErrorKind;
use lifeline::health::Status;

use super::{
    AGENT, FAST, SLOW_BEATS, SOON, assert_auth_failed_once, assert_phases, check_toml, one_attempt,
};
use crate::common::redis::{ACL_PASSWORD, ACL_USER, PASSWORD, Redis};
use crate::common::scenarios::{dropped_connection_is_replaced, sigkill_backoff_reconnect};
use crate::common::*;

fn check(name: &str, mode: &str, url: &str, extra: &str) -> String {
    check_with(name, mode, url, FAST, extra)
}

fn check_with(name: &str, mode: &str, url: &str, timing: &str, extra: &str) -> String {
    check_toml("redis", "url", name, mode, url, timing, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_is_healthy_with_version_role_and_phases() {
    let r = Redis::start().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check("r", "probe", &r.url("", 0), "role = \"master\"")
    ))
    .await;
    let s = a.wait_status("r", Status::Healthy, SOON).await;
    let v = s.details["redis_version"].as_str().expect("redis_version");
    assert!(v.starts_with(char::is_numeric), "{v}");
    assert_eq!(s.details["role"], "master");
    assert_phases(&a, "r", &["connect", "auth", "exchange"]);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_with_acl_user_and_db_keeps_one_connection() {
    let r = Redis::start_auth().await;
    let url = r.url(&format!("{ACL_USER}:{ACL_PASSWORD}"), 3);
    let a = TestAgent::start(&format!("{AGENT}{}", check("r", "session", &url, ""))).await;
    let mut rx = a.events();
    a.wait_status("r", Status::Healthy, SOON).await;
    for _ in 0..3 {
        wait_event(&mut rx, SOON, "heartbeat", |e| {
            is_event(e, "connection:health_check", "r")
        })
        .await;
    }
    let clients = r.agent_clients().await;
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert!(
        clients[0].contains(&format!("user={ACL_USER}")),
        "{}",
        clients[0]
    );
    assert!(clients[0].contains(" db=3 "), "{}", clients[0]);
    assert!(clients[0].contains("cmd=ping"), "{}", clients[0]);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_are_auth_failed_after_one_attempt() {
    let r = Redis::start_auth().await;
    let checks = [
        ("wrong_pw", r.url(":not-the-password", 0)),
        ("wrong_acl_pw", r.url(&format!("{ACL_USER}:nope-nope"), 0)),
        ("no_such_user", r.url("ghost:whatever", 0)),
        ("no_password", r.url("", 0)),
    ];
    let mut cfg = AGENT.to_string();
    for (name, url) in &checks {
        cfg.push_str(&one_attempt("redis", "url", name, url));
    }
    cfg.push_str(&check(
        "good",
        "probe",
        &r.url(&format!(":{PASSWORD}"), 0),
        "",
    ));
    let a = TestAgent::start(&cfg).await;
    a.wait_status("good", Status::Healthy, SOON).await;
    assert_auth_failed_once(&a, &checks.map(|(name, _)| name)).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_expectation_and_bad_db() {
    let r = Redis::start().await;
    let mut cfg = AGENT.to_string();
    cfg.push_str(&check(
        "want_replica",
        "probe",
        &r.url("", 0),
        "role = \"replica\"\nunhealthy_threshold = 1",
    ));
    cfg.push_str(&check(
        "bad_db",
        "probe",
        &r.url("", 99),
        "unhealthy_threshold = 1",
    ));
    let a = TestAgent::start(&cfg).await;
    let s = a
        .wait_unhealthy("want_replica", ErrorKind::Protocol, SOON)
        .await;
    assert_error_mentions(&s, "master");
    a.wait_unhealthy("bad_db", ErrorKind::Rejected, SOON).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_is_noticed_at_once_backs_off_and_reconnects() {
    let mut r = Redis::start().await;
    let config = format!(
        "{AGENT}{}",
        check_with("r", "session", &r.url("", 0), SLOW_BEATS, "")
    );
    sigkill_backoff_reconnect(&mut r, &config, "r").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_is_noticed_and_replaced() {
    let r = Redis::start().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check_with("r", "session", &r.url("", 0), SLOW_BEATS, "")
    ))
    .await;
    a.wait_status("r", Status::Healthy, SOON).await;
    let before = r.agent_clients().await;
    assert_eq!(before.len(), 1, "{before:?}");
    let id = before[0]
        .split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .expect("id=")
        .to_string();
    dropped_connection_is_replaced(&a, "r", "CLIENT KILL", async {
        r.cmd(&["CLIENT", "KILL", "ID", &id]).await;
    })
    .await;
    let after = r.agent_clients().await;
    assert_eq!(after.len(), 1);
    assert!(!after[0].contains(&format!("id={id} ")), "a new connection");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_checks_share_one_connection() {
    let r = Redis::start().await;
    let mut cfg = AGENT.to_string();
    cfg.push_str(&check("r_a", "session", &r.url("", 0), ""));
    cfg.push_str(&check("r_b", "session", &r.url("", 0), ""));
    cfg.push_str(&check("r_db1", "session", &r.url("", 1), ""));
    let a = TestAgent::start(&cfg).await;
    a.wait_all(&["r_a", "r_b", "r_db1"], Status::Healthy, SOON)
        .await;
    let clients = r.agent_clients().await;
    assert_eq!(
        clients.len(),
        2,
        "r_a and r_b share; r_db1 has its own: {clients:?}"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    super::silent_server_times_out("redis", "url", |port| format!("redis://127.0.0.1:{port}"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_verifies_the_server_certificate() {
    let r = Redis::start_tls().await;
    let ca = r.ca.clone().expect("ca");
    let port = r.port;
    let mut cfg = AGENT.to_string();
    let with_ca = format!("ca_file = \"{}\"\nunhealthy_threshold = 1", ca.display());
    cfg.push_str(&check(
        "trusted",
        "session",
        &format!("rediss://localhost:{port}"),
        &with_ca,
    ));
    cfg.push_str(&check(
        "untrusted",
        "probe",
        &format!("rediss://localhost:{port}"),
        "unhealthy_threshold = 1",
    ));
    cfg.push_str(&check(
        "wrong_name",
        "probe",
        &format!("rediss://127.0.0.1:{port}"),
        &with_ca,
    ));
    let a = TestAgent::start(&cfg).await;
    a.wait_status("trusted", Status::Healthy, SOON).await;
    for name in ["untrusted", "wrong_name"] {
        a.wait_unhealthy(name, ErrorKind::Tls, SOON).await;
    }
    assert_phases(&a, "trusted", &["tls"]);
    assert_eq!(a.state("trusted").details["tls"]["subject"], "CN=localhost");
    a.stop().await;
}
