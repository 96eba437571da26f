//! Call updates for Server-Sent Events and metrics: a [`CallStore`]
//! decorator that, after every successful commit, publishes the call's new
//! state on an in-process broadcast channel ([`CommitHub`]) and counts state
//! transitions.
//!
//! SSE subscribers wake on a publication for their call, and also poll the
//! store on a timer, so commits made by other replicas (which this process
//! never sees) still reach them, at the poll interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bonde_pressure_core::ports::{StoredEvent, UnreadableCall};
use bonde_pressure_core::{Call, CallId, CallStore, DetailedState, RawEvent, StoreError, WidgetId};
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::metrics::{self, Metrics};

/// One committed change of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallUpdate {
    /// The call.
    pub call_id: CallId,
    /// Its widget (widget-level streams filter on it).
    pub widget_id: WidgetId,
    /// Its version after the commit.
    pub version: u64,
    /// Its state after the commit.
    pub state: DetailedState,
}

/// The in-process broadcast of [`CallUpdate`]s.
#[derive(Debug, Clone)]
pub struct CommitHub {
    tx: broadcast::Sender<CallUpdate>,
}

impl Default for CommitHub {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl CommitHub {
    /// A hub keeping up to `capacity` updates for slow subscribers (they
    /// then skip ahead and re-read the store).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// Subscribes to every update.
    pub fn subscribe(&self) -> broadcast::Receiver<CallUpdate> {
        self.tx.subscribe()
    }

    /// Publishes an update (no subscriber is fine).
    pub fn publish(&self, update: CallUpdate) {
        let _ = self.tx.send(update);
    }
}

/// A [`CallStore`] that publishes each successful commit on a [`CommitHub`]
/// and counts state transitions in [`Metrics`]. Everything else is delegated.
pub struct NotifyingStore {
    inner: Arc<dyn CallStore>,
    hub: CommitHub,
    metrics: Arc<Metrics>,
    /// Last state this process saw per unfinished call (to count transitions).
    last_state: Mutex<HashMap<CallId, DetailedState>>,
}

impl std::fmt::Debug for NotifyingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyingStore").finish_non_exhaustive()
    }
}

impl NotifyingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn CallStore>, hub: CommitHub, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            hub,
            metrics,
            last_state: Mutex::new(HashMap::new()),
        }
    }

    fn record_state(&self, call_id: CallId, state: DetailedState) {
        let changed = {
            let mut last = self.last_state.lock().unwrap_or_else(|p| p.into_inner());
            if last.len() >= 50_000 {
                // Forget finished calls first; they rarely change again.
                last.retain(|_, s| !s.is_terminal());
            }
            last.insert(call_id, state) != Some(state)
        };
        if changed {
            self.metrics
                .inc(metrics::STATE_TRANSITIONS, &[("state", state.as_str())]);
        }
    }
}

#[async_trait]
impl CallStore for NotifyingStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        self.inner.create(call).await?;
        let state = call.state();
        self.record_state(call.id, state);
        self.hub.publish(CallUpdate {
            call_id: call.id,
            widget_id: call.widget_id,
            version: call.version,
            state,
        });
        Ok(())
    }

    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        self.inner.get(id).await
    }

    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        let version = self.inner.commit(call, events).await?;
        let state = call.state();
        self.record_state(call.id, state);
        self.hub.publish(CallUpdate {
            call_id: call.id,
            widget_id: call.widget_id,
            version,
            state,
        });
        Ok(version)
    }

    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError> {
        self.inner.append_events(call_id, events).await
    }

    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.events(call_id).await
    }

    async fn list_unfinished(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        self.inner.list_unfinished(updated_before, limit).await
    }

    async fn list_unfinished_rows(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Result<Call, UnreadableCall>>, StoreError> {
        self.inner.list_unfinished_rows(updated_before, limit).await
    }

    async fn count_recent_calls_to(
        &self,
        phone: &bonde_pressure_core::PhoneNumber,
        since: DateTime<Utc>,
    ) -> Result<Option<bonde_pressure_core::RecentCalls>, StoreError> {
        self.inner.count_recent_calls_to(phone, since).await
    }
}
