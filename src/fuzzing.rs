//! One function per fuzz target (`fuzz/fuzz_targets/*.rs`), each feeding arbitrary bytes
//! through the same public entry point the agent uses and panicking only when an
//! invariant breaks. `tests/fuzz_corpus` replays every committed corpus file through
//! these functions on stable, so a regression is caught without libFuzzer.
//!
//! Not an API: hidden from the docs, no stability promise.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::alert::template::{Escape, Template};
use crate::alert::{AlertItem, NoteStatus, Notification};
use crate::check::Verdict;
use crate::plugin::ffi::{CallCtx, Collected, HostCall};

/// One target's function: panics when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name of its fuzz target and corpus directory
/// (`socketio_packet` lives in `fuzz/common/socketio_packet.rs`).
pub const TARGETS: &[(&str, Target)] = &[
    ("config_load", config_load),
    ("config_reload", config_reload),
    ("sip_response", sip_response),
    ("ami_codec", ami_codec),
    ("token_answer", token_answer),
    ("nagios_output", nagios_output),
    ("postgres_dsn", postgres_dsn),
    ("redis_url", redis_url),
    ("rule_expr", rule_expr),
    ("alert_template", alert_template),
    ("web_config", web_config),
    ("plugin_callbacks", plugin_callbacks),
    ("mqtt_packet", mqtt_packet),
    ("mysql_packet", mysql_packet),
];

