//! Webhook payloads that could not be stored when they arrived (the store
//! was unavailable), kept in memory and stored as soon as the store answers
//! again.
//!
//! A TwiML route answers fallback TwiML while the store is down (Twilio
//! takes that as delivered), and a callback answered 503 may not be retried
//! by Twilio: their payloads wait here. A background task retries them in
//! arrival order, with a backoff (0.25 s doubling to 5 s; each attempt
//! bounded by the request deadline, `REQUEST_TIMEOUT_MS`); each is stored
//! unapplied, with its call (or without one when the call is unknown), once
//! — unless the call's log already holds it. The queue is bounded
//! ([`SPOOL_CAPACITY`], the oldest payload is dropped and logged first) and
//! lives in this process only: a payload still queued when the process
//! stops is lost (docs/deployment.md).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bonde_pressure_core::{CallId, CallStore, RawEvent, StoreError};

use crate::metrics::{self, Metrics};

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The most payloads kept waiting for the store.
pub const SPOOL_CAPACITY: usize = 10_000;

/// Whether two payloads are the same delivery (stores may keep timestamps
/// to the microsecond only, and PostgreSQL keeps a NUL as U+FFFD).
pub(crate) fn same_delivery(a: &RawEvent, b: &RawEvent) -> bool {
    let text = |s: &str| s.replace('\0', "\u{FFFD}");
    let sid = |s: &Option<String>| s.as_deref().map(text);
    a.kind == b.kind
        && sid(&a.leg_id) == sid(&b.leg_id)
        && text(&a.payload) == text(&b.payload)
        && a.sequence_number == b.sequence_number
        && (a.received_at - b.received_at).abs() < chrono::Duration::milliseconds(1)
}

/// Stores a payload the service did not take: with its call, or without one
/// when the call is unknown.
pub(crate) async fn store_orphan(
    store: &dyn CallStore,
    call_id: Option<CallId>,
    raw: &RawEvent,
) -> Result<(), StoreError> {
    let events = std::slice::from_ref(raw);
    match call_id {
        Some(id) => match store.append_events(Some(id), events).await {
            Err(StoreError::NotFound) => store.append_events(None, events).await,
            other => other,
        },
        None => store.append_events(None, events).await,
    }
}

/// Stores `raw` for `call_id` unless the call's event log already holds it
/// (if the log cannot be read, stores it: a duplicate beats a loss).
pub(crate) async fn store_unless_present(
    store: &dyn CallStore,
    call_id: Option<CallId>,
    raw: &RawEvent,
) -> Result<(), StoreError> {
    if let Some(id) = call_id {
        if let Ok(events) = store.events(id).await {
            if events.iter().any(|e| same_delivery(&e.raw, raw)) {
                return Ok(());
            }
        }
    }
    store_orphan(store, call_id, raw).await
}

struct Entry {
    call_id: Option<CallId>,
    raw: RawEvent,
}

/// The queue of payloads waiting for the store (see the module's documentation).
pub struct PayloadSpool {
    store: Arc<dyn CallStore>,
    metrics: Mutex<Arc<Metrics>>,
    attempt_timeout: Mutex<Duration>,
    queue: Mutex<VecDeque<Entry>>,
    running: AtomicBool,
}

impl std::fmt::Debug for PayloadSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadSpool")
            .field("queued", &self.len())
            .finish_non_exhaustive()
    }
}

impl PayloadSpool {
    /// An empty spool over `store`.
    pub fn new(store: Arc<dyn CallStore>) -> Self {
        Self {
            store,
            metrics: Mutex::new(Arc::new(Metrics::new())),
            attempt_timeout: Mutex::new(Duration::from_secs(5)),
            queue: Mutex::new(VecDeque::new()),
            running: AtomicBool::new(false),
        }
    }

    /// Counts into these metrics.
    pub(crate) fn set_metrics(&self, metrics: Arc<Metrics>) {
        *self.metrics.lock().unwrap_or_else(|p| p.into_inner()) = metrics;
    }

    /// Gives each attempt to store a payload this long (a request's store
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

    fn count(&self, outcome: &str) {
        let metrics = self
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        metrics.inc(metrics::SPOOLED_PAYLOADS, &[("outcome", outcome)]);
    }

    /// Payloads waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a payload and makes sure a task is storing the queue (must be
    /// called within a Tokio runtime).
    pub fn push(self: &Arc<Self>, call_id: Option<CallId>, raw: RawEvent) {
        {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if queue.len() >= SPOOL_CAPACITY {
                if let Some(dropped) = queue.pop_front() {
                    tracing::error!(
                        call_id = ?dropped.call_id,
                        kind = %dropped.raw.kind,
                        "payload spool full: the oldest webhook payload is dropped"
                    );
                    self.count("dropped");
                }
            }
            queue.push_back(Entry { call_id, raw });
        }
        tracing::warn!(?call_id, "webhook payload queued until the store answers");
        self.count("queued");
        if !self.running.swap(true, Ordering::AcqRel) {
            let spool = self.clone();
            tokio::spawn(async move { spool.drain().await });
        }
    }

    async fn drain(self: Arc<Self>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let next = {
                let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                queue.front().map(|e| (e.call_id, e.raw.clone()))
            };
            let Some((call_id, raw)) = next else {
                self.running.store(false, Ordering::Release);
                // A push may have come between the check and the flag.
                if self.is_empty() || self.running.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            };
            let limit = *self
                .attempt_timeout
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let attempt = tokio::time::timeout(
                limit,
                store_unless_present(self.store.as_ref(), call_id, &raw),
            )
            .await;
            match attempt {
                Ok(Ok(())) => {
                    let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    if queue
                        .front()
                        .is_some_and(|e| e.call_id == call_id && same_delivery(&e.raw, &raw))
                    {
                        queue.pop_front();
                    }
                    drop(queue);
                    tracing::info!(?call_id, "queued webhook payload stored");
                    self.count("stored");
                    backoff = FIRST_BACKOFF;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "payload spool: store still unavailable");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(_) => {
                    tracing::debug!("payload spool: store still not answering");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
