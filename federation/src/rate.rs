//! Rate limits keyed by who asks (an address, a peer's key), on governor: a
//! budget per key, and the table of keys swept of idle ones as it is used, so
//! many strangers cannot grow it without bound.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Whole seconds until the budget allows another request (at least 1).
pub type RetryAfter = u64;

/// Checks between two sweeps of idle keys.
const SWEEP_EVERY: u64 = 10_000;

pub struct KeyedRate<K: Hash + Eq + Clone> {
    /// None when the rate is 0 (unlimited).
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedRate<K> {
    /// `per_second` sustained, `burst` at once; 0 turns the limit off.
    pub fn per_second(per_second: u32, burst: u32) -> Self {
        let quota = NonZeroU32::new(per_second)
            .map(|r| Quota::per_second(r).allow_burst(NonZeroU32::new(burst).unwrap_or(r)));
        Self::with(quota)
    }

    /// `per_minute` over a minute, all of it available at once; 0: unlimited.
    pub fn per_minute(per_minute: u32) -> Self {
        Self::with(NonZeroU32::new(per_minute).map(Quota::per_minute))
    }

    fn with(quota: Option<Quota>) -> Self {
        Self {
            limiter: quota.map(DefaultKeyedRateLimiter::keyed),
            checks: AtomicU64::new(0),
        }
    }

    /// One request from `key`.
    pub fn check(&self, key: &K) -> Result<(), RetryAfter> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter
            .check_key(key)
            .map_err(|e| retry_after(e.wait_time_from(DefaultClock::default().now())))
    }
}

/// A wait as whole seconds to put in `Retry-After`.
pub fn retry_after(wait: std::time::Duration) -> RetryAfter {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_and_others_are_unaffected() {
        let rate = KeyedRate::per_second(1, 3);
        for _ in 0..3 {
            assert!(rate.check(&"a").is_ok());
        }
        assert_eq!(rate.check(&"a"), Err(1));
        assert!(rate.check(&"b").is_ok());
        let off = KeyedRate::per_second(0, 0);
        assert!((0..1000).all(|_| off.check(&"a").is_ok()));
        let minute = KeyedRate::per_minute(2);
        assert!(minute.check(&1).is_ok() && minute.check(&1).is_ok());
        assert!(minute.check(&1).unwrap_err() >= 1);
    }
}
