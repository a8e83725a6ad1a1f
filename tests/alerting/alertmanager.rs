//! The alertmanager notifier against a real Alertmanager (Debian `prometheus-alertmanager`).

use std::time::Duration;

use super::{AlertAgent, Target, agent_section, tcp_check};
use crate::common::receivers::Alertmanager;

const T: Duration = Duration::from_secs(15);

#[tokio::test]
async fn alertmanager_shows_the_alert_while_firing_and_not_after_resolve() {
    let am = Alertmanager::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut target = Target::down();
    let config = format!(
        r#"{}
[[notifiers]]
name = "am"
kind = "alertmanager"
url = "{}"
retry_base = "100ms"

[[routes]]
notifiers = ["am"]
for = "0s"
group_wait = "0s"
{}"#,
        agent_section(dir.path()),
        am.url("/"),
        tcp_check("db", &target.addr(), "labels = { team = \"payments\" }"),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    let deadline = tokio::time::Instant::now() + T;
    let alert = loop {
        let list = am.alerts().await;
        if let Some(x) = list.into_iter().find(|x| x["labels"]["check"] == "db") {
            break x;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alert never showed up in alertmanager"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alert["labels"]["alertname"], "LifelineCheckFailing");
    assert_eq!(alert["labels"]["kind"], "tcp");
    assert_eq!(alert["labels"]["team"], "payments");
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(alert["generatorURL"], a.url("/health/service/db").as_str());
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("db")
    );
    assert!(alert["startsAt"].as_str().is_some());

    target.start().await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let list = am.alerts().await;
        if !list.iter().any(|x| x["labels"]["check"] == "db") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alert still active after resolve: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
}
