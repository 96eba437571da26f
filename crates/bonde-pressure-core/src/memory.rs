//! `InMemoryCallStore`: a complete [`CallStore`] in a mutex, for tests,
//! demos and embedders that need no persistence.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::call::Call;
use crate::domain::{CallId, WidgetId};
use crate::ports::{CallStore, RawEvent, StoreError, StoredEvent};
use crate::privacy::{
    AuditEntry, ErasureReport, LATE_PAYLOAD_WINDOW, PersonKey, PersonalDataStore, RetentionPass,
    RetentionReport,
};
use crate::results::{CallCursor, CampaignResults, ResultsQuery, ResultsReport};

#[derive(Debug, Default)]
struct Inner {
    calls: HashMap<CallId, Call>,
    events: Vec<StoredEvent>,
    /// The last event id given (ids are never reused, even once deleted).
    last_event_id: i64,
    /// Calls an erasure request marked while they were not settled.
    erasure_requested: HashSet<CallId>,
    audit: Vec<AuditEntry>,
}

impl Inner {
    fn append(&mut self, call_id: Option<CallId>, events: &[RawEvent]) {
        for raw in events {
            self.last_event_id += 1;
            let id = self.last_event_id;
            self.events.push(StoredEvent {
                id,
                call_id,
                raw: raw.clone(),
            });
        }
    }

    /// Erases a stored call (bumping its version) and deletes its events;
    /// returns the number of events deleted.
    fn erase(&mut self, id: CallId, now: DateTime<Utc>) -> u64 {
        if let Some(call) = self.calls.get_mut(&id) {
            call.erase(now);
            call.version += 1;
        }
        self.erasure_requested.remove(&id);
        self.delete_events(|e| e.call_id == Some(id))
    }

    fn delete_events(&mut self, mut doomed: impl FnMut(&StoredEvent) -> bool) -> u64 {
        let before = self.events.len();
        self.events.retain(|e| !doomed(e));
        (before - self.events.len()) as u64
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

    /// Every audit entry, oldest first.
    pub fn all_audit_entries(&self) -> Vec<AuditEntry> {
        self.lock().audit.clone()
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
        inner.calls.insert(call.id, call.clone());
        Ok(())
    }

    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        Ok(self.lock().calls.get(&id).cloned())
    }

    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let current = inner.calls.get(&call.id).ok_or(StoreError::NotFound)?;
        if current.version != call.version {
            return Err(StoreError::Conflict);
        }
        let mut next = call.clone();
        next.version = call.version + 1;
        if current.is_erased() {
            // Erasure is permanent (the version check makes this a no-op
            // for callers that loaded the erased call).
            next.erase(current.facts.erased_at.unwrap_or(call.updated_at));
        }
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
                    && (c.facts.activist.leg_id.is_some()
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
impl PersonalDataStore for InMemoryCallStore {
    async fn retention_pass(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<RetentionPass, StoreError> {
        let mut inner = self.lock();
        let limit = limit as usize;
        let mut due: Vec<(DateTime<Utc>, CallId)> = inner
            .calls
            .values()
            .filter(|c| {
                !c.is_erased()
                    && c.is_settled()
                    && (c.created_at < cutoff || inner.erasure_requested.contains(&c.id))
            })
            .map(|c| (c.created_at, c.id))
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        let mut events_deleted = 0;
        for &(_, id) in &due {
            events_deleted += inner.erase(id, now);
        }
        // Payloads stored for recently erased calls after their erasure.
        let late: HashSet<CallId> = inner
            .calls
            .values()
            .filter(|c| {
                c.facts
                    .erased_at
                    .is_some_and(|t| t >= now - LATE_PAYLOAD_WINDOW)
            })
            .map(|c| c.id)
            .collect();
        events_deleted += inner.delete_events(|e| e.call_id.is_some_and(|id| late.contains(&id)));
        let mut old: Vec<i64> = inner
            .events
            .iter()
            .filter(|e| e.raw.received_at < cutoff)
            .map(|e| e.id)
            .collect();
        let old_full = old.len() > limit;
        old.truncate(limit);
        let old: HashSet<i64> = old.into_iter().collect();
        events_deleted += inner.delete_events(|e| old.contains(&e.id));
        let more = due.len() == limit || old_full;
        Ok(RetentionPass::Ran(RetentionReport::new(
            due.len() as u64,
            events_deleted,
            more,
        )))
    }

    async fn erase_person(
        &self,
        who: &PersonKey,
        now: DateTime<Utc>,
    ) -> Result<ErasureReport, StoreError> {
        let mut inner = self.lock();
        let matches = |c: &Call| {
            !c.is_erased()
                && match who {
                    PersonKey::Phone(p) => c.activist.phone == *p,
                    PersonKey::Email(e) => {
                        c.activist.email.as_str().eq_ignore_ascii_case(e.as_str())
                    }
                }
        };
        let (settled, pending): (Vec<&Call>, Vec<&Call>) = inner
            .calls
            .values()
            .filter(|c| matches(c))
            .partition(|c| c.is_settled());
        let settled: Vec<CallId> = settled.into_iter().map(|c| c.id).collect();
        let pending: HashSet<CallId> = pending.into_iter().map(|c| c.id).collect();
        let mut report = ErasureReport::new(settled.len() as u64, pending.len() as u64, 0);
        for id in settled {
            report.events_deleted += inner.erase(id, now);
        }
        // Still-unsettled calls stay whole: marked, erased once settled.
        let still_live: HashSet<CallId> = inner
            .calls
            .values()
            .filter(|c| !c.is_settled())
            .map(|c| c.id)
            .collect();
        inner.erasure_requested.extend(pending);
        let needles = who.payload_needles();
        report.events_deleted += inner.delete_events(|e| {
            !e.call_id.is_some_and(|id| still_live.contains(&id))
                && needles
                    .iter()
                    .any(|n| e.raw.payload.to_lowercase().contains(n.as_str()))
        });
        Ok(report)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.lock().audit.push(entry.clone());
        Ok(())
    }

    async fn audit_entries(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self
            .lock()
            .audit
            .iter()
            .rev()
            .take(limit as usize)
            .cloned()
            .collect())
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
