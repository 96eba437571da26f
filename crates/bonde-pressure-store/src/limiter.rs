//! [`PgRateLimiter`]: core's [`RateLimiter`] on PostgreSQL, shared by every
//! replica using the database (the `rate_limits` table).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bonde_pressure_core::{Admission, Clock, LimitKey, LimiterError, Quota, RateLimiter, Refill};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::types::PgInterval;

use crate::codec::truncate_micros;

/// The longest window the PostgreSQL limiter keeps: longer windows count as
/// this one (1,000 years), so no timestamp leaves PostgreSQL's range.
const MAX_WINDOW: Duration = Duration::from_secs(1000 * 365 * 24 * 60 * 60);

/// How often, at most, a limiter deletes expired rows by default: 60 s.
const DEFAULT_PURGE_EVERY: Duration = Duration::from_secs(60);

/// A sliding-window charge, in one statement: the key's row is inserted
/// (admitted: a first charge) or updated under its row lock, dropping the
/// charges that left the window ($4: now − window) and appending now ($3)
/// only if fewer than the limit ($5) remain. `admitted` records the answer
/// so that `RETURNING` can give it back with the charges kept.
const WINDOW_CHARGE_SQL: &str = "\
INSERT INTO rate_limits AS r (kind, key_hash, times, full_at, expires_at, admitted) \
VALUES ($1, $2, ARRAY[$3::timestamptz], NULL, $6, true) \
ON CONFLICT (kind, key_hash) DO UPDATE SET \
    admitted = (SELECT count(*) FROM unnest(r.times) AS t(at) WHERE t.at > $4) < $5, \
    times = ARRAY(SELECT t.at FROM unnest(r.times) WITH ORDINALITY AS t(at, o) \
                  WHERE t.at > $4 ORDER BY t.o) \
        || CASE WHEN (SELECT count(*) FROM unnest(r.times) AS t(at) WHERE t.at > $4) < $5 \
                THEN ARRAY[$3::timestamptz] ELSE '{}'::timestamptz[] END, \
    expires_at = GREATEST(r.expires_at, $6) \
RETURNING admitted, times";

/// A token-bucket charge (GCRA), in one statement: the bucket is kept as
/// the time it is full again (`full_at`). A token is there when `full_at`
/// is at most now + (limit − 1) × interval ($4); taking it moves `full_at`
/// one interval ($5) later, from now ($3) if the bucket was full. A new
/// key's first charge leaves it full at $6 (now + interval).
const BUCKET_CHARGE_SQL: &str = "\
INSERT INTO rate_limits AS r (kind, key_hash, times, full_at, expires_at, admitted) \
VALUES ($1, $2, '{}', $6, $6, true) \
ON CONFLICT (kind, key_hash) DO UPDATE SET \
    admitted = r.full_at IS NULL OR r.full_at <= $4, \
    full_at = CASE WHEN r.full_at IS NULL OR r.full_at <= $3 THEN $6 \
                   WHEN r.full_at <= $4 THEN r.full_at + $5 \
                   ELSE r.full_at END, \
    expires_at = GREATEST(r.expires_at, \
        CASE WHEN r.full_at IS NULL OR r.full_at <= $3 THEN $6 \
             WHEN r.full_at <= $4 THEN r.full_at + $5 \
             ELSE r.full_at END) \
RETURNING admitted, full_at";

/// A [`RateLimiter`] on PostgreSQL: every replica using the database shares
/// its counts (core's [`InMemoryRateLimiter`](bonde_pressure_core::InMemoryRateLimiter)
/// counts per process).
///
/// - One row per key in `rate_limits` (kind, SHA-256 of the value: no
///   phone number or IP address is stored in the clear).
/// - [`Refill::Window`]: the row holds the key's charge times in the window
///   (at most `limit`, an array). [`Refill::Gradual`]: the time the bucket
///   is full again (GCRA), which is exact for a token bucket.
/// - `charge` is one `INSERT … ON CONFLICT DO UPDATE … RETURNING`: the
///   decision is taken under the row's lock, so concurrent charges from any
///   replica never admit more than the quota. `peek` is one `SELECT`;
///   `refund` one `UPDATE` (drops the latest charge of the window, or moves
///   the bucket one interval back).
/// - Time is the limiter's [`Clock`] (not PostgreSQL's `now()`), truncated
///   to microseconds (PostgreSQL's precision), so a manual clock drives it
///   in tests and answers match the in-memory limiter's. Replicas' clocks
///   must be synchronised (NTP): a skew of `s` moves a charge's expiry by
///   `s`. Windows longer than 1,000 years count as 1,000 years.
/// - Expired rows (nothing in the window, bucket full again: a key in that
///   state answers as a new one) are deleted by
///   [`PgRateLimiter::purge_expired`], which `charge` runs itself at most
///   once a minute per limiter ([`PgRateLimiter::with_purge_every`]).
#[derive(Debug, Clone)]
pub struct PgRateLimiter {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    purge_every: Duration,
    /// When this limiter last purged (ms since the epoch, on its clock).
    last_purge_ms: Arc<AtomicI64>,
}

