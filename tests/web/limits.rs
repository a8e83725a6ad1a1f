//! Limits in the accept loop: slowloris connections are cut after `header_timeout`
//! while `/metrics` answers and checks keep their cadence; the connection cap; the
//! streaming cap (503 for one more, events keep flowing to the others).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_after_the_header_timeout_while_metrics_answers() {
    lifeline::http::raise_nofile_limit();
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listening_agent("header_timeout = \"5s\"\nmax_connections = 4000\n", &target).await;
    let _accept = tokio::spawn(async move {
        while let Ok((s, _)) = target.accept().await {
            drop(s);
        }
    });
    const N: usize = 2000;
    const HEADER: Duration = Duration::from_secs(5);
    let addr = a.addr;
    // A scraper polls /metrics all through the attack; every scrape must answer.
    let stop = tokio_util::sync::CancellationToken::new();
    let scraper = {
        let (url, stop) = (a.url("/metrics"), stop.clone());
        tokio::spawn(async move {
            let c = client();
            let mut answered = 0u32;
            while !stop.is_cancelled() {
                let r = tokio::time::timeout(Duration::from_secs(3), c.get(&url).send())
                    .await
                    .expect("/metrics answers within 3 s during the attack")
                    .expect("/metrics during the attack");
                assert_eq!(r.status(), 200);
                answered += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            answered
        })
    };
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N / 200 {
        let batch = (0..200).map(|_| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .expect("half a header");
            (s, tokio::time::Instant::now())
        });
        conns.extend(futures_util::future::join_all(batch).await);
    }
    // Every one of them is closed by the agent, not before the header timeout.
    let cut_all = futures_util::future::join_all(conns.into_iter().map(|(mut c, at)| async move {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(30), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("got a response to half a header: {:?}", &buf[..n]),
            Err(_) => panic!("a slowloris connection was not cut within 30 s"),
        }
        at.elapsed()
    }))
    .await;
    stop.cancel();
    let answered = scraper.await.expect("scraper");
    assert!(answered >= 5, "only {answered} scrapes during the attack");
    let early = cut_all
        .iter()
        .filter(|d| **d + Duration::from_millis(200) < HEADER)
        .count();
    assert_eq!(early, 0, "connections cut before the header timeout");
    let text = metrics_of(&a);
    let cut = metric(
        &text,
        "lifeline_http_rejected_total{reason=\"header_timeout\"}",
    )
    .unwrap_or(0.0);
    assert!(cut >= N as f64, "{cut} header timeouts\n{text}");
    // Checks kept their cadence: no attempt started half a second late.
    let all = metric(&text, "lifeline_scheduler_lag_seconds_count").unwrap_or(0.0);
    let timely = metric(&text, "lifeline_scheduler_lag_seconds_bucket{le=\"0.5\"}").unwrap_or(0.0);
    assert!(all >= 20.0, "{all} attempts");
    assert_eq!(all, timely, "late attempts during the attack\n{text}");
    wait_for(
        Duration::from_secs(5),
        "connections gauge back to 0",
        || (metric(&metrics_of(&a), "lifeline_http_connections") == Some(0.0)).then_some(()),
    )
    .await;
    a.stop().await;
}

