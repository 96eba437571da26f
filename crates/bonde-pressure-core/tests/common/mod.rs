//! Shared test harness: a service over the in-crate fakes.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::{
    ActivistInput, Call, CallId, Clock, Dependencies, EventSink, InMemoryCallStore,
    PressureService, ScenarioPicker, ServiceConfig, SimulatedTelephony, StartCallRequest,
    StaticCampaignDirectory, StubActionRecorder, SystemClock, TargetInput,
};

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
