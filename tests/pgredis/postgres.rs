use lifeline::check::ErrorKind;
use lifeline::health::Status;

use super::{
    AGENT, FAST, SLOW_BEATS, SOON, assert_auth_failed_once, assert_phases, check_toml, one_attempt,
};
use crate::common::postgres::{APP_PASSWORD, Pg};
use crate::common::scenarios::{dropped_connection_is_replaced, sigkill_backoff_reconnect};
use crate::common::*;

fn check(name: &str, mode: &str, dsn: &str, extra: &str) -> String {
    check_with(name, mode, dsn, FAST, extra)
}

fn check_with(name: &str, mode: &str, dsn: &str, timing: &str, extra: &str) -> String {
    check_toml("postgres", "dsn", name, mode, dsn, timing, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_is_healthy_with_version_and_phases() {
    let pg = Pg::start().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check("pg", "probe", &pg.app_dsn(), "")
    ))
    .await;
    let s = a.wait_status("pg", Status::Healthy, SOON).await;
    let v = s.details["server_version"]
        .as_str()
        .expect("server_version detail");
    assert!(v.starts_with(char::is_numeric), "server_version = {v}");
    assert_phases(&a, "pg", &["connect", "auth", "exchange"]);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keeps_one_connection_and_heartbeats() {
    let pg = Pg::start().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check("pg", "session", &pg.app_dsn(), "")
    ))
    .await;
    let mut rx = a.events();
    a.wait_status("pg", Status::Healthy, SOON).await;
    let first = pg.lifeline_backends().await;
    assert_eq!(first.len(), 1, "one session connection: {first:?}");
    for _ in 0..3 {
        wait_event(&mut rx, SOON, "heartbeat", |e| {
            is_event(e, "connection:health_check", "pg")
        })
        .await;
    }
    assert_eq!(
        pg.lifeline_backends().await,
        first,
        "heartbeats reuse the same backend"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_are_auth_failed_after_one_attempt() {
    let pg = Pg::start().await;
    let checks = [
        (
            "wrong_pw",
            pg.dsn("app", Some("not-the-password"), "appdb", "sslmode=disable"),
        ),
        (
            "no_such_user",
            pg.dsn("ghost", Some("whatever-pw"), "appdb", "sslmode=disable"),
        ),
        (
            "hba_reject",
            pg.dsn("blocked", Some("blocked-pw"), "appdb", "sslmode=disable"),
        ),
        (
            "no_password",
            pg.dsn("app", None, "appdb", "sslmode=disable"),
        ),
    ];
    let mut cfg = AGENT.to_string();
    for (name, dsn) in &checks {
        cfg.push_str(&one_attempt("postgres", "dsn", name, dsn));
    }
    let a = TestAgent::start(&cfg).await;
    let names = checks.map(|(name, _)| name);
    for s in assert_auth_failed_once(&a, &names).await {
        assert!(
            !s.last_error.unwrap_or_default().contains(APP_PASSWORD),
            "password leaked"
        );
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_is_rejected() {
    let pg = Pg::start().await;
    let dsn = pg.dsn("app", Some(APP_PASSWORD), "no_such_db", "sslmode=disable");
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check("pg", "probe", &dsn, "unhealthy_threshold = 1")
    ))
    .await;
    let s = a.wait_unhealthy("pg", ErrorKind::Rejected, SOON).await;
    assert_error_mentions(&s, "3D000");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_compares_the_first_value() {
    let pg = Pg::start().await;
    let dsn = pg.app_dsn();
    let mut cfg = AGENT.to_string();
    cfg.push_str(&check(
        "good",
        "probe",
        &dsn,
        "query = \"SELECT 40 + 2\"\nexpect = \"42\"",
    ));
    cfg.push_str(&check(
        "bad",
        "probe",
        &dsn,
        "query = \"SELECT 40 + 2\"\nexpect = \"41\"",
    ));
    cfg.push_str(&check(
        "bad_sql",
        "probe",
        &dsn,
        "query = \"SELECT * FROM no_such_table\"",
    ));
    let a = TestAgent::start(&cfg).await;
    a.wait_status("good", Status::Healthy, SOON).await;
    let s = a.wait_unhealthy("bad", ErrorKind::Protocol, SOON).await;
    assert_error_mentions(&s, "`42`");
    a.wait_unhealthy("bad_sql", ErrorKind::Rejected, SOON).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_is_noticed_at_once_backs_off_and_reconnects() {
    let mut pg = Pg::start().await;
    let config = format!(
        "{AGENT}{}",
        check_with("pg", "session", &pg.app_dsn(), SLOW_BEATS, "")
    );
    sigkill_backoff_reconnect(&mut pg, &config, "pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_is_noticed_and_replaced() {
    let pg = Pg::start().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check_with("pg", "session", &pg.app_dsn(), SLOW_BEATS, "")
    ))
    .await;
    a.wait_status("pg", Status::Healthy, SOON).await;
    let before = pg.lifeline_backends().await;
    assert_eq!(before.len(), 1);
    let terminate = format!("SELECT pg_terminate_backend({})", before[0]);
    dropped_connection_is_replaced(&a, "pg", "pg_terminate_backend", async {
        pg.query(&terminate).await;
    })
    .await;
    let after = pg.lifeline_backends().await;
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new backend");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_checks_share_one_connection() {
    let pg = Pg::start().await;
    let dsn = pg.app_dsn();
    let mut cfg = AGENT.to_string();
    cfg.push_str(&check("pg_a", "session", &dsn, ""));
    cfg.push_str(&check("pg_b", "session", &dsn, ""));
    cfg.push_str(&check("pg_other", "session", &dsn, "query = \"SELECT 2\""));
    let a = TestAgent::start(&cfg).await;
    a.wait_all(&["pg_a", "pg_b", "pg_other"], Status::Healthy, SOON)
        .await;
    let backends = pg.lifeline_backends().await;
    assert_eq!(
        backends.len(),
        2,
        "pg_a and pg_b share; pg_other has its own: {backends:?}"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    super::silent_server_times_out("postgres", "dsn", |port| {
        format!("postgres://app:pw@127.0.0.1:{port}/appdb?sslmode=disable")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_against_a_tls_server() {
    let pg = Pg::start_tls().await;
    let ca = pg.ca.clone().expect("ca");
    let ca = ca.display();
    let port = pg.port;
    let url =
        |host: &str, q: &str| format!("postgres://app:{APP_PASSWORD}@{host}:{port}/appdb?{q}");
    let cases: &[(&str, String, Status)] = &[
        (
            "disable",
            url("127.0.0.1", "sslmode=disable"),
            Status::Healthy,
        ),
        (
            "prefer",
            url("127.0.0.1", "sslmode=prefer"),
            Status::Healthy,
        ),
        (
            "require",
            url("127.0.0.1", "sslmode=require&application_name=tls-require"),
            Status::Healthy,
        ),
        (
            "verify_ca",
            url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
            Status::Healthy,
        ),
        (
            "verify_full_ip",
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            Status::Unhealthy,
        ),
        (
            "verify_full_name",
            url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            Status::Healthy,
        ),
        (
            "verify_ca_system",
            url("127.0.0.1", "sslmode=verify-ca"),
            Status::Unhealthy,
        ),
    ];
    let mut cfg = AGENT.to_string();
    for (name, dsn, _) in cases {
        let mode = if *name == "require" {
            "session"
        } else {
            "probe"
        };
        cfg.push_str(&check(name, mode, dsn, "unhealthy_threshold = 1"));
    }
    let a = TestAgent::start(&cfg).await;
    for (name, _, want) in cases {
        if *want == Status::Unhealthy {
            a.wait_unhealthy(name, ErrorKind::Tls, SOON).await;
        } else {
            a.wait_status(name, *want, SOON).await;
        }
    }
    // `require` really encrypts, and the handshake is timed.
    let ssl = pg
        .query("SELECT s.ssl::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'tls-require'")
        .await;
    assert_eq!(ssl, ["true"]);
    assert_phases(&a, "require", &["tls"]);
    // The server certificate is reported (tokio-postgres hides the connection: the
    // capturing verifier saw it), also when the check refused it for its name.
    for name in ["require", "verify_full_name", "verify_full_ip"] {
        let tls = &a.state(name).details["tls"];
        assert_eq!(tls["subject"], "CN=localhost", "{name}: {tls}");
        assert_eq!(tls["sans"], serde_json::json!(["localhost"]), "{name}");
    }
    assert!(!a.state("disable").details.contains_key("tls"));
    assert!(
        a.check_metric(
            "lifeline_check_tls_not_after_timestamp_seconds",
            "verify_full_name"
        )
        .is_some()
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_plain_server_is_a_tls_failure() {
    let pg = Pg::start().await;
    let dsn = pg.dsn("app", Some(APP_PASSWORD), "appdb", "sslmode=require");
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check("pg", "probe", &dsn, "unhealthy_threshold = 1")
    ))
    .await;
    a.wait_unhealthy("pg", ErrorKind::Tls, SOON).await;
    a.stop().await;
}
