//! `mysql` against a real MariaDB (tests/common/mariadb.rs): login + query, `expect`,
//! wrong password → `auth_failed`, unknown database → `rejected`, TLS (a `REQUIRE SSL`
//! user), session heartbeats, a killed connection and a killed server; hostile servers
//! (garbage, an oversized packet length) fail with `protocol` at once.

use lifeline::check::ErrorKind;
use lifeline::health::Status;

use crate::common::hostile::{self, HTTP_GARBAGE};
use crate::common::mariadb::{DATABASE, MariaDb, PASSWORD, TLS_USER, USER};
use crate::common::scenarios::{dropped_connection_is_replaced, sigkill_backoff_reconnect};
use crate::common::*;
use crate::pgredis::{
    AGENT, FAST, SLOW_BEATS, SOON, assert_auth_failed_once, assert_phases, check_toml,
};

fn login(user: &str, password: &str) -> String {
    format!("username = \"{user}\"\npassword = \"{password}\"")
}

fn check(name: &str, mode: &str, m: &MariaDb, extra: &str) -> String {
    check_with(name, mode, m, FAST, extra)
}

fn check_with(name: &str, mode: &str, m: &MariaDb, timing: &str, extra: &str) -> String {
    let address = format!("127.0.0.1:{}", m.port);
    check_toml("mysql", "address", name, mode, &address, timing, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_logs_in_runs_the_query_and_reports_the_version() {
    let m = MariaDb::start().await;
    let ok = login(USER, PASSWORD);
    let mut cfg = AGENT.to_string();
    cfg.push_str(&check("plain", "probe", &m, &ok));
    cfg.push_str(&check(
        "expecting",
        "probe",
        &m,
        &format!("{ok}\ndatabase = \"{DATABASE}\"\nquery = \"SELECT DATABASE()\"\nexpect = \"{DATABASE}\""),
    ));
    cfg.push_str(&check(
        "wrong_value",
        "probe",
        &m,
        &format!("{ok}\nquery = \"SELECT 2\"\nexpect = \"1\"\nunhealthy_threshold = 1"),
    ));
    cfg.push_str(&check(
        "bad_sql",
        "probe",
        &m,
        &format!("{ok}\nquery = \"SELEC nonsense\"\nunhealthy_threshold = 1"),
    ));
    let a = TestAgent::start(&cfg).await;
    let s = a.wait_status("plain", Status::Healthy, SOON).await;
    let v = s.details["server_version"]
        .as_str()
        .expect("server_version");
    assert!(v.contains("MariaDB"), "{v}");
    assert!(s.details["connection_id"].as_u64().is_some());
    a.wait_status("expecting", Status::Healthy, SOON).await;
    assert_phases(&a, "plain", &["connect", "auth", "exchange"]);
    let s = a
        .wait_unhealthy("wrong_value", ErrorKind::Protocol, SOON)
        .await;
    assert_error_mentions(&s, "expected \"1\"");
    let s = a.wait_unhealthy("bad_sql", ErrorKind::Rejected, SOON).await;
    assert_error_mentions(&s, "1064");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_auth_failed_and_unknown_database_rejected() {
    let m = MariaDb::start().await;
    let one = |name: &str, extra: &str| {
        format!(
            "{}{extra}\n",
            crate::pgredis::one_attempt("mysql", "address", name, &format!("127.0.0.1:{}", m.port))
        )
    };
    let mut cfg = AGENT.to_string();
    cfg.push_str(&one("wrong_pw", &login(USER, "not-the-password")));
    cfg.push_str(&one("no_pw", &format!("username = \"{USER}\"")));
    cfg.push_str(&one("ghost", &login("ghost", "x")));
    cfg.push_str(&one(
        "no_db",
        &format!(
            "{}\ndatabase = \"no_such_db\"\nunhealthy_threshold = 1",
            login(USER, PASSWORD)
        ),
    ));
    let a = TestAgent::start(&cfg).await;
    let states = assert_auth_failed_once(&a, &["wrong_pw", "no_pw", "ghost"]).await;
    assert_error_mentions(&states[0], "1045");
    assert!(
        !states[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("not-the-password"),
        "{:?}",
        states[0].last_error
    );
    let s = a.wait_status("no_db", Status::Unhealthy, SOON).await;
    assert_eq!(
        s.error_kind,
        Some(ErrorKind::Rejected),
        "{:?}",
        s.last_error
    );
    assert_error_mentions(&s, "1049");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_heartbeats_on_one_connection_and_a_kill_is_noticed() {
    let m = MariaDb::start().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check_with("s", "session", &m, SLOW_BEATS, &login(USER, PASSWORD))
    ))
    .await;
    a.wait_status("s", Status::Healthy, SOON).await;
    let ids = m.connections_of(USER);
    assert_eq!(ids.len(), 1, "{ids:?}");
    dropped_connection_is_replaced(&a, "s", "KILL", async {
        m.sql(&format!("KILL {}", ids[0]));
    })
    .await;
    let after = m.connections_of(USER);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0], ids[0], "a new connection");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_queries_each_heartbeat() {
    let m = MariaDb::start().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check("s", "session", &m, &login(USER, PASSWORD))
    ))
    .await;
    let mut rx = a.events();
    a.wait_status("s", Status::Healthy, SOON).await;
    for _ in 0..3 {
        wait_event(&mut rx, SOON, "heartbeat", |e| {
            is_event(e, "connection:health_check", "s")
        })
        .await;
    }
    assert_eq!(m.connections_of(USER).len(), 1);
    let queries: u64 = m
        .sql("SHOW GLOBAL STATUS LIKE 'Com_select'")
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("Com_select");
    assert!(
        queries >= 4,
        "connect + 3 heartbeats ran SELECT 1: {queries}"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_is_noticed_at_once_backs_off_and_reconnects() {
    let mut m = MariaDb::start().await;
    let config = format!(
        "{AGENT}{}",
        check_with("s", "session", &m, SLOW_BEATS, &login(USER, PASSWORD))
    );
    sigkill_backoff_reconnect(&mut m, &config, "s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_login_and_certificate_verification() {
    let m = MariaDb::start_tls().await;
    let ca = m.ca.clone().expect("ca");
    let port = m.port;
    let mut cfg = AGENT.to_string();
    let tls_login = login(TLS_USER, PASSWORD);
    let with_ca = format!(
        "tls = true\nca_file = \"{}\"\nunhealthy_threshold = 1",
        ca.display()
    );
    let at = |name: &str, host: &str, mode: &str, extra: &str| {
        check_toml(
            "mysql",
            "address",
            name,
            mode,
            &format!("{host}:{port}"),
            FAST,
            extra,
        )
    };
    cfg.push_str(&at(
        "tls",
        "localhost",
        "session",
        &format!("{tls_login}\n{with_ca}"),
    ));
    cfg.push_str(&at(
        "no_tls",
        "127.0.0.1",
        "probe",
        &format!("{tls_login}\nunhealthy_threshold = 1"),
    ));
    cfg.push_str(&at(
        "untrusted",
        "localhost",
        "probe",
        &format!("{tls_login}\ntls = true\nunhealthy_threshold = 1"),
    ));
    cfg.push_str(&at(
        "wrong_name",
        "127.0.0.1",
        "probe",
        &format!("{tls_login}\n{with_ca}"),
    ));
    let a = TestAgent::start(&cfg).await;
    a.wait_status("tls", Status::Healthy, SOON).await;
    assert_phases(&a, "tls", &["tls", "auth"]);
    // The REQUIRE SSL user is refused without TLS: proof that the session above used it.
    a.wait_unhealthy("no_tls", ErrorKind::AuthFailed, SOON)
        .await;
    for name in ["untrusted", "wrong_name"] {
        a.wait_unhealthy(name, ErrorKind::Tls, SOON).await;
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_servers_fail_with_protocol_without_hanging() {
    let (http, _a) = hostile::sends(HTTP_GARBAGE).await;
    // A small packet that is not a v10 handshake.
    let (garbage, _b) = hostile::sends(&[5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o']).await;
    // A packet header announcing 16 MB.
    let (huge, _c) = hostile::sends(&[0xff, 0xff, 0xff, 0x00]).await;
    let mut cfg = AGENT.to_string();
    for (name, addr) in [("http", http), ("garbage", garbage), ("huge", huge)] {
        cfg.push_str(&check_toml(
            "mysql",
            "address",
            name,
            "probe",
            &addr.to_string(),
            FAST,
            "username = \"u\"\nunhealthy_threshold = 1",
        ));
    }
    let a = TestAgent::start(&cfg).await;
    for name in ["http", "garbage", "huge"] {
        let s = a.wait_unhealthy(name, ErrorKind::Protocol, SOON).await;
        assert!(
            s.latency_ms.unwrap_or(0.0) < 1000.0,
            "{name}: no hang: {:?}",
            s.latency_ms
        );
    }
    assert_error_mentions(&a.state("garbage"), "v10");
    assert_error_mentions(&a.state("huge"), "larger than");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    // `username` is required: it rides along after the address.
    crate::pgredis::silent_server_times_out("mysql", "address", |port| {
        format!("127.0.0.1:{port}\"\nusername = \"u")
    })
    .await;
}

/// The server process SIGSTOPped: heartbeat queries go unanswered, the session degrades,
/// goes stale and backs off; SIGCONT heals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_degrades_goes_stale_and_backs_off_until_continued() {
    use crate::common::stale::{Frozen, stops_answering};
    use crate::pgredis::stale::{BEATS, TIMING};
    let m = MariaDb::start().await;
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check_with("s", "session", &m, TIMING, &login(USER, PASSWORD))
    ))
    .await;
    stops_answering(&a, "s", BEATS, || Frozen::freeze(m.pids()), Frozen::thaw).await;
    a.stop().await;
}
