//! Publish rate limits: a budget per WebSocket connection, and one per client
//! address for `POST /v1/payloads`. Peers' inbox requests are not limited here:
//! they are authenticated and bounded by batch size.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
pub use meshrelay_federation::rate::RetryAfter;
use meshrelay_federation::rate::{retry_after, KeyedRate};

pub struct RateLimits {
    /// None when `publish_rate` is 0 (unlimited).
    quota: Option<Quota>,
    http: KeyedRate<IpAddr>,
}

impl RateLimits {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let quota = NonZeroU32::new(per_second).map(|rate| {
            Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate))
        });
        Self {
            quota,
            http: KeyedRate::per_second(per_second, burst),
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
        self.http.check(&ip)
    }
}
