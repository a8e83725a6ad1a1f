//! One page, not one per replica: with `replicas = 2` both agents run the check, only
//! its notifier of record pages (webhook, Slack), both post to two peered
//! Alertmanagers (which notify once). kill -9 of the notifier while the alert fires:
//! the survivor does not page again and sends the resolved, under the same key. A
//! notifier SIGSTOPped past `lease_ttl` sends nothing when it wakes.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::support::*;
use crate::alerting::Target;
use crate::common::receivers::{Alertmanager, HttpReceiver, Post};

const CHECK: &str = "pbx";

fn rest(target: &str, rx: &HttpReceiver, ams: &[&Alertmanager]) -> String {
    let mut s = format!(
        "[[checks]]\nname = \"{CHECK}\"\nkind = \"tcp\"\naddress = \"{target}\"\ninterval = \"200ms\"\n\
         timeout = \"500ms\"\nunhealthy_threshold = 1\n\
         backoff = {{ base = \"200ms\", max = \"200ms\", jitter = \"0s\" }}\n\n\
         [[notifiers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[notifiers]]\nname = \"chat\"\nkind = \"slack\"\nwebhook_url = \"{}\"\n\n",
        rx.url("/hook"),
        rx.url("/slack")
    );
    let mut names = vec!["\"hook\"".to_string(), "\"chat\"".to_string()];
    for (i, am) in ams.iter().enumerate() {
        s.push_str(&format!(
            "[[notifiers]]\nname = \"am{i}\"\nkind = \"alertmanager\"\nurl = \"{}\"\n\n",
            am.url("")
        ));
        names.push(format!("\"am{i}\""));
    }
    s.push_str(&format!(
        "[[routes]]\nnotifiers = [{}]\nfor = \"0s\"\ngroup_wait = \"0s\"\nsend_resolved = true\n",
        names.join(", ")
    ));
    s
}

fn with_status<'a>(posts: &'a [Post], status: &str) -> Vec<&'a Post> {
    posts
        .iter()
        .filter(|p| p.json["status"] == status)
        .collect()
}

