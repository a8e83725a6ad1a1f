//! `grpc` against a real gRPC server (grpcio + grpcio-health-checking,
//! tests/common/grpc.rs): `Check` with and without `service`, statuses flipped by the
//! test, `Watch` sessions that report a flip at once, TLS, a killed server; hostile peers
//! (garbage, an oversized message length) fail with `protocol` at once.

use std::time::Duration;

use bytes::Bytes;
use lifeline::check::ErrorKind;
use lifeline::health::Status;

use crate::common::grpc::{GrpcServer, SERVICE};
use crate::common::hostile::{self, HTTP_GARBAGE};
use crate::common::scenarios::sigkill_backoff_reconnect;
use crate::common::*;
use crate::pgredis::{AGENT, FAST, SLOW_BEATS, SOON, assert_phases, check_toml};

fn check(name: &str, mode: &str, port: u16, extra: &str) -> String {
    let address = format!("127.0.0.1:{port}");
    check_toml("grpc", "address", name, mode, &address, FAST, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_maps_serving_not_serving_and_unknown_services() {
    let mut g = GrpcServer::start().await;
    let svc = format!("service = \"{SERVICE}\"\nunhealthy_threshold = 1");
    let mut cfg = AGENT.to_string();
    cfg.push_str(&check("server", "probe", g.port, ""));
    cfg.push_str(&check("svc", "probe", g.port, &svc));
    cfg.push_str(&check(
        "unknown",
        "probe",
        g.port,
        "service = \"no.such.Service\"\nunhealthy_threshold = 1",
    ));
    let a = TestAgent::start(&cfg).await;
    let s = a.wait_status("server", Status::Healthy, SOON).await;
    assert_eq!(s.details["serving_status"], "SERVING");
    a.wait_status("svc", Status::Healthy, SOON).await;
    assert_phases(&a, "svc", &["connect", "exchange"]);
    let s = a.wait_unhealthy("unknown", ErrorKind::Rejected, SOON).await;
    assert_error_mentions(&s, "NOT_FOUND");
    g.set(SERVICE, "NOT_SERVING").await;
    let s = a.wait_unhealthy("svc", ErrorKind::Rejected, SOON).await;
    assert_error_mentions(&s, "NOT_SERVING");
    assert_eq!(s.details["serving_status"], "NOT_SERVING");
    assert_eq!(a.state("server").status, Status::Healthy);
    g.set(SERVICE, "SERVING").await;
    a.wait_status("svc", Status::Healthy, SOON).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_session_reports_a_flip_before_the_next_heartbeat() {
    let mut g = GrpcServer::start().await;
    let address = format!("127.0.0.1:{}", g.port);
    let extra = format!("service = \"{SERVICE}\"\nunhealthy_threshold = 1");
    let a = TestAgent::start(&format!(
        "{AGENT}{}{}",
        check_toml(
            "grpc", "address", "w", "session", &address, SLOW_BEATS, &extra
        ),
        check_toml("grpc", "address", "pinged", "session", &address, FAST, ""),
    ))
    .await;
    let mut rx = a.events();
    a.wait_all(&["w", "pinged"], Status::Healthy, SOON).await;
    // Heartbeats (HTTP/2 PINGs) flow on the other session.
    for _ in 0..3 {
        wait_event(&mut rx, SOON, "heartbeat", |e| {
            is_event(e, "connection:health_check", "pinged")
        })
        .await;
    }
    // Heartbeats of `w` are 10 s apart: only the Watch stream can tell in time.
    g.set(SERVICE, "NOT_SERVING").await;
    let s = a
        .wait_unhealthy("w", ErrorKind::Rejected, Duration::from_secs(3))
        .await;
    assert_error_mentions(&s, "NOT_SERVING");
    g.set(SERVICE, "SERVING").await;
    a.wait_status("w", Status::Healthy, Duration::from_secs(3))
        .await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_is_noticed_at_once_backs_off_and_reconnects() {
    let mut g = GrpcServer::start().await;
    let config = format!(
        "{AGENT}{}",
        check_toml(
            "grpc",
            "address",
            "g",
            "session",
            &format!("127.0.0.1:{}", g.port),
            SLOW_BEATS,
            ""
        )
    );
    sigkill_backoff_reconnect(&mut g, &config, "g").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_server_certificate() {
    let g = GrpcServer::start_tls().await;
    let ca = g.ca.clone().expect("ca");
    let port = g.port;
    let with_ca = format!(
        "tls = true\nca_file = \"{}\"\nunhealthy_threshold = 1",
        ca.display()
    );
    let at = |name: &str, host: &str, mode: &str, extra: &str| {
        check_toml(
            "grpc",
            "address",
            name,
            mode,
            &format!("{host}:{port}"),
            FAST,
            extra,
        )
    };
    let mut cfg = AGENT.to_string();
    cfg.push_str(&at(
        "probe",
        "localhost",
        "probe",
        &format!("{with_ca}\nservice = \"{SERVICE}\""),
    ));
    cfg.push_str(&at("session", "localhost", "session", &with_ca));
    cfg.push_str(&at(
        "untrusted",
        "localhost",
        "probe",
        "tls = true\nunhealthy_threshold = 1",
    ));
    cfg.push_str(&at("wrong_name", "127.0.0.1", "probe", &with_ca));
    cfg.push_str(&at(
        "plaintext",
        "localhost",
        "probe",
        "unhealthy_threshold = 1",
    ));
    let a = TestAgent::start(&cfg).await;
    a.wait_all(&["probe", "session"], Status::Healthy, SOON)
        .await;
    assert_phases(&a, "probe", &["tls"]);
    // The certificate (90 days, past the 14-day warning) is reported, probe and session.
    for name in ["probe", "session"] {
        let st = a.agent.states().state(name).expect("state");
        assert_eq!(
            st.details["tls"]["subject"], "CN=localhost",
            "{name}: {:?}",
            st.details
        );
        assert_eq!(st.status, Status::Healthy);
    }
    let m = a.agent.shared.metrics.render();
    assert!(
        m.contains("lifeline_check_tls_not_after_timestamp_seconds{check=\"probe\",kind=\"grpc\"}"),
        "not-after metric for grpc"
    );
    for name in ["untrusted", "wrong_name"] {
        a.wait_unhealthy(name, ErrorKind::Tls, SOON).await;
    }
    // h2c to a TLS port: the server answers with a TLS alert, not HTTP/2.
    let s = a.wait_status("plaintext", Status::Unhealthy, SOON).await;
    assert!(
        matches!(s.error_kind, Some(ErrorKind::Protocol | ErrorKind::Closed)),
        "{:?}: {:?}",
        s.error_kind,
        s.last_error
    );
    a.stop().await;
}

/// An HTTP/2 server that answers every request with gRPC headers and a message prefix
/// announcing 4 GiB, then holds the stream open.
async fn huge_message_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    accept_each(|tcp| {
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                return;
            };
            let mut held = Vec::new();
            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                let resp = http::Response::builder()
                    .status(200)
                    .header("content-type", "application/grpc")
                    .body(())
                    .expect("response");
                if let Ok(mut body) = respond.send_response(resp, false) {
                    let _ = body.send_data(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]), false);
                    held.push(body);
                }
            }
        });
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_fail_with_protocol_without_hanging() {
    let (garbage, _a) = hostile::sends(HTTP_GARBAGE).await;
    let (huge, _b) = huge_message_server().await;
    let mut cfg = AGENT.to_string();
    for (name, mode, addr) in [
        ("garbage", "probe", garbage),
        ("huge", "probe", huge),
        ("huge_watch", "session", huge),
    ] {
        cfg.push_str(&check_toml(
            "grpc",
            "address",
            name,
            mode,
            &addr.to_string(),
            FAST,
            "unhealthy_threshold = 1",
        ));
    }
    let a = TestAgent::start(&cfg).await;
    let s = a.wait_unhealthy("garbage", ErrorKind::Protocol, SOON).await;
    assert!(
        s.latency_ms.unwrap_or(0.0) < 1000.0,
        "no hang: {:?}",
        s.latency_ms
    );
    let s = a.wait_unhealthy("huge", ErrorKind::Protocol, SOON).await;
    assert_error_mentions(&s, "larger than");
    let s = a
        .wait_status("huge_watch", Status::Disconnected, SOON)
        .await;
    assert_eq!(
        s.error_kind,
        Some(ErrorKind::Protocol),
        "{:?}",
        s.last_error
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    crate::pgredis::silent_server_times_out("grpc", "address", |port| format!("127.0.0.1:{port}"))
        .await;
}

/// `lifeline check` (the one-shot CLI) runs every new kind against its real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifeline_check_runs_grpc_mysql_and_mqtt_once() {
    use crate::common::mariadb::{self, MariaDb};
    use crate::common::mosquitto::Mosquitto;
    let (g, m, q) = tokio::join!(GrpcServer::start(), MariaDb::start(), Mosquitto::start());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[[checks]]\nname = \"g\"\nkind = \"grpc\"\naddress = \"127.0.0.1:{}\"\nservice = \"{SERVICE}\"\n\
             [[checks]]\nname = \"m\"\nkind = \"mysql\"\naddress = \"127.0.0.1:{}\"\nusername = \"{}\"\npassword = \"{}\"\n\
             [[checks]]\nname = \"q\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{}\"\ntopic = \"lifeline/cli\"\n",
            g.port,
            m.port,
            mariadb::USER,
            mariadb::PASSWORD,
            q.port
        ),
    )
    .expect("config");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args(["check", "--json", "--config"])
        .arg(&path)
        .output()
        .await
        .expect("run lifeline check");
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON rows");
    for (name, kind) in [("g", "grpc"), ("m", "mysql"), ("q", "mqtt")] {
        let row = rows
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name))
            .unwrap_or_else(|| panic!("no row {name}: {text}"));
        assert_eq!(row["kind"], kind);
        assert_eq!(row["status"], "healthy", "{row}");
    }
}

/// The server process SIGSTOPped: HTTP/2 PINGs go unanswered, the Watch session degrades,
/// goes stale and backs off; SIGCONT heals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_degrades_goes_stale_and_backs_off_until_continued() {
    use crate::common::stale::{Frozen, stops_answering};
    use crate::pgredis::stale::{BEATS, TIMING};
    let g = GrpcServer::start().await;
    let address = format!("127.0.0.1:{}", g.port);
    let a = TestAgent::start(&format!(
        "{AGENT}{}",
        check_toml("grpc", "address", "g", "session", &address, TIMING, "")
    ))
    .await;
    stops_answering(&a, "g", BEATS, || Frozen::freeze(g.pids()), Frozen::thaw).await;
    a.stop().await;
}
