//! TLS, client certificates and basic auth from a web config: a real Prometheus scrapes
//! over HTTPS; the exporter-toolkit example file loads unchanged; a bad file is
//! `PATH:LINE:COL` and exit 2; reload re-reads it and keeps the old one when broken.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_lifeline");

fn agent_config(web: &Path, extra: &str) -> String {
    format!(
        r#"
[agent]
listen = "127.0.0.1:{{port}}"
data_dir = "{{dir}}/data"
web_config = "{}"
{extra}
"#,
        web.display()
    )
}

struct Prometheus {
    _child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(scrape_configs: &str) -> Self {
        let bin = require_bin("prometheus", "prometheus", &[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n{scrape_configs}"),
        )
        .expect("write prometheus.yml");
        let child = tokio::process::Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn prometheus");
        Self {
            _child: child,
            port,
            _dir: dir,
        }
    }

    /// Waits until every job in `want` has a target with that health ("up"/"down"),
    /// returning the targets.
    async fn wait_targets(&self, want: &[(&str, &str)], within: Duration) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/targets", self.port);
        let deadline = tokio::time::Instant::now() + within;
        let mut last = Value::Null;
        loop {
            if let Ok(r) = client().get(&url).send().await
                && let Ok(v) = r.json::<Value>().await
            {
                let targets = v["data"]["activeTargets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let ok = want.iter().all(|(job, health)| {
                    targets
                        .iter()
                        .any(|t| t["labels"]["job"] == *job && t["health"] == *health)
                });
                if ok {
                    return targets;
                }
                last = v;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("Prometheus targets not {want:?} within {within:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn job(
    name: &str,
    port: u16,
    certs: &Certs,
    auth: Option<(&str, &str)>,
    client_cert: bool,
) -> String {
    let mut s = format!(
        "  - job_name: {name}\n    scheme: https\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n    tls_config:\n      ca_file: {}\n",
        certs.path("ca.crt").display()
    );
    if client_cert {
        s.push_str(&format!(
            "      cert_file: {}\n      key_file: {}\n",
            certs.path("client.crt").display(),
            certs.path("client.key").display()
        ));
    }
    if let Some((u, p)) = auth {
        s.push_str(&format!(
            "    basic_auth:\n      username: {u}\n      password: {p}\n"
        ));
    }
    s
}

#[tokio::test]
async fn prometheus_scrapes_over_https_with_basic_auth_and_client_certificates() {
    let certs = Certs::make();
    let web_auth = certs.path("web-auth.yml");
    std::fs::write(
        &web_auth,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prom: {}\n",
            hash("scrape-pw")
        ),
    )
    .unwrap();
    let web_mtls = certs.path("web-mtls.yml");
    std::fs::write(
        &web_mtls,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    )
    .unwrap();
    let a = TestAgent::start(&agent_config(&web_auth, "")).await;
    let m = TestAgent::start(&agent_config(&web_mtls, "")).await;
    let (ap, mp) = (a.addr.port(), m.addr.port());

    // Direct: HTTPS only, credentials needed, the cache spares the second bcrypt round.
    let https = certs.client(false);
    let url = format!("https://127.0.0.1:{ap}/metrics");
    let r = https.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let r = https
        .get(&url)
        .header("authorization", basic("prom", "scrape-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("lifeline_build_info"));
    let users = a
        .agent
        .config
        .load()
        .agent
        .web
        .as_ref()
        .unwrap()
        .users
        .clone()
        .unwrap();
    assert_eq!(users.cached(), 1);
    assert!(
        client()
            .get(format!("http://127.0.0.1:{ap}/metrics"))
            .send()
            .await
            .is_err()
    );
    // Probes are public and say only OK.
    let r = https
        .get(format!("https://127.0.0.1:{ap}/-/healthy"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "OK".to_string())
    );

    // Client certificates: required and verified.
    let murl = format!("https://127.0.0.1:{mp}/metrics");
    assert!(certs.client(false).get(&murl).send().await.is_err());
    assert_eq!(
        certs.client(true).get(&murl).send().await.unwrap().status(),
        200
    );

    let p = Prometheus::start(&format!(
        "{}{}{}{}",
        job("good", ap, &certs, Some(("prom", "scrape-pw")), false),
        job("badpw", ap, &certs, Some(("prom", "wrong")), false),
        job("cert", mp, &certs, None, true),
        job("nocert", mp, &certs, None, false),
    ));
    let targets = p
        .wait_targets(
            &[
                ("good", "up"),
                ("badpw", "down"),
                ("cert", "up"),
                ("nocert", "down"),
            ],
            Duration::from_secs(60),
        )
        .await;
    let err = |j: &str| {
        targets
            .iter()
            .find(|t| t["labels"]["job"] == j)
            .map(|t| t["lastError"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert!(err("badpw").contains("401"), "{}", err("badpw"));
    let text = metrics_of(&a);
    assert!(
        metric(
            &text,
            "lifeline_http_requests_total{code=\"200\",route=\"/metrics\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "lifeline_http_rejected_total{reason=\"unauthorized\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        metric(
            &metrics_of(&m),
            "lifeline_http_rejected_total{reason=\"tls_handshake\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    drop(p);
    a.stop().await;
    m.stop().await;
}

#[tokio::test]
async fn the_exporter_toolkit_example_web_config_loads_unchanged() {
    let certs = Certs::make();
    // Laid out the way the exporter-toolkit documentation shows its example file and
    // every documented key.
    let example = format!(
        r#"# Minimal TLS and basic auth setup, as handed to node_exporter.
tls_server_config:
  # Certificate and key files for server to use to authenticate to client.
  cert_file: server.crt
  key_file: server.key

  # Server policy for client authentication.
  client_auth_type: "VerifyClientCertIfGiven"

  # CA certificate for client certificate authentication to the server.
  client_ca_file: ca.crt

  min_version: "TLS12"
  max_version: "TLS13"
  cipher_suites:
    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305
  prefer_server_cipher_suites: true
  curve_preferences: [X25519, CurveP256]

http_server_config:
  http2: true
  headers:
    Strict-Transport-Security: max-age=31536000
    X-Content-Type-Options: nosniff
    X-Frame-Options: deny

# Usernames and hashed passwords that have full access to the web server.
basic_auth_users:
  alice: {}
  bob: {}
"#,
        hash("alice-pw"),
        hash("bob-pw")
    );
    let path = certs.path("web-config.yml");
    std::fs::write(&path, example).unwrap();
    let w = lifeline::http::web_config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(w.tls.is_some());
    assert_eq!(w.users.as_ref().map(|u| u.len()), Some(2));
    assert_eq!(w.headers.len(), 3);

    let a = TestAgent::start(&agent_config(&path, "")).await;
    let r = certs
        .client(false)
        .get(format!("https://127.0.0.1:{}/health", a.addr.port()))
        .header("authorization", basic("bob", "bob-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "deny");
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    a.stop().await;
}

#[tokio::test]
async fn a_bad_web_config_is_path_line_col_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "tls_server_config:\n  cert_file: nope.crt\n  key_fil: x\nbasic_auth_users:\n  bob: plain\n").unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"{}/d\"\n",
            free_port(),
            dir.path().display()
        ),
    )
    .unwrap();
    for cmd in ["validate", "run"] {
        let out = tokio::process::Command::new(BIN)
            .arg(cmd)
            .arg("--config")
            .arg(&cfg)
            .arg("--web.config.file")
            .arg(&web)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        let w = web.display();
        assert!(
            err.contains(&format!("{w}:2:14: `cert_file`: cannot read")),
            "{err}"
        );
        assert!(
            err.contains(&format!("{w}:3:3: unknown key `key_fil`")),
            "{err}"
        );
        assert!(
            err.contains(&format!("{w}:5:8: password of `bob`")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn reload_rereads_the_web_config_and_keeps_the_old_one_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  ops: {}\n", hash("one"))).unwrap();
    let a = TestAgent::start(&agent_config(&web, "")).await;
    let post = |pw: &'static str| {
        client()
            .post(a.url("/-/reload"))
            .header("authorization", basic("ops", pw))
            .header("content-type", "application/json")
            .send()
    };
    std::fs::write(&web, "basic_auth_users:\n  ops: [\n").unwrap();
    let r = post("one").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", web.display())),
        "{body}"
    );
    assert_eq!(
        post("one").await.unwrap().status(),
        400,
        "old users still apply"
    );

    std::fs::write(&web, format!("basic_auth_users:\n  ops: {}\n", hash("two"))).unwrap();
    assert_eq!(post("one").await.unwrap().status(), 200);
    assert_eq!(post("one").await.unwrap().status(), 401);
    assert_eq!(post("two").await.unwrap().status(), 200);
    a.stop().await;
}
