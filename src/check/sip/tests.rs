//! Unit tests of the `sip` kind: verdicts, request ids, UDP timers and matching, and
//! challenge handling against in-process UDP peers.

use super::message::Framing;
use super::*;
use tokio::net::UdpSocket;

#[test]
fn budget_leaves_room_for_the_supervisor() {
    assert_eq!(
        own_budget(Duration::from_secs(2)),
        Duration::from_millis(1900)
    );
    assert_eq!(
        own_budget(Duration::from_millis(500)),
        Duration::from_millis(475)
    );
    assert_eq!(
        own_budget(Duration::from_secs(10)),
        Duration::from_millis(9900)
    );
}

fn spec(uri: &str) -> Arc<SipSpec> {
    Arc::new(SipSpec {
        target: parse_target(uri).expect("valid"),
        method: Method::Options,
        from: None,
        auth: None,
        expires: DEFAULT_EXPIRES,
        ws_path: "/".into(),
        accept_codes: vec![200..=299],
        maintenance_codes: vec![480..=480],
        tls: TlsOptions::default(),
        tls_expiry_warning: None,
    })
}

fn exchange(code: u16) -> Exchange {
    let raw = format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKx\r\nUser-Agent: pbx 1.0\r\nContent-Length: 0\r\n\r\n"
    );
    Exchange {
        response: message::parse(raw.as_bytes(), Framing::Datagram)
            .expect("valid")
            .0,
        latency: Duration::from_millis(1),
        auth_leg: None,
        retransmits: Some(0),
        algorithm: None,
        cert: None,
    }
}

#[test]
fn codes_map_to_verdicts() {
    let s = spec("sip:127.0.0.1");
    let o = s.judge_options(&exchange(200));
    assert_eq!(o.verdict, Verdict::Up);
    assert_eq!(o.details["status_code"], 200);
    assert_eq!(o.details["server"], "pbx 1.0");
    assert_eq!(o.details["retransmissions"], 0);
    assert!(
        o.perfdata
            .iter()
            .any(|p| p.label == "status_code" && p.value == 200.0)
    );
    for (code, verdict) in [
        (503, Verdict::Warn(Some(ErrorKind::Rejected))),
        (480, Verdict::Warn(Some(ErrorKind::Rejected))),
        (404, Verdict::Down(ErrorKind::Rejected)),
    ] {
        assert_eq!(s.judge_options(&exchange(code)).verdict, verdict, "{code}");
    }
}

#[test]
fn requests_count_up_with_fresh_ids() {
    let mut c = Caller::new(
        spec("sip:127.0.0.1"),
        transport::Local::Addr("127.0.0.1:5000".parse().expect("addr")),
    );
    let first = c.next(None);
    let second = c.next(None);
    assert_eq!((first.cseq, second.cseq), (1, 2));
    assert_ne!(second.call_id, first.call_id);
    assert_ne!(second.branch, first.branch);
    assert_eq!(first.method, "OPTIONS");
}

async fn probe(check: &SipCheck, budget: Duration) -> Outcome {
    match check.first(Instant::now(), budget).await {
        Ok((_, o)) | Err(o) => o,
    }
}

/// Timer E under paused time: sends at 0, 0.5, 1.5, 3.5, 7.5 s; a 10 s timeout (own
/// budget 9.9 s) therefore sees exactly four retransmissions, byte-identical.
#[tokio::test(start_paused = true)]
async fn udp_retransmits_on_timer_e() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let port = peer.local_addr().expect("addr").port();
    let check = SipCheck {
        spec: spec(&format!("sip:127.0.0.1:{port}")),
        tls: None,
    };
    let start = Instant::now();
    let o = probe(&check, own_budget(Duration::from_secs(10))).await;
    assert_eq!(
        o.verdict,
        Verdict::Down(ErrorKind::Timeout),
        "{}",
        o.message
    );
    assert_eq!(o.details["retransmissions"], 4, "{}", o.message);
    assert!(start.elapsed() >= Duration::from_millis(9900));
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(10), peer.recv(&mut buf)).await
    {
        seen.push(buf[..n].to_vec());
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|d| d == &seen[0]));
}

/// A provisional answer, a stray datagram and an answer to another request are all
/// ignored; the matching final response ends the transaction.
#[tokio::test]
async fn udp_matches_only_its_own_final_response() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let port = peer.local_addr().expect("addr").port();
    let check = SipCheck {
        spec: spec(&format!("sip:127.0.0.1:{port}")),
        tls: None,
    };
    let server = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let (n, from) = peer.recv_from(&mut buf).await.expect("request");
        let (m, _) = message::parse(&buf[..n], Framing::Datagram).expect("valid request");
        let via = m.header("via").unwrap_or_default().to_string();
        let cid = m.header("call-id").unwrap_or_default().to_string();
        let send = |code: u16, via: &str, cseq: &str| {
            format!(
                "SIP/2.0 {code} X\r\nv: {via}\r\ni: {cid}\r\nCSeq: {cseq}\r\nServer: fake\r\nl: 0\r\n\r\n"
            )
        };
        for d in [
            b"garbage".to_vec(),
            send(100, &via, "1 OPTIONS").into_bytes(),
            send(404, "SIP/2.0/UDP x;branch=z9hG4bKother", "1 OPTIONS").into_bytes(),
            send(404, &via, "2 OPTIONS").into_bytes(),
            send(200, &via, "1 OPTIONS").into_bytes(),
        ] {
            peer.send_to(&d, from).await.expect("send");
        }
    });
    let o = probe(&check, Duration::from_secs(3)).await;
    server.await.expect("server");
    assert_eq!(o.verdict, Verdict::Up, "{}", o.message);
    assert_eq!(o.details["server"], "fake");
    assert_eq!(o.details["retransmissions"], 0);
}

