//! Caps on how often a number is called and how often a client asks: the
//! [`RateLimiter`] port and its in-process implementation,
//! [`InMemoryRateLimiter`].
//!
//! The service uses it for four limits, all through the same limiter:
//! - [`LimitKind::ActivistCalls`]: the activist's number is called at most
//!   N times per 24 h, whoever asks (charged when the call is placed; see
//!   [`crate::ServiceConfig`]);
//! - [`LimitKind::TargetDials`]: the target is dialled at most M times per
//!   hour. `POST` only peeks at it; the token is taken when the target is
//!   actually dialled, after the activist confirmed;
//! - [`LimitKind::ClientIp`] and [`LimitKind::ActivistRequests`]: the
//!   requests an adapter's public start endpoint accepts per client and per
//!   activist number ([`RequestLimits`], charged by
//!   [`crate::PressureService::admit_client`] and
//!   [`crate::PressureService::start`]).

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

/// How the charges of a [`Quota`] come back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refill {
    /// A sliding window: each charge comes back `window` after it was made,
    /// so at most `limit` charges fit in any window ("10 per 24 h" means at
    /// most 10 in any 24 h).
    #[default]
    Window,
    /// A token bucket: `limit` tokens, refilled continuously at one per
    /// `window / limit`. A burst of `limit`, then on average `limit` per
    /// `window`; when empty, the next token is back within `window / limit`.
    Gradual,
}

/// At most `limit` charges per `window`, refilled as `refill` says (a
/// sliding window unless built with [`Quota::gradual`]).
///
/// Built with [`Quota::new`] (or `per_day`/`per_hour`/`gradual`), which
/// raise a limit of 0 to 1. A quota whose limit is 0 anyway (a backend's
/// own value) is treated as "nothing is admitted", never as an error or a
/// panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// Charges allowed per window (at least 1 when built by [`Quota::new`]).
    pub limit: u32,
    /// The sliding window, or the time a bucket takes to refill completely.
    pub window: Duration,
    /// How charges come back.
    pub refill: Refill,
}

impl Quota {
    /// `limit` per sliding `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window,
            refill: Refill::Window,
        }
    }

    /// `limit` per 24 hours (a sliding window).
    pub fn per_day(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(24 * 60 * 60))
    }

    /// `limit` per hour (a sliding window).
    pub fn per_hour(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60 * 60))
    }

    /// A token bucket of `limit` tokens refilled over `window`
    /// ([`Refill::Gradual`]).
    pub fn gradual(limit: u32, window: Duration) -> Self {
        Self {
            refill: Refill::Gradual,
            ..Self::new(limit, window)
        }
    }

    /// The time one token takes to come back in a [`Refill::Gradual`]
    /// quota (`window / limit`).
    fn interval(&self) -> Duration {
        self.window / self.limit.max(1)
    }
}

/// The limits on requests to start a call, for an adapter's public
/// endpoint (`None`: no limit). Charged by
/// [`crate::PressureService::admit_client`] (per client, every request) and
/// [`crate::PressureService::start`] (per activist number), through the
/// service's [`RateLimiter`]. The default has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestLimits {
    /// Requests per client IP ([`LimitKind::ClientIp`]).
    pub per_client: Option<Quota>,
    /// Requests naming one activist number ([`LimitKind::ActivistRequests`]).
    pub per_activist: Option<Quota>,
}

impl RequestLimits {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// With this limit per client IP.
    pub fn with_per_client(mut self, quota: Option<Quota>) -> Self {
        self.per_client = quota;
        self
    }

