//! Browser safety: `Origin` on `/ws`, SSE and token-less POSTs, form content types,
//! `allowed_hosts`; public paths with basic auth; the bearer token on writes; gzip.

use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::*;
use crate::common::*;

async fn plain_agent(extra: &str) -> TestAgent {
    TestAgent::start(&format!(
        r#"
[agent]
listen = "127.0.0.1:{{port}}"
data_dir = "{{dir}}/data"
{extra}
"#
    ))
    .await
}

async fn ws_status(a: &TestAgent, origin: Option<&str>) -> u16 {
    let mut req = format!("ws://{}/ws", a.addr).into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, r)) => r.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn ws_and_sse_refuse_a_foreign_origin_and_accept_their_own_and_listed_ones() {
    let a = plain_agent(r#"allowed_origins = ["https://grafana.example"]"#).await;
    let own = format!("http://{}", a.addr);
    assert_eq!(ws_status(&a, Some("https://evil.example")).await, 403);
    assert_eq!(ws_status(&a, Some(&own)).await, 101);
    assert_eq!(ws_status(&a, Some("https://grafana.example")).await, 101);
    assert_eq!(ws_status(&a, None).await, 101);
    let sse = |o: &'static str| {
        client()
            .get(a.url("/api/v1/events"))
            .header("origin", o)
            .send()
    };
    assert_eq!(sse("https://evil.example").await.unwrap().status(), 403);
    assert_eq!(sse("https://grafana.example").await.unwrap().status(), 200);
    let text = metrics_of(&a);
    assert_eq!(
        metric(&text, "lifeline_http_rejected_total{reason=\"origin\"}"),
        Some(2.0)
    );
    a.stop().await;
}

#[tokio::test]
async fn a_cross_site_form_cannot_post_without_a_token() {
    let a = plain_agent("").await;
    let c = client();
    // (route, content type, origin, body) → status.
    let post = |path: &str, ct: Option<&str>, origin: Option<&str>, body: Vec<u8>| {
        let mut r = c.post(a.url(path)).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let form = "application/x-www-form-urlencoded";
    let json = Some("application/json");
    assert_eq!(
        post("/-/reload", Some(form), None, b"a=1".to_vec()).await,
        415
    );
    assert_eq!(
        post("/health/force-check", Some("text/plain"), None, vec![]).await,
        415
    );
    assert_eq!(
        post("/-/reload", json, Some("https://evil.example"), vec![]).await,
        403
    );
    // curl-style and JSON requests still work.
    assert_eq!(post("/-/reload", None, None, vec![]).await, 200);
    assert_eq!(post("/-/reload", json, None, b"{}".to_vec()).await, 200);
    assert_eq!(
        post("/api/v1/silences", json, None, vec![b' '; 100_000]).await,
        413
    );
    let text = metrics_of(&a);
    assert_eq!(
        metric(
            &text,
            "lifeline_http_rejected_total{reason=\"content_type\"}"
        ),
        Some(2.0)
    );
    assert!(
        metric(
            &text,
            "lifeline_http_requests_total{code=\"415\",route=\"/-/reload\"}"
        ) == Some(1.0),
        "{text}"
    );
    a.stop().await;
}

#[tokio::test]
async fn allowed_hosts_rejects_other_host_headers_but_not_the_probes() {
    let a = plain_agent(r#"allowed_hosts = ["127.0.0.1", "mon.example"]"#).await;
    let c = client();
    let get = |path: &str, host: &'static str| c.get(a.url(path)).header("host", host).send();
    assert_eq!(
        get("/health", "rebind.evil.example")
            .await
            .unwrap()
            .status(),
        421
    );
    assert_eq!(
        get("/health", "mon.example:9477").await.unwrap().status(),
        200
    );
    assert_eq!(get_status(&c, &a.url("/health")).await, 200);
    let probe = get("/-/ready", "rebind.evil.example").await.unwrap();
    assert_eq!(probe.status(), 200);
    assert_eq!(probe.text().await.unwrap(), "OK");
    a.stop().await;
}

#[tokio::test]
async fn basic_auth_guards_reads_except_public_paths_and_the_token_still_guards_writes() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  ops: {}\n", hash("pw"))).unwrap();
    let a = plain_agent(&format!(
        "web_config = \"{}\"\npublic_paths = [\"/health\"]\napi_token = \"tok-1\"",
        web.display()
    ))
    .await;
    let c = client();
    assert_eq!(get_status(&c, &a.url("/health")).await, 200);
    assert_eq!(get_status(&c, &a.url("/health/detailed")).await, 401);
    assert_eq!(get_status(&c, &a.url("/no/such/route")).await, 401);
    assert_eq!(get_status(&c, &a.url("/-/healthy")).await, 200);
    let ok = c
        .get(a.url("/health/detailed"))
        .header("authorization", basic("ops", "pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // Writes: basic credentials alone are not enough when a token is set; the token is.
    let post = |auth: String| {
        c.post(a.url("/-/reload"))
            .header("authorization", auth)
            .send()
    };
    assert_eq!(post(basic("ops", "pw")).await.unwrap().status(), 401);
    assert_eq!(post("Bearer tok-1".into()).await.unwrap().status(), 200);
    a.stop().await;
}

#[tokio::test]
async fn metrics_are_gzipped_when_the_scraper_accepts_it() {
    let a = plain_agent(
        "[[checks]]\nname = \"m\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\ninterval = \"1h\"",
    )
    .await;
    let r = client()
        .get(a.url("/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["vary"], "accept-encoding");
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..2], &[0x1f, 0x8b]);
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut unzipped)
        .expect("a whole gzip stream");
    for want in ["lifeline_http_connections", "lifeline_check_up{"] {
        assert!(unzipped.contains(want), "{want} in the gzipped exposition");
    }
    // Refused (q=0) or not asked for: plain text.
    for ae in [None, Some("gzip;q=0, identity")] {
        let mut req = client().get(a.url("/metrics"));
        if let Some(ae) = ae {
            req = req.header("accept-encoding", ae);
        }
        let plain = req.send().await.unwrap();
        assert!(plain.headers().get("content-encoding").is_none(), "{ae:?}");
        let text = plain.text().await.unwrap();
        assert!(text.contains("lifeline_http_connections"), "{ae:?}");
        assert!(text.contains("lifeline_check_up{"), "{ae:?}");
    }
    a.stop().await;
}

#[test]
fn the_shipped_config_documents_the_new_agent_keys_with_their_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let src = std::fs::read_to_string(&path).unwrap();
    let keys = [
        "public_paths",
        "allowed_origins",
        "allowed_hosts",
        "header_timeout",
        "idle_timeout",
        "request_timeout",
        "write_timeout",
        "max_connections",
        "max_streams",
        "max_body_bytes",
    ];
    let mut found = 0;
    let text: String = src
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if keys.iter().any(|k| rest.starts_with(&format!("{k} "))) => {
                found += 1;
                format!("{rest}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    assert_eq!(found, keys.len(), "every key is shown in config.toml");
    let c = lifeline::config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.agent.http, lifeline::config::HttpLimits::default());
    let bad = lifeline::config::parse(
        &path,
        "[agent]\nheader_timeout = \"0s\"\nallowed_origins = [\"https://a.example/path\"]\n",
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains(":2:18: `header_timeout` must be greater than 0"),
        "{bad}"
    );
    assert!(bad.contains(":3:20: `allowed_origins`"), "{bad}");
}

/// The status of a GET.
async fn get_status(c: &reqwest::Client, url: &str) -> reqwest::StatusCode {
    c.get(url).send().await.unwrap().status()
}
