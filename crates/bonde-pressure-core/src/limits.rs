//! Caps on how often a number is called: the [`RateLimiter`] port and its
//! in-process implementation, [`InMemoryRateLimiter`].
//!
//! The service uses it for two caps (see [`crate::ServiceConfig`]):
//! - [`LimitKind::ActivistCalls`]: the activist's number is called at most
//!   N times per 24 h, whoever asks (charged when the call is placed);
//! - [`LimitKind::TargetDials`]: the target is dialled at most M times per
//!   hour. `POST` only peeks at it; the token is taken when the target is
//!   actually dialled, after the activist confirmed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::Clock;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LimitKind {
    /// Calls placed to an activist's number.
    ActivistCalls,
    /// Dials of a target's number.
    TargetDials,
    /// Requests from a client IP.
    ClientIp,
    /// Requests naming an activist's number.
    ActivistRequests,
}

impl LimitKind {
    /// A stable name (`activist_calls`, `target_dials`...), for storage and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            LimitKind::ActivistCalls => "activist_calls",
            LimitKind::TargetDials => "target_dials",
            LimitKind::ClientIp => "client_ip",
            LimitKind::ActivistRequests => "activist_requests",
        }
    }
}

/// One counter: a kind and a value (an E.164 number, an IP address).
///
/// `Debug` masks the value when it looks like a phone number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct LimitKey {
    /// What is counted.
    pub kind: LimitKind,
    /// Whose.
    pub value: String,
}

impl LimitKey {
    /// A key.
    pub fn new(kind: LimitKind, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }
}

impl std::fmt::Debug for LimitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitKey")
            .field("kind", &self.kind)
            .field("value", &crate::domain::mask_phone(&self.value))
            .finish()
    }
}

/// At most `limit` charges in any window of `window`.
///
/// Built with [`Quota::new`] (or `per_day`/`per_hour`), which raise a limit
/// of 0 to 1. A quota whose limit is 0 anyway (a backend's own value) is
/// treated as "nothing is admitted", never as an error or a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// Charges allowed per window (at least 1 when built by [`Quota::new`]).
    pub limit: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Quota {
    /// `limit` per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window,
        }
    }

    /// `limit` per 24 hours.
    pub fn per_day(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(24 * 60 * 60))
    }

    /// `limit` per hour.
    pub fn per_hour(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60 * 60))
    }
}

/// A limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Within the quota (for [`RateLimiter::charge`]: and charged).
    Admitted,
    /// The quota is used up; the next charge succeeds after `retry_after`.
    Exhausted {
        /// When to try again.
        retry_after: Duration,
    },
}

impl Admission {
    /// Within the quota.
    pub fn is_admitted(&self) -> bool {
        matches!(self, Admission::Admitted)
    }
}

/// Why a limiter could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimiterError {
    /// The backend failed.
    #[error("rate limiter unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Counts charges per key in a sliding window.
