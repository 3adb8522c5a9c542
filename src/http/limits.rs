//! Limits that hold under abuse: an upload rate per caller, and a cap on
//! uploads received at once. Both answer at once (429 or 503 with
//! `Retry-After`) rather than queueing a caller who would only time out.
//!
//! Both are per API process: behind a load balancer with N processes a
//! caller gets up to N times the rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::ApiError;
use crate::config::RateLimit;

/// Callers remembered at most; past this, those whose allowance has fully
/// come back are forgotten (they would start from full anyway).
const MAX_TRACKED_CALLERS: usize = 100_000;

/// The generic cell rate algorithm: each caller has a "theoretical arrival
/// time"; a request is allowed while it is no more than the burst ahead of
/// now. A burst of `count` is allowed, then one more per `per / count`.
/// One `Instant` per caller, whatever the rate.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    callers: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter { limit, callers: Mutex::new(HashMap::new()) }
    }

    fn interval(&self) -> Duration {
        self.limit.per / self.limit.count
    }

    /// `Err(wait)`: over the limit, allowed again after `wait`.
    pub fn check(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let interval = self.interval();
        let burst = self.limit.per.saturating_sub(interval);
        let mut callers = self.callers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if callers.len() >= MAX_TRACKED_CALLERS {
            callers.retain(|_, tat| *tat > now);
        }
        let tat = callers.get(caller).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > burst {
            return Err(ahead - burst);
        }
        callers.insert(caller.to_string(), tat + interval);
        Ok(())
    }
}

/// Upload rate and concurrency, shared by the upload handlers of a process.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    pub rate: Option<Arc<RateLimiter>>,
    pub slots: Arc<Semaphore>,
}

impl UploadLimits {
    pub fn new(rate: Option<RateLimit>, max_concurrent: usize) -> UploadLimits {
        UploadLimits {
            rate: rate.map(|r| Arc::new(RateLimiter::new(r))),
            slots: Arc::new(Semaphore::new(max_concurrent)),
        }
    }

    /// Admits one upload from `caller`: counts it against the rate, then
    /// takes a slot, held until the upload is answered.
    pub fn admit(&self, caller: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Some(rate) = &self.rate {
            rate.check(caller, Instant::now()).map_err(|wait| ApiError::TooManyRequests {
                message: format!(
                    "upload limit of {} per {} reached; try again in {} s",
                    rate.limit.count,
                    humantime::format_duration(rate.limit.per),
                    wait.as_secs().max(1)
                ),
                retry_after: wait,
            })?;
        }
        self.slot()
    }

    /// Takes an upload slot without counting a new upload against the rate:
    /// for the next piece of a resumable upload already counted.
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.slots.clone().try_acquire_owned().map_err(|_| ApiError::Busy {
            message: "the server is receiving as many uploads as it takes at once; try again shortly".into(),
            retry_after: Duration::from_secs(5),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_count_then_one_per_interval() {
        let limiter = RateLimiter::new(RateLimit { count: 5, per: Duration::from_secs(900) });
        let t0 = Instant::now();
        for _ in 0..5 {
            limiter.check("ip:1", t0).unwrap();
        }
        let wait = limiter.check("ip:1", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(180), "one upload comes back every 15 min / 5");
        limiter.check("ip:2", t0).expect("callers are counted apart");
        assert!(limiter.check("ip:1", t0 + Duration::from_secs(179)).is_err());
        limiter.check("ip:1", t0 + Duration::from_secs(180)).unwrap();
        assert!(limiter.check("ip:1", t0 + Duration::from_secs(181)).is_err());
        // After a whole period the full burst is back.
        for _ in 0..5 {
            limiter.check("ip:1", t0 + Duration::from_secs(2000)).unwrap();
        }
    }
}