#[tokio::test]
async fn past_max_connections_new_connections_are_closed_at_once() {
    let a = TestAgent::start(
        r#"
[agent]
listen = "127.0.0.1:{port}"
data_dir = "{dir}/data"
max_connections = 3
"#,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(a.addr).await.unwrap());
    }
    wait_for(Duration::from_secs(5), "3 connections counted", || {
        (metric(&metrics_of(&a), "lifeline_http_connections") == Some(3.0)).then_some(())
    })
    .await;
    let mut extra = TcpStream::connect(a.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer past the cap");
    let text = metrics_of(&a);
    assert_eq!(
        metric(
            &text,
            "lifeline_http_rejected_total{reason=\"connection_limit\"}"
        ),
        Some(1.0)
    );
    drop(held);
    wait_for(Duration::from_secs(5), "slots given back", || {
        (metric(&metrics_of(&a), "lifeline_http_connections") == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(
        client()
            .get(a.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    a.stop().await;
}

async fn next_event(resp: &mut reqwest::Response, name: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = String::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no `{name}` event within {within:?}"))
            .expect("stream ok")
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        if buf.contains(&format!("event: {name}\n")) {
            return;
        }
    }
}

#[tokio::test]
async fn past_the_streaming_cap_a_new_client_gets_503_and_the_others_keep_their_events() {
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listening_agent("max_streams = 2\n", &target).await;
    let c = stream_client();
    let mut s1 = c.get(a.url("/api/v1/events")).send().await.unwrap();
    let mut s2 = c.get(a.url("/api/v1/events")).send().await.unwrap();
    assert_eq!((s1.status().as_u16(), s2.status().as_u16()), (200, 200));
    let third = c.get(a.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(third.status(), 503);
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", a.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!(
            "expected 503 for /ws past the cap, got {:?}",
            other.map(|_| ())
        ),
    }
    next_event(&mut s1, "connection:health_check", Duration::from_secs(5)).await;
    next_event(&mut s2, "connection:health_check", Duration::from_secs(5)).await;
    assert!(
        metric(
            &metrics_of(&a),
            "lifeline_http_rejected_total{reason=\"stream_limit\"}"
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    drop(s1);
    // The slot comes back once the agent notices the closed stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut s3 = loop {
        let r = c.get(a.url("/api/v1/events")).send().await.unwrap();
        if r.status() == 200 {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    next_event(&mut s3, "connection:health_check", Duration::from_secs(5)).await;
    a.stop().await;
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) from `s`.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("a response within 5 s")
            .expect("read");
        assert!(n > 0, "closed before the response was complete: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn a_keep_alive_connection_idle_past_idle_timeout_is_closed() {
    const IDLE: Duration = Duration::from_secs(1);
    let a = TestAgent::start(
        r#"
[agent]
listen = "127.0.0.1:{port}"
data_dir = "{dir}/data"
header_timeout = "10s"
idle_timeout = "1s"
"#,
    )
    .await;
    let req = b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    // Requests closer together than idle_timeout keep the connection open...
    let mut busy = TcpStream::connect(a.addr).await.unwrap();
    let opened = tokio::time::Instant::now();
    for _ in 0..5 {
        busy.write_all(req).await.unwrap();
        assert!(read_response(&mut busy).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(IDLE / 2).await;
    }
    assert!(
        opened.elapsed() > IDLE * 2,
        "the busy connection outlived idle_timeout"
    );
    // ...and one request, then silence, is closed after idle_timeout (not the 10 s
    // header timeout, not at once).
    busy.write_all(req).await.unwrap();
    read_response(&mut busy).await;
    let idle_from = tokio::time::Instant::now();
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(8), busy.read(&mut b))
        .await
        .expect("the idle connection is closed well before the header timeout")
        .unwrap_or(0);
    let idle_for = idle_from.elapsed();
    eprintln!("idle keep-alive connection closed {idle_for:?} after its last response");
    assert_eq!(n, 0, "nothing but a close");
    assert!(
        idle_for + Duration::from_millis(150) >= IDLE,
        "closed after {idle_for:?}, before idle_timeout"
    );
    // Tight enough to tell idle_timeout (1 s) from header_timeout (10 s since the
    // connection opened), loose enough for a loaded machine.
    assert!(
        idle_for < Duration::from_secs(5),
        "closed {idle_for:?} after the last response: idle_timeout was not applied"
    );
    // An idle close is not a slow request head.
    assert_eq!(
        metric(
            &metrics_of(&a),
            "lifeline_http_rejected_total{reason=\"header_timeout\"}"
        )
        .unwrap_or(0.0),
        0.0
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_client_that_stops_reading_is_dropped_and_counted() {
    // Events with big messages fill the stalled client's socket buffers quickly: an http
    // check whose (config) body regex is 16 KiB and never matches reports that regex in
    // its message, twice per attempt (`health_check` and `failed`).
    let app = axum::Router::new().fallback(|| async { "nope" });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(l, app).await });
    let regex = format!("^{}", "Z".repeat(16 * 1024));
    let checks: String = (0..3)
        .map(|i| {
            format!(
                "[[checks]]\nname = \"big-{i}\"\nkind = \"http\"\nurl = \"http://{target}/\"\nexpect_body = \"{regex}\"\ninterval = \"50ms\"\nunhealthy_threshold = 1\nbackoff = {{ base = \"50ms\", max = \"50ms\", jitter = \"0s\" }}\n"
            )
        })
        .collect();
    let a = TestAgent::start(&format!(
        r#"
[agent]
listen = "127.0.0.1:{{port}}"
data_dir = "{{dir}}/data"
write_timeout = "1s"
{checks}"#
    ))
    .await;
    // A reader that keeps up, before and after.
    let c = stream_client();
    let mut reader = c.get(a.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(reader.status(), 200);
    // The stalled one: a small receive buffer, a request, and never a read.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(a.addr).await.unwrap();
    stalled
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let stalled_at = tokio::time::Instant::now();
    let series = "lifeline_http_rejected_total{reason=\"write_timeout\"}";
    let mut events = 0usize;
    let mut bytes = 0usize;
    let deadline = stalled_at + Duration::from_secs(30);
    // Keep the good reader reading while waiting for the drop.
    loop {
        if metric(&metrics_of(&a), series).unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client was not dropped within 30 s ({events} events, {bytes} bytes to the good reader)"
        );
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_millis(200), reader.chunk()).await
        {
            events += String::from_utf8_lossy(&chunk).matches("event: ").count();
            bytes += chunk.len();
        }
    }
    let dropped_after = stalled_at.elapsed();
    assert!(
        dropped_after >= Duration::from_secs(1),
        "dropped after {dropped_after:?}, before write_timeout"
    );
    // The stalled socket ends: what was buffered, then EOF or a reset.
    let mut sink = vec![0u8; 64 * 1024];
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(end, stalled.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the dropped client's connection is still open"),
        }
    }
    // The reader that kept up is unaffected and still gets events.
    next_event(
        &mut reader,
        "connection:health_check",
        Duration::from_secs(5),
    )
    .await;
    assert!(events > 0, "the good reader got events during the stall");
    wait_for(Duration::from_secs(5), "only the good reader left", || {
        (metric(&metrics_of(&a), "lifeline_http_connections") == Some(1.0)).then_some(())
    })
    .await;
    eprintln!("stalled SSE client dropped {dropped_after:?} after it stopped reading");
    drop(reader);
    a.stop().await;
    server.abort();
}

/// An agent on a free port with `agent_keys` added to `[agent]` and one tcp check `svc` on
/// `target` every 100 ms.
async fn listening_agent(agent_keys: &str, target: &tokio::net::TcpListener) -> TestAgent {
    TestAgent::start(&format!(
        "[agent]\nlisten = \"127.0.0.1:{{port}}\"\ndata_dir = \"{{dir}}/data\"\n{agent_keys}{}",
        tcp_check(
            "svc",
            target.local_addr().unwrap(),
            "interval = \"100ms\"\n"
        )
    ))
    .await
}
