//! `sip` with `method = "REGISTER"` against Kamailio's registrar with digest
//! authentication (`tests/data/sip/kamailio-registrar.cfg`): every transport (UDP, TCP,
//! TLS, WS, WSS), asserted through Kamailio's own location table (`kamcmd ul.lookup`).

use std::time::Duration;

use lifeline::check::ErrorKind;
use lifeline::health::Status;

use super::kamailio::Kamailio;
use super::*;

const PASSWORD: &str = "reg-s3cret-7f3a";
const WITHIN: Duration = Duration::from_secs(15);

/// Polls Kamailio's location table for `aor` until `f` accepts its contacts.
async fn wait_contacts(
    k: &Kamailio,
    aor: &str,
    what: &str,
    f: impl Fn(&[(String, u32)]) -> bool,
) -> Vec<(String, u32)> {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let c = k.contacts(aor).await;
        if f(&c) {
            return c;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}: {aor} has {c:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn register_check(name: &str, target: &str, user: &str, password: &str, extra: &str) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"sip\"\nmethod = \"REGISTER\"\ntarget = \"{target}\"\nusername = \"{user}\"\npassword = \"{password}\"\n{extra}\n"
    )
}

/// One session per transport: each registers (answering the qop=auth challenge), shows up
/// in Kamailio's location table with its transport, is refreshed before the 4 s it was
/// granted runs out (the CSeq Kamailio stored keeps rising, the binding outlives 3 s)
/// without any heartbeat (interval 1 h), and is removed when the agent stops.
#[tokio::test]
async fn register_sessions_on_every_transport_refresh_and_unregister() {
    let k = Kamailio::registrar(PASSWORD, "MD5").await;
    let ca = k.cert_path();
    let ca = path_str(&ca);
    let tls = format!("ca_file = \"{ca}\"");
    let session = "mode = \"session\"\ninterval = \"1h\"\nexpires = 4";
    let checks = [
        (
            "reg-udp",
            format!("sip:127.0.0.1:{};transport=udp", k.port),
            "udp1",
            "udp",
            String::new(),
        ),
        (
            "reg-tcp",
            format!("sip:127.0.0.1:{};transport=tcp", k.port),
            "tcp1",
            "tcp",
            String::new(),
        ),
        (
            "reg-tls",
            format!("sip:127.0.0.1:{};transport=tls", k.tls_port),
            "tls1",
            "tls",
            tls.clone(),
        ),
        (
            "reg-ws",
            format!("sip:127.0.0.1:{};transport=ws", k.port),
            "ws1",
            "ws",
            String::new(),
        ),
        (
            "reg-wss",
            format!("sip:127.0.0.1:{};transport=wss", k.tls_port),
            "wss1",
            "wss",
            tls.clone(),
        ),
    ];
    let mut cfg = "[agent]\ndata_dir = \"{dir}/data\"\n".to_string();
    for (name, target, user, _, extra) in &checks {
        cfg.push_str(&register_check(
            name,
            target,
            user,
            PASSWORD,
            &format!("{session}\n{extra}"),
        ));
    }
    let a = TestAgent::start(&cfg).await;
    for (name, _, user, transport, _) in &checks {
        let s = a.wait_status(name, Status::Healthy, WITHIN).await;
        assert_eq!(s.details["transport"], *transport, "{name}");
        assert_eq!(s.details["auth"], "MD5", "{name}");
        assert_eq!(s.details["registered"], true, "{name}");
        assert_eq!(s.details["expires"], 4, "{name}");
        assert_eq!(s.details["server"], "kamailio-lifeline-registrar");
        let c = wait_contacts(&k, user, "a binding", |c| c.len() == 1).await;
        assert!(
            c[0].0.starts_with(&format!("sip:{user}@"))
                && c[0].0.contains(&format!(";transport={transport}")),
            "{name}: {c:?}"
        );
        if transport.starts_with("ws") {
            assert!(c[0].0.contains(".invalid;"), "RFC 7118 contact: {c:?}");
        }
    }
    let start = tokio::time::Instant::now();
    let first: Vec<u32> = {
        let mut v = Vec::new();
        for (_, _, user, _, _) in &checks {
            v.push(k.contacts(user).await[0].1);
        }
        v
    };
    // Refreshed at half of 4 s (short expiries): two refreshes later the binding is still
    // there (it would have expired after 4 s) with a higher CSeq, and never lapsed.
    for ((name, _, user, _, _), cseq) in checks.iter().zip(first) {
        wait_contacts(&k, user, "two refreshes", |c| {
            assert_eq!(c.len(), 1, "{user}'s binding lapsed or multiplied: {c:?}");
            c[0].1 >= cseq + 2
        })
        .await;
        assert_eq!(a.state(name).status, Status::Healthy, "{name}");
    }
    assert!(start.elapsed() >= Duration::from_secs(3));
    let api = api::get_text(&a.url("/api/v1/checks")).await;
    assert!(!api.contains(PASSWORD), "password leaked into the API");
    a.stop().await;
    // Unregistered on shutdown (Expires: 0), not left to expire.
    for (_, _, user, _, _) in &checks {
        assert_eq!(
            k.contacts(user).await,
            Vec::new(),
            "{user} still registered after stop"
        );
    }
}

