//! `mode = "session"` for `sip`: one transport kept open. Each heartbeat is an OPTIONS
//! (method OPTIONS) or a refreshing REGISTER (method REGISTER) on it. A registration is
//! also refreshed on its own at [`REFRESH_FRACTION`] of the expiry the registrar granted,
//! so it never lapses between heartbeats, and is removed (`Expires: 0`) on shutdown.
//! A connection the server closes ends the session at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::caller::Caller;
use super::register::{self, UNREGISTER_WITHIN};
use super::transport::Link;
use super::{
    BoxFuture, CheckError, ErrorKind, Method, Outcome, SipSpec, TIMER_F, failed, own_budget,
};
use crate::check::{Phases, Session, SessionIo};

/// Part of the granted expiry after which a registration is refreshed.
pub const REFRESH_FRACTION: f64 = 0.75;

/// A live `sip` session.
pub struct SipSession {
    spec: Arc<SipSpec>,
    link: Link,
    caller: Caller,
    /// REGISTER: when the binding expires and when to refresh it.
    expiry: Option<(Instant, Instant)>,
}

/// When the binding expires and when to refresh it: at [`REFRESH_FRACTION`] of the
/// granted time, or at half of it under 8 s (registrars count whole seconds, so a binding
/// of `n` seconds may lapse up to a second early).
fn times(granted: u32) -> (Instant, Instant) {
    let now = Instant::now();
    let g = Duration::from_secs(u64::from(granted));
    let fraction = if granted < 8 { 0.5 } else { REFRESH_FRACTION };
    (now + g, now + g.mul_f64(fraction))
}

impl SipSession {
    /// A session on an open link whose first request gave `outcome`.
    pub(super) fn new(spec: Arc<SipSpec>, link: Link, caller: Caller, outcome: &Outcome) -> Self {
        let expiry = outcome
            .details
            .get("expires")
            .and_then(|v| v.as_u64())
            .map(|g| times(g.min(u64::from(u32::MAX)) as u32));
        Self {
            spec,
            link,
            caller,
            expiry,
        }
    }

    /// One OPTIONS or REGISTER refresh. `Err` ends the session (the connection is gone,
    /// the server speaks garbage, or the registration's credentials are refused).
    async fn exchange(&mut self, timeout: Duration) -> Result<Outcome, CheckError> {
        let start = Instant::now();
        let budget = own_budget(timeout);
        let deadline = start + budget.min(TIMER_F);
        let method = self.spec.method;
        let r = match method {
            Method::Options => self
                .caller
                .transaction(&mut self.link, None, deadline)
                .await
                .map(|ex| self.spec.judge_options(&ex)),
            Method::Register => {
                register::register(&self.spec, &mut self.caller, &mut self.link, deadline)
                    .await
                    .map(|r| {
                        if let Some(g) = r.granted {
                            self.expiry = Some(times(g));
                        }
                        r.outcome
                    })
            }
        };
        let o = match r {
            Ok(o) => o,
            Err((e, _)) if matches!(e.kind, ErrorKind::Closed | ErrorKind::Protocol) => {
                return Err(e);
            }
            Err((e, n)) => failed(method, e, n, budget, start, Phases::default()),
        };
        if o.error_kind() == Some(ErrorKind::AuthFailed) {
            return Err(CheckError::new(ErrorKind::AuthFailed, &o.message));
        }
        if !o.is_success()
            && let Some((expires_at, refresh_at)) = &mut self.expiry
        {
            let now = Instant::now();
            if now >= *expires_at {
                return Err(CheckError::new(
                    ErrorKind::Rejected,
                    format!("registration expired: refresh failed ({})", o.message),
                ));
            }
            // Try again before it lapses.
            *refresh_at = now + (*expires_at - now).div_f64(2.0).max(Duration::from_secs(1));
        }
        Ok(o)
    }

    /// Logs off: removes the binding (bounded) and closes the transport.
    async fn leave(&mut self, timeout: Duration) -> CheckError {
        if self.spec.method == Method::Register && self.expiry.is_some() {
            let within = timeout.min(UNREGISTER_WITHIN);
            match register::unregister(&mut self.caller, &mut self.link, Instant::now() + within)
                .await
            {
                Ok(()) => tracing::debug!("sip: registration removed"),
                Err(e) => tracing::warn!(error = %e, "sip: could not remove the registration"),
            }
        }
        self.link.close(Duration::from_millis(300)).await;
        CheckError::new(ErrorKind::Closed, "agent closed the session")
    }
}

impl Session for SipSession {
    fn run(self: Box<Self>, mut io: SessionIo) -> BoxFuture<'static, CheckError> {
        Box::pin(async move {
            let mut s = *self;
            let far = || Instant::now() + Duration::from_secs(86_400 * 365);
            loop {
                let refresh_at = s.expiry.map_or_else(far, |(_, r)| r);
                let is_register = s.expiry.is_some();
                tokio::select! {
                    _ = io.shutdown.cancelled() => return s.leave(io.timeout).await,
                    b = io.beats.recv() => {
                        if b.is_none() {
                            return s.leave(io.timeout).await;
                        }
                        let o = match s.exchange(io.timeout).await {
                            Ok(o) => o,
                            Err(e) => return e,
                        };
                        if io.report.send(o).await.is_err() {
                            return s.leave(io.timeout).await;
                        }
                    }
                    _ = sleep_until(refresh_at), if is_register => {
                        let o = match s.exchange(io.timeout).await {
                            Ok(o) => o,
                            Err(e) => return e,
                        };
                        if io.report.send(o).await.is_err() {
                            return s.leave(io.timeout).await;
                        }
                    }
                    e = s.link.idle() => return e,
                }
            }
        })
    }
}
