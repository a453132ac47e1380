//! Publish rate limits: a budget per WebSocket connection, and one per client
//! address for `POST /v1/payloads`. Peers' inbox requests are not limited here:
//! they are authenticated and bounded by batch size.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

pub struct RateLimits {
    /// None when `publish_rate` is 0 (unlimited).
    quota: Option<Quota>,
    http: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Checks since the per-address table was last swept of idle addresses.
    checks: AtomicU64,
}

/// Whole seconds until the budget allows another publish (at least 1).
pub type RetryAfter = u64;

impl RateLimits {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let quota = NonZeroU32::new(per_second).map(|rate| {
            Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate))
        });
        Self {
            quota,
            http: quota.map(DefaultKeyedRateLimiter::keyed),
            checks: AtomicU64::new(0),
        }
    }

    /// A fresh budget for one WebSocket connection.
    pub fn for_connection(&self) -> Option<DefaultDirectRateLimiter> {
        self.quota.map(DefaultDirectRateLimiter::direct)
    }

    pub fn check_connection(limiter: &Option<DefaultDirectRateLimiter>) -> Result<(), RetryAfter> {
        match limiter {
            Some(l) => l
                .check()
                .map_err(|e| retry_after(e.wait_time_from(DefaultClock::default().now()))),
            None => Ok(()),
        }
    }

    /// One HTTP publish from `ip`.
    pub fn check_http(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        let Some(limiter) = &self.http else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&ip)
            .map_err(|e| retry_after(e.wait_time_from(DefaultClock::default().now())))
    }
}

fn retry_after(wait: std::time::Duration) -> RetryAfter {
    wait.as_secs_f64().ceil().max(1.0) as u64
}
