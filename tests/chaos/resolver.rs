//! Resolver down: the agent binary runs inside a namespace (`ip netns exec`) whose
//! `/etc/resolv.conf` (`/etc/netns/<name>/resolv.conf`) names a silent address: one on
//! the namespace's `lo` whose packets an nftables rule drops. No `dns_servers` in the
//! config: the agent uses the system resolver configuration, as it would in production.
//!
//! Asserted: checks by host name fail with `error_kind = "dns"` and an attempt latency
//! within their `timeout`; a check by IP address (to a listener on the host end of the
//! veth) that goes down meanwhile has its webhook notification delivered within 100 ms
//! of its state change (from the alert's `started_at`, the transition's timestamp, to
//! the receiver's arrival time; same clock).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::*;
use crate::common::free_port;
use crate::common::netns::Netns;
use crate::common::receivers::HttpReceiver;

/// TEST-NET-1, on the namespace's `lo` only.
const SILENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const NAMED: usize = 20;

#[tokio::test]
async fn resolver_down_fails_as_dns_and_other_notifications_stay_on_time() {
    lifeline::net::tls::install_provider();
    let ns = Netns::new();
    ns.silent_resolver(SILENT);
    let rx = HttpReceiver::start_at(ns.host_ip, 0).await;
    let flip_l = tokio::net::TcpListener::bind((ns.host_ip, 0))
        .await
        .expect("bind flip listener");
    let flip = flip_l.local_addr().expect("addr");
    let flip_task = tokio::spawn(async move {
        while let Ok((s, _)) = flip_l.accept().await {
            drop(s);
        }
    });
    let mut config = format!(
        "[agent]\nlisten = \"{{listen}}\"\ndata_dir = \"{{dir}}/data\"\n\
         [[notifiers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[routes]]\nnotifiers = [\"hook\"]\nmatch = {{ role = \"flip\" }}\nfor = \"0s\"\ngroup_wait = \"0s\"\n\
         [[checks]]\nname = \"flip\"\nkind = \"tcp\"\naddress = \"{flip}\"\ninterval = \"100ms\"\n\
         timeout = \"500ms\"\nunhealthy_threshold = 1\nlabels = {{ role = \"flip\" }}\n",
        rx.url("/hook")
    );
    for i in 0..NAMED {
        config.push_str(&format!(
            "[[checks]]\nname = \"named-{i}\"\nkind = \"tcp\"\naddress = \"db{i}.lifeline-chaos.test:5432\"\n\
             interval = \"200ms\"\ntimeout = \"1s\"\nunhealthy_threshold = 1\n\
             backoff = {{ base = \"100ms\", max = \"200ms\", jitter = \"0s\" }}\n"
        ));
    }
    let listen = format!("{}:{}", ns.peer_ip, free_port());
    let a = AgentProc::launch(&config, &listen, &mut ns.exec(std::path::Path::new(BIN))).await;
    let service = |name: String| {
        let url = format!("{}/health/service/{name}", a.base);
        async move { crate::common::api::get_json(&url).await.1 }
    };

    // Every named check fails as `dns`, each attempt within its 1 s timeout.
    let t0 = Instant::now();
    let mut named = Vec::new();
    for i in [0, NAMED / 2, NAMED - 1] {
        let deadline = Instant::now() + Duration::from_secs(15);
        let s = loop {
            let s = service(format!("named-{i}")).await;
            if s["error_kind"] == "dns" {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "named-{i} never failed as dns: {s}\n{}",
                a.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let msg = s["last_error"].as_str().unwrap_or("");
        assert!(msg.contains("no answer within"), "{s}");
        named.push(t0.elapsed());
    }
    // How long one attempt took: from its start (a `connection:reconnecting` event's `at`
    // plus its `delay_ms`) to its `connection:failed`'s `at`; three attempts of `named-0`.
    let attempt_times = |evs: &[Ev]| -> Vec<Duration> {
        let mine: Vec<&Ev> = evs
            .iter()
            .filter(|e| {
                e.data["check"] == "named-0"
                    && matches!(
                        e.event.as_str(),
                        "connection:reconnecting" | "connection:failed"
                    )
            })
            .collect();
        mine.windows(2)
            .filter(|w| {
                w[0].event == "connection:reconnecting" && w[1].event == "connection:failed"
            })
            .map(|w| {
                // The agent's own timestamps (not the arrival over `/ws`).
                let stamp = |e: &Ev| {
                    e.data["at"]
                        .as_str()
                        .and_then(lifeline::time::parse_rfc3339)
                        .expect("event `at`")
                };
                let delay = Duration::from_millis(w[0].data["delay_ms"].as_u64().unwrap_or(0));
                stamp(w[1])
                    .duration_since(stamp(w[0]) + delay)
                    .unwrap_or_default()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let attempts = loop {
        let t = attempt_times(&a.all_events());
        if t.len() >= 3 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "three dns attempts of named-0: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for t in &attempts {
        assert!(
            *t <= Duration::from_secs(1) + Duration::from_millis(150),
            "a dns failure took {t:?} (timeout 1s): {attempts:?}"
        );
    }
    let flip_state = service("flip".into()).await;
    assert_eq!(flip_state["status"], "healthy", "{flip_state}");

    // The check by IP goes down while the lookups keep timing out.
    flip_task.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (note, arrived): (Value, SystemTime) = loop {
        if let Some(p) = rx.delivered("/hook").into_iter().next() {
            break (p.json, p.received);
        }
        assert!(
            Instant::now() < deadline,
            "no notification for `flip`\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_eq!(note["status"], "firing", "{note}");
    assert_eq!(note["alerts"][0]["check"], "flip", "{note}");
    let started = note["alerts"][0]["started_at"]
        .as_str()
        .and_then(lifeline::time::parse_rfc3339)
        .expect("started_at");
    let delay = arrived.duration_since(started).unwrap_or_default();
    let flip_event = a
        .all_events()
        .into_iter()
        .find(|e| e.event == "connection:disconnected" && e.data["check"] == "flip")
        .map(|e| e.data["at"].clone());
    eprintln!(
        "CHAOS resolver down: named checks dns (seen after {named:?}; attempts took {attempts:?}); \
         flip webhook {delay:?} after its state change (event at {flip_event:?})"
    );
    assert!(
        delay <= Duration::from_millis(100),
        "webhook for `flip` arrived {delay:?} after its state change (bound 100 ms)"
    );
}
