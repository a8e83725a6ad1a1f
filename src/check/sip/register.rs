//! REGISTER (RFC 3261 §10): registering the configured user, judging the registrar's
//! answer, reading the expiry it granted to our binding, and removing the binding again
//! (`Expires: 0`).

use std::time::Duration;

use tokio::time::Instant;

use super::caller::{Caller, Exchange};
use super::message::Message;
use super::transport::Link;
use super::{CheckError, ErrorKind, Outcome, Perf, SipSpec, Verdict, status_line, with_facts};

/// Longest a removal of our binding may take (shutdown waits for it; the supervisor
/// gives a session 2 s to finish).
pub const UNREGISTER_WITHIN: Duration = Duration::from_millis(900);

/// Largest `Min-Expires` we follow after a 423 (one week).
const MAX_MIN_EXPIRES: u32 = 7 * 86_400;

/// A registration the registrar accepted: the outcome and the expiry it granted.
pub struct Registered {
    /// The verdict and facts.
    pub outcome: Outcome,
    /// Seconds the binding lasts (`None` when the registration failed).
    pub granted: Option<u32>,
}

/// The entries of every `Contact` header, split at commas outside quotes and `<…>`.
fn contacts(m: &Message) -> Vec<&str> {
    let mut out = Vec::new();
    for v in m.headers_named("contact") {
        let (mut quoted, mut angle, mut from) = (false, false, 0);
        for (i, c) in v.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '<' if !quoted => angle = true,
                '>' if !quoted => angle = false,
                ',' if !quoted && !angle => {
                    out.push(v[from..i].trim());
                    from = i + 1;
                }
                _ => {}
            }
        }
        out.push(v[from..].trim());
    }
    out.retain(|c| !c.is_empty());
    out
}

/// The expiry the registrar granted to `contact` (our URI): its Contact entry's
/// `expires` parameter, else the `Expires` header (RFC 3261 §10.2.4). Also returns how
/// many bindings the address of record has.
pub fn granted_expires(m: &Message, contact: &str) -> (Option<u32>, usize) {
    let all = contacts(m);
    let ours = all.iter().find(|c| {
        let uri = c
            .split_once('<')
            .and_then(|(_, r)| r.split_once('>'))
            .map_or(**c, |(u, _)| u);
        uri.eq_ignore_ascii_case(contact)
            || contact
                .rsplit_once(";line=")
                .is_some_and(|(_, token)| uri.contains(&format!("line={token}")))
    });
    let from_contact = ours.and_then(|c| {
        let params = c.rsplit_once('>').map_or(*c, |(_, p)| p);
        super::message::param(params, "expires").and_then(|e| e.parse::<u32>().ok())
    });
    let header = m
        .header("expires")
        .and_then(|e| e.trim().parse::<u32>().ok());
    (from_contact.or(header), all.len())
}

/// Turns the final answer to a REGISTER into an outcome (2xx is success; the
/// `maintenance_codes` and 503 warn; 401/403/407 are `auth_failed`; anything else is
/// `rejected`).
fn judge(spec: &SipSpec, caller: &Caller, ex: &Exchange, requested: u32) -> Registered {
    let m = &ex.response;
    let code = m.code().unwrap_or(0);
    let line = status_line(m);
    let user = spec.auth.as_ref().map_or("", |a| a.username.as_str());
    let mut granted = None;
    let o = if (200..300).contains(&code) {
        let (g, bindings) = granted_expires(m, caller.contact());
        let g = g.unwrap_or(requested);
        if g == 0 {
            Outcome::down(
                CheckError::new(
                    ErrorKind::Rejected,
                    format!("REGISTER answered {line} but granted no time (expires 0)"),
                ),
                ex.latency,
            )
        } else {
            granted = Some(g);
            let mut o = Outcome::up(ex.latency)
                .with_message(format!("registered {user} for {g}s ({line})"))
                .with_detail("registered", true)
                .with_detail("expires", g)
                .with_detail("bindings", bindings);
            o.perfdata.push(Perf {
                label: "expires".into(),
                value: f64::from(g),
            });
            o
        }
    } else if code == 503 || spec.maintenance_codes.iter().any(|r| r.contains(&code)) {
        let mut o = Outcome::up(ex.latency).with_message(format!(
            "{line} (registrar shedding load or in maintenance)"
        ));
        o.verdict = Verdict::Warn(Some(ErrorKind::Rejected));
        o
    } else {
        let kind = if matches!(code, 401 | 403 | 407) {
            ErrorKind::AuthFailed
        } else {
            ErrorKind::Rejected
        };
        Outcome::down(
            CheckError::new(kind, format!("REGISTER of {user} answered {line}")),
            ex.latency,
        )
    };
    let o = with_facts(o, m, ex, spec);
    Registered {
        outcome: o,
        granted,
    }
}

/// Registers (answering a challenge once; after a 423 once more with the registrar's
/// `Min-Expires`) and judges the answer.
pub(super) async fn register(
    spec: &SipSpec,
    caller: &mut Caller,
    link: &mut Link,
    deadline: Instant,
) -> Result<Registered, (CheckError, Option<u32>)> {
    let mut requested = spec.expires;
    let mut ex = caller.transaction(link, Some(requested), deadline).await?;
    if ex.response.code() == Some(423)
        && let Some(min) = ex
            .response
            .header("min-expires")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|m| *m > requested && *m <= MAX_MIN_EXPIRES)
    {
        requested = min;
        let first = ex.retransmits;
        let latency = ex.latency;
        ex = caller.transaction(link, Some(requested), deadline).await?;
        ex.latency += latency;
        ex.retransmits = match (first, ex.retransmits) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
    Ok(judge(spec, caller, &ex, requested))
}

/// Removes our binding (`Expires: 0`), within `deadline`.
pub(super) async fn unregister(
    caller: &mut Caller,
    link: &mut Link,
    deadline: Instant,
) -> Result<(), CheckError> {
    let ex = caller
        .transaction(link, Some(0), deadline)
        .await
        .map_err(|(e, _)| e)?;
    match ex.response.code() {
        Some(200..=299) => Ok(()),
        _ => Err(CheckError::new(
            ErrorKind::Rejected,
            format!("unregister answered {}", status_line(&ex.response)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::{Framing, parse};
    use super::*;

    fn ok(contacts: &str, expires: &str) -> Message {
        let raw = format!("SIP/2.0 200 OK\r\n{contacts}{expires}Content-Length: 0\r\n\r\n");
        parse(raw.as_bytes(), Framing::Datagram).expect("valid").0
    }

    #[test]
    fn granted_expiry_comes_from_our_contact_first() {
        let ours = "sip:alice@127.0.0.1:5000;transport=udp;line=abc123";
        let m = ok(
            "Contact: <sip:alice@10.0.0.9:5060>;expires=3600, \"Desk, phone\" <sip:alice@x;line=abc123>;expires=120\r\nm: <sip:alice@y>;expires=5\r\n",
            "Expires: 600\r\n",
        );
        assert_eq!(granted_expires(&m, ours), (Some(120), 3));
        let m = ok(
            "Contact: <sip:alice@10.0.0.9:5060>;expires=3600\r\n",
            "Expires: 600\r\n",
        );
        assert_eq!(granted_expires(&m, ours), (Some(600), 1));
        let m = ok("", "");
        assert_eq!(granted_expires(&m, ours), (None, 0));
        let m = ok("Contact: <sip:alice@x;line=abc123>;expires=junk\r\n", "");
        assert_eq!(granted_expires(&m, ours), (None, 1));
    }
}
