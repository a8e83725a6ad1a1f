//! The attempt's deadline, as ambient context for the network layer.
//!
//! The supervisor bounds every attempt from outside ([`scope`] around the attempt's
//! future). Code that must give up *before* that bound to report a precise
//! `error_kind` — a name lookup that reports `dns` rather than the supervisor's
//! `timeout`, or happy eyeballs sharing the time left between addresses — reads
//! [`remaining`]. Outside an attempt (notifiers, token fetches) there is no deadline and
//! callers use their own default.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `fut` with a deadline `timeout` from now; nested scopes keep the earlier one.
pub async fn scope<F: Future>(timeout: Duration, fut: F) -> F::Output {
    let mut at = Instant::now() + timeout;
    if let Some(outer) = current() {
        at = at.min(outer);
    }
    DEADLINE.scope(at, fut).await
}

/// The current attempt's deadline, if the caller runs inside [`scope`].
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Time left before the current deadline (zero once it has passed), or `None` outside
/// an attempt.
pub fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scope_sets_and_nests() {
        assert_eq!(remaining(), None);
        scope(Duration::from_secs(2), async {
            assert_eq!(remaining(), Some(Duration::from_secs(2)));
            scope(Duration::from_secs(5), async {
                assert_eq!(remaining(), Some(Duration::from_secs(2)));
            })
            .await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(remaining(), Some(Duration::ZERO));
        })
        .await;
        assert_eq!(remaining(), None);
    }
}
