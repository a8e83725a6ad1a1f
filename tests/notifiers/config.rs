//! Config errors of the service notifiers are reported at PATH:LINE:COL, without
//! echoing credentials; every kind's minimal config loads.

use std::path::Path;

fn errors(src: &str) -> Vec<String> {
    match lifeline::config::parse(Path::new("c.toml"), src) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn service_notifier_errors_point_at_the_problem() {
    let src = r#"[[notifiers]]
name = "pd"
kind = "pagerduty"
routing_key = "too-short-SECRETPD"
severity = { unhealthy = "fatal", sleepy = "info" }

[[notifiers]]
name = "og"
kind = "opsgenie"
api_key = "k-0123456789"
priority = { degraded = "P9" }

[[notifiers]]
name = "tg"
kind = "telegram"
bot_token = "no-colon-SECRETTG"
chat_id = "someone"

[[notifiers]]
name = "nt"
kind = "ntfy"
topic = "has spaces"

[[notifiers]]
name = "dc"
kind = "discord"
webhook_url = "ftp://discord.example/api/webhooks/1/SECRETDC0123456789"
username = "my Discord bot"

[[notifiers]]
name = "tp"
kind = "template"
url = "https://incidents.example/api"
method = "BREW"
body = '{"title": {{ title }}}'

[[notifiers]]
name = "tm"
kind = "teams"

[[notifiers]]
name = "zz"
kind = "pagerdutyy"
"#;
    let errs = errors(src);
    let has = |prefix: &str, text: &str| {
        errs.iter()
            .any(|e| e.starts_with(prefix) && e.contains(text))
    };
    assert!(
        has("c.toml:4:15:", "32-character integration key"),
        "{errs:#?}"
    );
    assert!(
        has("c.toml:5:26:", "`fatal` is not one of critical"),
        "{errs:#?}"
    );
    assert!(has("c.toml:5:", "unknown key `sleepy`"), "{errs:#?}");
    assert!(has("c.toml:11:", "`P9` is not one of P1"), "{errs:#?}");
    assert!(has("c.toml:16:13:", "`123456789:AAH…`"), "{errs:#?}");
    assert!(
        has("c.toml:17:11:", "numeric chat id or `@channelusername`"),
        "{errs:#?}"
    );
    assert!(has("c.toml:22:9:", "^[-_A-Za-z0-9]{1,64}$"), "{errs:#?}");
    assert!(has("c.toml:27:15:", "must use http or https"), "{errs:#?}");
    assert!(has("c.toml:28:12:", "`username`"), "{errs:#?}");
    assert!(has("c.toml:34:10:", "`method` must be one of"), "{errs:#?}");
    assert!(
        has("c.toml:35:8:", "does not render to valid JSON"),
        "{errs:#?}"
    );
    assert!(
        has("c.toml:37:", "missing required key `webhook_url`"),
        "{errs:#?}"
    );
    assert!(
        has(
            "c.toml:43:8:",
            "known kinds: slack, webhook, email, alertmanager, pagerduty, opsgenie, teams, discord, telegram, ntfy, template"
        ),
        "{errs:#?}"
    );
    let all = errs.join("\n");
    for secret in ["SECRETPD", "SECRETTG", "SECRETDC"] {
        assert!(!all.contains(secret), "a credential was echoed: {all}");
    }
}

#[test]
fn every_service_kind_loads_with_its_documented_minimum() {
    let src = r#"[[notifiers]]
name = "pd"
kind = "pagerduty"
routing_key = "0123456789abcdef0123456789abcdef"

[[notifiers]]
name = "og"
kind = "opsgenie"
api_key = "eb243592-faa2-4ba2-a551-1afdf565c889"

[[notifiers]]
name = "tm"
kind = "teams"
webhook_url = "https://prod-00.westus.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=abc"

[[notifiers]]
name = "dc"
kind = "discord"
webhook_url = "https://discord.com/api/webhooks/1/token"

[[notifiers]]
name = "tg"
kind = "telegram"
bot_token = "123:abc"
chat_id = -100123

[[notifiers]]
name = "nt"
kind = "ntfy"
topic = "lifeline-alerts"

[[notifiers]]
name = "tp"
kind = "template"
url = "https://incidents.example/api/{{ dedupe_key }}"
body = '{"title": "{{ title }}", "n": {{ count }}}'

[[routes]]
notifiers = ["pd", "og", "tm", "dc", "tg", "nt", "tp"]
"#;
    let errs = errors(src);
    assert!(errs.is_empty(), "{errs:#?}");
}
