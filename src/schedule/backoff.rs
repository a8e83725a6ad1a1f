//! Retry delays (SPEC §4): after the n-th consecutive failure wait
//! `min(base * multiplier^(n-1), max) + U[0, jitter)`; from `max_attempts` on, `max + U[0, jitter)`.

use std::time::Duration;

use crate::config::BackoffConfig;

/// A backoff policy with its own random source (seeded per check; tests inject a seed).
#[derive(Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A policy; `seed` makes jitter reproducible.
    pub fn new(cfg: BackoffConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The delay before the base part (no jitter) after the `n`-th consecutive failure.
    pub fn base_delay(&self, n: u32) -> Duration {
        let c = &self.cfg;
        if n == 0 {
            return Duration::ZERO;
        }
        if c.max_attempts > 0 && n >= c.max_attempts {
            return c.max;
        }
        let exp = i32::try_from(n - 1).unwrap_or(i32::MAX);
        let factor = c.multiplier.powi(exp);
        let secs = c.base.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= c.max.as_secs_f64() {
            c.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The full delay after the `n`-th consecutive failure, jitter included.
    pub fn delay(&mut self, n: u32) -> Duration {
        let jitter = if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            let nanos = self.cfg.jitter.as_nanos().min(u128::from(u64::MAX)) as u64;
            Duration::from_nanos(self.rng.u64(0..nanos))
        };
        self.base_delay(n) + jitter
    }

    /// True exactly when the `n`-th failure is the one that reaches `max_attempts`.
    pub fn reached_max(&self, n: u32) -> bool {
        self.cfg.max_attempts > 0 && n == self.cfg.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(jitter_ms: u64, max_attempts: u32) -> BackoffConfig {
        BackoffConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: Duration::from_millis(jitter_ms),
            max_attempts,
        }
    }

    #[test]
    fn sequence_doubles_and_caps() {
        let b = Backoff::new(cfg(0, 0), 1);
        let secs: Vec<u64> = (1..=7).map(|n| b.base_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.base_delay(10_000), Duration::from_secs(30), "no overflow");
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut b = Backoff::new(cfg(1000, 0), 7);
        for n in 1..50 {
            let d = b.delay(n);
            let base = b.base_delay(n);
            assert!(d >= base && d < base + Duration::from_secs(1), "{n}: {d:?}");
        }
    }

    #[test]
    fn after_max_attempts_waits_max() {
        let b = Backoff::new(cfg(0, 3), 1);
        assert_eq!(b.base_delay(2), Duration::from_secs(2));
        assert_eq!(b.base_delay(3), Duration::from_secs(30));
        assert!(b.reached_max(3));
        assert!(!b.reached_max(4));
    }
}
