//! etcd failing under the agents: one member of three killed → the cluster keeps working
//! (a failure pages once); every member killed → the agents keep checking, stop paging
//! (`lifeline_cluster_connected 0`), and when etcd returns they page what they held.

use std::time::Duration;

use super::support::*;
use crate::alerting::{Target, metric};
use crate::common::receivers::HttpReceiver;

async fn metrics(a: &AgentProc) -> String {
    let url = format!("{}/metrics", a.base);
    match crate::common::api::client().get(&url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_ride_out_one_etcd_member_and_hold_pages_while_all_are_down() {
    let mut etcd = EtcdCluster::start(3).await;
    let rx = HttpReceiver::start().await;
    let mut target = Target::up().await;
    let rest = format!(
        "[[checks]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"{}\"\ninterval = \"200ms\"\n\
         timeout = \"500ms\"\nunhealthy_threshold = 1\n\
         backoff = {{ base = \"200ms\", max = \"200ms\", jitter = \"0s\" }}\n\n\
         [[notifiers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [[routes]]\nnotifiers = [\"hook\"]\nfor = \"0s\"\ngroup_wait = \"0s\"\nsend_resolved = true\n",
        target.addr(),
        rx.url("/hook")
    );
    let a = AgentProc::start(&agent_toml(&etcd.endpoints(), "agent-a", "here", 1, &rest)).await;
    let b = AgentProc::start(&agent_toml(&etcd.endpoints(), "agent-b", "here", 1, &rest)).await;
    settled(&[&a, &b], 2, 1, Duration::from_secs(20)).await;
    let runner = if running(&a).await.contains("db") {
        &a
    } else {
        &b
    };

    // One member of three gone (the first endpoint, the one the agents talk to).
    etcd.kill(0);
    tokio::time::sleep(LEASE_TTL * 2).await;
    for x in [&a, &b] {
        assert_eq!(report(x).await["role"], "member", "{}", x.log());
    }
    target.stop().await;
    rx.wait_delivered("/hook", 1, Duration::from_secs(10)).await;
    target.start().await;
    rx.wait_delivered("/hook", 2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.delivered("/hook").len(), 2, "one firing, one resolved");

    // Every member gone: fenced within lease_ttl, checks keep running, nobody is paged.
    etcd.kill_all();
    eventually(
        LEASE_TTL + Duration::from_secs(3),
        "both agents to be fenced",
        || async {
            for x in [&a, &b] {
                if metric(&metrics(x).await, "lifeline_cluster_connected") != 0.0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    target.stop().await;
    eventually(
        Duration::from_secs(5),
        "the check to go down while fenced",
        || async { (status_in(runner, "db").await.as_deref() == Some("unhealthy")).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.delivered("/hook").len(), 2, "a fenced member paged");
    assert!(runner.full_log().contains("lost the cluster"));

    // etcd returns: connected again, and the held page goes out once.
    etcd.restart_all().await;
    eventually(
        Duration::from_secs(20),
        "both agents to reconnect",
        || async {
            for x in [&a, &b] {
                if metric(&metrics(x).await, "lifeline_cluster_connected") != 1.0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let hook = rx.wait_delivered("/hook", 3, Duration::from_secs(10)).await;
    assert_eq!(hook[2].json["status"], "firing");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rx.delivered("/hook").len(),
        3,
        "the held page went out once"
    );
}
