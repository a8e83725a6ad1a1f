//! `push` (probe): a dead man's switch for cron jobs and batch workers. Nothing is
//! connected to; the job calls the agent (`POST`/`GET /api/v1/push/{name}` with the
//! check's `token`, see `http/push.rs`) and the check is healthy while pushes keep
//! arriving within `interval + grace`. A push may say `status` (up/degraded/down),
//! `message` and `latency_ms`. No push within the window: unhealthy, `error_kind =
//! "timeout"`.
//!
//! The pushes live on the agent's [`PushBoard`] (given to kinds through
//! [`BuildEnv::push`]); the HTTP route records a push there and forces the check, and
//! arms one timer per check that forces it again when the window runs out, so a missing
//! push is noticed on time, not at the next `interval`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, ErrorKind, KindSpec, Outcome, ParseCx, Verdict,
};
use crate::config::raw::Table;
use crate::secret::Secret;

/// Default `grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Longest pushed `message` kept, in characters.
pub const MAX_MESSAGE: usize = 1024;

/// What a pushing job says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushStatus {
    /// It worked (the default).
    Up,
    /// It worked, badly: `degraded`.
    Degraded,
    /// It failed: `unhealthy` (`error_kind = "rejected"`).
    Down,
}

impl PushStatus {
    /// Reads `up`, `degraded` or `down` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "up" => Some(Self::Up),
            "degraded" => Some(Self::Degraded),
            "down" => Some(Self::Down),
            _ => None,
        }
    }

    /// The name as pushed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

/// One push.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// When it arrived.
    pub at: Instant,
    /// What the job said.
    pub status: PushStatus,
    /// Its message (at most [`MAX_MESSAGE`] characters, redacted when reported).
    pub message: String,
    /// The job's own measure of its run, reported as the check's latency.
    pub latency: Option<Duration>,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushRefused {
    /// No `push` check of that name runs here.
    #[error("no push check of that name")]
    Unknown,
    /// The token is missing or wrong.
    #[error("missing or wrong push token")]
    BadToken,
}

struct Slot {
    token: Secret<String>,
    window: Duration,
    last: Option<Push>,
    timer: Option<tokio::task::AbortHandle>,
}

/// The pushes every `push` check of the agent has received, by check name. Shared by the
/// checks (read) and the HTTP route (write); survives reloads.
#[derive(Default)]
pub struct PushBoard {
    slots: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for PushBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushBoard")
            .field("checks", &self.slots.lock().len())
            .finish()
    }
}

impl PushBoard {
    /// Declares (or updates, on reload) the check `name` with its token and window.
    pub fn declare(&self, name: &str, token: Secret<String>, window: Duration) {
        let mut slots = self.slots.lock();
        let slot = slots.entry(name.to_string()).or_insert_with(|| Slot {
            token: token.clone(),
            window,
            last: None,
            timer: None,
        });
        slot.token = token;
        slot.window = window;
    }

    /// Forgets checks not in `names` (after a reload removed them).
    pub fn retain(&self, names: &[String]) {
        self.slots.lock().retain(|n, s| {
            let keep = names.contains(n);
            if !keep && let Some(t) = s.timer.take() {
                t.abort();
            }
            keep
        });
    }

    /// Records `push` for `name` if `token` is its token (compared in constant time).
    /// Returns the check's window (`interval + grace`).
    pub fn record(&self, name: &str, token: &str, push: Push) -> Result<Duration, PushRefused> {
        let mut slots = self.slots.lock();
        let slot = slots.get_mut(name).ok_or(PushRefused::Unknown)?;
        if !constant_time_eq(token.as_bytes(), slot.token.expose().as_bytes()) {
            return Err(PushRefused::BadToken);
        }
        slot.last = Some(push);
        Ok(slot.window)
    }

    /// Keeps `timer` as the check's one pending window timer, aborting the previous one.
    pub fn arm(&self, name: &str, timer: tokio::task::AbortHandle) {
        let mut slots = self.slots.lock();
        match slots.get_mut(name) {
            Some(slot) => {
                if let Some(old) = slot.timer.replace(timer) {
                    old.abort();
                }
            }
            None => timer.abort(),
        }
    }

    /// The last push `name` received.
    pub fn last(&self, name: &str) -> Option<Push> {
        self.slots.lock().get(name).and_then(|s| s.last.clone())
    }
}

/// Equal bytes, in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `push` settings.
#[derive(Debug, Clone)]
pub struct PushSpec {
    /// The check's name (the route's `{name}`).
    pub name: String,
    /// The token a push must carry.
    pub token: Secret<String>,
    /// How often pushes are expected (the check's `interval`).
    pub interval: Duration,
    /// How late a push may be.
    pub grace: Duration,
}

/// Reads `token` (required, a secret, at least 16 characters) and `grace`.
pub fn parse(t: &Table<'_, '_>, cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let token = match (t.raw("token"), t.secret("token")) {
        (Some(raw), Some(tok)) => {
            if tok.expose().chars().count() < 16 || tok.expose().contains(char::is_whitespace) {
                t.error(
                    raw.span(),
                    "`token` must be at least 16 characters without spaces (e.g. `openssl rand -hex 16`)",
                );
                None
            } else {
                Some(tok)
            }
        }
        (None, _) => {
            t.missing("token");
            None
        }
        (Some(_), None) => None,
    };
    let grace = if t.has("grace") {
        t.duration("grace")?
    } else {
        DEFAULT_GRACE
    };
    Some(Arc::new(PushSpec {
        name: cx.check.to_string(),
        token: token?,
        interval: cx.interval,
        grace,
    }))
}

