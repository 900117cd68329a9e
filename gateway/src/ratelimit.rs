//! Rate limiting per consumer system and service (GCRA, `governor`), set
//! by policy. An over-limit request is answered `429` with `Retry-After`
//! and the IETF `RateLimit-Policy` / `RateLimit` fields.

use crate::policy::RateLimitPolicy;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

/// The limiter of one policy version.
pub struct RateLimits {
    limiter: DefaultKeyedRateLimiter<(i64, i64)>,
    per_second: u32,
    burst: u32,
}

/// A refusal: how long to wait, and the headers that say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Seconds until a request would be allowed (at least 1).
    pub retry_after_secs: u64,
    /// `RateLimit-Policy` value.
    pub policy_header: String,
    /// `RateLimit` value.
    pub limit_header: String,
}

impl RateLimits {
    /// A limiter for `policy`, or `None` when it sets no limit.
    pub fn new(policy: Option<&RateLimitPolicy>) -> Option<RateLimits> {
        let p = policy?;
        let per_second = NonZeroU32::new(p.requests_per_second)?;
        let burst = NonZeroU32::new(p.burst.max(p.requests_per_second)).unwrap_or(per_second);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Some(RateLimits {
            limiter: RateLimiter::keyed(quota),
            per_second: per_second.get(),
            burst: burst.get(),
        })
    }

    /// A limiter for effective settings, or `None` when they set no limit.
    pub fn from_settings(s: &crate::policy::scope::RateLimitSettings) -> Option<RateLimits> {
        Self::new(Some(&RateLimitPolicy {
            requests_per_second: s.requests_per_second,
            burst: s.burst,
        }))
    }

    /// Admits or refuses one request of `consumer` to `service`.
    pub fn check(&self, consumer: i64, service: i64) -> Result<(), Refusal> {
        self.limiter
            .check_key(&(consumer, service))
            .map_err(|not_until| {
                let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let retry_after_secs = retry_after_secs.max(1);
                Refusal {
                    retry_after_secs,
                    policy_header: format!("\"consumer-service\";q={};w=1", self.per_second),
                    limit_header: format!("\"consumer-service\";r=0;t={retry_after_secs}"),
                }
            })
    }

    /// The configured burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Forgets keys idle long enough to be full again (bounded memory).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_burst_per_key() {
        let limits = RateLimits::new(Some(&RateLimitPolicy {
            requests_per_second: 1,
            burst: 3,
        }))
        .unwrap();
        for _ in 0..3 {
            assert!(limits.check(1, 7).is_ok());
        }
        let refusal = limits.check(1, 7).unwrap_err();
        assert!(refusal.retry_after_secs >= 1);
        assert_eq!(refusal.policy_header, "\"consumer-service\";q=1;w=1");
        assert!(
            limits.check(2, 7).is_ok(),
            "another consumer has its own budget"
        );
        assert!(RateLimits::new(None).is_none());
        assert!(RateLimits::new(Some(&RateLimitPolicy {
            requests_per_second: 0,
            burst: 0
        }))
        .is_none());
    }
}
