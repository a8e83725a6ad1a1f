//! The `dns` kind against dnsmasq with records the test writes: every record type (NS
//! from a dnsmasq that is authoritative for the zone), UDP and TCP, `expect` values
//! and regexes, NXDOMAIN, SERVFAIL (passed through from an upstream that answers
//! SERVFAIL), a silent server, and `lifeline check` (the CLI one-shot).

use std::time::Duration;

use lifeline::check::ErrorKind;
use lifeline::health::Status;
use tokio::net::UdpSocket;

use super::{Dnsmasq, SilentResolver, check_once};
use crate::common::TestAgent;

const SOON: Duration = Duration::from_secs(10);

/// An upstream for dnsmasq that answers every query with SERVFAIL (rcode 2), keeping
/// the ID and question (RFC 1035 §4.1.1). Stops when the task is aborted.
async fn servfail_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let port = sock.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if n < 12 {
                continue;
            }
            let mut r = buf[..n].to_vec();
            r[2] = 0x80 | (r[2] & 0x01); // QR, RD copied
            r[3] = 0x82; // RA, SERVFAIL
            let _ = sock.send_to(&r, from).await;
        }
    });
    (port, task)
}

fn records(upstream: u16) -> Vec<String> {
    [
        "--address=/a.lifeline.test/192.0.2.10",
        "--host-record=multi.lifeline.test,192.0.2.1,2001:db8::1",
        "--host-record=target.lifeline.test,192.0.2.20",
        "--cname=alias.lifeline.test,target.lifeline.test",
        "--mx-host=lifeline.test,mail.lifeline.test,10",
        "--txt-record=txt.lifeline.test,v=spf1 -all",
        "--srv-host=_sip._udp.lifeline.test,pbx.lifeline.test,5060,0,5",
    ]
    .into_iter()
    .map(String::from)
    .chain([format!("--server=/broken.test/127.0.0.1#{upstream}")])
    .collect()
}

