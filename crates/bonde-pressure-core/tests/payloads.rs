//! The payload promise: every payload handed to the service
//! (`PressureService::handle`, `script`, `record_unparsed`) ends up stored
//! exactly once, whatever the store does — an error on a read, on a commit
//! (before or after writing), contention, an unreadable row, a full outage
//! then recovery — and only a full spool refuses one, explicitly.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bonde_pressure_core::call::CallEvent;
use bonde_pressure_core::ports::{StoredEvent, UnreadableCall};
use bonde_pressure_core::script::ScriptMoment;
use bonde_pressure_core::{
    Call, CallId, CallStore, ConferenceId, Dependencies, EventSink, InMemoryCallStore, LegId,
    ManualClock, PressureService, RawEvent, Scenario, ScenarioPicker, ServiceConfig, ServiceError,
    SimulatedTelephony, StaticCampaignDirectory, StoreError, StubActionRecorder,
};
use chrono::{DateTime, Utc};
use common::demo_request;
use proptest::prelude::*;

/// What the store does on one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Works.
    Ok,
    /// Fails before writing (the backend is unavailable).
    Fail,
    /// Writes, then fails (the answer was lost). Commits and appends to a
    /// call only: see `lost_answers_are_claimed_only_for_payloads_with_a_call`.
    FailAfterWrite,
    /// A commit conflicts.
    Conflict,
    /// A read finds the call's row damaged.
    Unreadable,
}

/// The in-memory store, failing as planned: each `get`, `commit`,
/// `append_events` and `events` takes the next fault of the plan (none
/// left: works); while `down`, every operation fails.
#[derive(Default)]
struct FaultyStore {
    inner: InMemoryCallStore,
    plan: Mutex<VecDeque<Fault>>,
    down: AtomicBool,
}

impl FaultyStore {
    fn plan(&self, faults: impl IntoIterator<Item = Fault>) {
        let mut plan = self.plan.lock().unwrap();
        plan.clear();
        plan.extend(faults);
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn next(&self) -> Fault {
        if self.down.load(Ordering::SeqCst) {
            return Fault::Fail;
        }
        self.plan.lock().unwrap().pop_front().unwrap_or(Fault::Ok)
    }

    /// Copies of `payload` in the event log, with or without a call.
    fn copies(&self, payload: &str) -> usize {
        self.inner
            .all_events()
            .iter()
            .filter(|e| e.raw.payload == payload)
            .count()
    }
}

fn unavailable() -> StoreError {
    StoreError::backend(std::io::Error::other("connection refused"))
}

#[async_trait]
impl CallStore for FaultyStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner.create(call).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        match self.next() {
            Fault::Fail => Err(unavailable()),
            Fault::Unreadable => Err(StoreError::Unreadable(UnreadableCall::new(
                Some(id),
                "facts: invalid type",
            ))),
            _ => self.inner.get(id).await,
        }
    }
    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        match self.next() {
            Fault::Fail => Err(unavailable()),
            Fault::Conflict => Err(StoreError::Conflict),
            Fault::FailAfterWrite => {
                self.inner.commit(call, events).await?;
                Err(unavailable())
            }
            _ => self.inner.commit(call, events).await,
        }
    }
    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError> {
        match self.next() {
            Fault::Fail => Err(unavailable()),
            Fault::FailAfterWrite if call_id.is_some() => {
                self.inner.append_events(call_id, events).await?;
                Err(unavailable())
            }
            Fault::FailAfterWrite => Err(unavailable()),
            _ => self.inner.append_events(call_id, events).await,
        }
    }
    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
        match self.next() {
            Fault::Fail => Err(unavailable()),
            _ => self.inner.events(call_id).await,
        }
    }
    async fn list_unfinished(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner.list_unfinished(updated_before, limit).await
    }
}

/// A service over `store` whose telephony never calls back (only the test
/// changes calls), at most 3 commit attempts per event.
fn service(store: Arc<FaultyStore>, config: ServiceConfig) -> Arc<PressureService> {
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
    ));
    let service = Arc::new(PressureService::new(
        Dependencies::new(
            store,
            telephony.clone(),
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_recorder(Arc::new(StubActionRecorder::new()))
        .with_clock(Arc::new(ManualClock::new(Utc::now()))),
        config.with_max_commit_attempts(3),
    ));
    let sink: Arc<dyn EventSink> = service.clone();
    telephony.connect(Arc::downgrade(&sink));
    service
}