    /// With this limit per activist number.
    pub fn with_per_activist(mut self, quota: Option<Quota>) -> Self {
        self.per_activist = quota;
        self
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

impl LimiterError {
    /// The backend failed because of `cause` (kept as the source).
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        LimiterError::Unavailable(cause.into())
    }
}

/// Counts charges per key, in a sliding window or a token bucket (the
/// [`Quota`]'s [`Refill`]).
///
/// # What implementations must guarantee
/// - [`RateLimiter::charge`] is atomic. With a [`Refill::Window`] quota it
///   admits and records a charge only if fewer than `quota.limit` charges of
///   `key` were recorded in the last `quota.window`; with a
///   [`Refill::Gradual`] quota, only if the key's bucket (`limit` tokens,
///   one back every `window / limit`, never more than `limit`) holds a
///   whole token, which it takes. Concurrent charges (from any replica
///   sharing the backend) never admit more than that.
/// - [`RateLimiter::peek`] answers as `charge` would, and records nothing.
/// - [`RateLimiter::refund`] gives back the most recent charge of `key`: a
///   charge for an attempt that turned out not to count. In a window it
///   forgets the latest charge still in the window (nothing if there is
///   none); in a bucket it puts one token back. It never makes room beyond
///   `limit`.
/// - Keys are independent; the quota is passed with each call, so one
///   implementation serves every limit (a backend may keep `kind` as a
///   column).
/// - `Exhausted::retry_after` is when the next charge would be admitted (at
///   least 1 ms): in a window, when the oldest charge in it leaves it; in a
///   bucket, when the next token is back (at most `window / limit`).
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

/// One key's charges.
#[derive(Debug, Default)]
struct Log {
    /// [`Refill::Window`]: charge times, oldest first.
    times: VecDeque<DateTime<Utc>>,
    /// The longest window this key was used with (for forgetting it).
    window: Duration,
    /// [`Refill::Gradual`]: when the bucket is full again (nothing taken
    /// that has not come back); `None` or past: full.
    full_at: Option<DateTime<Utc>>,
    /// Last use.
    used: DateTime<Utc>,
}

impl Log {
    /// Nothing is left to remember at `now`: the key is equivalent to a new one.
    fn is_spent(&self, now: DateTime<Utc>) -> bool {
        let window_spent = self
            .times
            .back()
            .is_none_or(|t| now - *t >= to_chrono(self.window));
        window_spent && self.full_at.is_none_or(|f| f <= now)
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The keys of one kind, and how many sweeps made room among them.
#[derive(Debug, Default)]
struct Keys {
    logs: HashMap<String, Log>,
    /// Sweeps made so far (tests check the amortisation).
    sweeps: u64,
}

/// The default cap on keys of each kind of an [`InMemoryRateLimiter`].
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// In-process limiter on a [`Clock`]: exact within one process; with
/// several replicas each enforces its own count.
///
/// It holds at most `max_keys` keys **of each [`LimitKind`]**, so a flood of
/// one kind (many client IPs) never makes it forget another (the activists'
/// and targets' counts). When a new key arrives and its kind is full, one
/// sweep forgets that kind's keys with nothing left to remember (nothing
/// left in their window, a full bucket: they are equivalent to new ones)
/// and, if that is not enough, the least recently used ones, down to three
/// quarters of the cap. A sweep costs O(n) but frees at least a quarter of
/// the cap, so it happens at most once per `max_keys / 4` new keys: O(1)
/// amortised per charge, however many distinct keys arrive. A flood of
/// distinct keys can make it forget old counts of that kind, never grow
/// without bound.
#[derive(Debug)]
pub struct InMemoryRateLimiter {
    clock: Arc<dyn Clock>,
    keys: Mutex<HashMap<LimitKind, Keys>>,
    max_keys: usize,
}

impl InMemoryRateLimiter {
    /// A limiter on `clock` with [`DEFAULT_MAX_KEYS`] per kind.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_max_keys(clock, DEFAULT_MAX_KEYS)
    }

    /// A limiter on `clock` holding at most `max_keys` keys (at least 1) of
    /// each kind.
    pub fn with_max_keys(clock: Arc<dyn Clock>, max_keys: usize) -> Self {
        Self {
            clock,
            keys: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// The most keys of one kind it holds.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys held now, all kinds.
    pub fn len(&self) -> usize {
        self.lock().values().map(|k| k.logs.len()).sum()
    }

    /// No key held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LimitKind, Keys>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one new key of a full kind: forgets its spent keys,
    /// then the least recently used ones, down to three quarters of the cap.
    fn sweep(&self, keys: &mut Keys, now: DateTime<Utc>) {
        keys.sweeps += 1;
        keys.logs.retain(|_, log| !log.is_spent(now));
        let low_water = self.max_keys - self.max_keys.div_ceil(4);
        if keys.logs.len() <= low_water {
            return;
        }
        // Keep the `low_water` most recently used: find the cut-off in
        // O(n), then drop the `drop` oldest.
        let drop = keys.logs.len() - low_water;
        let mut times: Vec<DateTime<Utc>> = keys.logs.values().map(|l| l.used).collect();
        let (older, cut, _) = times.select_nth_unstable(drop - 1);
        let cut = *cut;
        // Keys used at exactly `cut`: drop only as many as needed.
        let mut ties = drop - older.iter().filter(|t| **t < cut).count();
        keys.logs.retain(|_, l| {
            if l.used < cut {
                false
            } else if l.used == cut && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
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
        let mut map = self.lock();
        let keys = map.entry(key.kind).or_default();
        if !keys.logs.contains_key(&key.value) {
            if !charge {
                return Admission::Admitted;
            }
            if keys.logs.len() >= self.max_keys {
                self.sweep(keys, now);
            }
        }
        let log = keys.logs.entry(key.value.clone()).or_default();
        log.used = now;
        match quota.refill {
            Refill::Gradual => Self::decide_bucket(log, quota, now, charge),
            _ => Self::decide_window(log, quota, now, charge),
        }
    }

    fn decide_window(log: &mut Log, quota: Quota, now: DateTime<Utc>, charge: bool) -> Admission {
        let window = to_chrono(quota.window);
        while log.times.front().is_some_and(|t| now - *t >= window) {
            log.times.pop_front();
        }
        log.window = log.window.max(quota.window);
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

    /// A token bucket kept as the time it is full again (GCRA): it holds
    /// `limit - (full_at - now) / interval` tokens.
    fn decide_bucket(log: &mut Log, quota: Quota, now: DateTime<Utc>, charge: bool) -> Admission {
        let interval = quota.interval();
        let full_at = log.full_at.map_or(now, |f| f.max(now));
        // A whole token is there when the bucket is full again within
        // `limit - 1` intervals.
        let slack = to_chrono(interval.saturating_mul(quota.limit - 1));
        let admit_from = full_at.checked_sub_signed(slack).unwrap_or(now);
        if admit_from <= now {
            if charge {
                log.full_at = Some(
                    full_at
                        .checked_add_signed(to_chrono(interval))
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                );
            }
            return Admission::Admitted;
        }
        let retry_after = (admit_from - now)
            .to_std()
            .unwrap_or_default()
            .min(interval)
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

    async fn refund(&self, key: &LimitKey, quota: Quota) -> Result<(), LimiterError> {
        let mut map = self.lock();
        let Some(log) = map
            .get_mut(&key.kind)
            .and_then(|k| k.logs.get_mut(&key.value))
        else {
            return Ok(());
        };
        match quota.refill {
            Refill::Gradual => {
                // One token back; a bucket full before `now` is full (the
                // excess is never counted).
                log.full_at = log
                    .full_at
                    .and_then(|f| f.checked_sub_signed(to_chrono(quota.interval())));
            }
            _ => {
                log.times.pop_back();
            }
        }
        Ok(())
    }
}

/// Which limiter of a [`LayeredRateLimiter`] counts a [`LimitKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitRoute {
    /// Only the local (in-process) limiter.
    Local,
    /// Only the shared limiter (the local one only while the shared one
    /// fails).
    Shared,
    /// The local limiter first, as a pre-filter: what it refuses never
    /// reaches the shared limiter; what it admits is then charged to the
    /// shared one (the local charge stays, whatever the shared answer).
    LocalThenShared,
}

/// Two limiters behind one [`RateLimiter`]: a local, in-process one (an
/// [`InMemoryRateLimiter`]) and a shared one (e.g. on PostgreSQL, counting
/// across replicas), each kind of limit routed by a [`LimitRoute`].
///
/// The default routes ([`LayeredRateLimiter::new`]):
/// - [`LimitKind::ClientIp`]: [`LimitRoute::LocalThenShared`]. A flood from
///   one client is refused in-process once it sent its quota's worth of
///   requests through this replica, so it never becomes more than `limit`
///   database writes per window per replica, however the flood is spread
///   over replicas; the shared limiter makes the quota hold across them.
///   The local count holds every charge this replica sent on, admitted or
///   refused by the shared limiter, so a client refused by the shared
///   limiter may also be refused locally for up to one window after the
///   shared quota came back (a client over its quota stays refused a
///   little longer; never one within it on this replica alone).
/// - every other kind ([`LimitKind::ActivistCalls`],
///   [`LimitKind::ActivistRequests`], [`LimitKind::TargetDials`]):
///   [`LimitRoute::Shared`].
///
/// When the shared limiter fails, the call is answered by the local one
/// (logged at warn level): replicas then limit each on its own, as without
/// a shared limiter, rather than not at all. Errors are never returned.
pub struct LayeredRateLimiter {
    local: Arc<dyn RateLimiter>,
    shared: Arc<dyn RateLimiter>,
    routes: HashMap<LimitKind, LimitRoute>,
}

impl std::fmt::Debug for LayeredRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayeredRateLimiter")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl LayeredRateLimiter {
    /// `local` in front of `shared`, with the default routes (client IPs
    /// pre-filtered locally, everything else shared).
    pub fn new(local: Arc<dyn RateLimiter>, shared: Arc<dyn RateLimiter>) -> Self {
        Self {
            local,
            shared,
            routes: HashMap::from([(LimitKind::ClientIp, LimitRoute::LocalThenShared)]),
        }
    }

    /// With `kind` counted as `route` says.
    pub fn with_route(mut self, kind: LimitKind, route: LimitRoute) -> Self {
        self.routes.insert(kind, route);
        self
    }

    /// How `kind` is counted.
    pub fn route(&self, kind: LimitKind) -> LimitRoute {
        self.routes
            .get(&kind)
            .copied()
            .unwrap_or(LimitRoute::Shared)
    }

    /// Asks the shared limiter; on failure (logged), the local one.
    async fn shared_or_local(
        &self,
        key: &LimitKey,
        quota: Quota,
        charge: bool,
    ) -> Result<Admission, LimiterError> {
        let shared = if charge {
            self.shared.charge(key, quota).await
        } else {
            self.shared.peek(key, quota).await
        };
        match shared {
            Ok(a) => Ok(a),
            Err(error) => {
                tracing::warn!(
                    error = %crate::chain::error_chain(&error),
                    kind = key.kind.as_str(),
                    "shared rate limiter failed; limiting in-process"
                );
                if charge {
                    self.local.charge(key, quota).await
                } else {
                    self.local.peek(key, quota).await
                }
            }
        }
    }

    async fn decide(
        &self,
        key: &LimitKey,
        quota: Quota,
        charge: bool,
    ) -> Result<Admission, LimiterError> {
        match self.route(key.kind) {
            LimitRoute::Local => {
                if charge {
                    self.local.charge(key, quota).await
                } else {
                    self.local.peek(key, quota).await
                }
            }
            LimitRoute::Shared => self.shared_or_local(key, quota, charge).await,
            LimitRoute::LocalThenShared => {
                let local = if charge {
                    self.local.charge(key, quota).await?
                } else {
                    self.local.peek(key, quota).await?
                };
                if !local.is_admitted() {
                    return Ok(local);
                }
                let shared = if charge {
                    self.shared.charge(key, quota).await
                } else {
                    self.shared.peek(key, quota).await
                };
                match shared {
                    // A shared refusal keeps the local charge: the local
                    // count is what this replica sent to the shared limiter,
                    // so a client refused there (its quota spent through
                    // other replicas) reaches the database at most `limit`
                    // times per window from here.
                    Ok(answer) => Ok(answer),
                    Err(error) => {
                        tracing::warn!(
                            error = %crate::chain::error_chain(&error),
                            kind = key.kind.as_str(),
                            "shared rate limiter failed; limiting in-process"
                        );
                        Ok(local)
                    }
                }
            }
        }
    }
}

#[async_trait]
impl RateLimiter for LayeredRateLimiter {
    async fn peek(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError> {
        self.decide(key, quota, false).await
    }

    async fn charge(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError> {
        self.decide(key, quota, true).await
    }

    async fn refund(&self, key: &LimitKey, quota: Quota) -> Result<(), LimiterError> {
        let route = self.route(key.kind);
        if route != LimitRoute::Shared {
            self.local.refund(key, quota).await?;
        }
        if route != LimitRoute::Local {
            if let Err(error) = self.shared.refund(key, quota).await {
                tracing::warn!(
                    error = %crate::chain::error_chain(&error),
                    kind = key.kind.as_str(),
                    "shared rate limiter refund failed"
                );
                // What was charged locally during the outage.
                self.local.refund(key, quota).await?;
            }
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
            refill: Refill::Window,
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
            refill: Refill::Window,
        };
        assert!(!l.charge(&k, zero_window).await.unwrap().is_admitted());
        let zero_bucket = Quota {
            refill: Refill::Gradual,
            ..q
        };
        assert!(!l.peek(&k, zero_bucket).await.unwrap().is_admitted());
        assert!(!l.charge(&k, zero_bucket).await.unwrap().is_admitted());
        l.refund(&k, zero_bucket).await.unwrap();
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

    // Token buckets ([`Refill::Gradual`]), as the request limits per client
    // IP and per activist number use them.

    fn ip(v: &str) -> LimitKey {
        LimitKey::new(LimitKind::ClientIp, v)
    }

    #[tokio::test]
    async fn a_bucket_allows_its_burst_then_refills_one_token_at_a_time() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryRateLimiter::new(clock.clone());
        let q = Quota::gradual(2, Duration::from_secs(60));
        let a = ip("203.0.113.1");
        assert!(l.charge(&a, q).await.unwrap().is_admitted());
        assert!(l.charge(&a, q).await.unwrap().is_admitted());
        // Peeking takes nothing.
        assert!(!l.peek(&a, q).await.unwrap().is_admitted());
        match l.charge(&a, q).await.unwrap() {
            Admission::Exhausted { retry_after } => {
                assert_eq!(retry_after, Duration::from_secs(30))
            }
            other => panic!("{other:?}"),
        }
        // Other keys are independent.
        assert!(l.charge(&ip("203.0.113.2"), q).await.unwrap().is_admitted());
        // One token back after 30 s, not two.
        clock.advance(Duration::from_secs(29));
        match l.charge(&a, q).await.unwrap() {
            Admission::Exhausted { retry_after } => {
                assert_eq!(retry_after, Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        clock.advance(Duration::from_secs(1));
        assert!(l.peek(&a, q).await.unwrap().is_admitted());
        assert!(l.charge(&a, q).await.unwrap().is_admitted());
        assert!(!l.charge(&a, q).await.unwrap().is_admitted());
        // A long pause refills the bucket to its capacity, never beyond.
        clock.advance(Duration::from_secs(3600));
        for _ in 0..2 {
            assert!(l.charge(&a, q).await.unwrap().is_admitted());
        }
        assert!(!l.charge(&a, q).await.unwrap().is_admitted());
    }

    #[tokio::test]
    async fn a_bucket_refund_gives_a_token_back_up_to_the_capacity() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryRateLimiter::new(clock.clone());
        let q = Quota::gradual(1, Duration::from_secs(3600));
        let a = ip("a");
        assert!(l.charge(&a, q).await.unwrap().is_admitted());
        assert!(!l.charge(&a, q).await.unwrap().is_admitted());
        l.refund(&a, q).await.unwrap();
        assert!(l.charge(&a, q).await.unwrap().is_admitted());
        l.refund(&a, q).await.unwrap();
        l.refund(&a, q).await.unwrap();
        assert!(l.charge(&a, q).await.unwrap().is_admitted());
        assert!(
            !l.charge(&a, q).await.unwrap().is_admitted(),
            "never above capacity"
        );
        l.refund(&ip("unknown"), q).await.unwrap();
        assert_eq!(l.len(), 1);
    }

    #[tokio::test]
    async fn full_buckets_are_forgotten_when_the_kind_is_full() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryRateLimiter::with_max_keys(clock.clone(), 2);
        let q = Quota::gradual(1, Duration::from_secs(1));
        assert!(l.charge(&ip("1"), q).await.unwrap().is_admitted());
        assert!(l.charge(&ip("2"), q).await.unwrap().is_admitted());
        clock.advance(Duration::from_secs(5));
        assert!(l.charge(&ip("3"), q).await.unwrap().is_admitted());
        assert_eq!(l.len(), 1);
    }

    #[tokio::test]
    async fn each_kind_stays_bounded_and_sweeps_are_amortised() {
        // Nothing refills within the test: only the LRU eviction makes room.
        let cap = 64;
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryRateLimiter::with_max_keys(clock.clone(), cap);
        let q = Quota::gradual(1, Duration::from_secs(3600));
        // A target's count, which a flood of client IPs must not evict.
        let target = key("+5561999990000");
        let per_hour = Quota::per_hour(1);
        assert!(l.charge(&target, per_hour).await.unwrap().is_admitted());
        let n = 10_000u64;
        for k in 0..n {
            clock.advance(Duration::from_millis(1));
            let k = ip(&k.to_string());
            assert!(
                l.charge(&k, q).await.unwrap().is_admitted(),
                "a new key has a token"
            );
            assert!(l.len() <= cap + 1, "{} keys", l.len());
            // The key just used is kept, so it is still limited.
            assert!(!l.charge(&k, q).await.unwrap().is_admitted());
        }
        // A sweep frees a quarter of the cap: at most one per cap/4 new keys.
        let sweeps = l.lock()[&LimitKind::ClientIp].sweeps;
        assert!(sweeps <= n / (cap as u64 / 4) + 1, "{sweeps} sweeps");
        // The most recent keys survived, the oldest were evicted.
        assert!(
            !l.charge(&ip(&(n - 1).to_string()), q)
                .await
                .unwrap()
                .is_admitted()
        );
        assert!(l.charge(&ip("0"), q).await.unwrap().is_admitted());
        // The other kind kept its count.
        assert!(!l.charge(&target, per_hour).await.unwrap().is_admitted());
    }

    #[tokio::test]
    async fn ties_evict_exactly_what_is_needed() {
        let cap = 8;
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryRateLimiter::with_max_keys(clock, cap);
        let q = Quota::gradual(1, Duration::from_secs(3600));
        for k in 0..100 {
            assert!(
                l.charge(&ip(&k.to_string()), q)
                    .await
                    .unwrap()
                    .is_admitted()
            );
            assert!(l.len() <= cap);
        }
        assert!(l.len() > cap / 2, "{}", l.len());
    }

    // LayeredRateLimiter: a local pre-filter in front of a shared limiter.

    /// A limiter counting the calls that reach it, failing when told to.
    #[derive(Debug)]
    struct Counted {
        inner: InMemoryRateLimiter,
        calls: std::sync::atomic::AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Counted {
        fn new(clock: Arc<ManualClock>) -> Arc<Self> {
            Arc::new(Self {
                inner: InMemoryRateLimiter::new(clock),
                calls: Default::default(),
                fail: Default::default(),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn enter(&self) -> Result<(), LimiterError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(LimiterError::unavailable("told to fail"));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl RateLimiter for Counted {
        async fn peek(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError> {
            self.enter()?;
            self.inner.peek(key, quota).await
        }
        async fn charge(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError> {
            self.enter()?;
            self.inner.charge(key, quota).await
        }
        async fn refund(&self, key: &LimitKey, quota: Quota) -> Result<(), LimiterError> {
            self.enter()?;
            self.inner.refund(key, quota).await
        }
    }

    #[tokio::test]
    async fn a_flood_from_one_ip_stops_at_the_local_pre_filter() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let local = Counted::new(clock.clone());
        let shared = Counted::new(clock.clone());
        let l = LayeredRateLimiter::new(local.clone(), shared.clone());
        let q = Quota::gradual(3, Duration::from_secs(60));
        let a = ip("203.0.113.9");
        for _ in 0..3 {
            assert!(l.charge(&a, q).await.unwrap().is_admitted());
        }
        for _ in 0..1000 {
            assert!(!l.charge(&a, q).await.unwrap().is_admitted());
        }
        assert_eq!(
            shared.calls(),
            3,
            "refused locally: never sent to the shared limiter"
        );
        assert_eq!(local.calls(), 1003);
    }

    #[tokio::test]
    async fn a_client_refused_by_the_shared_limiter_stops_at_the_pre_filter() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let local = Counted::new(clock.clone());
        let shared = Counted::new(clock.clone());
        let q = Quota::gradual(2, Duration::from_secs(60));
        let a = ip("203.0.113.9");
        // Another replica used the shared quota up.
        assert!(shared.charge(&a, q).await.unwrap().is_admitted());
        assert!(shared.charge(&a, q).await.unwrap().is_admitted());
        let l = LayeredRateLimiter::new(local.clone(), shared.clone());
        for _ in 0..2 {
            assert_eq!(
                l.charge(&a, q).await.unwrap(),
                Admission::Exhausted {
                    retry_after: Duration::from_secs(30)
                }
            );
        }
        // Refused there twice (the local quota's worth): the rest of the
        // flood stays in-process.
        for _ in 0..100 {
            assert!(!l.charge(&a, q).await.unwrap().is_admitted());
        }
        assert_eq!(shared.calls(), 4);
        // Once both refilled, the client is admitted again.
        clock.advance(Duration::from_secs(30));
        assert!(l.charge(&a, q).await.unwrap().is_admitted());
        assert!(!l.charge(&a, q).await.unwrap().is_admitted());
    }

    #[tokio::test]
    async fn numbers_are_counted_by_the_shared_limiter_only() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let local = Counted::new(clock.clone());
        let shared = Counted::new(clock.clone());
        let l = LayeredRateLimiter::new(local.clone(), shared.clone());
        let q = Quota::per_hour(1);
        let t = key("+5561999990000");
        assert!(l.charge(&t, q).await.unwrap().is_admitted());
        assert!(!l.peek(&t, q).await.unwrap().is_admitted());
        // Another replica sharing the limiter sees the charge.
        let other = LayeredRateLimiter::new(Counted::new(clock.clone()), shared.clone());
        assert!(!other.charge(&t, q).await.unwrap().is_admitted());
        l.refund(&t, q).await.unwrap();
        assert!(other.charge(&t, q).await.unwrap().is_admitted());
        assert_eq!(local.calls(), 0);
        // A kind routed locally never reaches the shared limiter.
        let l = LayeredRateLimiter::new(local.clone(), shared.clone())
            .with_route(LimitKind::TargetDials, LimitRoute::Local);
        let before = shared.calls();
        assert!(
            l.charge(&key("+5561999990001"), q)
                .await
                .unwrap()
                .is_admitted()
        );
        assert_eq!(shared.calls(), before);
    }

    #[tokio::test]
    async fn a_failing_shared_limiter_falls_back_to_the_local_one() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let local = Counted::new(clock.clone());
        let shared = Counted::new(clock.clone());
        shared.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let l = LayeredRateLimiter::new(local.clone(), shared.clone());
        let q = Quota::per_hour(2);
        let t = key("+5561999990000");
        assert!(l.charge(&t, q).await.unwrap().is_admitted());
        assert!(l.charge(&t, q).await.unwrap().is_admitted());
        assert!(
            !l.charge(&t, q).await.unwrap().is_admitted(),
            "limited in-process"
        );
        l.refund(&t, q).await.unwrap();
        assert!(l.charge(&t, q).await.unwrap().is_admitted());
        let a = ip("203.0.113.9");
        let g = Quota::gradual(1, Duration::from_secs(60));
        assert!(l.charge(&a, g).await.unwrap().is_admitted());
        assert!(!l.charge(&a, g).await.unwrap().is_admitted());
    }
}
