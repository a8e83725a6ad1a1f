//! Location quorum: one agent in "eu", one in "us", each in its own network namespace;
//! a check with `locations = ["eu", "us"]` and `quorum = 2`. The target made unreachable
//! from the notifier of record's location only (an nftables DROP in that agent's
//! namespace) is reported down there but pages nobody; down from both, it pages once.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::support::*;
use crate::chaos::agent::BIN;
use crate::common::netns::Netns;
use crate::common::receivers::HttpReceiver;

/// A plain TCP forwarder `listen` → `to` (etcd on loopback, reached from a namespace).
async fn forward(listen: Ipv4Addr, to: String) -> (SocketAddrV4, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind((listen, 0))
        .await
        .expect("bind forwarder");
    let std::net::SocketAddr::V4(addr) = l.local_addr().expect("addr") else {
        unreachable!("IPv4")
    };
    let task = tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(Ok(mut u)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(to.as_str()),
                )
                .await
                {
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_seen_from_one_location_only_does_not_page_and_from_both_pages_once() {
    let etcd = EtcdCluster::start(3).await;
    let eu = Netns::new();
    let us = Netns::new();
    eu.default_route();
    us.default_route();
    // Everything the agents reach lives on the host, at eu's host-side address.
    let host = eu.r().host_ip;
    let mut forwarders = Vec::new();
    let mut endpoints = Vec::new();
    for ep in etcd.endpoints() {
        let (addr, task) = forward(host, ep.trim_start_matches("http://").to_string()).await;
        endpoints.push(format!("http://{addr}"));
        forwarders.push(task);
    }
    let rx = HttpReceiver::start_at(host, 0).await;
    let target_l = std::net::TcpListener::bind((host, 0)).expect("bind target");
    let target = match target_l.local_addr().expect("addr") {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!("IPv4"),
    };
    target_l.set_nonblocking(true).expect("nonblocking");
    let tl = tokio::net::TcpListener::from_std(target_l).expect("tokio listener");
    let target_task = tokio::spawn(async move {
        while let Ok((s, _)) = tl.accept().await {
            drop(s);
        }
    });
    let rest = format!(
        "[[checks]]\nname = \"sip\"\nkind = \"tcp\"\naddress = \"{target}\"\ninterval = \"200ms\"\n\
         timeout = \"300ms\"\nunhealthy_threshold = 1\nlocations = [\"eu\", \"us\"]\nquorum = 2\n\
         backoff = {{ base = \"200ms\", max = \"200ms\", jitter = \"0s\" }}\n\n\
         [[notifiers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[routes]]\nnotifiers = [\"hook\"]\nfor = \"0s\"\ngroup_wait = \"0s\"\n",
        rx.url("/hook")
    );
    let launch = |ns: &Netns, name: &str, loc: &str| {
        let listen = format!("{}:{}", ns.r().peer_ip, crate::common::free_port());
        let config = agent_toml(&endpoints, name, loc, 1, &rest);
        let mut cmd = ns.exec(std::path::Path::new(BIN));
        async move { AgentProc::launch(&config, &listen, &mut cmd).await }
    };
    let a = launch(&eu, "agent-eu", "eu").await;
    let b = launch(&us, "agent-us", "us").await;
    eventually(
        Duration::from_secs(20),
        "both locations to run the check",
        || async {
            for x in [&a, &b] {
                if status_in(x, "sip").await.as_deref() != Some("healthy") {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    // Unreachable from the notifier of record's location only: reported there, no page
    // (without the quorum its failure alone would page).
    let notifier = notifier_of(&a, "sip").await.expect("a notifier of record");
    let (blocked_ns, blocked, other, blocked_name, other_name) = if notifier == "agent-eu" {
        (&eu, &a, &b, "agent-eu", "agent-us")
    } else {
        (&us, &b, &a, "agent-us", "agent-eu")
    };
    blocked_ns.block_tcp_to(target);
    eventually(
        Duration::from_secs(5),
        "the blocked runner to see it down",
        || async {
            (status_in(blocked, "sip").await.as_deref() == Some("unhealthy")).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the cluster to report both runners",
        || async {
            let r = report(other).await;
            let c = r["checks"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == "sip")?
                .clone();
            (c["statuses"][blocked_name]["status"] == "unhealthy"
                && c["statuses"][other_name]["status"] == "healthy")
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        rx.delivered("/hook").is_empty(),
        "a failure seen from one location paged: {:?}",
        rx.delivered("/hook")
            .iter()
            .map(|p| &p.json)
            .collect::<Vec<_>>()
    );

    // Down from both: one page.
    target_task.abort();
    let _ = target_task.await;
    rx.wait_delivered("/hook", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.delivered("/hook").len(), 1, "one page for two locations");
    blocked_ns.unblock();
    drop(forwarders);
}
