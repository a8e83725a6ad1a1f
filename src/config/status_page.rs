//! `[status_page]`: how the status page at `GET /` looks and how much it tells
//! (`docs/status-page.md`).

use super::raw::Table;

/// `theme`: the colour scheme of the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Theme {
    /// Follows the browser (`prefers-color-scheme`).
    #[default]
    Auto,
    /// Always light.
    Light,
    /// Always dark.
    Dark,
}

impl Theme {
    /// The config spelling (`auto`, `light`, `dark`).
    pub fn as_str(self) -> &'static str {
        match self {
            Theme::Auto => "auto",
            Theme::Light => "light",
            Theme::Dark => "dark",
        }
    }
}

/// `[status_page]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPageConfig {
    /// `title`: the page's heading and tab title (default `lifeline`).
    pub title: String,
    /// `description`: one line under the title.
    pub description: String,
    /// `logo_url`: a same-origin path (`/logo.png`) or a `data:image/…` URL.
    pub logo_url: Option<String>,
    /// `group_by`: a check label; checks are grouped by its value.
    pub group_by: Option<String>,
    /// `public`: a read-only view without details (no error text, no links to the JSON
    /// API); the page and the badges are then readable without basic auth.
    pub public: bool,
    /// `theme`.
    pub theme: Theme,
}

impl Default for StatusPageConfig {
    fn default() -> Self {
        Self {
            title: "lifeline".into(),
            description: "Connection health".into(),
            logo_url: None,
            group_by: None,
            public: false,
            theme: Theme::Auto,
        }
    }
}

/// Whether `url` is acceptable as `logo_url`: the page's CSP allows images from its own
/// origin and `data:` only.
fn logo_ok(url: &str) -> bool {
    (url.starts_with('/') && !url.starts_with("//") && !url.contains('\\'))
        || url.starts_with("data:image/")
}

/// A Prometheus-style label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`), as
/// check labels are.
fn label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// Reads `[status_page]` (defaults when absent); errors are recorded on the loader.
pub(super) fn read(root: &Table<'_, '_>) -> Option<StatusPageConfig> {
    let mut c = StatusPageConfig::default();
    let Some(t) = root.table("status_page") else {
        return Some(c);
    };
    let mut ok = true;
    if let Some(s) = t.str("title") {
        if s.value.trim().is_empty() || s.value.chars().count() > 200 {
            ok = false;
            t.error(s.span, "`title` must be 1 to 200 characters");
        } else {
            c.title = s.value;
        }
    }
    if let Some(s) = t.str("description") {
        if s.value.chars().count() > 1000 {
            ok = false;
            t.error(s.span, "`description` must be at most 1000 characters");
        } else {
            c.description = s.value;
        }
    }
    if let Some(s) = t.str("logo_url") {
        if logo_ok(&s.value) {
            c.logo_url = Some(s.value);
        } else {
            ok = false;
            t.error(
                s.span,
                format!(
                    "`logo_url`: `{}` must be a path on this agent (`/logo.png`) or a `data:image/` URL",
                    s.value
                ),
            );
        }
    }
    if let Some(s) = t.str("group_by") {
        if label_name(&s.value) {
            c.group_by = Some(s.value);
        } else {
            ok = false;
            t.error(
                s.span,
                format!("`group_by`: `{}` is not a label name", s.value),
            );
        }
    }
    if let Some(b) = t.bool("public") {
        c.public = b;
    }
    if let Some(s) = t.str("theme") {
        match s.value.as_str() {
            "auto" => c.theme = Theme::Auto,
            "light" => c.theme = Theme::Light,
            "dark" => c.theme = Theme::Dark,
            other => {
                ok = false;
                t.error(
                    s.span,
                    format!("`theme` must be \"auto\", \"light\" or \"dark\", got `{other}`"),
                );
            }
        }
    }
    t.finish();
    ok.then_some(c)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(src: &str) -> Result<super::StatusPageConfig, crate::config::ConfigErrors> {
        crate::config::parse(Path::new("c.toml"), src).map(|c| c.status_page)
    }

    #[test]
    fn defaults_and_every_key() {
        assert_eq!(
            parse("").expect("empty"),
            super::StatusPageConfig::default()
        );
        let c = parse(
            "[status_page]\ntitle = \"Acme\"\ndescription = \"d\"\nlogo_url = \"/logo.png\"\n\
             group_by = \"team\"\npublic = true\ntheme = \"dark\"\n",
        )
        .expect("valid");
        assert_eq!(c.title, "Acme");
        assert_eq!(c.logo_url.as_deref(), Some("/logo.png"));
        assert_eq!(c.group_by.as_deref(), Some("team"));
        assert!(c.public);
        assert_eq!(c.theme, super::Theme::Dark);
    }

    #[test]
    fn bad_values_point_at_the_key() {
        for (src, want) in [
            (
                "logo_url = \"https://cdn.example/x.png\"",
                ":2:12: `logo_url`",
            ),
            ("logo_url = \"//evil.example/x.png\"", ":2:12: `logo_url`"),
            ("group_by = \"no-dash\"", ":2:12: `group_by`"),
            ("theme = \"blue\"", ":2:9: `theme` must be"),
            ("title = \"\"", ":2:9: `title`"),
            ("colour = 1", "unknown key `colour`"),
        ] {
            let e = parse(&format!("[status_page]\n{src}\n"))
                .expect_err(src)
                .to_string();
            assert!(e.contains(want), "{src}: {e}");
        }
        assert!(parse("[status_page]\nlogo_url = \"data:image/png;base64,AAAA\"\n").is_ok());
    }
}
