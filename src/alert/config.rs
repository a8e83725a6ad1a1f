//! `[[notifiers]]`, `[[routes]]` and `[[silences]]`: read from the spanned TOML, every
//! problem reported at its `PATH:LINE:COL`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use toml::de::DeValue;

use super::template::Template;
use crate::config::CheckConfig;
use crate::config::raw::Table;
use crate::net::tls::TlsOptions;
use crate::secret::Secret;

/// Validated alerting configuration.
#[derive(Debug, Clone, Default)]
pub struct AlertConfig {
    /// `[[notifiers]]`, in file order.
    pub notifiers: Vec<Arc<NotifierConfig>>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[[silences]]` from the config file.
    pub silences: Vec<super::Silence>,
    /// `[alerting]` limits of API silences.
    pub silence_limits: SilenceLimits,
}

/// `[alerting] max_silences`, `max_silence_duration`: bounds on silences created over the
/// API (each is kept in memory and in the outbox database).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SilenceLimits {
    /// Most API silences not yet ended (default 1,000).
    pub max_count: usize,
    /// Longest `ends_at - starts_at` (default 90 days).
    pub max_duration: Duration,
}

impl Default for SilenceLimits {
    fn default() -> Self {
        Self {
            max_count: 1000,
            max_duration: Duration::from_secs(90 * 86_400),
        }
    }
}

fn read_limits(root: &Table<'_, '_>) -> Option<SilenceLimits> {
    let Some(t) = root.table("alerting") else {
        return Some(SilenceLimits::default());
    };
    let d = SilenceLimits::default();
    let max_count = t
        .int("max_silences", 1..=1_000_000)
        .map(|n| n as usize)
        .unwrap_or(d.max_count);
    let max_duration = positive(&t, "max_silence_duration", d.max_duration);
    t.finish();
    Some(SilenceLimits {
        max_count,
        max_duration: max_duration?,
    })
}

/// One `[[notifiers]]` entry.
#[derive(Debug)]
pub struct NotifierConfig {
    /// Unique name (the `notifier` label of the metrics).
    pub name: String,
    /// Where and how to send.
    pub kind: NotifierKind,
    /// First retry delay (default 1s).
    pub retry_base: Duration,
    /// Largest retry delay (default 5m).
    pub retry_max: Duration,
    /// Undelivered notifications older than this are dropped (default 24h).
    pub max_age: Duration,
    /// Optional title/subject template.
    pub title: Option<Template>,
    /// Optional body template.
    pub text: Option<Template>,
}

/// The notifier kinds.
#[derive(Debug)]
pub enum NotifierKind {
    /// Slack incoming webhook.
    Slack {
        /// The webhook URL (a secret: it is the credential).
        webhook_url: Secret<String>,
    },
    /// Generic JSON webhook.
    Webhook {
        /// Target URL.
        url: url::Url,
        /// Key of `X-Lifeline-Signature`.
        hmac_secret: Option<Secret<String>>,
        /// Extra request headers.
        headers: BTreeMap<String, Secret<String>>,
    },
    /// SMTP.
    Email(EmailConfig),
    /// Alertmanager v2 API.
    Alertmanager {
        /// Base URL (`/api/v2/alerts` is appended).
        url: url::Url,
    },
    /// PagerDuty Events API v2.
    PagerDuty(super::pagerduty::PagerDutyConfig),
    /// Opsgenie Alert API.
    Opsgenie(super::opsgenie::OpsgenieConfig),
    /// Microsoft Teams Workflows webhook (Adaptive Card).
    Teams(super::teams::TeamsConfig),
    /// Discord webhook (embeds).
    Discord(super::discord::DiscordConfig),
    /// Telegram Bot API `sendMessage`.
    Telegram(super::telegram::TelegramConfig),
    /// ntfy publish.
    Ntfy(super::ntfy::NtfyConfig),
    /// Any HTTP endpoint with a templated body (`kind = "template"`).
    Template(super::templated::TemplatedConfig),
}

impl NotifierKind {
    /// The config name of the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Slack { .. } => "slack",
            Self::Webhook { .. } => "webhook",
            Self::Email(_) => "email",
            Self::Alertmanager { .. } => "alertmanager",
            Self::PagerDuty(_) => "pagerduty",
            Self::Opsgenie(_) => "opsgenie",
            Self::Teams(_) => "teams",
            Self::Discord(_) => "discord",
            Self::Telegram(_) => "telegram",
            Self::Ntfy(_) => "ntfy",
            Self::Template(_) => "template",
        }
    }

    /// How `title`/`text` templates of this kind escape the values they print: each
    /// receiver's markup, so peer text stays text.
    pub fn escape(&self) -> super::template::Escape {
        use super::template::Escape;
        match self {
            Self::Slack { .. } => Escape::Slack,
            Self::Telegram(_) => Escape::Html,
            Self::Teams(_) | Self::Discord(_) => Escape::Markdown,
            _ => Escape::None,
        }
    }
}

/// How an `smtp://` notifier uses TLS (the `tls` key); `smtps://` is always TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtps://`: TLS from the first byte.
    Wrapper,
    /// `tls = "starttls"` (the default with credentials): STARTTLS must succeed before
    /// anything else is sent; a server that does not offer it gets nothing.
    Required,
    /// `tls = "opportunistic"` (the default without credentials): STARTTLS when the
    /// server offers it, plain text otherwise.
    Opportunistic,
    /// `tls = "none"`: never TLS, also with credentials (an explicit choice).
    None,
}

