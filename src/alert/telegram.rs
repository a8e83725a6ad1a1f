//! `kind = "telegram"`: the Telegram Bot API `sendMessage`
//! (`POST {api_url}/bot<token>/sendMessage`) with `parse_mode = "HTML"`: the headline in
//! `<b>…</b>`, then the text. Every value (peer text) is HTML-escaped (`& < > " '`), so a
//! check message cannot break the markup (Telegram rejects the whole message on a bad
//! tag) or add links.

use std::sync::Arc;

use super::http::{join, optional_url, truncate};
use super::template::{self, Escape, default_text, default_title, emoji};
use super::{Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use crate::config::raw::Table;
use crate::secret::Secret;
use futures_util::future::BoxFuture;
use toml::de::DeValue;

/// The real API (`api_url` overrides it, e.g. for a local Bot API server).
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// Longest message text Telegram accepts (characters after entity parsing).
pub const TEXT_MAX: usize = 4096;
/// The default text is cut to this many characters before escaping, leaving room for the
/// headline and entities.
const DEFAULT_TEXT_MAX: usize = 3_000;

/// `kind = "telegram"` keys.
#[derive(Debug)]
pub struct TelegramConfig {
    /// Bot API base URL (default [`DEFAULT_API_URL`]).
    pub api_url: url::Url,
    /// `123456:ABC…` from @BotFather (a secret: it is in the request path).
    pub bot_token: Secret<String>,
    /// Numeric chat id or `@channelusername`.
    pub chat_id: serde_json::Value,
    /// Forum topic to post in.
    pub message_thread_id: Option<i64>,
}

/// Reads the keys of a `kind = "telegram"` notifier.
pub(super) fn read(t: &Table<'_, '_>) -> Option<TelegramConfig> {
    let api_url = optional_url(t, "api_url", DEFAULT_API_URL);
    let bot_token = t.req_str("bot_token").and_then(|s| {
        let token = Secret::registered(s.value);
        let ok = token.expose().split_once(':').is_some_and(|(id, rest)| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !ok {
            // Never echo the value: it is the credential.
            t.error(
                s.span,
                "`bot_token` must look like `123456789:AAH…` (the bot id, a colon, the key) as issued by @BotFather",
            );
            return None;
        }
        Some(token)
    });
    let chat_id = match t.raw("chat_id") {
        None => {
            t.missing("chat_id");
            None
        }
        Some(v) => match v.get_ref() {
            DeValue::Integer(_) => t
                .int("chat_id", i64::MIN..=i64::MAX)
                .map(serde_json::Value::from),
            _ => t.str("chat_id").and_then(|s| {
                if s.value.len() > 1 && s.value.starts_with('@') {
                    Some(serde_json::Value::from(s.value))
                } else if let Ok(id) = s.value.parse::<i64>() {
                    Some(serde_json::Value::from(id))
                } else {
                    t.error(
                        s.span,
                        "`chat_id` must be a numeric chat id or `@channelusername`",
                    );
                    None
                }
            }),
        },
    };
    let message_thread_id = t.int("message_thread_id", 1..=i64::MAX);
    Some(TelegramConfig {
        api_url: api_url?,
        bot_token: bot_token?,
        chat_id: chat_id?,
        message_thread_id,
    })
}

/// The Telegram notifier.
pub struct Telegram {
    cfg: Arc<NotifierConfig>,
    http: reqwest::Client,
}

impl Telegram {
    /// A notifier for `cfg` (must be `kind = "telegram"`).
    pub fn new(cfg: Arc<NotifierConfig>, http: reqwest::Client) -> Self {
        Self { cfg, http }
    }

    /// The `sendMessage` parameters for `n`.
    pub fn body(&self, c: &TelegramConfig, n: &Notification) -> serde_json::Value {
        let html = Escape::Html;
        let title = template::render_or(self.cfg.title.as_ref(), n, &self.cfg.name, || {
            html.apply(&default_title(n))
        });
        let text = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            html.apply(&truncate(&default_text(n), DEFAULT_TEXT_MAX))
        });
        let mut body = serde_json::json!({
            "chat_id": c.chat_id,
            "text": format!("{} <b>{}</b>\n{}", emoji(n), title.trim(), text.trim_end()),
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(id) = c.message_thread_id {
            body["message_thread_id"] = id.into();
        }
        body
    }
}

impl Notifier for Telegram {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let NotifierKind::Telegram(c) = &self.cfg.kind else {
                return Err(NotifyError::Permanent("not a telegram notifier".into()));
            };
            let body = serde_json::to_vec(&self.body(c, n))
                .map_err(|e| NotifyError::Permanent(e.to_string()))?;
            let url = join(
                &c.api_url,
                &format!("bot{}/sendMessage", c.bot_token.expose()),
            );
            super::webhook::post(&self.http, &url, body, &[]).await
        })
    }
}
