//! Shared test harness: a service over the in-crate fakes.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bonde_pressure_core::ports::StoredEvent;
use bonde_pressure_core::{
    ActivistInput, Call, CallId, CallStore, Clock, Dependencies, EventSink, InMemoryCallStore,
    PressureService, RawEvent, ScenarioPicker, ServiceConfig, SimulatedTelephony, StartCallRequest,
    StaticCampaignDirectory, StoreError, StubActionRecorder, SystemClock, TargetInput,
};
use chrono::{DateTime, Utc};

pub struct Harness {
    pub service: Arc<PressureService>,
    pub telephony: Arc<SimulatedTelephony>,
    pub store: Arc<InMemoryCallStore>,
    pub recorder: Arc<StubActionRecorder>,
}

pub fn harness(picker: ScenarioPicker) -> Harness {
    harness_with_tick(picker, Duration::ZERO)
}

pub fn harness_with_tick(picker: ScenarioPicker, tick: Duration) -> Harness {
    harness_with(picker, tick, Arc::new(SystemClock))
}

/// A harness whose service runs on `clock` (a `ManualClock` for reconciliation).
pub fn harness_with(picker: ScenarioPicker, tick: Duration, clock: Arc<dyn Clock>) -> Harness {
    let telephony = Arc::new(SimulatedTelephony::new(picker, tick));
    let store = Arc::new(InMemoryCallStore::new());
    let recorder = Arc::new(StubActionRecorder::new());
    let service = Arc::new(PressureService::new(
        Dependencies::new(
            store.clone(),
            telephony.clone(),
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_recorder(recorder.clone())
        .with_clock(clock),
        ServiceConfig::default(),
    ));
    let sink: Arc<dyn EventSink> = service.clone();
    telephony.connect(Arc::downgrade(&sink));
    Harness {
        service,
        telephony,
        store,
        recorder,
    }
}

/// A service over `store`, `telephony` and `clock`, with the demo campaign
/// directory and a stub action recorder.
pub fn service_over(
    store: Arc<dyn bonde_pressure_core::CallStore>,
    telephony: Arc<dyn bonde_pressure_core::Telephony>,
    clock: Arc<dyn Clock>,
) -> PressureService {
    PressureService::new(
        Dependencies::new(store, telephony, Arc::new(StaticCampaignDirectory::demo()))
            .with_recorder(Arc::new(StubActionRecorder::new()))
            .with_clock(clock),
        ServiceConfig::default(),
    )
}

/// The front-end's request for the demo widget, with the national format it sends.
pub fn demo_request() -> StartCallRequest {
    StartCallRequest::new(
        1,
        ActivistInput::new("Ana Souza", "ana@example.org", "11 91234-5678")
            .with_first_name("Ana")
            .with_last_name("Souza"),
        TargetInput::new("Demo Target", "+55 61 99999-0000"),
    )
}

/// Waits until the call is settled (`Call::is_settled`: nothing left live).
pub async fn until_settled(service: &PressureService, id: CallId) -> Call {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let call = service.call(id).await.unwrap().expect("call exists");
        if call.is_settled() {
            return call;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "call never settled: {:?}, live legs {:?}",
            call.state(),
            call.live_legs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the call is terminal and no event changed it for a while.
pub async fn settle(service: &PressureService, id: CallId) -> Call {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last_version = u64::MAX;
    let mut quiet_rounds = 0;
    loop {
        let call = service.call(id).await.unwrap().expect("call exists");
        if call.is_terminal() && call.version == last_version {
            quiet_rounds += 1;
            if quiet_rounds >= 20 {
                return call;
            }
        } else {
            quiet_rounds = 0;
        }
        last_version = call.version;
        assert!(
            tokio::time::Instant::now() < deadline,
            "call never settled: {:?}",
            call.state()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One replica's (or service's) view of a shared in-memory store: yields
/// before each read and commit (so concurrent handlers interleave) and
/// counts its reads and the version conflicts it was answered.
pub struct CountingStore {
    shared: Arc<InMemoryCallStore>,
    reads: AtomicUsize,
    conflicts: AtomicUsize,
}

impl CountingStore {
    pub fn on(shared: &Arc<InMemoryCallStore>) -> Arc<Self> {
        Arc::new(Self {
            shared: shared.clone(),
            reads: AtomicUsize::new(0),
            conflicts: AtomicUsize::new(0),
        })
    }
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
    pub fn conflicts(&self) -> usize {
        self.conflicts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl CallStore for CountingStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        self.shared.create(call).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.shared.get(id).await
    }
    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        tokio::task::yield_now().await;
        let result = self.shared.commit(call, events).await;
        if matches!(result, Err(StoreError::Conflict)) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError> {
        self.shared.append_events(call_id, events).await
    }
    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
        self.shared.events(call_id).await
    }
    async fn list_unfinished(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        self.shared.list_unfinished(updated_before, limit).await
    }
}
