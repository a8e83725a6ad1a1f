//! Storm control end to end: live tcp checks, the real engine, a real HTTP receiver.
//! Dependencies hold dependents, the connectivity guard pages once, a flapping check
//! sends one flapping notification and then nothing more.

use std::time::Duration;

use lifeline::health::Status;

use super::{AlertAgent, Target, agent_section, tcp_check, webhook};
use crate::common::receivers::{HttpReceiver, Post};
use crate::common::*;

const T: Duration = Duration::from_secs(10);

/// (status, route, checks) of each delivered post, in arrival order.
fn summary(posts: &[Post]) -> Vec<(String, String, Vec<String>)> {
    posts
        .iter()
        .map(|p| {
            let checks = p.json["alerts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["check"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            (
                p.json["status"].as_str().unwrap_or("").to_string(),
                p.json["route"].as_str().unwrap_or("").to_string(),
                checks,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_failing_dependency_holds_its_dependents_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let rx = HttpReceiver::start().await;
    let mut db = Target::up().await;
    let mut api = Target::up().await;
    let config = format!(
        "{}{}[[routes]]\nnotifiers = [\"hook\"]\nfor = \"1s\"\ngroup_wait = \"0s\"\n{}{}",
        agent_section(dir.path()),
        webhook("hook", &rx.url("/hook"), ""),
        tcp_check("db", &db.addr(), ""),
        tcp_check("api", &api.addr(), "depends_on = [\"db\"]"),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    a.wait_status("api", Status::Healthy, T).await;
    a.wait_status("db", Status::Healthy, T).await;
    // The database goes down, and the API with it, at the same moment. Which of the two
    // probes notices first is luck; `for` (1 s) covers the dependency's detection time.
    db.stop().await;
    api.stop().await;
    a.wait_status("api", Status::Unhealthy, T).await;
    rx.wait_delivered("/hook", 1, T).await;
    // Let the API fail well past `for` (1 s): without the hold it would page.
    let st = a.agent.states().clone();
    wait_for(T, "api failing for 15 attempts", || {
        st.state("api").filter(|s| s.consecutive_failures >= 15)
    })
    .await;
    let while_db_down = summary(&rx.all());
    assert_eq!(
        while_db_down,
        [(
            "firing".to_string(),
            "route-1".to_string(),
            vec!["db".to_string()]
        )],
        "only the dependency pages while it fails"
    );
    // The database comes back; the API stays down: now the API pages, and db resolves.
    db.start().await;
    let posts = rx.wait_delivered("/hook", 3, T).await;
    let s = summary(&posts);
    assert!(
        s.iter().any(|x| x.0 == "resolved" && x.2 == ["db"]),
        "{s:?}"
    );
    assert!(s.iter().any(|x| x.0 == "firing" && x.2 == ["api"]), "{s:?}");
    a.stop().await;
}

#[tokio::test]
async fn a_network_outage_pages_once_as_agent_offline() {
    let dir = tempfile::tempdir().unwrap();
    let rx = HttpReceiver::start().await;
    let mut net = Target::up().await;
    let mut config = format!(
        "{}\n[agent.connectivity]\nchecks = [\"gateway\"]\n{}[[routes]]\nnotifiers = [\"hook\"]\nfor = \"1s\"\ngroup_wait = \"0s\"\n{}",
        agent_section(dir.path()),
        webhook("hook", &rx.url("/hook"), ""),
        tcp_check("gateway", &net.addr(), ""),
    );
    for i in 0..10 {
        config.push_str(&tcp_check(&format!("svc-{i}"), &net.addr(), ""));
    }
    let a = AlertAgent::start(dir.path(), &config).await;
    for i in 0..10 {
        a.wait_status(&format!("svc-{i}"), Status::Healthy, T).await;
    }
    net.stop().await; // every target, the gateway included, is unreachable
    let posts = rx.wait_delivered("/hook", 1, T).await;
    assert_eq!(
        posts[0].json["route"],
        "lifeline:connectivity",
        "{:?}",
        summary(&posts)
    );
    assert_eq!(posts[0].json["status"], "firing");
    // Well past `for`: the per-check alerts stay held.
    for i in 0..10 {
        a.wait_status(&format!("svc-{i}"), Status::Unhealthy, T)
            .await;
    }
    net.start().await;
    let posts = rx.wait_delivered("/hook", 2, T).await;
    let s = summary(&posts);
    assert_eq!(s.len(), 2, "{s:?}");
    assert!(
        s.iter().all(|x| x.1 == "lifeline:connectivity"),
        "no per-check page: {s:?}"
    );
    assert_eq!(s[1].0, "resolved");
    assert_eq!(posts[0].json["dedupe_key"], posts[1].json["dedupe_key"]);
    a.stop().await;
}

#[tokio::test]
async fn a_flapping_check_sends_one_flapping_notification_then_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let rx = HttpReceiver::start().await;
    let mut t = Target::up().await;
    let config = format!(
        "{}{}[[routes]]\nnotifiers = [\"hook\"]\nfor = \"0s\"\ngroup_wait = \"0s\"\nflap_threshold = 4\nflap_window = \"1m\"\n{}",
        agent_section(dir.path()),
        webhook("hook", &rx.url("/hook"), ""),
        tcp_check("flappy", &t.addr(), ""),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    a.wait_status("flappy", Status::Healthy, T).await;
    // Twelve status changes, each one observed before the next.
    for _ in 0..6 {
        t.stop().await;
        a.wait_status("flappy", Status::Unhealthy, T).await;
        t.start().await;
        a.wait_status("flappy", Status::Healthy, T).await;
    }
    let posts = rx.wait_delivered("/hook", 1, T).await;
    let s = summary(&posts);
    let flapping: Vec<_> = s.iter().filter(|x| x.0 == "flapping").collect();
    assert_eq!(flapping.len(), 1, "{s:?}");
    let at = s.iter().position(|x| x.0 == "flapping").unwrap();
    // Before it: at most the pages of the first flips; after it: nothing, although the
    // check kept flipping.
    assert!(at <= 4, "{s:?}");
    assert_eq!(
        s.len(),
        at + 1,
        "held after the flapping notification: {s:?}"
    );
    a.stop().await;
}
