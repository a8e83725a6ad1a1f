//! Unit tests of the status page renderer.
use super::*;
use crate::check::{ErrorKind, Mode};

fn state(name: &str, status: Status, team: Option<&str>) -> CheckState {
    let mut s = CheckState::unknown(name, "tcp", Mode::Probe);
    s.status = status;
    s.score = crate::health::score(status, 0);
    if status.is_failing() {
        s.error_kind = Some(ErrorKind::Refused);
        s.last_error = Some("<secret host> refused".into());
        s.since = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    }
    if let Some(t) = team {
        s.labels.insert("team".into(), t.into());
    }
    s
}

fn page(states: &[CheckState], history: Option<&PageHistory>, cfg: &StatusPageConfig) -> String {
    render(&PageInput {
        states,
        history,
        silences: &[],
        config: cfg,
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100),
        nonce: "n",
        has_store: history.is_some(),
        auth: false,
        locations: None,
    })
}

#[test]
fn template_markers_are_all_known_and_no_external_resources() {
    let mut rest = TEMPLATE;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let end = after.find("}}").expect("closed marker");
        assert!(
            KEYS.contains(&&after[..end]),
            "unknown marker {}",
            &after[..end]
        );
        rest = &after[end + 2..];
    }
    for bad in ["https://", "<link", " src=\"http", "@import", "url("] {
        assert!(
            !TEMPLATE.contains(bad),
            "template references an external resource: {bad}"
        );
    }
    // The only absolute URL is the SVG namespace name (an identifier, never fetched).
    assert_eq!(
        TEMPLATE.matches("http://").count(),
        TEMPLATE.matches("http://www.w3.org/2000/svg").count()
    );
    // No inline style attributes: the CSP would block them.
    assert!(!TEMPLATE.contains(" style=\""));
}

