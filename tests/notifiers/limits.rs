//! Size limits: a notification far beyond every service's field limits (400 checks,
//! long hostile messages) is cut by each notifier to what its service accepts. Each
//! notifier is built from its config and sends directly to its stand-in, which enforces
//! the limits (see each stand-in's doc).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use lifeline::alert::{AlertItem, NoteStatus, Notification, build_notifier};

use super::{HOSTILE, Receiver, Req};

/// A stand-in's rules.
type StandIn = fn(&Req) -> super::Reply;

fn huge(status: NoteStatus) -> Notification {
    let alerts = (0..400)
        .map(|i| AlertItem {
            check: format!("service-number-{i:03}"),
            kind: "websocket".into(),
            status: "disconnected".into(),
            previous_status: "healthy".into(),
            error_kind: Some("closed".into()),
            message: format!("{HOSTILE} {}", "é".repeat(200)),
            labels: BTreeMap::from([("team".to_string(), "voice".to_string())]),
            score: Some(0),
            started_at: "2026-12-01T22:00:00Z".into(),
            ended_at: (status == NoteStatus::Resolved).then(|| "2026-12-01T22:05:00Z".into()),
        })
        .collect();
    Notification::new(
        "0123456789abcdef0123456789abcdef",
        status,
        "route-1",
        alerts,
        SystemTime::now(),
        "http://127.0.0.1:9477",
    )
}

#[tokio::test]
async fn oversized_notifications_are_cut_to_each_services_limits() {
    let cases: Vec<(&str, StandIn)> = vec![
        ("pagerduty", super::pagerduty::pagerduty),
        ("opsgenie", super::opsgenie::opsgenie),
        ("teams", super::teams::teams),
        ("discord", super::discord::discord),
        ("telegram", super::telegram::telegram),
        ("ntfy", super::ntfy::ntfy),
        ("template", super::templated::incidents),
    ];
    let http = lifeline::net::http_client::shared();
    for (kind, rule) in cases {
        let rx = Receiver::start(rule).await;
        let toml = match kind {
            "pagerduty" => super::pagerduty::notifier(&rx, ""),
            "opsgenie" => super::opsgenie::notifier(&rx, super::opsgenie::KEY),
            "teams" => super::teams::notifier(&rx),
            "discord" => super::discord::notifier(&rx, super::discord::TOKEN),
            "telegram" => super::telegram::notifier(&rx, &super::telegram::CHAT.to_string()),
            "ntfy" => super::ntfy::notifier(&rx, super::ntfy::TOPIC),
            _ => super::templated::notifier(&rx),
        };
        let cfg = lifeline::config::parse(std::path::Path::new("n.toml"), &toml)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let n: Arc<_> = cfg.alerting.notifiers[0].clone();
        let sender = build_notifier(&n, &http);
        for status in [
            NoteStatus::Firing,
            NoteStatus::Flapping,
            NoteStatus::Resolved,
        ] {
            let note = huge(status);
            let r = sender.send(&note).await;
            assert!(r.is_ok(), "{kind} {status:?}: {r:?}");
        }
        rx.assert_nothing_rejected();
        assert_eq!(rx.accepted().len(), 3, "{kind}");
    }
}
