//! A circuit breaker per plugin: after `threshold` consecutive failures the
//! plugin is skipped (its failure mode decides the answer) for `cool_down`;
//! then one request at a time probes it, and a success closes the breaker.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Breaker state, lock-free so the request path never waits on it.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    failures: AtomicU32,
    /// When the breaker opened, in nanoseconds since `epoch`; 0 when closed.
    opened_at: AtomicU64,
    probing: AtomicBool,
    epoch: Instant,
}

/// What the breaker allows for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: call the plugin.
    Call,
    /// Half-open: this call is the probe.
    Probe,
    /// Open: do not call the plugin.
    Reject,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        // At least 1 so that 0 keeps meaning "closed".
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// Asks whether a call may go ahead.
    pub fn permit(&self) -> Permit {
        let opened = self.opened_at.load(Ordering::Acquire);
        if opened == 0 {
            return Permit::Call;
        }
        if self.now().saturating_sub(opened) < self.cool_down.as_nanos() as u64 {
            return Permit::Reject;
        }
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            Permit::Probe
        } else {
            Permit::Reject
        }
    }

    /// Records a successful call.
    pub fn success(&self, permit: Permit) {
        self.failures.store(0, Ordering::Release);
        if permit == Permit::Probe {
            self.opened_at.store(0, Ordering::Release);
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Records a failed call (trap, timeout, broken contract).
    pub fn failure(&self, permit: Permit) {
        if permit == Permit::Probe {
            // Still broken: another full cool-down.
            self.opened_at.store(self.now(), Ordering::Release);
            self.probing.store(false, Ordering::Release);
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.threshold && self.opened_at.load(Ordering::Acquire) == 0 {
            self.opened_at.store(self.now(), Ordering::Release);
        }
    }

    /// Whether the breaker is open (or half-open).
    pub fn is_open(&self) -> bool {
        self.opened_at.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_recovers_through_a_probe() {
        let b = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            let p = b.permit();
            assert_eq!(p, Permit::Call);
            b.failure(p);
        }
        assert!(!b.is_open());
        b.failure(b.permit());
        assert!(b.is_open());
        assert_eq!(b.permit(), Permit::Reject);
        std::thread::sleep(Duration::from_millis(40));
        let probe = b.permit();
        assert_eq!(probe, Permit::Probe);
        assert_eq!(b.permit(), Permit::Reject, "one probe at a time");
        b.failure(probe);
        assert_eq!(
            b.permit(),
            Permit::Reject,
            "a failed probe starts a new cool-down"
        );
        std::thread::sleep(Duration::from_millis(40));
        let probe = b.permit();
        b.success(probe);
        assert!(!b.is_open());
        assert_eq!(b.permit(), Permit::Call);
    }
}