/// A probe registers, then removes its binding; a wrong password is `auth_failed` after
/// the challenge was answered once, over UDP and TCP; so are a 403 to correct
/// credentials and a challenge for another realm than the configured one.
#[tokio::test]
async fn register_probe_leaves_nothing_and_wrong_password_is_auth_failed() {
    let k = Kamailio::registrar(PASSWORD, "MD5").await;
    let udp = format!("sip:127.0.0.1:{};transport=udp", k.port);
    let tcp = format!("sip:127.0.0.1:{};transport=tcp", k.port);
    let probe = "interval = \"300ms\"\nunhealthy_threshold = 1";
    let cfg = format!(
        "[agent]\ndata_dir = \"{{dir}}/data\"\n{}{}{}",
        register_check("probe-udp", &udp, "probe1", PASSWORD, probe),
        register_check("bad-udp", &udp, "bad1", "not-the-password", probe),
        register_check("bad-tcp", &tcp, "bad2", "not-the-password", probe),
    ) + &register_check("blocked", &tcp, "blocked1", PASSWORD, probe)
        + &register_check(
            "realm",
            &tcp,
            "realm1",
            PASSWORD,
            &format!("{probe}\nrealm = \"elsewhere.example\""),
        );
    let a = TestAgent::start(&cfg).await;
    let s = a.wait_status("probe-udp", Status::Healthy, WITHIN).await;
    assert_eq!(s.details["unregistered"], true, "{s:?}");
    assert_eq!(s.details["retransmissions"], 0);
    for name in ["bad-udp", "bad-tcp"] {
        let s = a.wait_status(name, Status::Unhealthy, WITHIN).await;
        assert_eq!(s.error_kind, Some(ErrorKind::AuthFailed), "{name}: {s:?}");
        assert_error_mentions(&s, "credentials rejected");
    }
    let s = a.wait_status("blocked", Status::Unhealthy, WITHIN).await;
    assert_eq!(s.error_kind, Some(ErrorKind::AuthFailed), "{s:?}");
    assert_error_mentions(&s, "403 Forbidden to our credentials");
    let s = a.wait_status("realm", Status::Unhealthy, WITHIN).await;
    assert_eq!(s.error_kind, Some(ErrorKind::AuthFailed), "{s:?}");
    assert_error_mentions(&s, "configured realm is \"elsewhere.example\"");
    a.stop().await;
    assert_eq!(k.contacts("probe1").await, Vec::new());
    assert_eq!(k.contacts("bad1").await, Vec::new());
}

/// With the registrar's auth module set to SHA-256 (RFC 8760), the check answers with
/// SHA-256; `lifeline check` (one shot) registers and unregisters.
#[tokio::test]
async fn register_answers_sha256_challenges_and_one_shot_check_works() {
    let k = Kamailio::registrar(PASSWORD, "SHA-256").await;
    let tcp = format!("sip:127.0.0.1:{};transport=tcp", k.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ndata_dir = \"{}/data\"\n{}",
            path_str(dir.path()),
            register_check("sha", &tcp, "sha1", PASSWORD, "")
        ),
    )
    .expect("write config");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lifeline"))
        .args(["--config", path_str(&config), "check", "--json"])
        .output()
        .await
        .expect("run lifeline check");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["status"], "healthy", "{text}");
    assert_eq!(rows[0]["details"]["auth"], "SHA-256", "{text}");
    assert_eq!(rows[0]["details"]["unregistered"], true, "{text}");
    assert!(!text.contains(PASSWORD));
    assert_eq!(k.contacts("sha1").await, Vec::new());
}

/// Config mistakes are reported at their place, nothing is started.
#[test]
fn register_config_errors_point_at_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let cases = [
        ("method = \"REGISTER\"\n", "missing required key `username`"),
        ("method = \"INVITE\"\n", "`method` must be"),
        (
            "method = \"REGISTER\"\nusername = \"a\"\npassword = \"x\"\naccept_codes = [401]\n",
            "applies to OPTIONS",
        ),
        (
            "method = \"REGISTER\"\nusername = \"a b\"\npassword = \"x\"\n",
            "`username` must be",
        ),
        ("username = \"a\"\n", "missing required key `password`"),
        (
            "method = \"REGISTER\"\nusername = \"a\"\npassword = \"x\"\nexpires = \"1.5s\"\n",
            "whole seconds",
        ),
        (
            "method = \"REGISTER\"\nusername = \"a\"\npassword = \"x\"\nexpires = 0\n",
            "`expires` must be between",
        ),
        ("ws_path = \"ws\"\n", "`ws_path` must start with `/`"),
    ];
    for (extra, want) in cases {
        std::fs::write(
            &path,
            agent_config("s", "sip:127.0.0.1;transport=ws", extra),
        )
        .expect("write");
        let err = match lifeline::config::load(&path) {
            Ok(_) => panic!("accepted: {extra}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{extra}: {err}");
        assert!(err.contains("config.toml:"), "PATH:LINE:COL: {err}");
    }
    // REGISTER sessions may use UDP (each refresh is a transaction).
    std::fs::write(
        &path,
        agent_config(
            "s",
            "sip:127.0.0.1",
            "method = \"REGISTER\"\nusername = \"a\"\npassword = \"x\"\nmode = \"session\"\nexpires = \"10m\"",
        ),
    )
    .expect("write");
    lifeline::config::load(&path).expect("a REGISTER session over UDP is valid");
}
