//! Message templates (`title`, `text` on a notifier): minijinja, compiled when the config
//! is loaded so syntax errors are config errors, rendered with a fuel limit so a template
//! cannot run away.
//!
//! A Slack notifier's templates escape every *value* they print (`{{ … }}`: check names,
//! messages, errors, labels) with [`slack_escape`], while the template's own text is
//! left alone: an operator writes `<https://runbook|runbook>` and gets a link, a peer
//! whose error says `<!channel>` does not ping anyone. `| safe` turns escaping off for one
//! value (never use it on peer text). Telegram templates escape values as HTML, Discord
//! and Teams templates as Markdown, and `template` notifier bodies with a JSON content
//! type as JSON string content (see [`Escape`]).

use std::fmt;
use std::sync::Arc;

use minijinja::Environment;

use super::Notification;

/// Fuel per render: plenty for loops over thousands of alerts, finite for anything else.
const FUEL: u64 = 200_000;

/// A template that does not compile or render; the text names the line and problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        Self(e.to_string())
    }
}

/// How a template escapes the values it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Escape {
    /// As written (webhook, email: the email notifier HTML-escapes the whole text itself).
    #[default]
    None,
    /// Slack mrkdwn: `&`, `<`, `>` of every printed value become entities.
    Slack,
    /// HTML (Telegram `parse_mode = HTML`): `& < > " '` of every printed value become
    /// entities.
    Html,
    /// Markdown (Discord, Teams Adaptive Cards): Markdown punctuation of every printed
    /// value is backslash-escaped ([`markdown_escape`]).
    Markdown,
    /// JSON string content (the `template` notifier's JSON bodies): every printed value
    /// is escaped as it would be inside a JSON string ([`json_escape`]).
    Json,
    /// URL component (the `template` notifier's `url`): every printed value is
    /// percent-encoded except `A-Z a-z 0-9 - . _ ~`.
    Url,
}

impl Escape {
    /// `s` escaped the way this mode escapes a printed value.
    pub fn apply(self, s: &str) -> String {
        match self {
            Self::None => s.to_string(),
            Self::Slack => slack_escape(s),
            Self::Html => escape_entities(s, true),
            Self::Markdown => markdown_escape(s),
            Self::Json => json_escape(s),
            Self::Url => percent_encoding::utf8_percent_encode(s, URL_COMPONENT).to_string(),
        }
    }
}

/// What [`Escape::Url`] leaves alone: RFC 3986 unreserved characters.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Markdown punctuation backslash-escaped, so peer text cannot forge `[links](…)`,
/// emphasis, code spans, spoilers (`||`), block quotes, headings or `<@mentions>`.
pub fn markdown_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '<' | '>' | '#'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `s` as the content of a JSON string (quotes, backslashes and control characters
/// escaped; no surrounding quotes).
pub fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// Slack's control characters: peer text (errors, messages) must not turn into
/// `<!channel>` pings or `<url|forged>` links.
pub fn slack_escape(s: &str) -> String {
    escape_entities(s, false)
}

/// Replaces `&`, `<`, `>` (and, with `quotes`, `"` and `'`) by their HTML entities: what
/// Slack mrkdwn needs, and what HTML element content and quoted attributes need.
pub fn escape_entities(s: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if quotes => out.push_str("&quot;"),
            '\'' if quotes => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A compiled template.
#[derive(Clone)]
pub struct Template {
    env: Arc<Environment<'static>>,
    escape: Escape,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Template")
    }
}

impl Template {
    /// Compiles `source` with values printed as they are; the error text names the line
    /// and problem.
    pub fn compile(source: &str) -> Result<Self, TemplateError> {
        Self::compile_for(source, Escape::None)
    }

    /// Compiles `source` with printed values escaped by `escape`.
    pub fn compile_for(source: &str, escape: Escape) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        if escape != Escape::None {
            env.set_formatter(move |out, state, value| {
                if value.is_safe() || value.is_undefined() || value.is_none() {
                    return minijinja::escape_formatter(out, state, value);
                }
                Ok(out.write_str(&escape.apply(&value.to_string()))?)
            });
        }
        env.add_template_owned("t", source.to_string())?;
        Ok(Self {
            env: Arc::new(env),
            escape,
        })
    }

    /// How this template escapes printed values.
    pub fn escape(&self) -> Escape {
        self.escape
    }

    /// Renders with the notification as context (`status`, `route`, `dedupe_key`,
    /// `alerts`, `checks`, `count`, `title`).
    pub fn render(&self, n: &Notification) -> Result<String, TemplateError> {
        let t = self.env.get_template("t")?;
        Ok(t.render(context(n))?)
    }
}

/// The template context of a notification.
pub fn context(n: &Notification) -> minijinja::Value {
    let checks: Vec<&str> = n.alerts.iter().map(|a| a.check.as_str()).collect();
    minijinja::context! {
        status => n.status.as_str(),
        route => n.route.clone(),
        dedupe_key => n.dedupe_key.clone(),
        alertname => n.alertname(),
        alerts => minijinja::value::Serde(&n.alerts),
        checks => checks.join(", "),
        count => n.alerts.len(),
        title => default_title(n),
    }
}

/// Status emoji used by Slack and the default texts.
pub fn emoji(n: &Notification) -> &'static str {
    match n.status {
        super::NoteStatus::Firing => "🔴",
        super::NoteStatus::Resolved => "✅",
        super::NoteStatus::Flapping => "🟠",
    }
}

