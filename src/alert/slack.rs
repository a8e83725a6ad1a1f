//! `kind = "slack"`: an incoming-webhook POST `{"text": …}` with a status emoji, the
//! checks, their errors and since when. Peer text is escaped where it enters the text
//! (see [`super::template`]): the default text's values, and every value an operator's
//! template prints; the template's own `<url|links>` stay links.

use std::sync::Arc;

use super::template::{self, default_text, default_title, emoji, slack_escape};
use super::{Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use futures_util::future::BoxFuture;

/// The Slack notifier.
pub struct Slack {
    cfg: Arc<NotifierConfig>,
    http: reqwest::Client,
}

impl Slack {
    /// A notifier for `cfg` (must be `kind = "slack"`).
    pub fn new(cfg: Arc<NotifierConfig>, http: reqwest::Client) -> Self {
        Self { cfg, http }
    }

    /// The JSON body for `n`.
    pub fn body(&self, n: &Notification) -> serde_json::Value {
        // Templates were compiled with `Escape::Slack` (values escaped, their own text
        // kept); the default texts consist of values plus fixed words without `& < >`, so
        // escaping them whole escapes exactly the values.
        let title = template::render_or(self.cfg.title.as_ref(), n, &self.cfg.name, || {
            slack_escape(&default_title(n))
        });
        let text = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            slack_escape(&default_text(n))
        });
        serde_json::json!({
            "text": format!("{} *{}*\n{}", emoji(n), title.trim_end(), text.trim_end()),
        })
    }
}

/// Slack's control characters escaped (see [`slack_escape`]).
pub fn escape(s: &str) -> String {
    slack_escape(s)
}

impl Notifier for Slack {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let NotifierKind::Slack { webhook_url } = &self.cfg.kind else {
                return Err(NotifyError::Permanent("not a slack notifier".into()));
            };
            let body = serde_json::to_vec(&self.body(n))
                .map_err(|e| NotifyError::Permanent(e.to_string()))?;
            super::webhook::post(&self.http, webhook_url.expose(), body, &[]).await
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn peer_text_cannot_ping_or_forge_links() {
        assert_eq!(
            super::escape("<!channel> see <http://x|bank> & co"),
            "&lt;!channel&gt; see &lt;http://x|bank&gt; &amp; co"
        );
    }
}
