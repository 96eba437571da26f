//! In-memory keyed token buckets (per client IP, activist number, target
//! number). Per process: with several replicas, each enforces its own share.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Rate;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per key: `rate.count` tokens, refilled continuously over `rate.per`.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
    max_keys: usize,
}

impl<K: Eq + Hash + Clone> KeyedLimiter<K> {
    /// A limiter of `rate` per key.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
            max_keys: 100_000,
        }
    }

    fn per_token(&self) -> Duration {
        self.rate.per / self.rate.count.max(1)
    }

    /// Takes one token for `key` at `now`; `Err(wait)` when none is left.
    pub fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.rate.count);
        let refill_per_sec = capacity / self.rate.per.as_secs_f64().max(f64::MIN_POSITIVE);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.max_keys && !buckets.contains_key(key) {
            // Forget buckets that have refilled completely: they are equivalent to new ones.
            let full_after = self.rate.per;
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        }
        let b = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * refill_per_sec).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - b.tokens;
            let wait = Duration::from_secs_f64(missing / refill_per_sec);
            Err(wait.min(self.per_token()).max(Duration::from_millis(1)))
        }
    }

    /// Takes one token for `key` now.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }
}

/// The limits of `POST /v1/phone/call`; `None` disables one.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// Per client IP.
    pub per_ip: Option<KeyedLimiter<std::net::IpAddr>>,
    /// Per activist number (E.164).
    pub per_activist: Option<KeyedLimiter<String>>,
    /// Per target number (E.164).
    pub per_target: Option<KeyedLimiter<String>>,
}

impl RateLimits {
    /// Limits at these rates.
    pub fn new(per_ip: Option<Rate>, per_activist: Option<Rate>, per_target: Option<Rate>) -> Self {
        Self {
            per_ip: per_ip.map(KeyedLimiter::new),
            per_activist: per_activist.map(KeyedLimiter::new),
            per_target: per_target.map(KeyedLimiter::new),
        }
    }

    /// No limits.
    pub fn none() -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let l = KeyedLimiter::new(Rate::new(2, Duration::from_secs(60)));
        let t0 = Instant::now();
        assert!(l.check_at(&"a", t0).is_ok());
        assert!(l.check_at(&"a", t0).is_ok());
        let wait = l.check_at(&"a", t0).unwrap_err();
        assert!(
            wait <= Duration::from_secs(30) && wait > Duration::from_secs(29),
            "{wait:?}"
        );
        // other keys are independent
        assert!(l.check_at(&"b", t0).is_ok());
        // one token back after 30 s
        assert!(l.check_at(&"a", t0 + Duration::from_secs(30)).is_ok());
        assert!(l.check_at(&"a", t0 + Duration::from_secs(30)).is_err());
    }

    #[test]
    fn full_buckets_are_forgotten_when_the_map_is_full() {
        let mut l = KeyedLimiter::new(Rate::new(1, Duration::from_secs(1)));
        l.max_keys = 2;
        let t0 = Instant::now();
        assert!(l.check_at(&1, t0).is_ok());
        assert!(l.check_at(&2, t0).is_ok());
        let later = t0 + Duration::from_secs(5);
        assert!(l.check_at(&3, later).is_ok());
        assert_eq!(l.buckets.lock().unwrap().len(), 1);
    }
}
