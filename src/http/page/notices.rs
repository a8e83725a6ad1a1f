//! Status page notices: incident and maintenance banners and the 7-day transitions timeline.

use super::*;

/// Incidents (failing checks, with their start) and maintenance (active and upcoming
/// silences).
pub(super) fn render_notices(out: &mut String, p: &PageInput<'_>) {
    let mut silences: Vec<&Silence> = p.silences.iter().filter(|s| s.ends_at > p.now).collect();
    silences.sort_by_key(|s| s.starts_at);
    for s in silences {
        let active = s.active(p.now);
        let matchers: Vec<String> = s.matchers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(
            out,
            "<article class=\"banner maint\" data-silence=\"{id}\" data-state=\"{state}\">\
             <span class=\"bicon\" aria-hidden=\"true\">\u{2692}</span><p><strong>{head}</strong> \
             <span class=\"what\">{m}</span> · ",
            id = esc(&s.id),
            state = if active { "active" } else { "upcoming" },
            head = if active {
                "Maintenance in progress:"
            } else {
                "Scheduled maintenance:"
            },
            m = esc(&matchers.join(", ")),
        );
        if active {
            let _ = write!(out, "until {}", when(s.ends_at));
        } else {
            let _ = write!(out, "{} to {}", when(s.starts_at), when(s.ends_at));
        }
        if !s.comment.is_empty() {
            let _ = write!(out, " · <span class=\"comment\">{}</span>", esc(&s.comment));
        }
        out.push_str("</p></article>\n");
    }
    for s in p.states.iter().filter(|s| s.status.is_failing()) {
        incident(out, s, p.config.public, p.now);
    }
}

/// One incident banner (the script builds the same markup).
pub(super) fn incident(out: &mut String, s: &CheckState, public: bool, now: SystemTime) {
    let name = esc(&s.name);
    let _ = write!(
        out,
        "<article class=\"banner incident\" data-incident=\"{name}\"><span class=\"bicon\" aria-hidden=\"true\">\u{2716}</span>\
         <p><strong>Incident:</strong> <a href=\"#check-{name}\">{name}</a> is <span class=\"st\">{}</span>",
        s.status.as_str()
    );
    if let Some(t) = s.since {
        out.push_str(" since ");
        let _ = write!(
            out,
            "<time datetime=\"{iso}\" title=\"{iso}\" data-fmt=\"at\">{}</time> (",
            crate::time::rfc3339(t).replace('T', " "),
            iso = rfc3339(t)
        );
        time_ago(out, t, now);
        out.push(')');
    }
    if !public && let Some(e) = &s.last_error {
        let kind = s.error_kind.map(|k| k.as_str()).unwrap_or("error");
        let _ = write!(
            out,
            " — <span class=\"ek\">{kind}</span> <span class=\"msg\">{}</span>",
            esc(e)
        );
    }
    out.push_str("</p></article>\n");
}

/// A `<time>` with its RFC 3339 value (the script shows it in local time).
pub(super) fn when(t: SystemTime) -> String {
    let iso = rfc3339(t);
    format!(
        "<time datetime=\"{iso}\" data-fmt=\"at\">{}</time>",
        iso.replace('T', " ")
    )
}

/// The last 7 days of status changes: a strip (one tick per change, shaped and coloured
/// by the new status) and the newest changes as a list.
pub(super) fn render_timeline(out: &mut String, p: &PageInput<'_>) {
    let Some(h) = p.history else {
        out.push_str("<p class=\"note\">No history store: this agent keeps no status history.</p>");
        return;
    };
    let all = &h.transitions;
    if all.is_empty() {
        out.push_str("<p class=\"note\">No status changes in the last 7 days.</p>");
        return;
    }
    let hours = TIMELINE.0.as_secs() as f64 / 3600.0;
    let _ = write!(
        out,
        "<svg class=\"tl\" viewBox=\"0 0 {hours} 12\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"{} status changes in the last 7 days, shown in the list below\">",
        all.len()
    );
    for d in 1..7 {
        let _ = write!(out, "<path class=\"day\" d=\"M{} 0v12\"/>", d * 24);
    }
    let mut ticks: [String; 6] = Default::default();
    for t in all {
        let age = p
            .now
            .duration_since(t.transition.at)
            .map(|d| d.as_secs_f64() / 3600.0)
            .unwrap_or(0.0);
        let x = (hours - age).clamp(0.0, hours - 0.4);
        let c = code(t.transition.status);
        let (y, hgt) = bar_shape(c);
        let _ = write!(ticks[c as usize], "M{x:.2} {}h.4v{}h-.4z", y + 1, hgt);
    }
    for (c, d) in ticks.iter().enumerate() {
        if !d.is_empty() {
            let _ = write!(out, "<path class=\"r{c}\" d=\"{d}\"/>");
        }
    }
    out.push_str(
        "</svg><div class=\"tl-axis\" aria-hidden=\"true\"><span>7 days ago</span><span>now</span></div>\
         <ol class=\"transitions\" id=\"timeline-list\">",
    );
    for t in all.iter().take(TIMELINE_SHOWN) {
        let tr = &t.transition;
        let st = tr.status.as_str();
        let b = match tr.status {
            Status::Healthy => "green",
            Status::Degraded | Status::Connecting => "orange",
            s if s.is_failing() => "red",
            _ => "none",
        };
        let _ = write!(
            out,
            "<li data-check=\"{n}\">{at} <strong>{n}</strong> <span class=\"note\">{prev} \u{2192}</span> \
             <span class=\"band-{b}\"><span class=\"badge\"><span class=\"icon\" aria-hidden=\"true\">{icon}</span>\
             <span class=\"txt\">{st}</span></span></span>",
            n = esc(&t.check),
            at = when(tr.at),
            prev = tr.previous_status.as_str(),
            icon = status_icon(tr.status),
        );
        if !p.config.public && (tr.error_kind.is_some() || !tr.message.is_empty()) {
            let kind = tr
                .error_kind
                .as_deref()
                .map(|k| format!("{}: ", esc(k)))
                .unwrap_or_default();
            let _ = write!(out, "<span class=\"msg\">{kind}{}</span>", esc(&tr.message));
        }
        out.push_str("</li>");
    }
    out.push_str("</ol>");
    if all.len() > TIMELINE_SHOWN {
        let more = if all.len() >= TIMELINE.1 {
            format!("{}+", all.len() - TIMELINE_SHOWN)
        } else {
            (all.len() - TIMELINE_SHOWN).to_string()
        };
        let _ = write!(out, "<p class=\"note\">… and {more} older changes.</p>");
    }
}
