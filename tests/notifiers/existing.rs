//! The notifiers that predate issue 16 (webhook, Slack, Alertmanager) share the HTTP
//! delivery path, so they honour `Retry-After` too: each gets a 429 with
//! `Retry-After: 2` first and must wait the two seconds (not `retry_base`'s 50 ms).

use std::time::Duration;

use super::{Receiver, Reply, Req, route, throttle_gap};
use crate::alerting::{AlertAgent, Target, agent_section, tcp_check};

fn any_post(req: &Req) -> Reply {
    if req.method == "POST" && req.is_json() {
        Reply::text(200, "ok")
    } else {
        Reply::text(400, "POST JSON")
    }
}

async fn honours_retry_after(kind_keys: &str) {
    let rx = Receiver::start(any_post).await;
    rx.answer_next(Reply::text(429, "slow down").with_header("Retry-After", "2"));
    let dir = tempfile::tempdir().unwrap();
    let target = Target::down();
    let config = format!(
        "{}[[notifiers]]\nname = \"n\"\n{}\nretry_base = \"50ms\"\n{}{}",
        agent_section(dir.path()),
        kind_keys.replace("{base}", &rx.url("")),
        route("n"),
        tcp_check("db", &target.addr(), ""),
    );
    let a = AlertAgent::start(dir.path(), &config).await;
    rx.wait_accepted(1).await;
    let gap = throttle_gap(&rx);
    assert!(
        gap >= Duration::from_millis(1900),
        "{kind_keys}: retried after {gap:?}"
    );
    rx.assert_nothing_rejected();
    a.stop().await;
}

#[tokio::test]
async fn webhook_slack_and_alertmanager_honour_retry_after() {
    tokio::join!(
        honours_retry_after("kind = \"webhook\"\nurl = \"{base}/hook\""),
        honours_retry_after("kind = \"slack\"\nwebhook_url = \"{base}/services/T0/B0/x\""),
        honours_retry_after("kind = \"alertmanager\"\nurl = \"{base}\""),
    );
}