/// `kind = "email"`.
#[derive(Debug)]
pub struct EmailConfig {
    /// `smtp://host[:port]` (STARTTLS, see [`SmtpTls`]) or `smtps://host[:port]`.
    pub smtp_url: url::Url,
    /// TLS mode, from the scheme, the `tls` key and whether credentials are set.
    pub tls_mode: SmtpTls,
    /// The PEM text of `ca_file`, read when the config is loaded.
    pub ca_pem: Option<Vec<u8>>,
    /// SMTP AUTH user.
    pub username: Option<String>,
    /// SMTP AUTH password.
    pub password: Option<Secret<String>>,
    /// Sender.
    pub from: lettre::message::Mailbox,
    /// Recipients (at least one).
    pub to: Vec<lettre::message::Mailbox>,
    /// Extra CA / skip-verify for the SMTP server's certificate.
    pub tls: TlsOptions,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `name`, default `route-<n>` (1-based position); appears in notifications.
    pub name: String,
    /// Label equality (`check` and `kind` match the check's name and kind).
    pub matchers: BTreeMap<String, String>,
    /// Notifier names (validated).
    pub notifiers: Vec<String>,
    /// Failing this long before it fires (default 0s).
    pub for_: Duration,
    /// Alerts going firing within this window go out together (default 10s).
    pub group_wait: Duration,
    /// Re-send a still-firing alert this often (default 4h).
    pub repeat_interval: Duration,
    /// Send `resolved` notifications (default true).
    pub send_resolved: bool,
    /// More state changes than this within `flap_window` is flapping (default 6).
    pub flap_threshold: u32,
    /// Flapping window (default 10m).
    pub flap_window: Duration,
}

impl RouteConfig {
    /// True if the route's `match` fits a check with these facts.
    pub fn matches(&self, check: &str, kind: &str, labels: &BTreeMap<String, String>) -> bool {
        super::labels_match(&self.matchers, check, kind, labels)
    }
}

impl AlertConfig {
    /// Reads the alerting sections of the root table.
    pub fn parse(root: &Table<'_, '_>, checks: &[std::sync::Arc<CheckConfig>]) -> Option<Self> {
        let mut ok = true;
        let mut notifiers = Vec::new();
        let mut names = HashSet::new();
        for t in root.tables("notifiers") {
            match read_notifier(&t) {
                Some(n) => {
                    if !names.insert(n.name.clone()) {
                        t.error(
                            t.raw("name").map(|v| v.span()).unwrap_or(t.span()),
                            format!("duplicate notifier name `{}`", n.name),
                        );
                        ok = false;
                    }
                    notifiers.push(Arc::new(n));
                }
                None => ok = false,
            }
            t.finish();
        }
        let mut routes = Vec::new();
        let mut route_names = HashSet::new();
        for (i, t) in root.tables("routes").into_iter().enumerate() {
            match read_route(&t, i, &names) {
                Some(r) => {
                    if !route_names.insert(r.name.clone()) {
                        t.error(t.span(), format!("duplicate route name `{}`", r.name));
                        ok = false;
                    }
                    routes.push(r);
                }
                None => ok = false,
            }
            t.finish();
        }
        let mut silences = Vec::new();
        for (i, t) in root.tables("silences").into_iter().enumerate() {
            match read_silence(&t, i, checks) {
                Some(s) => silences.push(s),
                None => ok = false,
            }
            t.finish();
        }
        let silence_limits = read_limits(root);
        ok.then_some(Self {
            notifiers,
            routes,
            silences,
            silence_limits: silence_limits?,
        })
    }