/// A server that challenges every request: the challenge is answered exactly once
/// (the second request carries a digest `Authorization`), then `auth_failed`. A 401
/// without any challenge header is `auth_failed` too, never a hang or panic.
#[tokio::test]
async fn challenges_are_answered_once_then_auth_failed() {
    for with_header in [true, false] {
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let port = peer.local_addr().expect("addr").port();
        let mut sp = (*spec(&format!("sip:127.0.0.1:{port}"))).clone();
        sp.method = Method::Register;
        sp.auth = Some(Auth {
            username: "alice".into(),
            password: Secret::new("pw".into()),
            realm: None,
        });
        let check = SipCheck {
            spec: Arc::new(sp),
            tls: None,
        };
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_millis(500), peer.recv_from(&mut buf)).await
            {
                let (m, _) = message::parse(&buf[..n], Framing::Datagram).expect("request");
                let h = |n: &str| m.header(n).unwrap_or_default().to_string();
                let challenge = if with_header {
                    "WWW-Authenticate: Digest realm=\"r\", nonce=\"n1\", qop=\"auth\"\r\n"
                } else {
                    ""
                };
                let reply = format!(
                    "SIP/2.0 401 Unauthorized\r\nVia: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n{challenge}Content-Length: 0\r\n\r\n",
                    h("via"),
                    h("call-id"),
                    h("cseq")
                );
                seen.push(m.header("authorization").map(str::to_string));
                peer.send_to(reply.as_bytes(), from).await.expect("send");
            }
            seen
        });
        let o = probe(&check, Duration::from_secs(3)).await;
        let seen = server.await.expect("server");
        assert_eq!(
            o.verdict,
            Verdict::Down(ErrorKind::AuthFailed),
            "{}",
            o.message
        );
        if with_header {
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert_eq!(seen[0], None);
            let auth = seen[1].as_deref().unwrap_or_default();
            assert!(
                auth.starts_with("Digest username=\"alice\", realm=\"r\", nonce=\"n1\"")
                    && auth.contains("qop=auth, nc=00000001"),
                "{auth}"
            );
            assert!(o.message.contains("credentials rejected"), "{}", o.message);
        } else {
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert!(o.message.contains("no WWW-Authenticate"), "{}", o.message);
        }
    }
}

/// REGISTER without a challenge: a 423 is answered once with the registrar's
/// `Min-Expires`, and the granted time is read from our own Contact in the 200 OK (not
/// from another phone's binding of the same AOR).
#[tokio::test]
async fn register_follows_423_and_reads_our_binding() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let port = peer.local_addr().expect("addr").port();
    let mut sp = (*spec(&format!("sip:bob@127.0.0.1:{port}"))).clone();
    sp.method = Method::Register;
    sp.auth = Some(Auth {
        username: "alice".into(),
        password: Secret::new("pw".into()),
        realm: None,
    });
    let check = SipCheck {
        spec: Arc::new(sp),
        tls: None,
    };
    let server = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        for reply in [423, 200] {
            let (n, from) = peer.recv_from(&mut buf).await.expect("request");
            let (m, _) = message::parse(&buf[..n], Framing::Datagram).expect("request");
            let h = |n: &str| m.header(n).unwrap_or_default().to_string();
            seen.push((
                match &m.start {
                    message::StartLine::Request { uri, .. } => uri.clone(),
                    message::StartLine::Response { .. } => String::new(),
                },
                h("to"),
                h("expires"),
            ));
            let extra = if reply == 423 {
                "Min-Expires: 600\r\n".to_string()
            } else {
                format!(
                    "Contact: <sip:alice@10.0.0.7>;expires=3600, {};expires=590\r\nExpires: 900\r\n",
                    h("contact")
                )
            };
            let r = format!(
                "SIP/2.0 {reply} X\r\nVia: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
                h("via"),
                h("call-id"),
                h("cseq")
            );
            peer.send_to(r.as_bytes(), from).await.expect("send");
        }
        seen
    });
    let o = probe(&check, Duration::from_secs(3)).await;
    let seen = server.await.expect("server");
    assert_eq!(o.verdict, Verdict::Up, "{}", o.message);
    assert_eq!(o.details["expires"], 590);
    assert_eq!(o.details["bindings"], 2);
    let uri = format!("sip:127.0.0.1:{port}");
    assert_eq!(
        seen,
        vec![
            (
                uri.clone(),
                "<sip:alice@127.0.0.1>".to_string(),
                "300".to_string()
            ),
            (uri, "<sip:alice@127.0.0.1>".to_string(), "600".to_string()),
        ],
        "Request-URI without user, AOR in To, Min-Expires followed"
    );
}
