//! [`PgLease`]: core's [`Lease`] on PostgreSQL (the `leases` table).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bonde_pressure_core::{Clock, Lease, LeaseError};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sqlx::PgPool;

use crate::codec::truncate_micros;

/// Takes or renews a lease in one statement: insert the row if missing,
/// else take it over only if its lease expired ($3: now) or `holder`
/// ($2) already holds it. A row comes back only when `holder` got it.
const ACQUIRE_SQL: &str = "\
INSERT INTO leases AS l (name, holder, lease_until) VALUES ($1, $2, $4) \
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until \
WHERE l.lease_until <= $3 OR l.holder = EXCLUDED.holder \
RETURNING holder";

/// A [`Lease`] on PostgreSQL: a row per name in `leases` (holder, lease
/// end), shared by every replica using the database.
///
/// `try_acquire` is one `INSERT … ON CONFLICT DO UPDATE … WHERE lease_until
/// <= now OR holder = $holder RETURNING`: atomic under the row's lock, with
/// no transaction, session or advisory lock held between calls (a pooled
/// connection may serve anything else meanwhile, and a holder that dies
/// just lets its lease expire). `release` deletes the row if `holder` holds
/// it. Time is the lease's [`Clock`] (truncated to microseconds), as for
/// [`crate::PgRateLimiter`]: replicas' clocks must be synchronised, with a
/// ttl well above their skew.
#[derive(Debug, Clone)]
pub struct PgLease {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl PgLease {
    /// Leases on `pool` (migrated: the `leases` table), timed on `clock`.
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    /// The holder of `name` and the end of its lease, expired or not.
    pub async fn current(&self, name: &str) -> Result<Option<(String, DateTime<Utc>)>, LeaseError> {
        sqlx::query_as("SELECT holder, lease_until FROM leases WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(LeaseError::unavailable)
    }
}

#[async_trait]
impl Lease for PgLease {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, LeaseError> {
        let now = truncate_micros(self.clock.now());
        let far = Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap();
        let until = TimeDelta::from_std(ttl)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(far)
            .min(far);
        let got: Option<(String,)> = sqlx::query_as(ACQUIRE_SQL)
            .bind(name)
            .bind(holder)
            .bind(now)
            .bind(truncate_micros(until))
            .fetch_optional(&self.pool)
            .await
            .map_err(LeaseError::unavailable)?;
        Ok(got.is_some())
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(LeaseError::unavailable)?;
        Ok(())
    }
}