    /// The notifier called `name`.
    pub fn notifier(&self, name: &str) -> Option<&Arc<NotifierConfig>> {
        self.notifiers.iter().find(|n| n.name == name)
    }
}

fn positive(t: &Table<'_, '_>, key: &'static str, default: Duration) -> Option<Duration> {
    match t.duration(key) {
        None => Some(default),
        Some(d) if d.is_zero() => {
            if let Some(v) = t.raw(key) {
                t.error(v.span(), format!("`{key}` must be greater than 0"));
            }
            None
        }
        Some(d) => Some(d),
    }
}

fn template(
    t: &Table<'_, '_>,
    key: &'static str,
    escape: super::template::Escape,
) -> Option<Option<Template>> {
    let Some(s) = t.str(key) else {
        return Some(None);
    };
    match Template::compile_for(&s.value, escape) {
        Ok(tpl) => Some(Some(tpl)),
        Err(e) => {
            t.error(s.span, format!("`{key}`: template error: {e}"));
            None
        }
    }
}

fn read_notifier(t: &Table<'_, '_>) -> Option<NotifierConfig> {
    let name = t.req_str("name");
    if let Some(n) = &name
        && !valid_notifier_name(&n.value)
    {
        t.error(
            n.span.clone(),
            format!(
                "notifier name `{}` must match ^[a-z0-9][a-z0-9_.-]{{0,62}}$",
                n.value
            ),
        );
    }
    let kind = t.req_str("kind");
    let kind = match kind {
        None => None,
        Some(k) => match k.value.as_str() {
            "slack" => read_slack(t),
            "webhook" => read_webhook(t),
            "email" => read_email(t).map(NotifierKind::Email),
            "alertmanager" => t
                .url("url", &["http", "https"])
                .map(|url| NotifierKind::Alertmanager { url }),
            "pagerduty" => super::pagerduty::read(t).map(NotifierKind::PagerDuty),
            "opsgenie" => super::opsgenie::read(t).map(NotifierKind::Opsgenie),
            "teams" => super::teams::read(t).map(NotifierKind::Teams),
            "discord" => super::discord::read(t).map(NotifierKind::Discord),
            "telegram" => super::telegram::read(t).map(NotifierKind::Telegram),
            "ntfy" => super::ntfy::read(t).map(NotifierKind::Ntfy),
            "template" => super::templated::read(t).map(NotifierKind::Template),
            other => {
                t.error(
                    k.span,
                    format!(
                        "unknown notifier kind `{other}`; known kinds: {}",
                        KINDS.join(", ")
                    ),
                );
                None
            }
        },
    };
    let retry_base = positive(t, "retry_base", Duration::from_secs(1));
    let retry_max = positive(t, "retry_max", Duration::from_secs(300));
    let max_age = positive(t, "max_age", Duration::from_secs(86_400));
    if let (Some(b), Some(m)) = (retry_base, retry_max)
        && b > m
    {
        t.error(
            t.span(),
            "`retry_base` must not be greater than `retry_max`",
        );
        return None;
    }
    // Templates escape the values they print (peer text) for the receiver's markup, but
    // not their own text.
    let escape = kind.as_ref().map(NotifierKind::escape).unwrap_or_default();
    let title = template(t, "title", escape);
    let text = template(t, "text", escape);
    Some(NotifierConfig {
        name: name?.value,
        kind: kind?,
        retry_base: retry_base?,
        retry_max: retry_max?,
        max_age: max_age?,
        title: title?,
        text: text?,
    })
}

/// Every notifier kind, for the unknown-kind error.
pub const KINDS: [&str; 11] = [
    "slack",
    "webhook",
    "email",
    "alertmanager",
    "pagerduty",
    "opsgenie",
    "teams",
    "discord",
    "telegram",
    "ntfy",
    "template",
];

fn valid_notifier_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

fn read_slack(t: &Table<'_, '_>) -> Option<NotifierKind> {
    super::http::secret_url(t, "webhook_url").map(|webhook_url| NotifierKind::Slack { webhook_url })
}