impl PgRateLimiter {
    /// A limiter on `pool` (migrated: the `rate_limits` table), timed on
    /// `clock`.
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        let last = clock.now().timestamp_millis();
        Self {
            pool,
            clock,
            purge_every: DEFAULT_PURGE_EVERY,
            last_purge_ms: Arc::new(AtomicI64::new(last)),
        }
    }

    /// Purging expired rows at most this often (default 60 s; `ZERO`: on
    /// every charge).
    pub fn with_purge_every(mut self, every: Duration) -> Self {
        self.purge_every = every;
        self
    }

    /// Deletes the keys that are like new at the clock's now (no charge in
    /// their window, bucket full); returns how many. `charge` calls it
    /// itself (see the type's docs); a maintenance job may call it too.
    pub async fn purge_expired(&self) -> Result<u64, LimiterError> {
        let now = self.now();
        let done = sqlx::query("DELETE FROM rate_limits WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(LimiterError::unavailable)?;
        Ok(done.rows_affected())
    }

    /// Keys stored now, expired or not (for tests and metrics).
    pub async fn stored_keys(&self) -> Result<i64, LimiterError> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM rate_limits")
            .fetch_one(&self.pool)
            .await
            .map_err(LimiterError::unavailable)?;
        Ok(n)
    }

    fn now(&self) -> DateTime<Utc> {
        truncate_micros(self.clock.now())
    }

    /// Purges when the last purge is older than `purge_every`; a failure is
    /// logged (the charge it follows stands).
    async fn purge_if_due(&self, now: DateTime<Utc>) {
        let now_ms = now.timestamp_millis();
        let last = self.last_purge_ms.load(Ordering::Relaxed);
        let due = now_ms.saturating_sub(last) >= self.purge_every.as_millis() as i64;
        if !due
            || self
                .last_purge_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match self.purge_expired().await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "expired rate-limit keys purged"),
            Ok(_) => {}
            Err(error) => tracing::warn!(
                error = %bonde_pressure_core::error_chain(&error),
                "purging expired rate-limit keys failed"
            ),
        }
    }
}

/// The key's row id: its kind's name and the SHA-256 of its value.
fn key_hash(key: &LimitKey) -> Vec<u8> {
    Sha256::digest(key.value.as_bytes()).to_vec()
}

/// The window, at most [`MAX_WINDOW`], in whole microseconds.
fn window_of(quota: Quota) -> TimeDelta {
    let w = quota.window.min(MAX_WINDOW);
    TimeDelta::microseconds(w.as_micros() as i64)
}

/// A bucket's slack: `(limit - 1) × interval`, in whole microseconds.
fn slack_of(quota: Quota) -> TimeDelta {
    let interval = interval_of(quota).num_microseconds().unwrap_or(i64::MAX);
    TimeDelta::microseconds(interval.saturating_mul(i64::from(quota.limit.max(1) - 1)))
}

/// A bucket's interval (`window / limit`) in whole microseconds.
fn interval_of(quota: Quota) -> TimeDelta {
    let w = quota.window.min(MAX_WINDOW);
    TimeDelta::microseconds((w / quota.limit.max(1)).as_micros() as i64)
}

fn far_future() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap()
}

fn add(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d)
        .unwrap_or_else(far_future)
        .min(far_future())
}

fn sub(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_sub_signed(d)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .max(DateTime::<Utc>::UNIX_EPOCH)
}

fn pg_interval(d: TimeDelta) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: d.num_microseconds().unwrap_or(i64::MAX),
    }
}

fn until(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from)
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_millis(1))
}

/// The answer of a window whose charges in the window are `times`.
fn window_answer(mut times: Vec<DateTime<Utc>>, quota: Quota, now: DateTime<Utc>) -> Admission {
    if times.len() < quota.limit as usize {
        return Admission::Admitted;
    }
    times.sort_unstable();
    // The charge that must leave the window for one more to fit.
    let oldest = times[times.len() - quota.limit as usize];
    Admission::Exhausted {
        retry_after: until(now, add(oldest, window_of(quota))),
    }
}

