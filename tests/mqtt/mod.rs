//! `mqtt` against a real mosquitto (tests/common/mosquitto.rs): MQTT 3.1.1 and 5, the
//! publish/subscribe round trip, CONNACK refusals, TLS, session keep-alive and a killed
//! broker; hostile brokers (garbage, an oversized length) fail with `protocol` at once.

use lifeline::check::ErrorKind;
use lifeline::health::Status;

use crate::common::hostile::{self, HTTP_GARBAGE};
use crate::common::mosquitto::{Mosquitto, PASSWORD, USER};
use crate::common::scenarios::sigkill_backoff_reconnect;
use crate::common::*;
use crate::pgredis::{
    AGENT, FAST, SLOW_BEATS, SOON, assert_auth_failed_once, assert_phases, check_toml,
};

fn check(name: &str, mode: &str, address: &str, extra: &str) -> String {
    check_toml("mqtt", "address", name, mode, address, FAST, extra)
}

fn one_attempt(name: &str, address: &str, extra: &str) -> String {
    format!(
        "{}{extra}\n",
        crate::pgredis::one_attempt("mqtt", "address", name, address)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_protocols_connect_and_round_trip_a_message() {
    let m = Mosquitto::start().await;
    let addr = format!("127.0.0.1:{}", m.port);
    let mut cfg = AGENT.to_string();
    cfg.push_str(&check("v311", "probe", &addr, "topic = \"lifeline/v311\""));
    cfg.push_str(&check(
        "v5",
        "probe",
        &addr,
        "protocol = \"5\"\ntopic = \"lifeline/v5\"",
    ));
    cfg.push_str(&check("bare", "probe", &addr, ""));
    let a = TestAgent::start(&cfg).await;
    let s = a.wait_status("v311", Status::Healthy, SOON).await;
    assert_eq!(s.details["protocol"], "3.1.1");
    let s = a.wait_status("v5", Status::Healthy, SOON).await;
    assert_eq!(s.details["protocol"], "5");
    a.wait_status("bare", Status::Healthy, SOON).await;
    assert_phases(&a, "v5", &["connect", "auth", "exchange"]);
    a.stop().await;
    let log = m.log();
    assert!(
        log.contains("lifeline/v5"),
        "the broker saw the subscription:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_auth_failed_after_one_attempt() {
    let m = Mosquitto::start_auth().await;
    let addr = format!("127.0.0.1:{}", m.port);
    let mut cfg = AGENT.to_string();
    let wrong = format!("username = \"{USER}\"\npassword = \"not-the-password\"");
    cfg.push_str(&one_attempt("wrong_311", &addr, &wrong));
    cfg.push_str(&one_attempt(
        "wrong_5",
        &addr,
        &format!("{wrong}\nprotocol = \"5\""),
    ));
    cfg.push_str(&one_attempt("anonymous", &addr, ""));
    cfg.push_str(&one_attempt(
        "ghost",
        &addr,
        "username = \"ghost\"\npassword = \"x\"",
    ));
    cfg.push_str(&check(
        "good",
        "session",
        &addr,
        &format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"\ntopic = \"lifeline/auth\""),
    ));
    let a = TestAgent::start(&cfg).await;
    a.wait_status("good", Status::Healthy, SOON).await;
    let states = assert_auth_failed_once(&a, &["wrong_311", "wrong_5", "anonymous", "ghost"]).await;
    // mosquitto answers a v5 client 0x87 (not authorized), a 3.1.1 client 5.
    assert_error_mentions(&states[1], "CONNACK code 0x87");
    assert_error_mentions(&states[0], "CONNACK code 0x05");
    for s in &states {
        assert!(
            !s.last_error
                .as_deref()
                .unwrap_or("")
                .contains("not-the-password"),
            "password leaked: {:?}",
            s.last_error
        );
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keep_alive_heartbeats_on_one_connection() {
    let m = Mosquitto::start().await;
    let addr = format!("127.0.0.1:{}", m.port);
    let a = TestAgent::start(&format!(
        "{AGENT}{}{}",
        check(
            "s5",
            "session",
            &addr,
            "protocol = \"5\"\nclient_id = \"lifeline-s5\""
        ),
        check("s311", "session", &addr, "topic = \"lifeline/s311\""),
    ))
    .await;
    let mut rx = a.events();
    a.wait_all(&["s5", "s311"], Status::Healthy, SOON).await;
    for _ in 0..3 {
        for name in ["s5", "s311"] {
            wait_event(&mut rx, SOON, "heartbeat", |e| {
                is_event(e, "connection:health_check", name)
            })
            .await;
        }
    }
    a.stop().await;
    let log = m.log();
    // One connection, pinged: mosquitto logs every PINGREQ and the client id once.
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("New client connected") && l.contains("lifeline-s5"))
            .count(),
        1,
        "one connection for s5:\n{log}"
    );
    assert!(log.contains("Received PINGREQ from lifeline-s5"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_is_noticed_at_once_backs_off_and_reconnects() {
    let mut m = Mosquitto::start().await;
    let config = format!(
        "{AGENT}{}",
        check_toml(
            "mqtt",
            "address",
            "m",
            "session",
            &format!("127.0.0.1:{}", m.port),
            SLOW_BEATS,
            ""
        )
    );
    sigkill_backoff_reconnect(&mut m, &config, "m").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_broker_certificate() {
    let m = Mosquitto::start_tls().await;
    let port = m.tls_port.expect("tls port");
    let ca = m.ca.clone().expect("ca");
    let mut cfg = AGENT.to_string();
    let with_ca = format!(
        "tls = true\nca_file = \"{}\"\nunhealthy_threshold = 1",
        ca.display()
    );
    cfg.push_str(&check(
        "trusted",
        "session",
        &format!("localhost:{port}"),
        &format!("{with_ca}\ntopic = \"lifeline/tls\""),
    ));
    cfg.push_str(&check(
        "untrusted",
        "probe",
        &format!("localhost:{port}"),
        "tls = true\nunhealthy_threshold = 1",
    ));
    cfg.push_str(&check(
        "wrong_name",
        "probe",
        &format!("127.0.0.1:{port}"),
        &with_ca,
    ));
    let a = TestAgent::start(&cfg).await;
    a.wait_status("trusted", Status::Healthy, SOON).await;
    for name in ["untrusted", "wrong_name"] {
        a.wait_unhealthy(name, ErrorKind::Tls, SOON).await;
    }
    assert_phases(&a, "trusted", &["tls"]);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_brokers_fail_with_protocol_without_hanging() {
    let (garbage, _g) = hostile::sends(HTTP_GARBAGE).await;
    // CONNACK announcing a 256 MB body.
    let (huge, _h) = hostile::sends(&[0x20, 0xff, 0xff, 0xff, 0x7f]).await;
    let mut cfg = AGENT.to_string();
    for (name, addr) in [("garbage", garbage), ("huge", huge)] {
        cfg.push_str(&check(
            name,
            "probe",
            &addr.to_string(),
            "unhealthy_threshold = 1",
        ));
    }
    let a = TestAgent::start(&cfg).await;
    let s = a.wait_unhealthy("garbage", ErrorKind::Protocol, SOON).await;
    assert_error_mentions(&s, "CONNACK");
    let s = a.wait_unhealthy("huge", ErrorKind::Protocol, SOON).await;
    assert_error_mentions(&s, "larger than");
    assert!(
        s.latency_ms.unwrap_or(0.0) < 2000.0,
        "no hang: {:?}",
        s.latency_ms
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_broker_times_out() {
    crate::pgredis::silent_server_times_out("mqtt", "address", |port| format!("127.0.0.1:{port}"))
        .await;
}

/// Bad `grpc`, `mysql` and `mqtt` keys are `PATH:LINE:COL` errors, all in one run, exit 2.
#[test]
fn bad_keys_of_the_new_kinds_are_reported_at_their_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[checks]]\nname = \"g\"\nkind = \"grpc\"\naddress = \"no-port\"\n\
         [[checks]]\nname = \"m\"\nkind = \"mysql\"\naddress = \"db:x\"\nquery = \" \"\n\
         [[checks]]\nname = \"q\"\nkind = \"mqtt\"\naddress = \"b\"\nprotocol = \"4.0\"\ntopic = \"a/#\"\n\
         [[checks]]\nname = \"p\"\nkind = \"mqtt\"\naddress = \"b\"\npassword = \"pw\"\n",
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run lifeline validate");
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let p = path.display().to_string();
    let err = String::from_utf8_lossy(&out.stderr).replace(&p, "c.toml");
    let got: Vec<&str> = err.lines().collect();
    assert_eq!(
        got,
        [
            "c.toml:4:11: `address` must be HOST:PORT, got `no-port`",
            "c.toml:5:1: missing required key `username`",
            "c.toml:8:11: `address` must be HOST[:PORT], got `db:x`",
            "c.toml:9:9: `query` must not be empty",
            "c.toml:14:12: `protocol` must be \"3.1.1\" or \"5\", got `4.0`",
            "c.toml:15:9: `topic` must be a topic name (1 to 1024 bytes, no `+`, `#` or NUL)",
            "c.toml:20:12: `password` needs `username` with MQTT 3.1.1 (use protocol = \"5\" for a password alone)",
            "c.toml: 7 errors",
        ],
        "{err}"
    );
}

/// The broker process SIGSTOPped: heartbeats go unanswered, the session degrades, goes
/// stale and backs off; SIGCONT heals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_broker_degrades_goes_stale_and_backs_off_until_continued() {
    use crate::common::stale::{Frozen, stops_answering};
    use crate::pgredis::stale::{BEATS, TIMING};
    let m = Mosquitto::start().await;
    let addr = format!("127.0.0.1:{}", m.port);
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check_toml("mqtt", "address", "m", "session", &addr, TIMING, "")
    ))
    .await;
    stops_answering(&a, "m", BEATS, || Frozen::freeze(m.pids()), Frozen::thaw).await;
    a.stop().await;
}
