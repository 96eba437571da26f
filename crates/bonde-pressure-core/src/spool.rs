//! The payload promise: every provider payload handed to the service is
//! stored exactly once, whatever fails (one exception: a payload with no
//! call whose append was written but answered an error may be stored twice
//! when the spool retries it, as there is no call log to look it up in).
//! The promise holds for calls that run to completion: an adapter must not
//! drop [`PressureService::handle`](crate::PressureService::handle)'s future
//! half-way (the HTTP adapter runs it in its own task).
//!
//! [`PressureService::handle`](crate::PressureService::handle) stores a
//! payload with the commit of its event. When there is no such commit (the
//! call is unknown or unreadable, the commit failed, contention gave up) or
//! the adapter could not parse or route the payload
//! ([`PressureService::record_unparsed`](crate::PressureService::record_unparsed)),
//! the payload is stored alone ([`CallStore::append_events`]), unless the
//! call's event log already holds the same delivery ([`same_delivery`]: a
//! commit whose answer was lost may have stored it).
//!
//! When the store cannot take it now, the payload waits in this process's
//! spool, bounded ([`ServiceConfig::spool_capacity`](crate::ServiceConfig::spool_capacity),
//! [`DEFAULT_SPOOL_CAPACITY`] by default), until
//! [`PressureService::flush_spool`](crate::PressureService::flush_spool)
//! stores it (in arrival order, the same way). Each reconciliation pass
//! flushes the spool first; an adapter may flush it sooner. A full spool
//! refuses the new payload with [`SpoolFull`] (the payloads already kept
//! are never dropped): the adapter asks the provider to retry (HTTP 503).
//! The spool lives in memory: a payload still waiting when the process
//! stops is lost.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::domain::CallId;
use crate::ports::{CallStore, RawEvent, StoreError};

/// The most payloads the spool keeps by default.
pub const DEFAULT_SPOOL_CAPACITY: usize = 10_000;

/// Whether two payloads are the same delivery: same kind, leg id, payload
/// and sequence number, received within the same millisecond (stores may
/// keep timestamps to the microsecond only, and PostgreSQL keeps a NUL as
/// U+FFFD).
pub fn same_delivery(a: &RawEvent, b: &RawEvent) -> bool {
    let text = |s: &str| s.replace('\0', "\u{FFFD}");
    let sid = |s: &Option<String>| s.as_deref().map(text);
    a.kind == b.kind
        && sid(&a.leg_id) == sid(&b.leg_id)
        && text(&a.payload) == text(&b.payload)
        && a.sequence_number == b.sequence_number
        && (a.received_at - b.received_at).abs() < chrono::Duration::milliseconds(1)
}

/// Stores `raw` alone, once: with its call (or without one when the call is
/// unknown, `call_id = None` or [`StoreError::NotFound`]), unless the
/// call's event log already holds the same delivery.
///
/// The store unavailable while the log is read ([`StoreError::Backend`]) is
/// an error: whether an earlier write landed cannot be told, so the payload
/// must wait. A log the store answers but cannot read (another error) does
/// not stop the payload: a duplicate beats a loss.
pub(crate) async fn store_once(
    store: &dyn CallStore,
    call_id: Option<CallId>,
    raw: &RawEvent,
) -> Result<(), StoreError> {
    let events = std::slice::from_ref(raw);
    let Some(id) = call_id else {
        return store.append_events(None, events).await;
    };
    match store.events(id).await {
        Ok(log) if log.iter().any(|e| same_delivery(&e.raw, raw)) => return Ok(()),
        Ok(_) => {}
        Err(error @ StoreError::Backend(_)) => return Err(error),
        Err(error) => {
            warn!(call_id = %id, %error, "event log unreadable; storing the payload without checking for a copy");
        }
    }
    match store.append_events(Some(id), events).await {
        Err(StoreError::NotFound) => store.append_events(None, events).await,
        other => other,
    }
}

/// The spool is full: the payload was not kept (nothing already kept was
/// dropped). Adapters ask the provider to send it again later.
#[derive(Debug, thiserror::Error)]
#[error(
    "the payload spool is full ({capacity} payloads wait for the store): this payload was not kept"
)]
#[non_exhaustive]
pub struct SpoolFull {
    /// The spool's capacity.
    pub capacity: usize,
    /// Why the payload could not be stored now.
    #[source]
    pub cause: StoreError,
}

/// What the spool holds and has done since the service started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolStats {
    /// Payloads waiting for the store.
    pub waiting: usize,
    /// The most payloads it keeps.
    pub capacity: usize,
    /// When the oldest waiting payload was queued (the service's clock).
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Payloads queued so far.
    pub queued: u64,
    /// Queued payloads stored since.
    pub stored: u64,
    /// Payloads refused because the spool was full ([`SpoolFull`]).
    pub refused: u64,
}