/// `[FIRING] check-a, check-b` (at most five names, then `+N more`).
pub fn default_title(n: &Notification) -> String {
    let mut names: Vec<&str> = n.alerts.iter().take(5).map(|a| a.check.as_str()).collect();
    let more = n.alerts.len().saturating_sub(5);
    let extra = if more > 0 {
        format!(" +{more} more")
    } else {
        String::new()
    };
    if n.offline {
        return format!(
            "[{}] LifelineAgentOffline: the agent's own network is down",
            n.status.as_str().to_uppercase()
        );
    }
    if names.is_empty() {
        names.push("(no checks)");
    }
    format!(
        "[{}] {}{extra}",
        n.status.as_str().to_uppercase(),
        names.join(", ")
    )
}

/// One line per alert: what, since when, why.
pub fn default_text(n: &Notification) -> String {
    let mut out = String::new();
    if n.offline {
        out.push_str(
            "Every connectivity check is failing: per-check alerts are held until the agent's network is back.\n",
        );
    }
    if n.status == super::NoteStatus::Flapping {
        out.push_str(
            "Changing state too often; further notifications are held until it is stable.\n",
        );
    }
    for a in &n.alerts {
        let line = match n.status {
            super::NoteStatus::Resolved => format!(
                "• {} ({}) is {} again; was failing since {}{}\n",
                a.check,
                a.kind,
                a.status,
                a.started_at,
                a.ended_at
                    .as_deref()
                    .map(|e| format!(" until {e}"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "• {} ({}) is {} since {}{}{}\n",
                a.check,
                a.kind,
                a.status,
                a.started_at,
                a.error_kind
                    .as_deref()
                    .map(|k| format!(" [{k}]"))
                    .unwrap_or_default(),
                if a.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.message)
                }
            ),
        };
        out.push_str(&line);
    }
    out
}

/// Renders `tpl` if given (falling back to `default` on a render error, with a warning).
pub fn render_or(
    tpl: Option<&Template>,
    n: &Notification,
    notifier: &str,
    default: impl FnOnce() -> String,
) -> String {
    match tpl.map(|t| t.render(n)) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            tracing::warn!(notifier, error = %e, "template failed to render; using the default text");
            default()
        }
        None => default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_are_reported() {
        assert!(Template::compile("{% if %}").is_err());
        assert!(Template::compile("{{ status }} {{ checks }}").is_ok());
    }

    #[test]
    fn slack_templates_escape_values_but_not_their_own_text() {
        let t = Template::compile_for(
            "<https://runbook.example/db|runbook> {{ alerts[0].message }} {{ checks }} {{ '<ok>' | safe }}",
            Escape::Slack,
        )
        .unwrap();
        let mut n = Notification::test_sample();
        n.alerts[0].message = "<!channel> see <http://evil|click> & co".into();
        n.alerts[0].check = "db<x>".into();
        assert_eq!(
            t.render(&n).unwrap(),
            "<https://runbook.example/db|runbook> &lt;!channel&gt; see &lt;http://evil|click&gt; &amp; co db&lt;x&gt; <ok>"
        );
        let plain = Template::compile("{{ alerts[0].message }}").unwrap();
        assert_eq!(plain.render(&n).unwrap(), n.alerts[0].message);
    }

    #[test]
    fn the_default_texts_fixed_parts_need_no_slack_escaping() {
        // Slack escapes a whole default text, which is right only while the fixed
        // parts have none of `& < >`: every one of them here comes from a value.
        let mut n = Notification::test_sample();
        n.alerts[0].message = String::new();
        n.alerts[0].error_kind = None;
        for status in [
            super::super::NoteStatus::Firing,
            super::super::NoteStatus::Resolved,
            super::super::NoteStatus::Flapping,
        ] {
            n.status = status;
            for offline in [false, true] {
                n.offline = offline;
                for s in [default_text(&n), default_title(&n)] {
                    assert_eq!(slack_escape(&s), s);
                }
            }
        }
    }

    #[test]
    fn each_receivers_markup_is_escaped_in_printed_values() {
        let mut n = Notification::test_sample();
        n.alerts[0].message = r#"<b>"x"</b> & [l](http://e) \ 'q' /?"#.into();
        let render =
            |src: &str, e: Escape| Template::compile_for(src, e).unwrap().render(&n).unwrap();
        assert_eq!(
            render("<i>{{ alerts[0].message }}</i>", Escape::Html),
            "<i>&lt;b&gt;&quot;x&quot;&lt;/b&gt; &amp; [l](http://e) \\ &#39;q&#39; /?</i>"
        );
        assert_eq!(
            render("**{{ alerts[0].message }}**", Escape::Markdown),
            r#"**\<b\>"x"\</b\> & \[l\](http://e) \\ 'q' /?**"#
        );
        let json = render(r#"{"m": "{{ alerts[0].message }}"}"#, Escape::Json);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["m"], n.alerts[0].message);
        assert_eq!(
            render("https://x/{{ alerts[0].message }}", Escape::Url),
            "https://x/%3Cb%3E%22x%22%3C%2Fb%3E%20%26%20%5Bl%5D%28http%3A%2F%2Fe%29%20%5C%20%27q%27%20%2F%3F"
        );
        // `| tojson` output is safe: printed as is.
        assert_eq!(render("{{ alerts[0].score | tojson }}", Escape::Json), "0");
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        let t = Template::compile(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        let n = Notification::test_sample();
        assert!(t.render(&n).is_err());
    }
}