///
/// # What implementations must guarantee
/// - [`RateLimiter::charge`] is atomic: it admits and records a charge only
///   if fewer than `quota.limit` charges of `key` were recorded in the last
///   `quota.window`; concurrent charges (from any replica sharing the
///   backend) never admit more than `limit` per window.
/// - [`RateLimiter::peek`] answers as `charge` would, and records nothing.
/// - [`RateLimiter::refund`] forgets the most recent charge of `key` still in
///   the window (nothing if there is none): a charge for an attempt that
///   turned out not to count. It never makes room beyond `limit`.
/// - Keys are independent; the quota is passed with each call, so one
///   implementation serves every cap (a backend may keep `kind` as a column).
/// - `Exhausted::retry_after` is when the oldest charge in the window
///   leaves it (at least 1 ms).
/// - An in-process implementation may forget keys under memory pressure
///   (see [`InMemoryRateLimiter`]); a shared one (PostgreSQL) must not.
///
/// The service treats an error as "admitted" (logged): a limiter outage does
/// not stop calls that are otherwise valid.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Whether a charge would be admitted now, without charging.
    async fn peek(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError>;
    /// Charges one if admitted.
    async fn charge(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError>;
    /// Gives back the most recent charge of `key`.
    async fn refund(&self, key: &LimitKey, quota: Quota) -> Result<(), LimiterError>;
}

#[derive(Debug, Default)]
struct Log {
    /// Charge times, oldest first.
    times: VecDeque<DateTime<Utc>>,
    /// The longest window this key was used with (for forgetting it).
    window: Duration,
    /// Last use.
    used: Option<DateTime<Utc>>,
}

/// The default cap on keys of an [`InMemoryRateLimiter`].
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// In-process sliding-window limiter on a [`Clock`]: exact within one
/// process; with several replicas each enforces its own count.
///
/// It holds at most `max_keys` keys. When a new key arrives and the map is
/// full, keys with no charge left in their window are forgotten (they are
/// equivalent to new ones) and, if that is not enough, the least recently
/// used ones, down to three quarters of the cap: a flood of distinct keys
/// can make it forget old counts, never grow without bound.
#[derive(Debug)]
pub struct InMemoryRateLimiter {
    clock: Arc<dyn Clock>,
    keys: Mutex<HashMap<LimitKey, Log>>,
    max_keys: usize,
}

impl InMemoryRateLimiter {
    /// A limiter on `clock` with [`DEFAULT_MAX_KEYS`].
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_max_keys(clock, DEFAULT_MAX_KEYS)
    }

    /// A limiter on `clock` holding at most `max_keys` keys (at least 1).
    pub fn with_max_keys(clock: Arc<dyn Clock>, max_keys: usize) -> Self {
        Self {
            clock,
            keys: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No key held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LimitKey, Log>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sweep(&self, map: &mut HashMap<LimitKey, Log>, now: DateTime<Utc>) {
        map.retain(|_, log| {
            log.times.back().is_some_and(|t| {
                now - *t < chrono::Duration::from_std(log.window).unwrap_or(chrono::Duration::MAX)
            })
        });
        let low_water = self.max_keys - self.max_keys.div_ceil(4);
        if map.len() <= low_water {
            return;
        }
        let mut used: Vec<(DateTime<Utc>, LimitKey)> = map
            .iter()
            .map(|(k, l)| (l.used.unwrap_or(now), k.clone()))
            .collect();
        used.sort();
        for (_, k) in used.into_iter().take(map.len() - low_water) {
            map.remove(&k);
        }
    }

    /// Answers for `key` at `now`, charging if `charge` and admitted.
    fn decide(&self, key: &LimitKey, quota: Quota, charge: bool) -> Admission {
        let now = self.clock.now();
        if quota.limit == 0 {
            // Nothing fits in an empty quota: refuse, never index an empty log.
            return Admission::Exhausted {
                retry_after: quota.window.max(Duration::from_millis(1)),
            };
        }
        let window = chrono::Duration::from_std(quota.window).unwrap_or(chrono::Duration::MAX);
        let mut map = self.lock();
        if !map.contains_key(key) {
            if !charge {
                return Admission::Admitted;
            }
            if map.len() >= self.max_keys {
                self.sweep(&mut map, now);
            }
        }
        let log = map.entry(key.clone()).or_default();
        while log.times.front().is_some_and(|t| now - *t >= window) {
            log.times.pop_front();
        }
        log.window = log.window.max(quota.window);
        log.used = Some(now);
        if log.times.len() < quota.limit as usize {
            if charge {
                log.times.push_back(now);
            }
            return Admission::Admitted;
        }
        // The charge that must leave the window for one more to fit.
        let oldest = log.times[log.times.len() - quota.limit as usize];
        let frees_at = oldest
            .checked_add_signed(window)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let retry_after = (frees_at - now)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_millis(1));
        Admission::Exhausted { retry_after }
    }
}

#[async_trait]
impl RateLimiter for InMemoryRateLimiter {
    async fn peek(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError> {
        Ok(self.decide(key, quota, false))
    }

    async fn charge(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError> {
        Ok(self.decide(key, quota, true))
    }

    async fn refund(&self, key: &LimitKey, _quota: Quota) -> Result<(), LimiterError> {
        if let Some(log) = self.lock().get_mut(key) {
            log.times.pop_back();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use chrono::Utc;

    fn key(v: &str) -> LimitKey {
        LimitKey::new(LimitKind::TargetDials, v)
    }

    #[tokio::test]
    async fn a_sliding_window_admits_exactly_the_limit() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryRateLimiter::new(clock.clone());
        let q = Quota::per_hour(3);
        let k = key("+5561999990000");
        for _ in 0..3 {
            assert!(l.peek(&k, q).await.unwrap().is_admitted());
            assert!(l.charge(&k, q).await.unwrap().is_admitted());
        }
        // Peeking takes nothing, however often.
        for _ in 0..10 {
            assert!(!l.peek(&k, q).await.unwrap().is_admitted());
        }
        clock.advance(Duration::from_secs(600));
        match l.charge(&k, q).await.unwrap() {
            Admission::Exhausted { retry_after } => {
                assert_eq!(retry_after, Duration::from_secs(3000))
            }
            other => panic!("{other:?}"),
        }
        // Other keys and kinds are independent.
        assert!(
            l.charge(&key("+5561999990001"), q)
                .await
                .unwrap()
                .is_admitted()
        );
        let other_kind = LimitKey::new(LimitKind::ActivistCalls, "+5561999990000");
        assert!(l.charge(&other_kind, q).await.unwrap().is_admitted());
        // An hour after the first charges, they leave the window.
        clock.advance(Duration::from_secs(3000));
        assert!(l.charge(&k, q).await.unwrap().is_admitted());
    }

    #[tokio::test]
    async fn a_refund_gives_back_one_charge_never_more() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryRateLimiter::new(clock.clone());
        let q = Quota::per_day(1);
        let k = key("a");
        assert!(l.charge(&k, q).await.unwrap().is_admitted());
        assert!(!l.charge(&k, q).await.unwrap().is_admitted());
        l.refund(&k, q).await.unwrap();
        l.refund(&k, q).await.unwrap();
        assert!(l.charge(&k, q).await.unwrap().is_admitted());
        assert!(!l.charge(&k, q).await.unwrap().is_admitted());
        l.refund(&key("unknown"), q).await.unwrap();
        assert_eq!(
            l.len(),
            1,
            "a peek or refund of an unknown key stores nothing"
        );
    }

    #[tokio::test]
    async fn a_zero_limit_refuses_and_never_panics() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryRateLimiter::new(clock);
        // Not buildable outside the crate (non_exhaustive), but a literal here
        // stands for any quota whose limit ends up 0.
        let q = Quota {
            limit: 0,
            window: Duration::from_secs(60),
        };
        let k = key("+5561999990000");
        for _ in 0..3 {
            assert!(!l.peek(&k, q).await.unwrap().is_admitted());
            assert_eq!(
                l.charge(&k, q).await.unwrap(),
                Admission::Exhausted {
                    retry_after: Duration::from_secs(60)
                }
            );
        }
        // Refunding an empty key is harmless, and a real quota still works.
        l.refund(&k, q).await.unwrap();
        assert!(
            l.charge(&k, Quota::per_hour(1))
                .await
                .unwrap()
                .is_admitted()
        );
        assert!(!l.charge(&k, q).await.unwrap().is_admitted());
        let zero_window = Quota {
            limit: 0,
            window: Duration::ZERO,
        };
        assert!(!l.charge(&k, zero_window).await.unwrap().is_admitted());
    }

    #[tokio::test]
    async fn an_enormous_window_does_not_overflow() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryRateLimiter::new(clock);
        let q = Quota::new(1, Duration::from_secs(u64::MAX / 4));
        assert!(l.charge(&key("a"), q).await.unwrap().is_admitted());
        assert!(!l.charge(&key("a"), q).await.unwrap().is_admitted());
    }

    #[tokio::test]
    async fn the_map_stays_bounded() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryRateLimiter::with_max_keys(clock.clone(), 16);
        let q = Quota::per_hour(1);
        for i in 0..1000 {
            clock.advance(Duration::from_millis(1));
            assert!(
                l.charge(&key(&i.to_string()), q)
                    .await
                    .unwrap()
                    .is_admitted()
            );
            assert!(l.len() <= 16);
        }
        // The most recent key is still counted.
        assert!(!l.charge(&key("999"), q).await.unwrap().is_admitted());
    }
}
