//! `kind = "slack"`: an incoming-webhook POST `{"text": …}` with a status emoji, the
//! checks, their errors and since when.

use std::sync::Arc;

use super::template::{self, default_text, default_title, emoji};
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
        let title = template::render_or(self.cfg.title.as_ref(), n, &self.cfg.name, || {
            default_title(n)
        });
        let text = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            default_text(n)
        });
        serde_json::json!({
            "text": format!("{} *{}*\n{}", emoji(n), escape(&title), escape(text.trim_end())),
        })
    }
}

/// Slack's control characters: peer text (errors, messages) must not turn into
/// `<!channel>` pings or `<url|forged>` links.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
