//! Throughput of applying events: the pure transition, and the service's
//! load-apply-commit path over the in-memory store.
//!
//! `cargo bench -p bonde-pressure-core --bench apply` (`-- phone` for the
//! number validation alone)

#![allow(missing_docs)]

use std::sync::Arc;

use bonde_pressure_core::call::{CallEvent, CallFacts, Effect, apply};
use bonde_pressure_core::simulated::SimulatedCall;
use bonde_pressure_core::{
    ActivistInput, CallId, Dependencies, InMemoryCallStore, PressureService, Scenario,
    ScenarioPicker, ServiceConfig, SimulatedTelephony, StartCallRequest, StaticCampaignDirectory,
    StubActionRecorder, SystemClock, TargetInput,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// A whole success lifecycle's callbacks, in causal order.
fn lifecycle() -> Vec<CallEvent> {
    let mut world = SimulatedCall::new(Scenario::Success, CallId::new());
    let mut events: Vec<CallEvent> = world.start().into_iter().map(|s| s.event).collect();
    events.extend(world.dial_target().into_iter().map(|s| s.event));
    events
}

fn bench_apply(c: &mut Criterion) {
    let events = lifecycle();
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("success_lifecycle", |b| {
        b.iter(|| {
            let mut facts = CallFacts::default();
            let mut dials = 0;
            for e in &events {
                let t = apply(&facts, e);
                dials += t
                    .effects
                    .iter()
                    .filter(|e| matches!(e, Effect::DialTarget))
                    .count();
                facts = t.facts;
            }
            assert_eq!(dials, 1);
            facts
        })
    });
    g.finish();
}

fn bench_handle(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = lifecycle();
    // Telephony never connected: only the benchmark's events reach the service.
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        std::time::Duration::ZERO,
    ));
    let service = PressureService::new(
        Dependencies::new(
            Arc::new(InMemoryCallStore::new()),
            telephony,
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_recorder(Arc::new(StubActionRecorder::new()))
        .with_clock(Arc::new(SystemClock)),
        ServiceConfig::default(),
    );
    let req = StartCallRequest::new(
        1,
        ActivistInput::new("Ana", "ana@example.org", "+5511912345678"),
        TargetInput::new("Demo Target", "+5561999990000"),
    );
    let mut g = c.benchmark_group("service_handle");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("success_lifecycle_in_memory", |b| {
        b.iter_batched(
            || rt.block_on(service.start(&req)).unwrap().call_id,
            |id| {
                rt.block_on(async {
                    for e in &events {
                        service.handle(id, e.clone(), None).await.unwrap();
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Validating typed numbers: parse with the read-back check, the
/// number policy (type from the metadata, non-geographic codes), and the
/// metadata-free decoding of stored numbers.
fn bench_phone(c: &mut Criterion) {
    use bonde_pressure_core::{NumberPolicy, PhoneNumber, Region};
    let mut g = c.benchmark_group("phone");
    g.bench_function("parse_national", |b| {
        b.iter(|| PhoneNumber::parse(std::hint::black_box("(11) 91234-5678"), Region::BRAZIL))
    });
    let n = PhoneNumber::parse("(11) 91234-5678", Region::BRAZIL).unwrap();
    let policy = NumberPolicy::default();
    g.bench_function("policy_check", |b| {
        b.iter(|| policy.check(std::hint::black_box(&n)))
    });
    g.bench_function("from_trusted_e164", |b| {
        b.iter(|| PhoneNumber::from_trusted_e164(std::hint::black_box("+5511912345678")))
    });
    g.finish();
}

criterion_group!(benches, bench_apply, bench_handle, bench_phone);
criterion_main!(benches);
