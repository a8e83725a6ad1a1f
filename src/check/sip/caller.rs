//! The user agent side of a `sip` check: builds each request (OPTIONS or REGISTER) and runs
//! one transaction on a [`Link`], answering a 401/407 digest challenge once.
//!
//! Every OPTIONS is a new request outside any dialog (fresh Call-ID, From tag, branch,
//! RFC 3261 §8.1.1). REGISTERs of one registration share Call-ID and From tag with the
//! CSeq counting up (RFC 3261 §10.2), so the registrar sees refreshes of one binding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::digest::{self, Challenge, Credentials};
use super::message::{self, Message, Request, Transport};
use super::transport::{Link, Local};
use super::{Method, SipSpec};
use crate::check::{CheckError, ErrorKind};

const USER_AGENT: &str = concat!("lifeline/", env!("CARGO_PKG_VERSION"));

/// A challenge we answered, reused (nonce count + 1) for the next request.
struct Answered {
    challenge: Challenge,
    cnonce: String,
    nc: u32,
}

/// One finished transaction.
pub(super) struct Exchange {
    /// The final response.
    pub response: Message,
    /// First send to final response (both legs when challenged).
    pub latency: Duration,
    /// The challenge leg (first send to the 401/407), when there was one.
    pub auth_leg: Option<Duration>,
    /// UDP retransmissions over all legs (`None` on connections).
    pub retransmits: Option<u32>,
    /// The digest algorithm of the `Authorization` the final request carried.
    pub algorithm: Option<&'static str>,
    /// The server certificate of the connection (TLS), for `tls_expiry_warning`.
    pub cert: Option<crate::net::tls::PeerCert>,
}

/// What every request of one probe, session or registration shares.
pub(super) struct Caller {
    pub(super) spec: Arc<SipSpec>,
    pub(super) transport: Transport,
    /// Via sent-by.
    local: String,
    /// Host part for Call-IDs.
    host: String,
    from: String,
    to: String,
    contact: String,
    cseq: u32,
    /// REGISTER: the Call-ID and From tag of the registration.
    dialogless: Option<(String, String)>,
    answered: Option<Answered>,
    /// The server certificate (TLS), reported with every answer.
    pub(super) cert: Option<crate::net::tls::PeerCert>,
}

fn host_of(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => v.ip().to_string(),
        SocketAddr::V6(v) => format!("[{}]", v.ip()),
    }
}

impl Caller {
    /// A caller whose requests say they come from `local` (an address, or a `*.invalid`
    /// name over WebSocket).
    pub(super) fn new(spec: Arc<SipSpec>, local: Local) -> Self {
        let (sent_by, host) = match local {
            Local::Addr(a) => (a.to_string(), host_of(a)),
            Local::Name(n) => (n.clone(), n),
        };
        let transport = spec.target.transport;
        let user = spec
            .auth
            .as_ref()
            .map_or("lifeline", |a| a.username.as_str());
        let (to, from) = match spec.method {
            Method::Options => (
                spec.target.uri.clone(),
                spec.from
                    .clone()
                    .unwrap_or_else(|| format!("sip:lifeline@{host}")),
            ),
            Method::Register => {
                let scheme = if spec
                    .target
                    .uri
                    .get(..5)
                    .is_some_and(|s| s.eq_ignore_ascii_case("sips:"))
                {
                    "sips"
                } else {
                    "sip"
                };
                let aor = spec
                    .from
                    .clone()
                    .unwrap_or_else(|| format!("{scheme}:{user}@{}", spec.target.uri_host()));
                (aor.clone(), aor)
            }
        };
        // A `line` parameter makes our binding recognisable among the AOR's contacts.
        let contact = format!(
            "sip:{user}@{sent_by};transport={};line={}",
            transport.as_str(),
            message::random_hex(10)
        );
        let dialogless = (spec.method == Method::Register).then(|| {
            (
                format!("{}@{host}", message::random_hex(24)),
                message::random_hex(12),
            )
        });
        Self {
            spec,
            transport,
            local: sent_by,
            host,
            from,
            to,
            contact,
            cseq: 0,
            dialogless,
            answered: None,
            cert: None,
        }
    }

    /// Our Contact URI.
    pub(super) fn contact(&self) -> &str {
        &self.contact
    }

