//! In-memory keyed token buckets (per client IP, activist number, target
//! number). Per process: with several replicas, each enforces its own share.
//!
//! Each limiter holds at most [`KeyedLimiter::max_keys`] buckets. When a new
//! key arrives and the map is full, one sweep forgets every bucket that has
//! refilled completely (it is equivalent to a new one) and, if that is not
//! enough, the least recently used buckets, down to three quarters of the cap.
//! A sweep costs O(n) but frees at least a quarter of the map, so it happens at
//! most once per `max_keys / 4` new keys: the cost per request stays O(1)
//! amortised, however many distinct keys (spoofed numbers, many clients)
//! arrive.

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

#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, Bucket>,
    /// Sweeps made so far (tests check the amortisation).
    sweeps: u64,
}

/// The default cap on keys per limiter.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// A token bucket per key: `rate.count` tokens, refilled continuously over `rate.per`.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    buckets: Mutex<Buckets<K>>,
    max_keys: usize,
}

impl<K: Eq + Hash + Clone> KeyedLimiter<K> {
    /// A limiter of `rate` per key, holding at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(rate: Rate) -> Self {
        Self::with_max_keys(rate, DEFAULT_MAX_KEYS)
    }

    /// A limiter of `rate` per key, holding at most `max_keys` keys (at least 1).
    pub fn with_max_keys(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                sweeps: 0,
            }),
            max_keys: max_keys.max(1),
        }
    }

    /// The most keys this limiter holds.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How many keys it holds now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets<K>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn per_token(&self) -> Duration {
        self.rate.per / self.rate.count.max(1)
    }

    fn capacity(&self) -> f64 {
        f64::from(self.rate.count)
    }

    fn refill_per_sec(&self) -> f64 {
        self.capacity() / self.rate.per.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Makes room for one new key: forgets refilled buckets, then the least
    /// recently used ones, until at most three quarters of the cap are used.
    fn sweep(&self, buckets: &mut Buckets<K>, now: Instant) {
        buckets.sweeps += 1;
        let full_after = self.rate.per;
        buckets
            .map
            .retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        let low_water = self.max_keys - self.max_keys.div_ceil(4);
        if buckets.map.len() <= low_water {
            return;
        }
        // Keep the `low_water` most recently used: find the cut-off instant
        // in O(n), then drop the `drop` oldest.
        let drop = buckets.map.len() - low_water;
        let mut times: Vec<Instant> = buckets.map.values().map(|b| b.at).collect();
        let (older, cut, _) = times.select_nth_unstable(drop - 1);
        let cut = *cut;
        // Buckets used at exactly `cut`: drop only as many as needed.
        let mut ties = drop - older.iter().filter(|t| **t < cut).count();
        buckets.map.retain(|_, b| {
            if b.at < cut {
                false
            } else if b.at == cut && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Takes one token for `key` at `now`; `Err(wait)` when none is left.
    pub fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let capacity = self.capacity();
        let refill_per_sec = self.refill_per_sec();
        let mut buckets = self.lock();
        if buckets.map.len() >= self.max_keys && !buckets.map.contains_key(key) {
            self.sweep(&mut buckets, now);
        }
        let b = buckets.map.entry(key.clone()).or_insert(Bucket {
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

    /// Gives back a token taken by [`check`](Self::check) for a request that
    /// turned out not to count (it failed validation); never above the
    /// bucket's capacity. A forgotten key needs nothing back.
    pub fn refund(&self, key: &K) {
        let capacity = self.capacity();
        if let Some(b) = self.lock().map.get_mut(key) {
            b.tokens = (b.tokens + 1.0).min(capacity);
        }
    }
}

/// The request limits of `POST /v1/phone/call`; `None` disables one.
///
/// The per-target limit is not here: it is core's (checked on `POST`,
/// charged when the target is dialled; see `bonde_pressure_core::limits`),
/// and so is the activist number's daily cap.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// Per client IP.
    pub per_ip: Option<KeyedLimiter<std::net::IpAddr>>,
    /// Per activist number (E.164).
    pub per_activist: Option<KeyedLimiter<String>>,
}

impl RateLimits {
    /// Limits at these rates.
    pub fn new(per_ip: Option<Rate>, per_activist: Option<Rate>) -> Self {
        Self {
            per_ip: per_ip.map(KeyedLimiter::new),
            per_activist: per_activist.map(KeyedLimiter::new),
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
        let l = KeyedLimiter::with_max_keys(Rate::new(1, Duration::from_secs(1)), 2);
        let t0 = Instant::now();
        assert!(l.check_at(&1, t0).is_ok());
        assert!(l.check_at(&2, t0).is_ok());
        let later = t0 + Duration::from_secs(5);
        assert!(l.check_at(&3, later).is_ok());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn the_map_never_exceeds_its_cap_and_sweeps_are_amortised() {
        // Nothing refills within the test: only the LRU eviction can make room.
        let cap = 64;
        let l = KeyedLimiter::with_max_keys(Rate::new(1, Duration::from_secs(3600)), cap);
        let t0 = Instant::now();
        let n = 10_000u64;
        for k in 0..n {
            let now = t0 + Duration::from_millis(k);
            assert!(l.check_at(&k, now).is_ok(), "a new key has a token");
            assert!(l.len() <= cap, "{} keys after key {k}", l.len());
            // the key just used is kept, so it is still limited
            assert!(l.check_at(&k, now).is_err());
        }
        // A sweep frees a quarter of the map: at most one per cap/4 new keys.
        let sweeps = l.lock().sweeps;
        assert!(sweeps <= n / (cap as u64 / 4) + 1, "{sweeps} sweeps");
        // The most recent keys survived, the oldest were evicted.
        let last = t0 + Duration::from_millis(n - 1);
        assert!(l.check_at(&(n - 1), last).is_err());
        assert!(l.check_at(&0, last).is_ok());
    }

    #[test]
    fn ties_evict_exactly_what_is_needed() {
        let cap = 8;
        let l = KeyedLimiter::with_max_keys(Rate::new(1, Duration::from_secs(3600)), cap);
        let t0 = Instant::now();
        for k in 0..100 {
            assert!(l.check_at(&k, t0).is_ok());
            assert!(l.len() <= cap);
        }
        assert!(l.len() > cap / 2, "{}", l.len());
    }

    #[test]
    fn refunds_give_a_token_back_up_to_the_capacity() {
        let l = KeyedLimiter::new(Rate::new(1, Duration::from_secs(3600)));
        let t0 = Instant::now();
        assert!(l.check_at(&"a", t0).is_ok());
        assert!(l.check_at(&"a", t0).is_err());
        l.refund(&"a");
        assert!(l.check_at(&"a", t0).is_ok());
        l.refund(&"a");
        l.refund(&"a");
        assert!(l.check_at(&"a", t0).is_ok());
        assert!(l.check_at(&"a", t0).is_err(), "never above capacity");
        l.refund(&"unknown");
        assert_eq!(l.len(), 1);
    }
}