#[test]
fn escaping_covers_markup_and_quotes() {
    assert_eq!(
        esc("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}

#[test]
fn fill_does_not_rescan_inserted_text() {
    let out = fill("a{{groups}}b{{nonce}}c{{nope}}", |k| match k {
        "groups" => "{{nonce}}".into(),
        "nonce" => "N".into(),
        _ => String::new(),
    });
    assert_eq!(out, "a{{nonce}}bNc{{nope}}");
}

#[test]
fn formats_match_the_page_script() {
    assert_eq!(fmt_latency(Some(0.421)), "0.42 ms");
    assert_eq!(fmt_latency(Some(7.33)), "7.3 ms");
    assert_eq!(fmt_latency(Some(120.4)), "120 ms");
    assert_eq!(fmt_latency(Some(1250.0)), "1.25 s");
    assert_eq!(fmt_age(42), "42s");
    assert_eq!(fmt_age(185), "3m 5s");
    assert_eq!(fmt_age(7800), "2h 10m");
    assert_eq!(fmt_age(3 * 86400 + 4 * 3600), "3d 4h");
    assert_eq!(band(Some(80)), "green");
    assert_eq!(band(Some(79)), "orange");
    assert_eq!(band(Some(50)), "orange");
    assert_eq!(band(Some(49)), "red");
    assert_eq!(band(None), "none");
    assert_eq!(fmt_ratio(1.0), "100.00%");
    assert_eq!(fmt_ratio(0.99999), "99.99%");
    assert_eq!(fmt_ratio(0.5), "50.00%");
}

#[test]
fn bar_and_sparkline_follow_the_samples() {
    let at = SystemTime::UNIX_EPOCH;
    let samples: Vec<Sample> = [
        (Status::Healthy, Some(2.0)),
        (Status::Unhealthy, None),
        (Status::Degraded, Some(1500.0)),
        (Status::Healthy, Some(3.0)),
    ]
    .into_iter()
    .map(|(status, latency_ms)| Sample {
        at,
        status,
        latency_ms,
    })
    .collect();
    let mut out = String::new();
    bar(&mut out, "a<b", &samples);
    // Oldest first in data-r; newest (the first sample) on the right edge.
    assert!(out.contains("data-r=\"2342\""), "{out}");
    assert!(
        out.contains("aria-label=\"Last 4 results of a&lt;b: 2 healthy, 1 degraded, 1 unhealthy\""),
        "{out}"
    );
    assert!(out.contains(&format!("M{} 5h1", BARS - 1)), "{out}");
    assert!(
        out.contains("<path class=\"r4\" d=\"M58 2.5h1\"/>"),
        "{out}"
    );
    assert!(
        out.contains("<path class=\"r2\" d=\"M56 5h1M59 5h1\"/>"),
        "{out}"
    );
    assert!(out.contains("3/4 up"));
    let mut sp = String::new();
    sparkline(&mut sp, &samples);
    assert!(sp.contains("data-n=\"3\""), "{sp}");
    assert_eq!(
        sp.split("points=\"").nth(1).map(|p| p.split(' ').count()),
        Some(3)
    );
    // A run of equal results is one dashed line.
    let mut run = String::new();
    bar(&mut run, "x", &vec![samples[0].clone(); 3]);
    assert!(
        run.contains("<path class=\"r2\" d=\"M57 5h3\"/></svg>"),
        "{run}"
    );
    let mut empty = String::new();
    bar(&mut empty, "x", &[]);
    assert!(empty.contains("no results yet"));
}

#[test]
fn groups_follow_the_label_and_public_hides_details() {
    let states = vec![
        state("a", Status::Healthy, Some("web")),
        state("b", Status::Unhealthy, Some("db")),
        state("c", Status::Healthy, None),
        state("d", Status::Healthy, Some("web")),
    ];
    let mut cfg = StatusPageConfig {
        group_by: Some("team".into()),
        ..Default::default()
    };
    let html = page(&states, None, &cfg);
    let pos = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("no {needle}"));
    assert!(pos("data-group=\"web\"") < pos("data-group=\"db\""));
    assert!(pos("data-group=\"db\"") < pos("data-group=\"Other\""));
    assert!(pos("check-a") < pos("check-d") && pos("check-d") < pos("data-group=\"db\""));
    assert!(html.contains("data-group=\"db\" data-status=\"down\""));
    assert!(html.contains("data-incident=\"b\""));
    assert!(html.contains("&lt;secret host&gt; refused"));
    assert!(html.contains("href=\"health/service/a\""));
    assert!(html.contains("no history store"));
    cfg.public = true;
    let html = page(&states, None, &cfg);
    assert!(
        !html.contains("secret host"),
        "error text in the public page"
    );
    assert!(
        !html.contains("href=\"health/"),
        "API links in the public page"
    );
    assert!(
        html.contains("data-incident=\"b\""),
        "the incident is still shown"
    );
    assert!(html.contains("data-public=\"true\""));
}

#[test]
fn public_paths_are_the_page_and_badges_only() {
    assert!(is_public_page("/"));
    assert!(is_public_page("/api/v1/checks/db/badge/status.svg"));
    assert!(is_public_page("/api/v1/checks/db/badge/uptime.svg"));
    assert!(!is_public_page("/api/v1/checks/db/history"));
    assert!(!is_public_page("/api/v1/checks/db/badge"));
    assert!(!is_public_page("/health/detailed"));
    assert!(!is_public_page("/api/v1/checks/db/x/badge/status.svg"));
}

#[test]
fn a_replicated_check_shows_its_status_from_each_location() {
    let states = vec![
        state("pbx", Status::Healthy, None),
        state("db", Status::Healthy, None),
    ];
    let mut locs = std::collections::BTreeMap::new();
    locs.insert(
        "pbx".to_string(),
        vec![
            ("eu-west".to_string(), "healthy".to_string()),
            ("us-east".to_string(), "unhealthy".to_string()),
        ],
    );
    let html = render(&PageInput {
        states: &states,
        history: None,
        silences: &[],
        config: &StatusPageConfig::default(),
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100),
        nonce: "n",
        has_store: false,
        auth: false,
        locations: Some(&locs),
    });
    let row = html
        .split("<tr id=\"check-pbx\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("pbx row");
    assert!(
        row.contains("data-location=\"eu-west\" data-status=\"healthy\""),
        "{row}"
    );
    assert!(
        row.contains("data-location=\"us-east\" data-status=\"unhealthy\""),
        "{row}"
    );
    let other = html
        .split("<tr id=\"check-db\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("db row");
    assert!(!other.contains("class=\"locs\""), "{other}");
}