fn dns_check(name: &str, server: &str, body: &str) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"dns\"\nserver = \"{server}\"\ninterval = \"200ms\"\n\
         timeout = \"2s\"\nunhealthy_threshold = 1\n{body}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_kind_queries_every_record_type_over_udp_and_tcp() {
    let (up, _task) = servfail_upstream().await;
    let d = Dnsmasq::start(&records(up)).await;
    let s = d.server();
    let cases: &[(&str, &str)] = &[
        (
            "a",
            "query = \"a.lifeline.test\"\nexpect = [\"192.0.2.10\"]",
        ),
        (
            "a-tcp",
            "query = \"a.lifeline.test\"\ntransport = \"tcp\"\nexpect = [\"192.0.2.10\"]",
        ),
        (
            "aaaa",
            "query = \"multi.lifeline.test\"\nrecord = \"AAAA\"\nexpect = [\"2001:db8::1\"]",
        ),
        (
            "cname",
            "query = \"alias.lifeline.test\"\nrecord = \"CNAME\"\nexpect = [\"Target.lifeline.test.\"]",
        ),
        (
            "mx",
            "query = \"lifeline.test\"\nrecord = \"mx\"\nexpect = [\"10 mail.lifeline.test\"]",
        ),
        (
            "txt",
            "query = \"txt.lifeline.test\"\nrecord = \"TXT\"\nexpect = '^v=spf1 '",
        ),
        (
            "srv",
            "query = \"_sip._udp.lifeline.test\"\nrecord = \"SRV\"\nexpect = [\"0 5 5060 pbx.lifeline.test\"]",
        ),
        ("no-expect", "query = \"multi.lifeline.test\""),
    ];
    let mut cfg = String::from("[agent]\ndata_dir = \"{dir}/data\"\n");
    for (name, body) in cases {
        cfg.push_str(&dns_check(name, &s, body));
    }
    cfg.push_str(&dns_check("nx", &s, "query = \"nope.lifeline.test\""));
    cfg.push_str(&dns_check(
        "no-aaaa",
        &s,
        "query = \"target.lifeline.test\"\nrecord = \"AAAA\"",
    ));
    cfg.push_str(&dns_check("servfail", &s, "query = \"x.broken.test\""));
    cfg.push_str(&dns_check(
        "wrong-value",
        &s,
        "query = \"a.lifeline.test\"\nexpect = [\"192.0.2.99\"]",
    ));
    cfg.push_str(&dns_check(
        "wrong-regex",
        &s,
        "query = \"txt.lifeline.test\"\nrecord = \"TXT\"\nexpect = '^nope'",
    ));
    let a = TestAgent::start(&cfg).await;
    for (name, _) in cases {
        a.wait_status(name, Status::Healthy, SOON).await;
    }
    let st = a.state("a-tcp");
    assert_eq!(st.details["transport"], "tcp");
    assert_eq!(st.details["answers"], serde_json::json!(["192.0.2.10"]));
    assert_eq!(a.state("mx").details["record"], "MX");
    assert_eq!(
        a.state("no-expect").details["answers"],
        serde_json::json!(["192.0.2.1"])
    );
    assert_eq!(
        a.check_metric("lifeline_check_perfdata", "no-expect"),
        Some(1.0)
    );
    let st = a.wait_unhealthy("nx", ErrorKind::Dns, SOON).await;
    assert!(st.message.contains("NXDOMAIN"), "{}", st.message);
    let st = a.wait_unhealthy("no-aaaa", ErrorKind::Dns, SOON).await;
    assert!(st.message.contains("no AAAA records"), "{}", st.message);
    let st = a.wait_unhealthy("servfail", ErrorKind::Dns, SOON).await;
    assert!(
        st.message.contains("SERVFAIL") || st.message.contains("Server Failure"),
        "{}",
        st.message
    );
    let st = a
        .wait_unhealthy("wrong-value", ErrorKind::Protocol, SOON)
        .await;
    assert!(st.message.contains("lacks 192.0.2.99"), "{}", st.message);
    a.wait_unhealthy("wrong-regex", ErrorKind::Protocol, SOON)
        .await;
    a.stop().await;
    // Every query went to dnsmasq, over TCP where asked.
    let log = d.log();
    assert!(log.contains("query[SRV] _sip._udp.lifeline.test"), "{log}");
    assert!(log.contains("query[MX] lifeline.test"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_kind_in_the_cli_one_shot_and_against_a_silent_server() {
    let (up, _task) = servfail_upstream().await;
    let d = Dnsmasq::start(&records(up)).await;
    let silent = SilentResolver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}{}{}",
        dns_check("ok", &d.server(), "query = \"a.lifeline.test\""),
        dns_check("nx", &d.server(), "query = \"nope.lifeline.test\""),
        dns_check(
            "silent",
            &silent.server(),
            "query = \"a.lifeline.test\"\ntimeout = \"1s\""
        )
        .replace("timeout = \"2s\"\n", ""),
    );
    let (r, wall) = check_once(dir.path(), &config).await;
    assert_eq!(r["ok"].status, "healthy", "{:?}", r["ok"]);
    assert_eq!(r["nx"].error_kind.as_deref(), Some("dns"), "{:?}", r["nx"]);
    assert_eq!(
        r["silent"].error_kind.as_deref(),
        Some("timeout"),
        "{:?}",
        r["silent"]
    );
    assert!(wall < Duration::from_secs(10), "took {wall:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_kind_reads_ns_records_from_an_authoritative_dnsmasq() {
    // dnsmasq serves NS records only for a zone it is authoritative for.
    let d = Dnsmasq::start(&[
        "--auth-server=ns1.lifeline.test,127.0.0.1".into(),
        "--auth-zone=lifeline.test".into(),
        "--host-record=ns1.lifeline.test,127.0.0.1".into(),
    ])
    .await;
    let s = d.server();
    let mut cfg = String::from("[agent]\ndata_dir = \"{dir}/data\"\n");
    cfg.push_str(&dns_check(
        "ns",
        &s,
        "query = \"lifeline.test\"\nrecord = \"NS\"\nexpect = [\"ns1.lifeline.test\"]",
    ));
    cfg.push_str(&dns_check(
        "ns-tcp",
        &s,
        "query = \"lifeline.test.\"\nrecord = \"NS\"\ntransport = \"tcp\"\nexpect = '^ns1\\.'",
    ));
    let a = TestAgent::start(&cfg).await;
    let st = a.wait_status("ns", Status::Healthy, SOON).await;
    assert_eq!(
        st.details["answers"],
        serde_json::json!(["ns1.lifeline.test"])
    );
    a.wait_status("ns-tcp", Status::Healthy, SOON).await;
    a.stop().await;
}
