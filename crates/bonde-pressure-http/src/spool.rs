//! Flushes core's payload spool as soon as the store answers again.
//!
//! Core keeps every webhook payload it could not store (the store was
//! unavailable) in its spool ([`bonde_pressure_core::spool`]); each
//! reconciliation pass flushes it. So that payloads do not wait for the
//! next pass, a webhook that leaves one waiting starts a background task
//! that calls [`PressureService::flush_spool`] with a backoff (0.25 s
//! doubling to 5 s), each attempt bounded by the request deadline
//! (`REQUEST_TIMEOUT_MS`, through [`crate::deadline`]), until the spool is
//! empty. This module only schedules: what is stored, and how, is core's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bonde_pressure_core::PressureService;

use crate::deadline::{Budget, with_budget};

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs at most one task flushing core's payload spool (see the module's
/// documentation).
pub struct SpoolFlusher {
    service: Arc<PressureService>,
    attempt_timeout: Mutex<Duration>,
    running: AtomicBool,
}

impl std::fmt::Debug for SpoolFlusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolFlusher")
            .field("waiting", &self.service.spool_stats().waiting)
            .field("running", &self.running.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SpoolFlusher {
    /// A flusher of `service`'s spool, not running.
    pub fn new(service: Arc<PressureService>) -> Self {
        Self {
            service,
            attempt_timeout: Mutex::new(Duration::from_secs(5)),
            running: AtomicBool::new(false),
        }
    }

    /// Gives each flush attempt this long of store time (a request's store
    /// deadline; zero: 5 s).
    pub(crate) fn set_attempt_timeout(&self, t: Duration) {
        let t = if t.is_zero() {
            Duration::from_secs(5)
        } else {
            t
        };
        *self
            .attempt_timeout
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Whether a payload waits in core's spool.
    fn waiting(&self) -> bool {
        self.service.spool_stats().waiting > 0
    }

    /// Starts the flushing task if a payload waits and none runs (must be
    /// called within a Tokio runtime).
    pub fn kick(self: &Arc<Self>) {
        if self.waiting() && !self.running.swap(true, Ordering::AcqRel) {
            let flusher = self.clone();
            tokio::spawn(async move { flusher.run().await });
        }
    }

    async fn run(self: Arc<Self>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if !self.waiting() {
                self.running.store(false, Ordering::Release);
                // A payload may have been queued between the check and the flag.
                if !self.waiting() || self.running.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            }
            let limit = *self
                .attempt_timeout
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match with_budget(Budget::new(limit), self.service.flush_spool()).await {
                Ok(n) if n > 0 => backoff = FIRST_BACKOFF,
                // Another flush (reconciliation) holds the spool: wait.
                Ok(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => {
                    tracing::debug!(%error, "payload spool: store still unavailable");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