impl KindSpec for PushSpec {
    fn build(&self, env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        env.push
            .declare(&self.name, self.token.clone(), self.interval + self.grace);
        Ok(Arc::new(PushCheck {
            spec: self.clone(),
            board: env.push.clone(),
            started: Instant::now(),
        }))
    }
}

/// A built `push` check.
pub struct PushCheck {
    spec: PushSpec,
    board: Arc<PushBoard>,
    started: Instant,
}

impl PushCheck {
    /// The verdict on the pushes so far.
    pub fn judge(&self) -> Outcome {
        let window = self.spec.interval + self.spec.grace;
        let fmt = crate::time::fmt_duration;
        let expected = format!(
            "expected every {} (+{} grace)",
            fmt(self.spec.interval),
            fmt(self.spec.grace)
        );
        let Some(p) = self.board.last(&self.spec.name) else {
            let waited = self.started.elapsed();
            if waited <= window {
                return Outcome {
                    verdict: Verdict::Unknown,
                    message: format!("waiting for the first push ({expected})"),
                    ..Outcome::up(Duration::ZERO)
                };
            }
            return Outcome::down(
                CheckError::new(
                    ErrorKind::Timeout,
                    format!("no push received in {}; {expected}", fmt(round(waited))),
                ),
                Duration::ZERO,
            );
        };
        let age = p.at.elapsed();
        let latency = p.latency.unwrap_or(Duration::ZERO);
        let mut o = if age > window {
            Outcome::down(
                CheckError::new(
                    ErrorKind::Timeout,
                    format!("last push {} ago; {expected}", fmt(round(age))),
                ),
                latency,
            )
        } else {
            let said = if p.message.is_empty() {
                format!("pushed {}", p.status.as_str())
            } else {
                crate::secret::redact(&p.message)
            };
            match p.status {
                PushStatus::Up => Outcome::up(latency).with_message(said),
                PushStatus::Degraded => Outcome {
                    verdict: Verdict::Warn(Some(ErrorKind::Rejected)),
                    ..Outcome::up(latency).with_message(said)
                },
                PushStatus::Down => Outcome::down(
                    CheckError::new(ErrorKind::Rejected, format!("job reported down: {said}")),
                    latency,
                ),
            }
        };
        o = o
            .with_detail("pushed_status", p.status.as_str())
            .with_detail("last_push_age_ms", age.as_millis() as u64);
        o
    }
}

/// Whole seconds (messages say "1m30s", not "1m30s 12ms 345us").
fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

impl Check for PushCheck {
    fn probe<'a>(&'a self, _at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move { self.judge() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(board: &Arc<PushBoard>) -> PushCheck {
        let spec = PushSpec {
            name: "job".into(),
            token: Secret::new("t".repeat(16)),
            interval: Duration::from_secs(60),
            grace: Duration::from_secs(10),
        };
        crate::net::tls::install_provider();
        let env = BuildEnv {
            http: crate::net::http_client::shared(),
            push: board.clone(),
        };
        let _ = spec.build(&env).expect("build");
        PushCheck {
            spec,
            board: board.clone(),
            started: Instant::now(),
        }
    }

    fn push(status: PushStatus, message: &str) -> Push {
        Push {
            at: Instant::now(),
            status,
            message: message.into(),
            latency: Some(Duration::from_millis(1500)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn window_and_statuses() {
        let board = Arc::new(PushBoard::default());
        let c = check(&board);
        assert_eq!(c.judge().verdict, Verdict::Unknown);
        tokio::time::advance(Duration::from_secs(71)).await;
        let o = c.judge();
        assert_eq!(
            o.verdict,
            Verdict::Down(ErrorKind::Timeout),
            "{}",
            o.message
        );
        assert!(
            o.message.contains("no push received in 1m11s"),
            "{}",
            o.message
        );

        let tok = "t".repeat(16);
        assert_eq!(
            board.record("job", "wrong", push(PushStatus::Up, "")),
            Err(PushRefused::BadToken)
        );
        assert_eq!(
            board.record("other", &tok, push(PushStatus::Up, "")),
            Err(PushRefused::Unknown)
        );
        assert_eq!(
            board.record("job", &tok, push(PushStatus::Up, "")),
            Ok(Duration::from_secs(70))
        );
        let o = c.judge();
        assert_eq!(o.verdict, Verdict::Up);
        assert_eq!(o.latency, Duration::from_millis(1500));
        assert_eq!(o.message, "pushed up");
        board
            .record("job", &tok, push(PushStatus::Degraded, "slow disk"))
            .expect("push");
        let o = c.judge();
        assert_eq!(o.verdict, Verdict::Warn(Some(ErrorKind::Rejected)));
        assert_eq!(o.message, "slow disk");
        board
            .record("job", &tok, push(PushStatus::Down, "backup failed"))
            .expect("push");
        assert_eq!(c.judge().verdict, Verdict::Down(ErrorKind::Rejected));
        board
            .record("job", &tok, push(PushStatus::Up, ""))
            .expect("push");
        tokio::time::advance(Duration::from_secs(70)).await;
        assert_eq!(c.judge().verdict, Verdict::Up, "exactly at the window");
        tokio::time::advance(Duration::from_secs(1)).await;
        let o = c.judge();
        assert_eq!(o.verdict, Verdict::Down(ErrorKind::Timeout));
        assert!(o.message.contains("last push 1m11s ago"), "{}", o.message);
        board.retain(&[]);
        assert_eq!(board.last("job"), None);
    }
}
