//! Leases: one holder at a time for a named job across replicas — the
//! [`Lease`] port and its in-process implementation, [`InMemoryLease`].
//!
//! [`crate::Reconciler::with_lease`] uses one so that, of the replicas
//! sharing a store, only one runs reconciliation passes at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::Clock;

/// Why a lease could not be taken, renewed or released.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The backend failed.
    #[error("lease unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl LeaseError {
    /// The backend failed because of `cause` (kept as the source).
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        LeaseError::Unavailable(cause.into())
    }
}

/// A named, time-limited lock: at most one holder per name until its lease
/// expires.
///
/// # What implementations must guarantee
/// - [`Lease::try_acquire`] is atomic: it returns `true` (and makes
///   `holder` the holder until now + `ttl`) only when the name has no
///   holder, its lease expired, or `holder` already holds it (a renewal,
///   which moves the expiry to now + `ttl`). Concurrent calls from any
///   replica sharing the backend never both get `true` for one unexpired
///   lease.
/// - [`Lease::release`] ends `holder`'s lease at once, so another holder
///   can take it; it does nothing when `holder` does not hold it (its lease
///   was taken over after expiring).
/// - "Now" is the implementation's [`Clock`]: replicas sharing a backend
///   must have synchronised clocks (NTP); a skew of `s` makes a lease last
///   `s` longer or shorter for the other replicas, so pick `ttl` well above
///   it.
/// - No lock, transaction or session is held between calls: a holder that
///   dies simply stops renewing and its lease expires after `ttl`. (A
///   PostgreSQL session advisory lock would stay with a pooled connection.)
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Lease: Send + Sync + 'static {
    /// Takes or renews `name` for `holder` until now + `ttl`; `false` when
    /// another holder's lease is still valid.
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, LeaseError>;
    /// Gives `name` up if `holder` holds it.
    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError>;
}

/// A [`Lease`] in process memory, on a [`Clock`]: one holder at a time
/// among the users of this value (for a single replica, and for tests).
#[derive(Debug)]
pub struct InMemoryLease {
    clock: Arc<dyn Clock>,
    leases: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
}

impl InMemoryLease {
    /// Leases timed on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// The holder of `name` now, if its lease has not expired.
    pub fn holder(&self, name: &str) -> Option<String> {
        let now = self.clock.now();
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases
            .get(name)
            .filter(|(_, until)| *until > now)
            .map(|(h, _)| h.clone())
    }
}

/// `now + ttl`, saturating.
pub(crate) fn lease_until(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[async_trait]
impl Lease for InMemoryLease {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, LeaseError> {
        let now = self.clock.now();
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        match leases.get(name) {
            Some((h, until)) if h != holder && *until > now => Ok(false),
            _ => {
                leases.insert(name.to_owned(), (holder.to_owned(), lease_until(now, ttl)));
                Ok(true)
            }
        }
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.get(name).is_some_and(|(h, _)| h == holder) {
            leases.remove(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    #[tokio::test]
    async fn one_holder_until_expiry_or_release() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let l = InMemoryLease::new(clock.clone());
        let ttl = Duration::from_secs(60);
        assert!(l.try_acquire("job", "a", ttl).await.unwrap());
        assert!(!l.try_acquire("job", "b", ttl).await.unwrap());
        assert!(l.try_acquire("other", "b", ttl).await.unwrap());
        // A renewal moves the expiry.
        clock.advance(Duration::from_secs(50));
        assert!(l.try_acquire("job", "a", ttl).await.unwrap());
        clock.advance(Duration::from_secs(50));
        assert!(!l.try_acquire("job", "b", ttl).await.unwrap());
        assert_eq!(l.holder("job").as_deref(), Some("a"));
        // "a" dies: after the ttl, "b" takes over.
        clock.advance(Duration::from_secs(11));
        assert_eq!(l.holder("job"), None);
        assert!(l.try_acquire("job", "b", ttl).await.unwrap());
        // A release by a former holder does nothing; by the holder, frees it.
        l.release("job", "a").await.unwrap();
        assert!(!l.try_acquire("job", "a", ttl).await.unwrap());
        l.release("job", "b").await.unwrap();
        assert!(l.try_acquire("job", "a", ttl).await.unwrap());
    }
}