fn read_webhook(t: &Table<'_, '_>) -> Option<NotifierKind> {
    let url = t.url("url", &["http", "https"]);
    let hmac_secret = t.secret("hmac_secret");
    let headers = t.headers("headers");
    Some(NotifierKind::Webhook {
        url: url?,
        hmac_secret,
        headers: headers?,
    })
}

fn mailbox(
    t: &Table<'_, '_>,
    key: &str,
    s: &crate::config::raw::Str,
) -> Option<lettre::message::Mailbox> {
    match s.value.parse::<lettre::message::Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            t.error(
                s.span.clone(),
                format!("`{key}`: invalid address `{}`: {e}", s.value),
            );
            None
        }
    }
}

fn read_email(t: &Table<'_, '_>) -> Option<EmailConfig> {
    let smtp_url = t.url("smtp_url", &["smtp", "smtps"]);
    if let Some(u) = &smtp_url
        && u.host_str().is_none_or(str::is_empty)
    {
        t.error(t.span(), "`smtp_url` needs a host");
        return None;
    }
    let username = t.str("username").map(|s| s.value);
    let password = t.secret("password");
    let from = t.req_str("from").and_then(|s| mailbox(t, "from", &s));
    let to = match t.str_list("to") {
        None => {
            if !t.has("to") {
                t.missing("to");
            }
            None
        }
        Some(list) if list.is_empty() => {
            t.error(
                t.raw("to").map(|v| v.span()).unwrap_or(t.span()),
                "`to` needs at least one address",
            );
            None
        }
        Some(list) => list
            .iter()
            .map(|s| mailbox(t, "to", s))
            .collect::<Option<Vec<_>>>(),
    };
    let tls = t.tls_options();
    let ca_pem = read_ca_pem(t, &tls);
    let smtp_url = smtp_url?;
    let tls_mode = smtp_tls_mode(t, &smtp_url, username.is_some() || password.is_some());
    Some(EmailConfig {
        smtp_url,
        tls_mode: tls_mode?,
        ca_pem: ca_pem?,
        username,
        password,
        from: from?,
        to: to?,
        tls,
    })
}

/// The `tls` key of an email notifier. With credentials on `smtp://`, the default is
/// `starttls` (required); `opportunistic` would hand the password to whoever strips the
/// server's STARTTLS offer, so it is refused; `none` is the explicit "plain text is fine
/// here" (a relay on localhost).
fn smtp_tls_mode(t: &Table<'_, '_>, url: &url::Url, credentials: bool) -> Option<SmtpTls> {
    let key = t.str("tls");
    if url.scheme() == "smtps" {
        if let Some(k) = key {
            t.error(
                k.span,
                "`tls` applies to smtp:// only; smtps:// is TLS from the first byte",
            );
            return None;
        }
        return Some(SmtpTls::Wrapper);
    }
    let Some(k) = key else {
        return Some(if credentials {
            SmtpTls::Required
        } else {
            SmtpTls::Opportunistic
        });
    };
    match k.value.as_str() {
        "starttls" => Some(SmtpTls::Required),
        "opportunistic" if credentials => {
            t.error(
                k.span,
                "`tls = \"opportunistic\"` with `username`/`password` would send the password in clear text to a server (or a man in the middle) that does not offer STARTTLS; use \"starttls\" (the default with credentials), smtps://, or, on a trusted network, tls = \"none\"",
            );
            None
        }
        "opportunistic" => Some(SmtpTls::Opportunistic),
        "none" => {
            if credentials {
                tracing::warn!(
                    "email notifier with tls = \"none\": SMTP credentials are sent in clear text"
                );
            }
            Some(SmtpTls::None)
        }
        other => {
            t.error(
                k.span,
                format!("`tls`: unknown value `{other}`; expected starttls, opportunistic or none"),
            );
            None
        }
    }
}

/// Reads and checks `ca_file` now, so a send never does file I/O and a bad file is a
/// config error at the key.
fn read_ca_pem(t: &Table<'_, '_>, tls: &TlsOptions) -> Option<Option<Vec<u8>>> {
    let Some(path) = &tls.ca_file else {
        return Some(None);
    };
    let span = t.str("ca_file").map(|s| s.span).unwrap_or(t.span());
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) => {
            t.error(span, format!("cannot read ca_file {}: {e}", path.display()));
            return None;
        }
    };
    if let Err(e) = lettre::transport::smtp::client::Certificate::from_pem(&pem) {
        t.error(span, format!("bad ca_file {}: {e}", path.display()));
        return None;
    }
    Some(Some(pem))
}