fn raw(n: usize) -> RawEvent {
    RawEvent::new("test", format!("n={n}"), Utc::now())
        .with_leg_id(format!("CA{n:032x}"))
        .with_sequence_number(n as i64)
}

/// The `n`-th event of a test: a prompt, a participant joining (whose
/// first occurrence dials the target: a follow-up commit), or something
/// the call ignores.
fn event(n: usize) -> CallEvent {
    match n % 3 {
        0 => CallEvent::Prompted,
        1 => CallEvent::participant_joined(
            format!("CF{}", "c".repeat(32))
                .parse::<ConferenceId>()
                .unwrap(),
            format!("CA{:032x}", 0xC0FFEE + n).parse::<LegId>().unwrap(),
            None,
        ),
        _ => CallEvent::Ignored {
            what: format!("event {n}"),
        },
    }
}

async fn start(service: &PressureService) -> CallId {
    service.start(&demo_request()).await.unwrap().call_id
}

#[tokio::test]
async fn a_failed_read_keeps_the_payload_once() {
    let store = Arc::new(FaultyStore::default());
    let s = service(store.clone(), ServiceConfig::default());
    let id = start(&s).await;
    // `get` fails; the payload is stored alone, with its call.
    store.plan([Fault::Fail]);
    let err = s.handle(id, event(0), Some(raw(1))).await.unwrap_err();
    assert!(
        matches!(err, ServiceError::Store(StoreError::Backend(_))),
        "{err:?}"
    );
    assert_eq!(store.copies("n=1"), 1);
    let log = store.inner.events(id).await.unwrap();
    assert!(log.iter().any(|e| e.raw.payload == "n=1"));
    assert_eq!(s.spool_stats().waiting, 0);
}

