//! With a call cache, an event is applied to the cached call and committed
//! without reading it first; the store's version check catches a stale
//! copy (another replica committed, its notification not heard yet) and
//! only then is the call read.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::cache::CallCache;
use bonde_pressure_core::call::CallEvent;
use bonde_pressure_core::{
    ActivistInput, CallId, CallStore, Dependencies, EventSink, InMemoryCallStore, LegId,
    PressureService, RawEvent, Scenario, ScenarioPicker, ServiceConfig, SimulatedTelephony,
    StartCallRequest, StaticCampaignDirectory, TargetInput,
};
use chrono::Utc;
use common::CountingStore;

/// A service with a call cache over `store`; its simulated callbacks are
/// an hour away (only the test's events happen).
fn cached_service(store: Arc<CountingStore>) -> Arc<PressureService> {
    cached_service_with(store, ServiceConfig::default(), CallCache::new(1000))
}

/// [`cached_service`] with this configuration and cache.
fn cached_service_with(
    store: Arc<CountingStore>,
    config: ServiceConfig,
    cache: CallCache,
) -> Arc<PressureService> {
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
    ));
    let service = Arc::new(
        PressureService::new(
            Dependencies::new(
                store,
                telephony.clone(),
                Arc::new(StaticCampaignDirectory::demo()),
            ),
            config,
        )
        .with_call_cache(cache),
    );
    let sink: Arc<dyn EventSink> = service.clone();
    telephony.connect(Arc::downgrade(&sink));
    service
}

fn request() -> StartCallRequest {
    StartCallRequest::new(
        1,
        ActivistInput::new("Ana Souza", "ana@example.org", "11 91234-5678"),
        TargetInput::new("Demo Target", "+55 61 99999-0000"),
    )
}

/// A distinct fact: participant `i` joined the conference.
fn joined(i: usize) -> CallEvent {
    let leg_id: LegId = format!("CA{:032x}", 0xABC0_0000 + i as u128)
        .parse()
        .unwrap();
    let cf = format!("CF{}", "c".repeat(32)).parse().unwrap();
    CallEvent::participant_joined(cf, leg_id, None)
}

fn raw(n: usize) -> RawEvent {
    RawEvent::new("test", format!("n={n}"), Utc::now()).with_sequence_number(n as i64)
}

async fn payloads(store: &InMemoryCallStore, id: CallId) -> Vec<String> {
    let mut p: Vec<String> = store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.raw.payload)
        .filter(|p| p.starts_with("n="))
        .collect();
    p.sort();
    p
}

#[tokio::test]
async fn a_call_this_process_created_and_committed_is_never_read_to_commit() {
    let shared = Arc::new(InMemoryCallStore::new());
    let store = CountingStore::on(&shared);
    let service = cached_service(store.clone());
    let id = service.start(&request()).await.unwrap().call_id;
    for i in 0..5 {
        let outcome = service.handle(id, joined(i), Some(raw(i))).await.unwrap();
        let stored = shared.get(id).await.unwrap().unwrap();
        assert_eq!(outcome.call, stored);
    }
    // Created, then committed: the activist's dial, the five events, and
    // the target's dial the first join led to. Every commit started from
    // the cached call.
    assert_eq!(store.reads(), 0);
    assert_eq!(store.conflicts(), 0);
    let call = shared.get(id).await.unwrap().unwrap();
    assert_eq!(call.facts.participants.len(), 5);
    assert_eq!(
        payloads(&shared, id).await,
        ["n=0", "n=1", "n=2", "n=3", "n=4"]
    );
}

#[tokio::test]
async fn a_stale_cached_call_is_caught_by_the_version_check_then_read() {
    let shared = Arc::new(InMemoryCallStore::new());
    let (a_store, b_store) = (CountingStore::on(&shared), CountingStore::on(&shared));
    // Two replicas that do not hear each other's commits (a notification
    // not arrived yet): each one's cache can be stale.
    let (a, b) = (
        cached_service(a_store.clone()),
        cached_service(b_store.clone()),
    );
    let id = a.start(&request()).await.unwrap().call_id;

    // B has never seen the call: it reads it, then commits.
    b.handle(id, joined(1), Some(raw(1))).await.unwrap();
    assert_eq!(b_store.reads(), 1);
    let v = shared.get(id).await.unwrap().unwrap().version;
    // A's cached copy is one version behind: its commit is refused, it
    // reads the call and commits on top of B's.
    let outcome = a.handle(id, joined(2), Some(raw(2))).await.unwrap();
    assert_eq!(a_store.conflicts(), 1);
    assert_eq!(a_store.reads(), 1);
    assert_eq!(outcome.call.version, v + 1);
    let call = shared.get(id).await.unwrap().unwrap();
    assert_eq!(call.version, v + 1);
    assert_eq!(call.facts.participants.len(), 2, "B's fact was kept");
    assert_eq!(payloads(&shared, id).await, ["n=1", "n=2"]);
    // A cached what it committed: its next event commits without a read.
    a.handle(id, joined(3), None).await.unwrap();
    assert_eq!((a_store.reads(), a_store.conflicts()), (1, 1));
}

