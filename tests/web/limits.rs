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
    let a = TestAgent::start(&format!(
        r#"
[agent]
listen = "127.0.0.1:{{port}}"
data_dir = "{{dir}}/data"
header_timeout = "5s"
max_connections = 4000
[[checks]]
name = "svc"
kind = "tcp"
address = "{}"
interval = "100ms"
"#,
        target.local_addr().unwrap()
    ))
    .await;
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
    let a = TestAgent::start(&format!(
        r#"
[agent]
listen = "127.0.0.1:{{port}}"
data_dir = "{{dir}}/data"
max_streams = 2
[[checks]]
name = "svc"
kind = "tcp"
address = "{}"
interval = "100ms"
"#,
        target.local_addr().unwrap()
    ))
    .await;
    let c = client();
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