    /// The next request: CSeq + 1, a fresh branch; a fresh Call-ID and tag for OPTIONS.
    pub(super) fn next(&mut self, expires: Option<u32>) -> Request {
        self.cseq = self.cseq.wrapping_add(1).max(1);
        let (call_id, tag) = match &self.dialogless {
            Some((c, t)) => (c.clone(), t.clone()),
            None => (
                format!("{}@{}", message::random_hex(24), self.host),
                message::random_hex(12),
            ),
        };
        let uri = match self.spec.method {
            Method::Options => self.spec.target.uri.clone(),
            Method::Register => self.spec.target.registrar_uri(),
        };
        let mut req = Request {
            method: self.spec.method.as_str(),
            uri,
            to: self.to.clone(),
            from: self.from.clone(),
            tag,
            call_id,
            cseq: self.cseq,
            branch: message::new_branch(),
            transport: self.transport,
            local: self.local.clone(),
            contact: self.contact.clone(),
            expires,
            auth: None,
            user_agent: USER_AGENT.to_string(),
        };
        if let (Some(a), Some(auth)) = (self.answered.as_mut(), self.spec.auth.as_ref()) {
            a.nc = a.nc.wrapping_add(1);
            let cred = Credentials {
                username: &auth.username,
                password: auth.password.expose(),
                method: req.method,
                uri: &req.uri,
            };
            req.auth = Some(digest::authorization(&a.challenge, &cred, &a.cnonce, a.nc));
        }
        req
    }

    /// The challenge of a 401/407 we will answer (checking the configured realm).
    fn challenge_of(&self, m: &Message) -> Result<Challenge, CheckError> {
        let values = m
            .headers_named("www-authenticate")
            .map(|v| (v, false))
            .chain(m.headers_named("proxy-authenticate").map(|v| (v, true)));
        let c = digest::choose(values).map_err(|e| {
            CheckError::new(
                ErrorKind::AuthFailed,
                format!("cannot answer the challenge: {e}"),
            )
        })?;
        if let Some(want) = self.spec.auth.as_ref().and_then(|a| a.realm.as_deref())
            && want != c.realm
        {
            return Err(CheckError::new(
                ErrorKind::AuthFailed,
                format!(
                    "challenged for realm \"{}\", configured realm is \"{want}\"",
                    super::clip(&c.realm, 100)
                ),
            ));
        }
        Ok(c)
    }

    /// One request and its final response. A 401/407 is answered once when credentials
    /// are configured (a request reusing an earlier nonce may be challenged first, and one
    /// more `stale=true` challenge is answered); still 401/407 after that, or 403 to an
    /// authenticated request, is `auth_failed`. Without credentials the 401/407 is
    /// returned for the verdict to judge.
    pub(super) async fn transaction(
        &mut self,
        link: &mut Link,
        expires: Option<u32>,
        deadline: Instant,
    ) -> Result<Exchange, (CheckError, Option<u32>)> {
        let start = Instant::now();
        let mut retransmits: Option<u32> = None;
        let mut fresh_answered = false;
        let mut stale_answered = false;
        let mut auth_leg = None;
        for _ in 0..4 {
            let req = self.next(expires);
            let (r, n) = link.transact(&req, deadline).await;
            if let Some(n) = n {
                retransmits = Some(retransmits.unwrap_or(0) + n);
            }
            let m = r.map_err(|e| (e, retransmits))?;
            let code = m.code().unwrap_or(0);
            let algorithm = req
                .auth
                .as_ref()
                .and(self.answered.as_ref())
                .map(|a| a.challenge.algorithm.as_str());
            let challenged = code == 401 || code == 407;
            let has_credentials = self.spec.auth.is_some();
            if has_credentials && code == 403 && req.auth.is_some() {
                return Err((
                    CheckError::new(
                        ErrorKind::AuthFailed,
                        format!(
                            "{} answered {} to our credentials",
                            req.method,
                            super::status_line(&m)
                        ),
                    ),
                    retransmits,
                ));
            }
            if !(has_credentials && challenged) {
                // The final answer (a 401/407 without credentials is judged by the verdict).
                return Ok(Exchange {
                    response: m,
                    latency: start.elapsed(),
                    auth_leg,
                    retransmits,
                    algorithm,
                    cert: self.cert.clone(),
                });
            }
            let line = super::status_line(&m);
            let c = self.challenge_of(&m).map_err(|e| (e, retransmits))?;
            let again = fresh_answered && (!c.stale || stale_answered);
            if again {
                return Err((
                    CheckError::new(
                        ErrorKind::AuthFailed,
                        format!(
                            "{} answered {line} again after digest authentication: credentials rejected",
                            req.method
                        ),
                    ),
                    retransmits,
                ));
            }
            if fresh_answered {
                stale_answered = true;
            }
            fresh_answered = true;
            self.answered = Some(Answered {
                challenge: c,
                cnonce: message::random_hex(16),
                nc: 0,
            });
            auth_leg = Some(start.elapsed());
        }
        Err((
            CheckError::new(
                ErrorKind::AuthFailed,
                "the server kept challenging: credentials rejected",
            ),
            retransmits,
        ))
    }
}