#[tokio::test]
async fn a_commit_that_failed_before_writing_keeps_the_payload_once() {
    let store = Arc::new(FaultyStore::default());
    let s = service(store.clone(), ServiceConfig::default());
    let id = start(&s).await;
    let before = s.call(id).await.unwrap().unwrap();
    store.plan([Fault::Ok, Fault::Fail]);
    s.handle(id, event(0), Some(raw(2))).await.unwrap_err();
    assert_eq!(store.copies("n=2"), 1);
    assert_eq!(s.call(id).await.unwrap().unwrap(), before, "not applied");
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_not_stored_again() {
    let store = Arc::new(FaultyStore::default());
    let s = service(store.clone(), ServiceConfig::default());
    let id = start(&s).await;
    // The commit writes (with its payload) and answers an error.
    store.plan([Fault::Ok, Fault::FailAfterWrite]);
    s.handle(id, event(0), Some(raw(3))).await.unwrap_err();
    assert_eq!(store.copies("n=3"), 1);
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_while_the_log_cannot_be_read_waits_then_is_stored_once() {
    let store = Arc::new(FaultyStore::default());
    let s = service(store.clone(), ServiceConfig::default());
    let id = start(&s).await;
    // get, commit (written, then an error), events (unavailable): whether
    // the payload landed cannot be told, so it waits.
    store.plan([Fault::Ok, Fault::FailAfterWrite, Fault::Fail]);
    s.handle(id, event(0), Some(raw(4))).await.unwrap_err();
    assert_eq!(s.spool_stats().waiting, 1);
    assert_eq!(s.flush_spool().await.unwrap(), 1);
    assert_eq!(store.copies("n=4"), 1, "found in the log, not stored again");
    assert_eq!(s.spool_stats().waiting, 0);
}

#[tokio::test]
async fn contention_keeps_the_payload_once() {
    let store = Arc::new(FaultyStore::default());
    let s = service(store.clone(), ServiceConfig::default());
    let id = start(&s).await;
    store.plan([
        Fault::Ok,
        Fault::Conflict,
        Fault::Ok,
        Fault::Conflict,
        Fault::Ok,
        Fault::Conflict,
    ]);
    let err = s.handle(id, event(0), Some(raw(5))).await.unwrap_err();
    assert!(matches!(err, ServiceError::Contention(3)), "{err:?}");
    let log = store.inner.events(id).await.unwrap();
    assert_eq!(
        log.iter().filter(|e| e.raw.payload == "n=5").count(),
        1,
        "stored with its call"
    );
}

#[tokio::test]
async fn an_unreadable_call_keeps_the_payload_once() {
    let store = Arc::new(FaultyStore::default());
    let s = service(store.clone(), ServiceConfig::default());
    let id = start(&s).await;
    store.plan([Fault::Unreadable]);
    let err = s
        .script(
            id,
            ScriptMoment::Answered,
            CallEvent::Prompted,
            Some(raw(6)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Store(StoreError::Unreadable(_))),
        "{err:?}"
    );
    let log = store.inner.events(id).await.unwrap();
    assert_eq!(log.iter().filter(|e| e.raw.payload == "n=6").count(), 1);
}

#[tokio::test]
async fn a_follow_up_failure_does_not_store_the_payload_twice() {
    let store = Arc::new(FaultyStore::default());
    let s = service(store.clone(), ServiceConfig::default());
    let id = start(&s).await;
    // The first join dials the target; recording the dial fails.
    store.plan([Fault::Ok, Fault::Ok, Fault::Ok, Fault::Fail]);
    s.handle(id, event(1), Some(raw(7))).await.unwrap_err();
    assert!(
        s.call(id)
            .await
            .unwrap()
            .unwrap()
            .facts
            .requested
            .dial_target,
        "the event was applied"
    );
    assert_eq!(store.copies("n=7"), 1);
}

#[tokio::test]
async fn unknown_calls_and_unparsed_payloads_are_stored_once() {
    let store = Arc::new(FaultyStore::default());
    let s = service(store.clone(), ServiceConfig::default());
    let id = start(&s).await;
    let unknown = CallId::new();
    let err = s.handle(unknown, event(0), Some(raw(8))).await.unwrap_err();
    assert!(matches!(err, ServiceError::CallNotFound(c) if c == unknown));
    s.record_unparsed(None, raw(9)).await.unwrap();
    s.record_unparsed(Some(unknown), raw(10)).await.unwrap();
    s.record_unparsed(Some(id), raw(11)).await.unwrap();
    // The same delivery handed in again is not stored twice.
    let again = store
        .inner
        .events(id)
        .await
        .unwrap()
        .last()
        .unwrap()
        .raw
        .clone();
    s.record_unparsed(Some(id), again).await.unwrap();

    let all = store.inner.all_events();
    let owner = |payload: &str| {
        let found: Vec<_> = all.iter().filter(|e| e.raw.payload == payload).collect();
        assert_eq!(found.len(), 1, "{payload}");
        found[0].call_id
    };
    assert_eq!(owner("n=8"), None);
    assert_eq!(owner("n=9"), None);
    assert_eq!(owner("n=10"), None, "an unknown call's payload has no call");
    assert_eq!(owner("n=11"), Some(id));
}

#[tokio::test]
async fn an_outage_spools_payloads_and_recovery_stores_each_once() {
    let store = Arc::new(FaultyStore::default());
    let s = service(store.clone(), ServiceConfig::default());
    let id = start(&s).await;
    store.set_down(true);
    for n in 0..6 {
        let err = s.handle(id, event(n), Some(raw(n))).await.unwrap_err();
        assert!(
            matches!(err, ServiceError::Store(StoreError::Backend(_))),
            "{err:?}"
        );
    }
    let err = s
        .script(
            id,
            ScriptMoment::Answered,
            CallEvent::Prompted,
            Some(raw(6)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Store(_)), "{err:?}");
    s.handle(CallId::new(), event(0), Some(raw(7)))
        .await
        .unwrap_err();
    s.record_unparsed(None, raw(8)).await.unwrap();
    let stats = s.spool_stats();
    assert_eq!((stats.waiting, stats.queued), (9, 9));
    assert!(stats.oldest_queued_at.is_some());
    assert!(store.inner.all_events().is_empty());

    // Still down: a flush stores nothing and loses nothing.
    assert!(s.flush_spool().await.is_err());
    assert_eq!(s.spool_stats().waiting, 9);

    // Back: the reconciliation pass flushes first, in arrival order.
    store.set_down(false);
    let report = s.reconcile(10).await.unwrap();
    assert_eq!(report.payloads_flushed, 9, "{report:?}");
    for n in 0..9 {
        assert_eq!(store.copies(&format!("n={n}")), 1, "n={n}");
    }
    let order: Vec<String> = store
        .inner
        .all_events()
        .into_iter()
        .map(|e| e.raw.payload)
        .collect();
    assert_eq!(order, (0..9).map(|n| format!("n={n}")).collect::<Vec<_>>());
    let stats = s.spool_stats();
    assert_eq!((stats.waiting, stats.stored, stats.refused), (0, 9, 0));
    assert_eq!(s.flush_spool().await.unwrap(), 0);
}

#[tokio::test]
async fn a_full_spool_refuses_the_payload_explicitly_and_keeps_the_others() {
    let store = Arc::new(FaultyStore::default());
    let s = service(
        store.clone(),
        ServiceConfig::default().with_spool_capacity(2),
    );
    let id = start(&s).await;
    store.set_down(true);
    for n in 0..2 {
        s.handle(id, event(n), Some(raw(n))).await.unwrap_err();
    }
    let err = s.handle(id, event(2), Some(raw(2))).await.unwrap_err();
    assert!(
        matches!(&err, ServiceError::SpoolFull(full) if full.capacity == 2),
        "{err:?}"
    );
    let full = s.record_unparsed(None, raw(3)).await.unwrap_err();
    assert!(matches!(full.cause, StoreError::Backend(_)));
    let stats = s.spool_stats();
    assert_eq!((stats.waiting, stats.queued, stats.refused), (2, 2, 2));

    store.set_down(false);
    assert_eq!(s.flush_spool().await.unwrap(), 2);
    assert_eq!(store.copies("n=0"), 1);
    assert_eq!(store.copies("n=1"), 1);
    assert_eq!(store.copies("n=2"), 0, "refused, and said so");
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::Ok),
        2 => Just(Fault::Fail),
        1 => Just(Fault::FailAfterWrite),
        1 => Just(Fault::Conflict),
        1 => Just(Fault::Unreadable),
    ]
}