/// The answer of a bucket full again at `full_at`.
fn bucket_answer(full_at: Option<DateTime<Utc>>, quota: Quota, now: DateTime<Utc>) -> Admission {
    let interval = interval_of(quota);
    let slack = slack_of(quota);
    let admit_from = full_at.map(|f| f.max(now)).map(|f| sub_any(f, slack));
    match admit_from {
        Some(from) if from > now => Admission::Exhausted {
            retry_after: until(now, from)
                .min(interval.to_std().unwrap_or_default())
                .max(Duration::from_millis(1)),
        },
        _ => Admission::Admitted,
    }
}

/// `t - d`, saturating at the minimum.
fn sub_any(t: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
    t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Nothing fits in an empty quota (as in the in-memory limiter).
fn empty_quota(quota: Quota) -> Option<Admission> {
    (quota.limit == 0).then(|| Admission::Exhausted {
        retry_after: quota.window.max(Duration::from_millis(1)),
    })
}

#[async_trait]
impl RateLimiter for PgRateLimiter {
    async fn peek(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError> {
        if let Some(refused) = empty_quota(quota) {
            return Ok(refused);
        }
        let now = self.now();
        let row: Option<(Vec<DateTime<Utc>>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT times, full_at FROM rate_limits WHERE kind = $1 AND key_hash = $2",
        )
        .bind(key.kind.as_str())
        .bind(key_hash(key))
        .fetch_optional(&self.pool)
        .await
        .map_err(LimiterError::unavailable)?;
        let Some((times, full_at)) = row else {
            return Ok(Admission::Admitted);
        };
        Ok(match quota.refill {
            Refill::Gradual => bucket_answer(full_at, quota, now),
            _ => {
                let since = sub(now, window_of(quota));
                let kept = times.into_iter().filter(|t| *t > since).collect();
                window_answer(kept, quota, now)
            }
        })
    }

    async fn charge(&self, key: &LimitKey, quota: Quota) -> Result<Admission, LimiterError> {
        if let Some(refused) = empty_quota(quota) {
            return Ok(refused);
        }
        let now = self.now();
        let answer = match quota.refill {
            Refill::Gradual => {
                let interval = interval_of(quota);
                let slack = slack_of(quota);
                let (admitted, full_at): (bool, Option<DateTime<Utc>>) =
                    sqlx::query_as(BUCKET_CHARGE_SQL)
                        .bind(key.kind.as_str())
                        .bind(key_hash(key))
                        .bind(now)
                        .bind(add(now, slack))
                        .bind(pg_interval(interval))
                        .bind(add(now, interval))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(LimiterError::unavailable)?;
                if admitted {
                    Admission::Admitted
                } else {
                    bucket_answer(full_at, quota, now)
                }
            }
            _ => {
                let window = window_of(quota);
                let (admitted, times): (bool, Vec<DateTime<Utc>>) =
                    sqlx::query_as(WINDOW_CHARGE_SQL)
                        .bind(key.kind.as_str())
                        .bind(key_hash(key))
                        .bind(now)
                        .bind(sub(now, window))
                        .bind(i64::from(quota.limit))
                        .bind(add(now, window))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(LimiterError::unavailable)?;
                if admitted {
                    Admission::Admitted
                } else {
                    window_answer(times, quota, now)
                }
            }
        };
        self.purge_if_due(now).await;
        Ok(answer)
    }

    async fn refund(&self, key: &LimitKey, quota: Quota) -> Result<(), LimiterError> {
        let now = self.now();
        let query = match quota.refill {
            // One token back; a bucket full before now is full anyway.
            Refill::Gradual => sqlx::query(
                "UPDATE rate_limits SET full_at = full_at - $3 \
                 WHERE kind = $1 AND key_hash = $2 AND full_at IS NOT NULL",
            )
            .bind(key.kind.as_str())
            .bind(key_hash(key))
            .bind(pg_interval(interval_of(quota))),
            // The latest charge, if still in the window.
            _ => sqlx::query(
                "UPDATE rate_limits SET times = times[1:cardinality(times) - 1] \
                 WHERE kind = $1 AND key_hash = $2 AND cardinality(times) > 0 \
                 AND times[cardinality(times)] > $3",
            )
            .bind(key.kind.as_str())
            .bind(key_hash(key))
            .bind(sub(now, window_of(quota))),
        };
        query
            .execute(&self.pool)
            .await
            .map_err(LimiterError::unavailable)?;
        Ok(())
    }
}