fn read_route(t: &Table<'_, '_>, index: usize, notifiers: &HashSet<String>) -> Option<RouteConfig> {
    let mut ok = true;
    let name = match t.str("name") {
        Some(n) if valid_notifier_name(&n.value) => n.value,
        Some(n) => {
            t.error(
                n.span,
                "route `name` must match ^[a-z0-9][a-z0-9_.-]{0,62}$",
            );
            ok = false;
            String::new()
        }
        None => format!("route-{}", index + 1),
    };
    let matchers = match t.str_map("match") {
        Some(m) => m.into_iter().map(|(k, v)| (k, v.value)).collect(),
        None => {
            ok &= !t.has("match");
            BTreeMap::new()
        }
    };
    let mut names = Vec::new();
    match t.str_list("notifiers") {
        None => {
            if !t.has("notifiers") {
                t.missing("notifiers");
            }
            ok = false;
        }
        Some(list) => {
            if list.is_empty() {
                t.error(
                    t.raw("notifiers").map(|v| v.span()).unwrap_or(t.span()),
                    "`notifiers` needs at least one notifier name",
                );
                ok = false;
            }
            for n in list {
                if !notifiers.contains(&n.value) {
                    t.error(n.span.clone(), format!("unknown notifier `{}`", n.value));
                    ok = false;
                }
                names.push(n.value);
            }
        }
    }
    let for_ = t.duration("for").unwrap_or(Duration::ZERO);
    let group_wait = t.duration("group_wait").unwrap_or(Duration::from_secs(10));
    let repeat_interval = positive(t, "repeat_interval", Duration::from_secs(4 * 3600));
    let send_resolved = t.bool("send_resolved").unwrap_or(true);
    let flap_threshold = t.int("flap_threshold", 1..=10_000).unwrap_or(6) as u32;
    let flap_window = positive(t, "flap_window", Duration::from_secs(600));
    ok.then_some(RouteConfig {
        name,
        matchers,
        notifiers: names,
        for_,
        group_wait,
        repeat_interval: repeat_interval?,
        send_resolved,
        flap_threshold,
        flap_window: flap_window?,
    })
}

fn read_time(t: &Table<'_, '_>, key: &'static str) -> Option<Option<SystemTime>> {
    let Some(v) = t.raw(key) else {
        return Some(None);
    };
    let text = match v.get_ref() {
        DeValue::Datetime(d) => d.to_string(),
        DeValue::String(_) => t.str(key)?.value,
        other => {
            t.error(
                v.span(),
                format!(
                    "`{key}` must be an RFC 3339 time, found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    match crate::time::parse_rfc3339(&text) {
        Some(at) => Some(Some(at)),
        None => {
            t.error(
                v.span(),
                format!("`{key}`: `{text}` is not an RFC 3339 time with offset (like 2025-01-31T22:00:00Z)"),
            );
            None
        }
    }
}

fn read_silence(
    t: &Table<'_, '_>,
    index: usize,
    checks: &[std::sync::Arc<CheckConfig>],
) -> Option<super::Silence> {
    let matchers: BTreeMap<String, String> = match t.str_map("matchers") {
        Some(m) => m.into_iter().map(|(k, v)| (k, v.value)).collect(),
        None => {
            if !t.has("matchers") {
                t.missing("matchers");
            }
            return None;
        }
    };
    if matchers.is_empty() {
        t.error(
            t.span(),
            "`matchers` needs at least one label (an empty silence would hold every alert)",
        );
        return None;
    }
    if let Some(c) = matchers.get("check")
        && !checks.iter().any(|x| &x.name == c)
    {
        t.error(t.span(), format!("silence matches unknown check `{c}`"));
        return None;
    }
    let starts_at = read_time(t, "starts_at")?;
    let ends_at = match read_time(t, "ends_at")? {
        Some(e) => e,
        None => {
            t.missing("ends_at");
            return None;
        }
    };
    let starts_at = starts_at.unwrap_or(SystemTime::UNIX_EPOCH);
    if ends_at <= starts_at {
        t.error(t.span(), "`ends_at` must be after `starts_at`");
        return None;
    }
    let comment = t.str("comment").map(|s| s.value).unwrap_or_default();
    Some(super::Silence {
        id: format!("config-{}", index + 1),
        matchers,
        starts_at,
        ends_at,
        comment,
        from_config: true,
    })
}