#[derive(Debug)]
struct Entry {
    call_id: Option<CallId>,
    raw: RawEvent,
    queued_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Queue {
    entries: VecDeque<Entry>,
    queued: u64,
    stored: u64,
    refused: u64,
}

/// The bounded in-memory queue of payloads waiting for the store.
#[derive(Debug)]
pub(crate) struct PayloadSpool {
    capacity: usize,
    queue: Mutex<Queue>,
    /// One flush at a time: two would store the same entry twice.
    flushing: tokio::sync::Mutex<()>,
}

impl PayloadSpool {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            queue: Mutex::new(Queue::default()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a payload the store could not take (`cause`), or refuses it
    /// when the spool is full.
    pub(crate) fn push(
        &self,
        call_id: Option<CallId>,
        raw: RawEvent,
        now: DateTime<Utc>,
        cause: StoreError,
    ) -> Result<(), SpoolFull> {
        let mut queue = self.lock();
        if queue.entries.len() >= self.capacity {
            queue.refused += 1;
            drop(queue);
            tracing::error!(?call_id, kind = %raw.kind, capacity = self.capacity, error = %cause, "payload spool full: this payload is refused");
            return Err(SpoolFull {
                capacity: self.capacity,
                cause,
            });
        }
        queue.entries.push_back(Entry {
            call_id,
            raw,
            queued_at: now,
        });
        queue.queued += 1;
        let waiting = queue.entries.len();
        drop(queue);
        warn!(?call_id, waiting, error = %cause, "payload queued until the store answers");
        Ok(())
    }

    pub(crate) fn stats(&self) -> SpoolStats {
        let queue = self.lock();
        SpoolStats {
            waiting: queue.entries.len(),
            capacity: self.capacity,
            oldest_queued_at: queue.entries.front().map(|e| e.queued_at),
            queued: queue.queued,
            stored: queue.stored,
            refused: queue.refused,
        }
    }

    /// Stores the waiting payloads in arrival order ([`store_once`]) until
    /// none is left (`Ok`: how many this flush stored) or the store fails
    /// (`Err`; those stored before stay stored, the rest wait). While
    /// another flush runs, returns `Ok(0)` at once.
    pub(crate) async fn flush(
        &self,
        store: &dyn CallStore,
        now: impl Fn() -> DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        if self.lock().entries.is_empty() {
            return Ok(0);
        }
        let Ok(_flushing) = self.flushing.try_lock() else {
            return Ok(0);
        };
        let mut stored = 0;
        loop {
            let next = {
                let queue = self.lock();
                queue
                    .entries
                    .front()
                    .map(|e| (e.call_id, e.raw.clone(), e.queued_at))
            };
            let Some((call_id, raw, queued_at)) = next else {
                return Ok(stored);
            };
            store_once(store, call_id, &raw).await?;
            // Only this flush pops: the front is still the entry just stored.
            let mut queue = self.lock();
            queue.entries.pop_front();
            queue.stored += 1;
            drop(queue);
            stored += 1;
            let waited = (now() - queued_at).num_milliseconds();
            info!(?call_id, kind = %raw.kind, waited_ms = waited, "queued payload stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_read_back_with_nul_replaced_is_the_same_delivery() {
        let sent = RawEvent::new(
            "status-callback",
            "CallStatus=ringing&X=\0",
            chrono::Utc::now(),
        )
        .with_leg_id("CA\0x")
        .with_sequence_number(3);
        let mut stored = sent.clone();
        stored.payload = sent.payload.replace('\0', "\u{FFFD}");
        stored.leg_id = Some("CA\u{FFFD}x".into());
        assert!(same_delivery(&sent, &stored));
        stored.payload.push('x');
        assert!(!same_delivery(&sent, &stored));
    }

    #[test]
    fn a_later_receipt_of_the_same_payload_is_another_delivery() {
        let t = chrono::Utc::now();
        let first = RawEvent::new("status-callback", "CallStatus=ringing", t);
        let mut again = first.clone();
        again.received_at = t + chrono::Duration::milliseconds(2);
        assert!(!same_delivery(&first, &again));
        again.received_at = t + chrono::Duration::microseconds(400);
        assert!(same_delivery(&first, &again));
    }

    #[tokio::test]
    async fn a_full_spool_refuses_the_new_payload_and_keeps_the_old_ones() {
        let spool = PayloadSpool::new(2);
        let t = chrono::Utc::now();
        let down = || StoreError::backend(std::io::Error::other("down"));
        for n in 0..2 {
            spool
                .push(None, RawEvent::new("k", format!("n={n}"), t), t, down())
                .unwrap();
        }
        let full = spool
            .push(None, RawEvent::new("k", "n=2", t), t, down())
            .unwrap_err();
        assert_eq!(full.capacity, 2);
        assert!(std::error::Error::source(&full).is_some());
        let stats = spool.stats();
        assert_eq!(
            (stats.waiting, stats.queued, stats.refused, stats.stored),
            (2, 2, 1, 0)
        );
        assert_eq!(stats.oldest_queued_at, Some(t));

        let store = crate::InMemoryCallStore::new();
        assert_eq!(spool.flush(&store, chrono::Utc::now).await.unwrap(), 2);
        let payloads: Vec<String> = store
            .all_events()
            .into_iter()
            .map(|e| e.raw.payload)
            .collect();
        assert_eq!(payloads, ["n=0", "n=1"]);
        assert_eq!(spool.stats().stored, 2);
        assert_eq!(spool.stats().waiting, 0);
    }
}
