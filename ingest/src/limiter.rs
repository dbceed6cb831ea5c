//! The per-key rate limit: a token bucket per write key, refilled continuously at the configured
//! events per second up to the burst size; each event takes one token. A request whose events do
//! not fit gets 429 with the whole seconds until they would (`Retry-After`). A request larger than
//! the bucket is let through when the bucket is full (the bucket then goes into debt), so no batch
//! that passes the size limits is refused for ever. Buckets of keys idle for a minute are dropped.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{config::RateLimit, error::IngestError};

/// Keys with a bucket at most (older, idle ones are evicted first).
const MAX_KEYS: u64 = 100_000;

#[derive(Clone)]
pub struct RateLimiter {
    /// Tokens added per second; 0 turns the limit off.
    rate: f64,
    /// The bucket's size.
    burst: f64,
    buckets: moka::sync::Cache<Arc<str>, Arc<Mutex<Bucket>>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(config: &RateLimit) -> Self {
        Self {
            rate: f64::from(config.events_per_second),
            burst: f64::from(config.burst.max(1)),
            buckets: moka::sync::Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        }
    }

    /// Takes `events` tokens from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &Arc<str>, events: usize) -> Result<(), IngestError> {
        if self.rate <= 0.0 || events == 0 {
            return Ok(());
        }
        let bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.burst,
                updated: Instant::now(),
            }))
        });
        let mut bucket = bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        let cost = events as f64;
        if bucket.tokens >= cost || bucket.tokens >= self.burst {
            bucket.tokens -= cost;
            return Ok(());
        }
        let missing = cost.min(self.burst) - bucket.tokens;
        let seconds = (missing / self.rate).ceil().clamp(1.0, f64::from(u32::MAX));
        Err(IngestError::RateLimited(seconds as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_may_burst_then_is_limited_and_other_keys_are_not() {
        let limiter = RateLimiter::new(&RateLimit {
            events_per_second: 1,
            burst: 10,
        });
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(limiter.check(&a, 10).is_ok());
        match limiter.check(&a, 3) {
            Err(IngestError::RateLimited(seconds)) => assert!((2..=3).contains(&seconds), "{seconds}"),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limiter.check(&b, 10).is_ok());
    }

    #[test]
    fn a_batch_larger_than_the_bucket_passes_when_the_bucket_is_full() {
        let limiter = RateLimiter::new(&RateLimit {
            events_per_second: 1,
            burst: 10,
        });
        let key: Arc<str> = "k".into();
        assert!(limiter.check(&key, 25).is_ok());
        assert!(limiter.check(&key, 1).is_err());
    }
}