/// How a payload is handed in.
#[derive(Debug, Clone, Copy)]
enum Entry {
    Handle,
    Script,
    UnknownCall,
    Unparsed,
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        4 => Just(Entry::Handle),
        2 => Just(Entry::Script),
        1 => Just(Entry::UnknownCall),
        1 => Just(Entry::Unparsed),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of payloads through any entry point, with the store
    /// failing at random points (and down for a random stretch): once the
    /// store is back and the spool flushed, each payload is stored exactly
    /// once.
    #[test]
    fn every_payload_is_stored_exactly_once_whatever_fails(
        deliveries in prop::collection::vec((entry(), prop::collection::vec(fault(), 0..8)), 1..12),
        outage in (0usize..12, 0usize..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = Arc::new(FaultyStore::default());
            let s = service(store.clone(), ServiceConfig::default());
            let id = start(&s).await;
            let (down_from, down_for) = outage;
            for (n, (entry, faults)) in deliveries.iter().enumerate() {
                store.set_down(n >= down_from && n < down_from + down_for);
                store.plan(faults.iter().copied());
                let raw = raw(n);
                let kept = match entry {
                    Entry::Handle => s.handle(id, event(n), Some(raw)).await.map(|_| ()),
                    Entry::Script => s
                        .script(id, ScriptMoment::Answered, event(n), Some(raw))
                        .await
                        .map(|_| ()),
                    Entry::UnknownCall => s.handle(CallId::new(), event(n), Some(raw)).await.map(|_| ()),
                    Entry::Unparsed => s
                        .record_unparsed(Some(id), raw)
                        .await
                        .map_err(ServiceError::from),
                };
                prop_assert!(!matches!(kept, Err(ServiceError::SpoolFull(_))));
                // A flush now and then, while the store may still fail.
                if n % 4 == 3 {
                    let _ = s.flush_spool().await;
                }
            }
            store.set_down(false);
            store.plan([]);
            s.flush_spool().await.unwrap();
            prop_assert_eq!(s.spool_stats().waiting, 0);
            for n in 0..deliveries.len() {
                prop_assert_eq!(store.copies(&format!("n={n}")), 1, "payload {} of {:?}", n, deliveries);
            }
            Ok(())
        })?;
    }
}
