//! `InMemoryCallStore`: a complete [`CallStore`] in a mutex, for tests,
//! demos and embedders that need no persistence.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::call::Call;
use crate::domain::{CallId, CallSid, WidgetId};
use crate::ports::{CallStats, CallStore, RawEvent, StoreError, StoredEvent};
use crate::results::{CallCursor, CampaignResults, ResultsQuery, ResultsReport};

#[derive(Debug, Default)]
struct Inner {
    calls: HashMap<CallId, Call>,
    by_sid: HashMap<CallSid, CallId>,
    events: Vec<StoredEvent>,
}

impl Inner {
    fn append(&mut self, call_id: Option<CallId>, events: &[RawEvent]) {
        for raw in events {
            let id = self.events.len() as i64 + 1;
            self.events.push(StoredEvent {
                id,
                call_id,
                raw: raw.clone(),
            });
        }
    }

    fn index(&mut self, call: &Call) {
        for sid in [&call.facts.activist.sid, &call.facts.target.sid]
            .into_iter()
            .flatten()
        {
            self.by_sid.insert(sid.clone(), call.id);
        }
    }
}

/// A [`CallStore`] in memory. Keeps every guarantee of the trait; loses
/// everything when dropped.
#[derive(Debug, Default)]
pub struct InMemoryCallStore {
    inner: Mutex<Inner>,
}

impl InMemoryCallStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated
        // (every method updates it last), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every stored event, calls' and orphans', in insertion order.
    pub fn all_events(&self) -> Vec<StoredEvent> {
        self.lock().events.clone()
    }
}

#[async_trait]
impl CallStore for InMemoryCallStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.calls.contains_key(&call.id) {
            return Err(StoreError::AlreadyExists);
        }
        inner.index(call);
        inner.calls.insert(call.id, call.clone());
        Ok(())
    }

    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        Ok(self.lock().calls.get(&id).cloned())
    }

    async fn find_by_sid(&self, sid: &CallSid) -> Result<Option<Call>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .by_sid
            .get(sid)
            .and_then(|id| inner.calls.get(id))
            .cloned())
    }

    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let current = inner.calls.get(&call.id).ok_or(StoreError::NotFound)?;
        if current.version != call.version {
            return Err(StoreError::Conflict);
        }
        let mut next = call.clone();
        next.version = call.version + 1;
        inner.index(&next);
        inner.append(Some(call.id), events);
        inner.calls.insert(call.id, next);
        Ok(call.version + 1)
    }

    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(id) = call_id {
            if !inner.calls.contains_key(&id) {
                return Err(StoreError::NotFound);
            }
        }
        inner.append(call_id, events);
        Ok(())
    }

    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self
            .lock()
            .events
            .iter()
            .filter(|e| e.call_id == Some(call_id))
            .cloned()
            .collect())
    }

    async fn list_unfinished(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        let inner = self.lock();
        let mut calls: Vec<Call> = inner
            .calls
            .values()
            .filter(|c| !c.is_settled() && c.updated_at < updated_before)
            .cloned()
            .collect();
        calls.sort_by_key(|c| (c.updated_at, c.id));
        calls.truncate(limit as usize);
        Ok(calls)
    }

    async fn stats(
        &self,
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<CallStats, StoreError> {
        let inner = self.lock();
        Ok(CallStats::from_calls(inner.calls.values().filter(|c| {
            c.widget_id == widget_id && c.created_at >= from && c.created_at < to
        })))
    }

    async fn count_recent_calls_to(
        &self,
        phone: &crate::domain::PhoneNumber,
        since: DateTime<Utc>,
    ) -> Result<Option<crate::ports::RecentCalls>, StoreError> {
        let inner = self.lock();
        let times: Vec<DateTime<Utc>> = inner
            .calls
            .values()
            .filter(|c| {
                c.activist.phone == *phone
                    && c.created_at > since
                    && (c.facts.activist.sid.is_some()
                        || c.state() == crate::call::DetailedState::Created)
            })
            .map(|c| c.created_at)
            .collect();
        Ok(Some(crate::ports::RecentCalls::new(
            times.len() as u64,
            times.into_iter().min(),
        )))
    }
}

#[async_trait]
impl CampaignResults for InMemoryCallStore {
    async fn report(&self, query: &ResultsQuery) -> Result<ResultsReport, StoreError> {
        let inner = self.lock();
        Ok(ResultsReport::from_calls(query, inner.calls.values()))
    }

    async fn list_calls(
        &self,
        widget_id: WidgetId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<CallCursor>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        let inner = self.lock();
        let mut calls: Vec<Call> = inner
            .calls
            .values()
            .filter(|c| c.widget_id == widget_id && c.created_at >= from && c.created_at < to)
            .filter(|c| after.is_none_or(|a| (c.created_at, c.id) > (a.created_at, a.id)))
            .cloned()
            .collect();
        calls.sort_by_key(|c| (c.created_at, c.id));
        calls.truncate(limit as usize);
        Ok(calls)
    }
}
