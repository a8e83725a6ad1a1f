//! Alerting config errors are reported at PATH:LINE:COL.

use std::path::Path;

fn errors(src: &str) -> Vec<String> {
    match lifeline::config::parse(Path::new("c.toml"), src) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn alerting_errors_point_at_the_problem() {
    let src = r#"[[notifiers]]
name = "hook"
kind = "webhook"
url = "not a url"

[[notifiers]]
name = "mail"
kind = "email"
smtp_url = "smtp://127.0.0.1:25"
from = "a@example.test"

[[notifiers]]
name = "slack"
kind = "slack"
webhook_url = "https://hooks.example.test/x"
title = "{% if %}"

[[routes]]
notifiers = ["hook", "pager"]
for = "soon"
"#;
    let errs = errors(src);
    let has = |prefix: &str, text: &str| {
        errs.iter()
            .any(|e| e.starts_with(prefix) && e.contains(text))
    };
    assert!(has("c.toml:4:7:", "invalid URL"), "{errs:#?}");
    assert!(has("c.toml:6:1:", "missing required key `to`"), "{errs:#?}");
    assert!(has("c.toml:16:9:", "template error"), "{errs:#?}");
    assert!(
        has("c.toml:19:22:", "unknown notifier `pager`"),
        "{errs:#?}"
    );
    assert!(has("c.toml:20:7:", "invalid duration"), "{errs:#?}");
}

#[test]
fn a_complete_alerting_config_is_valid() {
    let src = r#"
[[checks]]
name = "db"
kind = "tcp"
address = "127.0.0.1:5432"

[[notifiers]]
name = "ops-slack"
kind = "slack"
webhook_url = "https://hooks.example.test/services/T/B/X"

[[notifiers]]
name = "am"
kind = "alertmanager"
url = "http://127.0.0.1:9093"

[[routes]]
name = "voice"
match = { check = "db" }
notifiers = ["ops-slack", "am"]
for = "30s"
group_wait = "10s"
repeat_interval = "4h"
send_resolved = true
flap_threshold = 4
flap_window = "5m"

[[silences]]
matchers = { check = "db" }
starts_at = 2030-01-01T00:00:00Z
ends_at = "2030-01-01T02:00:00Z"
comment = "upgrade"
"#;
    let c = lifeline::config::parse(Path::new("c.toml"), src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.alerting.routes[0].flap_threshold, 4);
    assert_eq!(c.alerting.notifiers.len(), 2);
    assert_eq!(c.alerting.silences[0].comment, "upgrade");
}