#[tokio::test]
async fn a_duplicate_already_in_a_stale_copy_is_stored_without_a_commit() {
    let shared = Arc::new(InMemoryCallStore::new());
    let (a_store, b_store) = (CountingStore::on(&shared), CountingStore::on(&shared));
    let (a, b) = (
        cached_service(a_store.clone()),
        cached_service(b_store.clone()),
    );
    let id = a.start(&request()).await.unwrap().call_id;
    a.handle(id, joined(1), Some(raw(1))).await.unwrap();
    b.handle(id, joined(2), Some(raw(2))).await.unwrap();
    let v = shared.get(id).await.unwrap().unwrap().version;
    // A's copy (one version behind) already holds fact 1: facts only grow,
    // so the current call holds it too. The retry's payload is stored and
    // nothing is committed.
    let outcome = a.handle(id, joined(1), Some(raw(3))).await.unwrap();
    assert!(outcome.effects.is_empty());
    // The copy is within the cache's age limit (what the status route
    // would serve too): it is the answer.
    assert_eq!(outcome.call.version, v - 1);
    assert_eq!((a_store.reads(), a_store.conflicts()), (0, 0));
    let call = shared.get(id).await.unwrap().unwrap();
    assert_eq!(call.version, v, "no version bump");
    assert_eq!(call.facts.participants.len(), 2);
    assert_eq!(payloads(&shared, id).await, ["n=1", "n=2", "n=3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_over_two_cached_replicas_lose_no_update() {
    let shared = Arc::new(InMemoryCallStore::new());
    let (a_store, b_store) = (CountingStore::on(&shared), CountingStore::on(&shared));
    let (a, b) = (
        cached_service(a_store.clone()),
        cached_service(b_store.clone()),
    );
    let id = a.start(&request()).await.unwrap().call_id;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let service = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { service.handle(id, joined(i), Some(raw(i))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let call = shared.get(id).await.unwrap().unwrap();
    assert_eq!(call.facts.participants.len(), 60, "every fact kept");
    assert_eq!(payloads(&shared, id).await.len(), 60);
}

/// A copy older than the cache's age limit still starts a commit (the
/// version check guards it), but is never an answer: an event that changes
/// nothing in it is checked against the call read from the store.
#[tokio::test]
async fn a_copy_past_the_age_limit_starts_commits_but_is_not_returned() {
    let shared = Arc::new(InMemoryCallStore::new());
    let store = CountingStore::on(&shared);
    // Every cached call is past an age limit of zero.
    let a = cached_service_with(
        store.clone(),
        ServiceConfig::default(),
        CallCache::new(1000).with_max_age(Duration::ZERO),
    );
    let id = a.start(&request()).await.unwrap().call_id;
    a.handle(id, joined(1), Some(raw(1))).await.unwrap();
    assert_eq!(store.reads(), 0, "commits started from the old copy");
    // Another replica commits behind A's back.
    let b = cached_service(CountingStore::on(&shared));
    b.handle(id, joined(2), Some(raw(2))).await.unwrap();
    let current = shared.get(id).await.unwrap().unwrap();
    // A duplicate of fact 1: no commit, and the answer is the current call.
    let outcome = a.handle(id, joined(1), Some(raw(3))).await.unwrap();
    assert_eq!(store.reads(), 1);
    assert_eq!(store.conflicts(), 0);
    assert_eq!(outcome.call, current);
    assert_eq!(
        shared.get(id).await.unwrap().unwrap().version,
        current.version
    );
    assert_eq!(payloads(&shared, id).await, ["n=1", "n=2", "n=3"]);
}

/// A commit refused because the cached copy was stale costs no attempt:
/// even with a single attempt allowed, the event is applied.
#[tokio::test]
async fn a_stale_guess_costs_no_commit_attempt() {
    let shared = Arc::new(InMemoryCallStore::new());
    let a_store = CountingStore::on(&shared);
    let a = cached_service_with(
        a_store.clone(),
        ServiceConfig::default().with_max_commit_attempts(1),
        CallCache::new(1000),
    );
    let b = cached_service(CountingStore::on(&shared));
    let id = a.start(&request()).await.unwrap().call_id;
    b.handle(id, joined(1), None).await.unwrap();
    a.handle(id, joined(2), None).await.unwrap();
    assert_eq!((a_store.reads(), a_store.conflicts()), (1, 1));
    assert_eq!(
        shared
            .get(id)
            .await
            .unwrap()
            .unwrap()
            .facts
            .participants
            .len(),
        2
    );
}