/// The agent of `agents` named `name`.
fn by_name(agents: &[(&'static str, AgentProc)], name: &str) -> usize {
    agents
        .iter()
        .position(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no agent {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_page_once_and_the_survivor_of_a_kill9_resolves_without_paging_again() {
    let etcd = EtcdCluster::start(3).await;
    let rx = HttpReceiver::start().await;
    let (am0, am1) = Alertmanager::pair(&rx.url("/am")).await;
    let mut target = Target::up().await;
    let config = |name: &str| {
        agent_toml(
            &etcd.endpoints(),
            name,
            "here",
            2,
            &rest(&target.addr(), &rx, &[&am0, &am1]),
        )
    };
    let mut agents = vec![
        ("agent-a", AgentProc::start(&config("agent-a")).await),
        ("agent-b", AgentProc::start(&config("agent-b")).await),
    ];
    // Both run the check (replicas = 2).
    let all: Vec<&AgentProc> = agents.iter().map(|(_, a)| a).collect();
    all_run(&all, CHECK, Duration::from_secs(20)).await;
    let notifier = notifier_of(&agents[0].1, CHECK)
        .await
        .expect("a notifier of record");

    target.stop().await;
    let hook = rx.wait_delivered("/hook", 1, Duration::from_secs(10)).await;
    let firing_key = hook[0].json["dedupe_key"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(hook[0].json["status"], "firing");
    rx.wait_delivered("/slack", 1, Duration::from_secs(10))
        .await;
    let am = rx.wait_delivered("/am", 1, Duration::from_secs(15)).await;
    assert_eq!(am[0].json["status"], "firing");
    // Both agents posted to both Alertmanagers; they know one alert and notify once.
    for a in [&am0, &am1] {
        let alerts = a.alerts().await;
        assert_eq!(
            alerts.len(),
            1,
            "one alert in each Alertmanager: {alerts:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rx.delivered("/hook").len(),
        1,
        "one webhook page for two replicas"
    );
    assert_eq!(
        rx.delivered("/slack").len(),
        1,
        "one Slack post for two replicas"
    );
    assert_eq!(
        rx.delivered("/am").len(),
        1,
        "one Alertmanager notification"
    );

    // kill -9 the notifier of record while the alert fires.
    let i = by_name(&agents, &notifier);
    let (_, dead) = agents.remove(i);
    dead.kill9().await;
    let (survivor_name, survivor) = &agents[0];
    eventually(
        LEASE_TTL + Duration::from_secs(5),
        "the survivor to become the notifier of record",
        || async {
            (notifier_of(survivor, CHECK).await.as_deref() == Some(*survivor_name)).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rx.delivered("/hook").len(),
        1,
        "the survivor re-sent a firing receivers already had"
    );
    assert_eq!(rx.delivered("/slack").len(), 1);

    // The target returns: the survivor sends the resolved, under the firing's key.
    target.start().await;
    let hook = rx.wait_delivered("/hook", 2, Duration::from_secs(10)).await;
    let resolved = with_status(&hook, "resolved");
    assert_eq!(resolved.len(), 1, "{hook:?}");
    assert_eq!(resolved[0].json["dedupe_key"], firing_key.as_str());
    rx.wait_delivered("/slack", 2, Duration::from_secs(10))
        .await;
    let am = rx.wait_delivered("/am", 2, Duration::from_secs(15)).await;
    assert_eq!(with_status(&am, "resolved").len(), 1, "{am:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.delivered("/hook").len(), 2);
    assert_eq!(rx.delivered("/slack").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_paused_past_its_lease_does_not_page_when_it_wakes() {
    let etcd = EtcdCluster::start(3).await;
    let rx = HttpReceiver::start().await;
    let mut target = Target::up().await;
    let config = |name: &str| {
        agent_toml(
            &etcd.endpoints(),
            name,
            "here",
            2,
            &rest(&target.addr(), &rx, &[]),
        )
    };
    let agents = vec![
        ("agent-a", AgentProc::start(&config("agent-a")).await),
        ("agent-b", AgentProc::start(&config("agent-b")).await),
    ];
    let all: Vec<&AgentProc> = agents.iter().map(|(_, a)| a).collect();
    all_run(&all, CHECK, Duration::from_secs(20)).await;
    let notifier = notifier_of(&agents[0].1, CHECK).await.expect("notifier");
    let p = by_name(&agents, &notifier);
    let s = 1 - p;
    let (paused_name, paused) = &agents[p];
    let (other_name, other) = &agents[s];

    signal(paused.pid, Signal::SIGSTOP);
    // Its lease expires; the other member becomes the notifier of record.
    eventually(
        LEASE_TTL + Duration::from_secs(5),
        "the running member to become the notifier of record",
        || async {
            (notifier_of(other, CHECK).await.as_deref() == Some(*other_name)).then_some(())
        },
    )
    .await;
    target.stop().await;
    rx.wait_delivered("/hook", 1, Duration::from_secs(10)).await;
    signal(paused.pid, Signal::SIGCONT);
    // The paused member wakes with a firing of its own to send; it is fenced, joins
    // again, finds the page delivered, and sends nothing.
    eventually(
        Duration::from_secs(15),
        "the paused member to rejoin",
        || async {
            let r = report(paused).await;
            (r["role"] == "member" && r["members"].as_array().map(Vec::len) == Some(2))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hook = rx.delivered("/hook");
    assert_eq!(
        hook.len(),
        1,
        "{paused_name} paged after waking: {:?}",
        hook.iter().map(|p| &p.json).collect::<Vec<_>>()
    );
    assert!(
        paused.full_log().contains("lost the cluster"),
        "the paused member said it was fenced"
    );
}