/// A directory that does not exist, so relative file references in fuzzed configs
/// resolve to nothing.
const BASE: &str = "/nonexistent-lifeline-fuzz";

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Config load: TOML, `${…}` interpolation and validation (`config::parse`, what
/// `config::load` runs on the file's text). Errors carry a 1-based position.
pub fn config_load(data: &[u8]) {
    let src = text(data);
    let path = Path::new(BASE).join("lifeline.toml");
    if let Err(errs) = crate::config::parse(&path, &src) {
        assert!(!errs.0.is_empty(), "a failed load names no error");
        for e in &errs.0 {
            assert!(e.line >= 1 && e.col >= 1, "position {}:{}", e.line, e.col);
            let _ = e.to_string();
        }
    }
}

/// Reload (differential): the running file, a NUL byte, then the new file (no NUL: the
/// same file twice). When the running file is valid, a load of the new one that takes
/// the running checks over (`config::parse_reusing`) must come to exactly what a full
/// load comes to: the same checks (name, kind, fingerprint) and what the next reload
/// compares, or the same errors.
pub fn config_reload(data: &[u8]) {
    let (a, b) = match data.iter().position(|&x| x == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let (a, b) = (text(a), text(b));
    let path = Path::new(BASE).join("lifeline.toml");
    let Ok(prev) = crate::config::parse(&path, &a) else {
        return;
    };
    let options = crate::config::LoadOptions::default();
    let reused = crate::config::parse_reusing(&path, &b, &options, &prev);
    let full = crate::config::parse_with(&path, &b, &options);
    type Summary = (
        Vec<(String, &'static str, u64)>,
        Option<Vec<(u128, u64, bool, bool)>>,
    );
    let summary = |c: &crate::config::Config| -> Summary {
        (
            c.checks
                .iter()
                .map(|k| (k.name.clone(), k.kind, k.fingerprint))
                .collect(),
            c.sources.as_ref().map(|s| {
                s.blocks
                    .iter()
                    .map(|b| (b.text, b.name, b.reusable, b.names_others))
                    .collect()
            }),
        )
    };
    match (reused, full) {
        (Ok(r), Ok(f)) => {
            assert_eq!(summary(&r), summary(&f), "reusing and full loads differ");
            assert_eq!(r.names_hash(), f.names_hash());
        }
        (Err(r), Err(f)) => assert_eq!(r.to_string(), f.to_string()),
        (r, f) => panic!(
            "reusing load ok={} but full load ok={}",
            r.is_ok(),
            f.is_ok()
        ),
    }
}

/// The SIP message parser, both framings, with every accessor on what it returns.
pub fn sip_response(data: &[u8]) {
    use crate::check::sip::message::{self, Framing, Request, Transport, parse};
    for framing in [Framing::Datagram, Framing::Stream] {
        let Ok((m, used)) = parse(data, framing) else {
            continue;
        };
        assert!(used <= data.len() && used <= message::MAX_MESSAGE);
        assert!(m.headers.len() <= message::MAX_HEADERS);
        let _ = (m.code(), m.top_via(), m.via_branch(), m.cseq(), m.server());
        for h in ["v", "i", "l", "f", "t"] {
            let _ = m.header(h);
        }
        let req = Request {
            method: "OPTIONS",
            uri: "sip:127.0.0.1".into(),
            to: "sip:127.0.0.1".into(),
            from: "sip:lifeline@127.0.0.1".into(),
            tag: "t".into(),
            call_id: m.header("call-id").unwrap_or("x").into(),
            cseq: m.cseq().map_or(1, |c| c.0),
            branch: m.via_branch().unwrap_or("z9hG4bK").into(),
            transport: Transport::Udp,
            local: "127.0.0.1:5060".into(),
            contact: "sip:lifeline@127.0.0.1:5060".into(),
            expires: None,
            auth: None,
            user_agent: "fuzz".into(),
        };
        let _ = req.is_answered_by(&m);
        if framing == Framing::Stream {
            let again = parse(&data[..used], Framing::Stream);
            assert_eq!(again, Ok((m, used)), "stream message parses alone");
        }
    }
}

/// The AMI decoder: the first byte picks how the rest arrives in pieces; the frames must
/// not depend on it.
pub fn ami_codec(data: &[u8]) {
    use crate::check::ami::codec::decode_all;
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let splits = [usize::from(seed % 13) + 1, usize::from(seed / 13) + 1, 1];
    let (pieces, e1) = decode_all(stream, &splits);
    let (whole, e2) = decode_all(stream, &[usize::MAX]);
    assert_eq!(pieces, whole, "framing depends on how the bytes arrive");
    assert_eq!(e1.is_some(), e2.is_some(), "error depends on the split");
}

/// The WebSocket/Socket.IO token answer: first line the configured JSON pointer, the
/// rest the endpoint's body.
pub fn token_answer(data: &[u8]) {
    let (pointer, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"/access_token"[..], data),
    };
    let pointer = text(pointer);
    let default = Duration::from_secs(300);
    if let Ok((tok, ttl)) = crate::check::token::parse_answer(body, &pointer, default) {
        assert!(ttl <= Duration::from_secs(86_400 * 366), "ttl {ttl:?}");
        assert!(tok.len() <= body.len());
    }
}

/// Nagios plugin output and perfdata (`exec` checks).
pub fn nagios_output(data: &[u8]) {
    use crate::check::exec::{MAX_PERFDATA, parse_output, parse_perfdata};
    let s = text(data);
    let p = parse_output(&s);
    assert!(
        p.message.len() <= 1024 + '…'.len_utf8(),
        "message not capped"
    );
    assert!(!p.message.contains('\n'));
    assert!(p.perfdata.len() <= MAX_PERFDATA);
    let direct = parse_perfdata(&s);
    assert!(direct.len() <= MAX_PERFDATA);
    for perf in p.perfdata.iter().chain(&direct) {
        assert!(!perf.label.is_empty(), "empty perfdata label");
        assert!(
            !perf.value.is_nan(),
            "NaN perfdata value for {:?}",
            perf.label
        );
    }
}

/// Postgres DSNs (`postgres` checks' `dsn`).
pub fn postgres_dsn(data: &[u8]) {
    use crate::check::postgres::dsn::Dsn;
    let s = text(data);
    match Dsn::parse(&s, Path::new(BASE)) {
        Ok(d) => {
            assert!(!d.address().is_empty());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Redis URLs (`redis` checks' `url`).
pub fn redis_url(data: &[u8]) {
    let s = text(data);
    if let Err(e) = crate::check::redis::parse_url(&s) {
        let _ = e.to_string();
    }
}

/// A fixed snapshot of other checks' states, as a rule sees them.
fn rule_snapshot() -> serde_json::Value {
    serde_json::json!({
        "a": {"status": "healthy", "up": true, "score": 100, "latency_ms": 3.5,
              "labels": {"env": "prod"}, "error_kind": null, "consecutive_failures": 0},
        "b": {"status": "unhealthy", "up": false, "score": 10, "latency_ms": null,
              "labels": {"env": "dev", "team": "x"}, "error_kind": "refused",
              "consecutive_failures": 4},
        "c": {"status": "unknown", "up": false, "score": null, "latency_ms": null,
              "labels": {}, "error_kind": null, "consecutive_failures": 0},
    })
}

/// Rule expressions: through config load (compile, names, error positions), with the
/// first byte choosing how the expression is quoted in the TOML, then evaluated once
/// against a fixed snapshot as a rule check would.
pub fn rule_expr(data: &[u8]) {
    let Some((&style, rest)) = data.split_first() else {
        return;
    };
    let expr = text(rest);
    let quoted = if style % 2 == 0 && !expr.contains(['\'', '\n', '\r']) {
        format!("'{expr}'")
    } else {
        toml_basic_string(&expr)
    };
    let src = format!(
        "[[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n\n\
         [[checks]]\nname = \"b\"\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n\n\
         [[checks]]\nname = \"r\"\nkind = \"rule\"\nexpr = {quoted}\n"
    );
    if let Err(errs) = crate::config::parse(&Path::new(BASE).join("rule.toml"), &src) {
        for e in &errs.0 {
            assert!(e.line >= 1 && e.col >= 1);
        }
    }
    if let Some(o) = crate::check::rule::evaluate(&expr, &rule_snapshot())
        && let Verdict::Down(kind) = o.verdict
    {
        assert_eq!(kind, crate::check::ErrorKind::Rejected);
    }
}

/// `s` as a TOML basic string.
fn toml_basic_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A notification with hostile peer text in it.
fn sample_notification() -> Notification {
    let alert = AlertItem {
        check: "db<!channel>".into(),
        kind: "postgres".into(),
        status: "unhealthy".into(),
        previous_status: "healthy".into(),
        error_kind: Some("refused".into()),
        message: "connection refused & <url|forged> {{ x }}".into(),
        labels: [("env".to_string(), "prod".to_string())].into(),
        score: Some(12),
        started_at: "2026-01-01T00:00:00Z".into(),
        ended_at: None,
    };
    Notification::new(
        "k1",
        NoteStatus::Firing,
        "default",
        vec![alert.clone(), alert],
        SystemTime::UNIX_EPOCH,
        "http://127.0.0.1:9100",
    )
}

/// Alert templates (`title` / `text` of a notifier): compiled as at config load, rendered
/// with the fuel limit; the first byte picks the escaping (plain or Slack).
pub fn alert_template(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let escape = if mode % 2 == 0 {
        Escape::None
    } else {
        Escape::Slack
    };
    let src = text(rest);
    let Ok(t) = Template::compile_for(&src, escape) else {
        return;
    };
    // Fuel bounds the work; the result (text or a render error) is what a notifier sends.
    let _ = t.render(&sample_notification());
}

/// The exporter-toolkit web config (`--web.config.file`).
pub fn web_config(data: &[u8]) {
    let src = text(data);
    if let Err(errs) = crate::http::web_config::parse(&Path::new(BASE).join("web.yml"), &src) {
        for e in &errs.0 {
            assert!(e.line >= 1 && e.col >= 1);
        }
    }
}

/// The plugin host callbacks: the input is a script of calls (set_message, set_latency,
/// add_perfdata, log, is_cancelled) made through the host table a plugin gets, then
/// turned into an outcome the way a plugin check does.
pub fn plugin_callbacks(data: &[u8]) {
    let ctx = CallCtx::new(Arc::from("fuzz"), 0);
    let mut rest = data;
    let mut status = 0i32;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let take = |r: &mut &[u8]| -> Vec<u8> {
            let n = r
                .first()
                .map_or(0, |&n| usize::from(n))
                .min(r.len().saturating_sub(1));
            let s = r.get(1..1 + n).unwrap_or_default().to_vec();
            *r = r.get(1 + n..).unwrap_or_default();
            s
        };
        let float = |r: &mut &[u8]| -> f64 {
            let mut b = [0u8; 8];
            let n = r.len().min(8);
            b[..n].copy_from_slice(&r[..n]);
            *r = &r[n..];
            f64::from_le_bytes(b)
        };
        match op % 6 {
            0 => {
                let m = take(&mut rest);
                ctx.call_host(HostCall::Message(&m));
            }
            1 => {
                let s = float(&mut rest);
                ctx.call_host(HostCall::Latency(s));
            }
            2 => {
                let l = take(&mut rest);
                let v = float(&mut rest);
                ctx.call_host(HostCall::Perfdata(&l, v));
            }
            3 => {
                let level = u32::from(rest.first().copied().unwrap_or(0));
                rest = rest.get(1..).unwrap_or_default();
                let m = take(&mut rest);
                ctx.call_host(HostCall::Log(level, &m));
            }
            4 => {
                assert!(matches!(ctx.call_host(HostCall::IsCancelled), 0 | 1));
            }
            _ => {
                status = i32::from(rest.first().copied().unwrap_or(0) as i8);
                rest = rest.get(1..).unwrap_or_default();
            }
        }
    }
    let collected: Collected = std::mem::take(&mut *ctx.collected.lock());
    assert!(collected.perfdata.len() <= crate::plugin::ffi::MAX_PERFDATA);
    let o = crate::check::plugin::outcome(status, collected, Duration::from_millis(5));
    for p in &o.perfdata {
        assert!(p.value.is_finite());
    }
}

/// The MQTT decoder (both protocol levels): the first byte picks the level and how the
/// rest arrives in pieces; the packets must not depend on the split.
pub fn mqtt_packet(data: &[u8]) {
    use crate::check::mqtt::codec::{Version, decode_all};
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let version = if seed & 1 == 0 {
        Version::V311
    } else {
        Version::V5
    };
    let splits = [usize::from(seed % 11) + 1, usize::from(seed / 11) + 1, 1];
    let pieces = decode_all(version, stream, &splits);
    let whole = decode_all(version, stream, &[usize::MAX]);
    assert_eq!(pieces, whole, "framing depends on how the bytes arrive");
}

/// MySQL packet framing and every payload parser: no panic, and the framing must not
/// depend on how the bytes arrive.
pub fn mysql_packet(data: &[u8]) {
    use crate::check::mysql::codec::{frame_all, parse_any};
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let splits = [usize::from(seed % 7) + 1, usize::from(seed / 7) + 1, 1];
    let pieces = frame_all(stream, &splits);
    let whole = frame_all(stream, &[usize::MAX]);
    assert_eq!(pieces, whole, "framing depends on how the bytes arrive");
    for p in &whole.0 {
        parse_any(&p.payload);
    }
    // Payloads need not be framed to be parsed.
    parse_any(stream);
}
