//! `kind = "email"`: SMTP via lettre. `smtp://` upgrades with STARTTLS (port 25 by
//! default), `smtps://` is TLS from the first byte (port 465). Optional AUTH
//! (`username`/`password`): with credentials STARTTLS is required, so a server that does
//! not offer it (or a man in the middle who strips the offer) never sees the password,
//! unless the notifier says `tls = "none"` explicitly (see [`SmtpTls`]). Each message has
//! a plain-text and an HTML part; the subject carries the status and the check names.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Message, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::SmtpTls;
use super::template::{self, default_text, default_title};
use super::{Notification, Notifier, NotifierConfig, NotifierKind, NotifyError};
use futures_util::future::BoxFuture;

/// Budget of one SMTP conversation step.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The email notifier.
pub struct Email {
    cfg: Arc<NotifierConfig>,
    transport: Result<AsyncSmtpTransport<Tokio1Executor>, TransportError>,
}

/// Why the SMTP transport of a notifier could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The config is not `kind = "email"`.
    #[error("not an email notifier")]
    NotEmail,
    /// The `ca_file` PEM (read at config load) does not parse.
    #[error("bad ca_file: {0}")]
    CaFile(String),
    /// rustls could not be configured.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// What a server without STARTTLS gets when credentials would otherwise go in clear text.
pub const CLEARTEXT_REFUSED: &str = "the SMTP server does not offer STARTTLS: refusing to send the credentials in clear text (nothing was sent; use smtps://, enable STARTTLS on the server, or set tls = \"none\" on the notifier to allow plain text)";

/// What a server without STARTTLS gets when `tls = "starttls"` was asked for.
pub const STARTTLS_MISSING: &str =
    "the SMTP server does not offer STARTTLS, which tls = \"starttls\" requires (nothing was sent)";

impl Email {
    /// A notifier for `cfg` (must be `kind = "email"`). A transport that cannot be built
    /// (unreadable `ca_file`) makes every send a permanent failure naming the cause.
    pub fn new(cfg: Arc<NotifierConfig>) -> Self {
        let transport = build_transport(&cfg);
        if let Err(e) = &transport {
            tracing::error!(notifier = %cfg.name, error = %e, "cannot set up SMTP");
        }
        Self { cfg, transport }
    }

    /// The message for `n`.
    pub fn message(&self, n: &Notification) -> Result<Message, NotifyError> {
        let NotifierKind::Email(e) = &self.cfg.kind else {
            return Err(NotifyError::Permanent("not an email notifier".into()));
        };
        let subject = template::render_or(self.cfg.title.as_ref(), n, &self.cfg.name, || {
            default_title(n)
        });
        let subject = subject.lines().next().unwrap_or("").to_string();
        let text = template::render_or(self.cfg.text.as_ref(), n, &self.cfg.name, || {
            default_text(n)
        });
        let plain = format!(
            "{text}\nRoute: {}\nDedupe key: {}\nAgent: {}\n",
            n.route, n.dedupe_key, n.agent_url
        );
        let html = format!(
            "<!doctype html><html><body><h2>{}</h2><pre>{}</pre><p>Route: {}<br>Dedupe key: {}<br>Agent: <a href=\"{}\">{}</a></p></body></html>",
            escape(&subject),
            escape(&text),
            escape(&n.route),
            escape(&n.dedupe_key),
            escape(&n.agent_url),
            escape(&n.agent_url),
        );
        let mut b = Message::builder().from(e.from.clone()).subject(subject);
        for to in &e.to {
            b = b.to(to.clone());
        }
        b.multipart(MultiPart::alternative_plain_html(plain, html))
            .map_err(|e| NotifyError::Permanent(format!("cannot build message: {e}")))
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn build_transport(
    cfg: &NotifierConfig,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, TransportError> {
    let NotifierKind::Email(e) = &cfg.kind else {
        return Err(TransportError::NotEmail);
    };
    let host = e
        .smtp_url
        .host_str()
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_string();
    let mut params = TlsParameters::builder(host.clone())
        .dangerous_accept_invalid_certs(e.tls.skip_verify)
        .dangerous_accept_invalid_hostnames(e.tls.skip_verify);
    // Read (and checked) when the config was loaded: no file I/O here.
    if let Some(pem) = &e.ca_pem {
        let cert =
            Certificate::from_pem(pem).map_err(|err| TransportError::CaFile(err.to_string()))?;
        params = params.add_root_certificate(cert);
    }
    let params = params
        .build_rustls()
        .map_err(|err| TransportError::Tls(err.to_string()))?;
    let (tls, default_port) = match e.tls_mode {
        SmtpTls::Wrapper => (Tls::Wrapper(params), 465),
        SmtpTls::Required => (Tls::Required(params), 25),
        SmtpTls::Opportunistic => (Tls::Opportunistic(params), 25),
        SmtpTls::None => (Tls::None, 25),
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(e.smtp_url.port().unwrap_or(default_port))
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT));
    if let Some(user) = &e.username {
        let pass = e
            .password
            .as_ref()
            .map(|p| p.expose().clone())
            .unwrap_or_default();
        b = b.credentials(Credentials::new(user.clone(), pass));
    }
    Ok(b.build())
}

/// SMTP 5xx and malformed messages are permanent; 4xx, timeouts, TLS and network trouble
/// are retried. A missing STARTTLS where it is required is permanent and says why.
fn classify(e: &lettre::transport::smtp::Error, mode: SmtpTls, credentials: bool) -> NotifyError {
    let msg = crate::secret::redact(&e.to_string());
    if mode == SmtpTls::Required && e.is_client() && msg.contains("STARTTLS") {
        return NotifyError::Permanent(if credentials {
            CLEARTEXT_REFUSED.to_string()
        } else {
            STARTTLS_MISSING.to_string()
        });
    }
    if e.is_permanent() || e.is_client() {
        NotifyError::Permanent(msg)
    } else {
        NotifyError::Transient(msg)
    }
}

impl Notifier for Email {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let transport = self
                .transport
                .as_ref()
                .map_err(|e| NotifyError::Permanent(e.to_string()))?;
            let (mode, credentials) = match &self.cfg.kind {
                NotifierKind::Email(e) => {
                    (e.tls_mode, e.username.is_some() || e.password.is_some())
                }
                _ => (SmtpTls::Required, false),
            };
            let msg = self.message(n)?;
            // lettre bounds each step; this bounds the whole conversation.
            match tokio::time::timeout(SMTP_TIMEOUT * 3, transport.send(msg)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(classify(&e, mode, credentials)),
                Err(_) => Err(NotifyError::Transient("SMTP conversation timed out".into())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
