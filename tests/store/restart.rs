use std::time::Duration;

use lifeline::health::Status;

use super::{all_history, tcp_config};
use crate::common::*;

/// After a restart on the same data_dir every check starts from its last known state
/// (status, score, consecutive failures, last success), a `connection:restored` event
/// says so, and the next results do not flap through `unknown`/`connecting`.
#[tokio::test]
async fn restart_restores_state_without_flapping() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dead = free_port();
    let cfg = tcp_config(
        &addr.to_string(),
        &format!(
            r#"
[[checks]]
name = "down"
kind = "tcp"
address = "127.0.0.1:{dead}"
"#
        ),
    );
    let a = TestAgent::start_with_store(&cfg).await;
    let up_before = a
        .wait_status("t", Status::Healthy, Duration::from_secs(5))
        .await;
    let st = a.agent.states().clone();
    let down_before = wait_for(Duration::from_secs(5), "down to fail 3 times", || {
        st.state("down")
            .filter(|s| s.status == Status::Unhealthy && s.consecutive_failures >= 3)
    })
    .await;
    let dir = a.stop_keep_dir().await;
    let db = dir.path().join("data");
    let before = {
        let r = lifeline::store::Reader::open(&db).unwrap();
        (
            all_history(&r, "t").transitions.len(),
            all_history(&r, "down").transitions.len(),
        )
    };

    let mut b = TestAgent::restart_in(dir, &cfg).await;
    // Restored before any result of this run.
    let t = b.state("t");
    assert_eq!(t.status, Status::Healthy);
    assert_eq!(t.score, Some(100));
    assert!(t.last_success_at.is_some());
    assert!(t.last_success_at >= up_before.last_success_at);
    let d = b.state("down");
    assert_eq!(d.status, Status::Unhealthy);
    assert_eq!(d.score, Some(0));
    assert!(
        d.consecutive_failures >= down_before.consecutive_failures,
        "{d:?}"
    );
    assert_eq!(d.error_kind, Some(lifeline::check::ErrorKind::Refused));

    let mut ev = b.start_events.take().unwrap();
    let mut restored = Vec::new();
    let mut flapped = Vec::new();
    // Collect events for a few probe rounds of this run.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, ev.recv()).await {
        let check = e.data["check"].as_str().unwrap_or("").to_string();
        match e.event {
            "connection:restored" => restored.push((check, e.data["status"].clone())),
            "connection:connected" | "connection:disconnected" | "connection:reconnected" => {
                flapped.push((e.event, check))
            }
            _ => {}
        }
    }
    restored.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        restored,
        [
            ("down".to_string(), "unhealthy".into()),
            ("t".to_string(), "healthy".into())
        ]
    );
    assert!(
        flapped.is_empty(),
        "no status changes after restore: {flapped:?}"
    );
    let store = b.store.clone().unwrap();
    store.flush().unwrap();
    let r = store.reader().unwrap();
    assert_eq!(
        all_history(&r, "t").transitions.len(),
        before.0,
        "no new transitions"
    );
    assert_eq!(
        all_history(&r, "down").transitions.len(),
        before.1,
        "no new transitions"
    );
    let still = b.state("down");
    assert!(
        still.consecutive_failures > d.consecutive_failures,
        "keeps counting: {still:?}"
    );
    drop(r);
    drop(listener);
    b.stop().await;
}
