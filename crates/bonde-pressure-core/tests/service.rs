//! The service's contract: validation, authorisation, concurrency, exact
//! telephony requests, scripts, reconciliation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU8, Ordering};

use async_trait::async_trait;
use bonde_pressure_core::call::{CallEvent, DetailedState, Leg, LegStatus, UiStatus};
use bonde_pressure_core::live::{CallUpdate, Notice, Subscription};
use bonde_pressure_core::ports::{DialedLeg, StoredEvent, TargetCallRequest};
use bonde_pressure_core::script::{ScriptMoment, VoiceInstruction};
use bonde_pressure_core::simulated::{CommandKind, TelephonyCommand};
use bonde_pressure_core::{
    Call, CallId, CallStore, Clock, Dependencies, EventSink, InMemoryCallStore, LegId, ManualClock,
    MockTelephony, PressureService, RawEvent, Scenario, ScenarioPicker, ServiceConfig,
    ServiceError, StartError, StaticCampaignDirectory, StoreError, StubActionRecorder,
    TelephonyError, WidgetId,
};
use chrono::{DateTime, Utc};
use common::{demo_request, harness, settle};

fn raw(n: usize) -> RawEvent {
    RawEvent::new("test", format!("n={n}"), Utc::now()).with_sequence_number(n as i64)
}

fn field_locs(err: StartError) -> Vec<String> {
    match err {
        StartError::Invalid(fields) => fields.into_iter().map(|f| f.loc.join(".")).collect(),
        other => panic!("expected field errors, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_input_is_rejected_field_by_field() {
    let h = harness(ScenarioPicker::Always(Scenario::Success));
    let mut req = demo_request();
    req.widget_id = 0;
    req.activist.name = "  ".into();
    req.activist.email = "not-an-email".into();
    req.activist.phone = "12".into();
    req.target.phone = "banana".into();
    let locs = field_locs(h.service.start(&req).await.unwrap_err());
    assert_eq!(
        locs,
        [
            "widget_id",
            "activist.name",
            "activist.email",
            "activist.phone",
            "target.phone"
        ]
    );
    // Nothing was stored or dialled.
    assert!(h.telephony.commands().is_empty());
    assert!(h.store.all_events().is_empty());
}

#[tokio::test]
async fn foreign_and_identical_numbers_are_refused() {
    let h = harness(ScenarioPicker::Always(Scenario::Success));
    let mut req = demo_request();
    req.activist.phone = "+14158675309".into();
    let err = h.service.start(&req).await.unwrap_err();
    let StartError::Invalid(fields) = err else {
        panic!()
    };
    assert_eq!(fields[0].kind, "value_error.phone.country");
    assert!(fields[0].msg.contains("+1"), "{}", fields[0].msg);

    let mut req = demo_request();
    req.activist.phone = "+5561999990000".into();
    assert_eq!(
        field_locs(h.service.start(&req).await.unwrap_err()),
        ["activist.phone"]
    );
}

#[tokio::test]
async fn widget_errors_use_upstream_messages() {
    let mut survey = bonde_pressure_core::demo_widget();
    survey.id = bonde_pressure_core::WidgetId::new(2).unwrap();
    survey.phone_pressure = false;
    let directory = StaticCampaignDirectory::new([bonde_pressure_core::demo_widget(), survey]);
    let service = PressureService::new(
        Dependencies::new(
            Arc::new(InMemoryCallStore::new()),
            Arc::new(bonde_pressure_core::SimulatedTelephony::new(
                ScenarioPicker::Always(Scenario::Success),
                Duration::ZERO,
            )),
            Arc::new(directory),
        )
        .with_recorder(Arc::new(StubActionRecorder::new()))
        .with_clock(Arc::new(bonde_pressure_core::SystemClock)),
        ServiceConfig::default(),
    );
    let mut req = demo_request();
    req.widget_id = 99;
    assert_eq!(
        service.start(&req).await.unwrap_err().to_string(),
        "Widget not found."
    );
    req.widget_id = 2;
    assert_eq!(
        service.start(&req).await.unwrap_err().to_string(),
        "Widget is not a 'phone' kind."
    );
    req.widget_id = 1;
    req.target.phone = "+5561988887777".into();
    assert_eq!(
        service.start(&req).await.unwrap_err().to_string(),
        "Target is not present in Widget settings."
    );
}

#[tokio::test]
async fn the_widget_target_is_matched_by_normalised_number_and_named_by_the_campaign() {
    let h = harness(ScenarioPicker::Always(Scenario::ActivistBusy));
    let mut req = demo_request();
    req.target.phone = "(61) 99999-0000".into();
    req.target.name = "Someone <else>".into();
    let id = h.service.start(&req).await.unwrap().call_id;
    let call = h.service.call(id).await.unwrap().unwrap();
    assert_eq!(call.target.name.as_str(), "Demo Target");
    assert_eq!(call.target.phone.as_e164(), "+5561999990000");
    assert_eq!(call.activist.phone.as_e164(), "+5511912345678");
}

#[tokio::test]
async fn recorder_failure_never_fails_the_call() {
    let h = harness(ScenarioPicker::Always(Scenario::ActivistBusy));
    h.recorder.set_failing(true);
    let started = h.service.start(&demo_request()).await.unwrap();
    assert!(h.service.call(started.call_id).await.unwrap().is_some());
    h.recorder.set_failing(false);
    let started = h.service.start(&demo_request()).await.unwrap();
    let recorded = h.recorder.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].call_id, started.call_id);
    assert_eq!(recorded[0].widget_id.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_activist_call_is_stored_as_failed() {
    let h = harness(ScenarioPicker::Always(Scenario::Success));
    h.telephony.set_failure(
        CommandKind::CallActivist,
        Some(TelephonyError::invalid_number(Some(21211), "invalid To")),
    );
    let err = h.service.start(&demo_request()).await.unwrap_err();
    let StartError::Telephony { call_id, error } = err else {
        panic!("{err:?}")
    };
    assert_eq!(error.code(), Some(21211));
    let call = h.service.call(call_id).await.unwrap().unwrap();
    assert_eq!(call.state(), DetailedState::ActivistFailed);
    assert_eq!(
        call.facts.activist.error.as_ref().unwrap().code,
        Some(21211)
    );
    assert!(
        h.recorder.recorded().is_empty(),
        "no action for a call that never happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_target_dial_ends_the_conference() {
    let h = harness(ScenarioPicker::Always(Scenario::Success));
    h.telephony.set_failure(
        CommandKind::AddTarget,
        Some(TelephonyError::destination_not_permitted(
            Some(13227),
            "geo permission",
        )),
    );
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let call = settle(&h.service, id).await;
    assert_eq!(call.state(), DetailedState::TargetFailed);
    assert!(
        h.telephony
            .commands()
            .iter()
            .any(|c| matches!(c, TelephonyCommand::EndConference { .. }))
    );
}

#[tokio::test]
async fn events_for_unknown_calls_are_stored_and_reported() {
    let h = harness(ScenarioPicker::Always(Scenario::Success));
    let unknown = CallId::new();
    let err = h
        .service
        .handle(unknown, CallEvent::Prompted, Some(raw(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::CallNotFound(id) if id == unknown));
    let stored = h.store.all_events();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].call_id, None);
    assert_eq!(stored[0].raw.payload, "n=1");
}

/// A store over [`InMemoryCallStore`] that behaves like one with I/O: every
/// read and write yields first, so concurrent handlers interleave between
/// their load and their commit. It can also be told to fail commits.
#[derive(Default)]
struct TestStore {
    inner: InMemoryCallStore,
    /// 0: commit normally; 1: every commit conflicts; 2: every commit fails.
    commit_mode: AtomicU8,
}

const COMMIT_OK: u8 = 0;
const COMMIT_CONFLICTS: u8 = 1;
const COMMIT_FAILS: u8 = 2;

impl TestStore {
    fn set_commit_mode(&self, mode: u8) {
        self.commit_mode.store(mode, Ordering::SeqCst);
    }
}

#[async_trait]
impl CallStore for TestStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        self.inner.create(call).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        tokio::task::yield_now().await;
        self.inner.get(id).await
    }
    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        tokio::task::yield_now().await;
        match self.commit_mode.load(Ordering::SeqCst) {
            COMMIT_OK => self.inner.commit(call, events).await,
            COMMIT_CONFLICTS => Err(StoreError::Conflict),
            _ => Err(StoreError::backend(std::io::Error::other("disk on fire"))),
        }
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
}

/// A service over a [`TestStore`] and a simulated telephony whose callbacks
/// never arrive (an hour per step), so only the test changes the call.
fn quiet_service(
    store: Arc<TestStore>,
    config: ServiceConfig,
) -> (Arc<PressureService>, Arc<StubActionRecorder>) {
    quiet_service_on(store, config, Arc::new(bonde_pressure_core::SystemClock))
}

fn quiet_service_on(
    store: Arc<TestStore>,
    config: ServiceConfig,
    clock: Arc<dyn Clock>,
) -> (Arc<PressureService>, Arc<StubActionRecorder>) {
    let telephony = Arc::new(bonde_pressure_core::SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
    ));
    let recorder = Arc::new(StubActionRecorder::new());
    let service = Arc::new(PressureService::new(
        Dependencies::new(
            store,
            telephony.clone(),
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_recorder(recorder.clone())
        .with_clock(clock),
        config,
    ));
    let sink: Arc<dyn EventSink> = service.clone();
    telephony.connect(Arc::downgrade(&sink));
    (service, recorder)
}

fn participant(i: usize) -> (LegId, CallEvent) {
    let leg_id: LegId = format!("CA{:032x}", 0xC0_FFEE_0000 + i as u128)
        .parse()
        .unwrap();
    let cf: bonde_pressure_core::ConferenceId = format!("CF{}", "c".repeat(32)).parse().unwrap();
    let event = CallEvent::participant_joined(cf, leg_id.clone(), None);
    (leg_id, event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_on_one_call_lose_no_update() {
    // Each of 50 concurrent handlers contributes its own fact (a distinct
    // participant) and payload: a store that lets a stale version win loses
    // some of them, and the version would not count exactly 50 commits.
    // They are spread over two services on one store, as over two
    // replicas: a service serialises its own commits to a call, so only
    // the store's version check keeps the two from overwriting each other.
    let store = Arc::new(TestStore::default());
    let (service, _) = quiet_service(store.clone(), ServiceConfig::default());
    let (replica, _) = quiet_service(store.clone(), ServiceConfig::default());
    let id = service.start(&demo_request()).await.unwrap().call_id;
    let before = service.call(id).await.unwrap().unwrap();
    let n_before = store.events(id).await.unwrap().len();

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let service = if i % 2 == 0 {
                service.clone()
            } else {
                replica.clone()
            };
            let (_, event) = participant(i);
            tokio::spawn(async move { service.handle(id, event, Some(raw(i))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let after = service.call(id).await.unwrap().unwrap();
    for i in 0..50 {
        let (leg_id, _) = participant(i);
        assert!(
            after
                .facts
                .participants
                .get(&leg_id)
                .is_some_and(|p| p.joined),
            "participant {i} lost"
        );
    }
    assert_eq!(after.facts.participants.len(), 50);
    // One commit per event, plus one for the target's dial: before it, any
    // participant joining is the activist, so the first join dials (once).
    assert!(after.facts.requested.dial_target);
    assert_eq!(
        after.version,
        before.version + 50 + 1,
        "one commit per event, one for the dial"
    );
    let mut payloads: Vec<String> = store.events(id).await.unwrap()[n_before..]
        .iter()
        .map(|e| e.raw.payload.clone())
        .collect();
    assert_eq!(payloads.len(), 50, "every payload stored once");
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), 50);
}

/// A store whose every commit is a version conflict counts as a failure
/// here: duplicates must never reach `commit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_store_their_payloads_without_a_commit_or_a_conflict() {
    let store = Arc::new(TestStore::default());
    let (service, _) = quiet_service(store.clone(), ServiceConfig::default());
    let id = service.start(&demo_request()).await.unwrap().call_id;
    let n_before = store.events(id).await.unwrap().len();
    // The first delivery of a fact commits once.
    let (_, join) = participant(0);
    let first = service
        .handle(id, join.clone(), Some(raw(0)))
        .await
        .unwrap();
    let version = service.call(id).await.unwrap().unwrap().version;
    assert_eq!(version, first.call.version);

    // 50 copies arriving together, on two "replicas" of the service: each
    // payload is stored, the call is not written again.
    let (replica, _) = quiet_service(store.clone(), ServiceConfig::default());
    store.set_commit_mode(COMMIT_CONFLICTS);
    let tasks: Vec<_> = (1..=50)
        .map(|i| {
            let service = if i % 2 == 0 {
                service.clone()
            } else {
                replica.clone()
            };
            let join = join.clone();
            tokio::spawn(async move { service.handle(id, join, Some(raw(i))).await })
        })
        .collect();
    for t in tasks {
        let outcome = t.await.unwrap().expect("a duplicate never contends");
        assert!(outcome.effects.is_empty());
        assert_eq!(outcome.call.version, version);
    }
    store.set_commit_mode(COMMIT_OK);
    assert_eq!(service.call(id).await.unwrap().unwrap().version, version);
    let mut payloads: Vec<String> = store.events(id).await.unwrap()[n_before..]
        .iter()
        .map(|e| e.raw.payload.clone())
        .collect();
    assert_eq!(payloads.len(), 51, "every delivery stored, once");
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), 51);
}

/// Events for one call handled together by one service queue for the call
/// instead of conflicting: with commits that yield between read and write,
/// 30 distinct facts at once give no conflict at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_serialises_its_commits_to_a_call() {
    let store = common::CountingStore::on(&Arc::new(InMemoryCallStore::new()));
    let telephony = Arc::new(bonde_pressure_core::SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
    ));
    let service = Arc::new(PressureService::new(
        Dependencies::new(
            store.clone(),
            telephony.clone(),
            Arc::new(StaticCampaignDirectory::demo()),
        ),
        ServiceConfig::default(),
    ));
    let sink: Arc<dyn EventSink> = service.clone();
    telephony.connect(Arc::downgrade(&sink));
    let id = service.start(&demo_request()).await.unwrap().call_id;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let service = service.clone();
            let (_, event) = participant(i);
            tokio::spawn(async move { service.handle(id, event, Some(raw(i))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.conflicts(), 0);
    let call = service.call(id).await.unwrap().unwrap();
    assert_eq!(call.facts.participants.len(), 30);
}

#[tokio::test]
async fn contention_gives_up_but_keeps_the_raw_payload() {
    let store = Arc::new(TestStore::default());
    let config = ServiceConfig::default().with_max_commit_attempts(3);
    let (service, _) = quiet_service(store.clone(), config);
    let id = service.start(&demo_request()).await.unwrap().call_id;
    let before = service.call(id).await.unwrap().unwrap();

    store.set_commit_mode(COMMIT_CONFLICTS);
    let err = service
        .handle(id, CallEvent::Prompted, Some(raw(7)))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Contention(3)), "{err:?}");
    // Not applied, but the payload is in the call's event log.
    assert_eq!(service.call(id).await.unwrap().unwrap(), before);
    let payloads: Vec<String> = store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.raw.payload)
        .collect();
    assert_eq!(payloads, ["n=7"]);
}

#[tokio::test]
async fn contention_backs_off_on_the_services_clock_with_its_jitter() {
    let store = Arc::new(TestStore::default());
    let config = ServiceConfig::default().with_max_commit_attempts(5);
    let start = Utc::now();
    let clock = Arc::new(ManualClock::new(start).with_jitter(0.25));
    let (service, _) = quiet_service_on(store.clone(), config, clock.clone());
    let id = service.start(&demo_request()).await.unwrap().call_id;

    store.set_commit_mode(COMMIT_CONFLICTS);
    let err = service
        .handle(id, CallEvent::Prompted, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Contention(5)), "{err:?}");
    // The first three conflicts only yield; the fourth and fifth sleep on
    // the service's clock: 50 µs + jitter × 200 µs × attempt.
    assert_eq!(
        clock.sleeps(),
        [Duration::from_micros(200), Duration::from_micros(250)]
    );
    assert_eq!(clock.now() - start, chrono::Duration::microseconds(450));
}

/// A campaign directory that answers until told to hang (never answer).
struct HangingDirectory {
    inner: StaticCampaignDirectory,
    hang: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl bonde_pressure_core::CampaignDirectory for HangingDirectory {
    async fn widget(
        &self,
        id: bonde_pressure_core::WidgetId,
    ) -> Result<Option<bonde_pressure_core::Widget>, bonde_pressure_core::DirectoryError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.widget(id).await
    }
}

#[tokio::test]
async fn the_fallback_scripts_campaign_lookup_is_bounded_by_the_services_clock() {
    let directory = Arc::new(HangingDirectory {
        inner: StaticCampaignDirectory::demo(),
        hang: false.into(),
    });
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let service = PressureService::new(
        Dependencies::new(
            Arc::new(InMemoryCallStore::new()),
            Arc::new(bonde_pressure_core::SimulatedTelephony::new(
                ScenarioPicker::Always(Scenario::Success),
                Duration::from_secs(3600),
            )),
            directory.clone(),
        )
        .with_recorder(Arc::new(StubActionRecorder::new()))
        .with_clock(clock.clone()),
        ServiceConfig::default(),
    );
    let id = service.start(&demo_request()).await.unwrap().call_id;
    directory.hang.store(true, Ordering::SeqCst);

    // No real second passes: the one-second bound is slept on the clock.
    let script = service.fallback_script(id).await;
    assert_eq!(clock.sleeps(), [Duration::from_secs(1)]);
    let [VoiceInstruction::Say(speech), VoiceInstruction::Hangup] = &script.instructions[..] else {
        panic!("{script:?}")
    };
    let defaults = bonde_pressure_core::CampaignSettings::default();
    assert_eq!(speech.voice, defaults.voice);
    assert_eq!(speech.text, defaults.messages.unavailable);
}

#[tokio::test]
async fn a_ringing_activist_is_a_started_call_even_if_its_commit_fails() {
    let store = Arc::new(TestStore::default());
    let (service, recorder) = quiet_service(store.clone(), ServiceConfig::default());
    store.set_commit_mode(COMMIT_FAILS);
    let started = service.start(&demo_request()).await.unwrap();
    assert_eq!(started.status, UiStatus::Initiated);
    assert!(started.leg_id.is_some());
    assert_eq!(started.leg_status, Some(LegStatus::Queued));
    // The action is recorded; the stored call is as created (callbacks will fill it in).
    assert_eq!(recorder.recorded().len(), 1);
    assert_eq!(recorder.recorded()[0].call_id, started.call_id);
    let call = service.call(started.call_id).await.unwrap().unwrap();
    assert_eq!((call.version, call.state()), (0, DetailedState::Created));
}

#[tokio::test]
async fn a_refused_activist_call_is_reported_even_if_its_commit_fails() {
    let store = Arc::new(TestStore::default());
    let telephony = Arc::new(bonde_pressure_core::SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
    ));
    telephony.set_failure(
        CommandKind::CallActivist,
        Some(TelephonyError::invalid_number(Some(21211), "invalid To")),
    );
    let recorder = Arc::new(StubActionRecorder::new());
    let service = PressureService::new(
        Dependencies::new(
            store.clone(),
            telephony,
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_recorder(recorder.clone())
        .with_clock(Arc::new(bonde_pressure_core::SystemClock)),
        ServiceConfig::default(),
    );
    store.set_commit_mode(COMMIT_FAILS);
    let err = service.start(&demo_request()).await.unwrap_err();
    assert!(
        matches!(&err, StartError::Telephony { error, .. } if error.code() == Some(21211)),
        "{err:?}"
    );
    assert!(recorder.recorded().is_empty());
}

#[test]
fn debug_output_masks_phone_numbers_and_emails() {
    let req = demo_request();
    let shown = format!("{req:?} {:?} {:?}", req.activist, req.target);
    for secret in ["91234-5678", "1234", "99999-0000", "ana@"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("***@example.org"), "{shown}");
    assert!(
        shown.contains("5678") && shown.contains("widget_id: 1"),
        "{shown}"
    );

    let payload = "CallSid=CA123&From=%2B5511912345678&To=%2B5561999990000&SpeechResult=Ana";
    let raw = RawEvent::new("status-callback", payload, Utc::now())
        .with_leg_id("CA123")
        .with_sequence_number(3);
    let shown = format!("{raw:?}");
    for secret in ["5511912345678", "5561999990000", "SpeechResult", "From"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains(&format!("<{} bytes>", payload.len())),
        "{shown}"
    );
    assert!(
        shown.contains("status-callback") && shown.contains("CA123"),
        "{shown}"
    );
}

#[tokio::test]
async fn telephony_receives_exactly_the_expected_requests() {
    let call_id_slot = Arc::new(std::sync::Mutex::new(None::<CallId>));
    let mut telephony = MockTelephony::new();
    let activist_sid: bonde_pressure_core::LegId = format!("CA{}", "a".repeat(32)).parse().unwrap();
    let target_sid: bonde_pressure_core::LegId = format!("CA{}", "b".repeat(32)).parse().unwrap();
    let mut seq = mockall::Sequence::new();
    let (slot, leg_id) = (call_id_slot.clone(), activist_sid.clone());
    telephony
        .expect_call_activist()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|r| r.to.as_e164() == "+5511912345678" && r.timeout_secs == 30 && r.detect_machine)
        .returning(move |r| {
            *slot.lock().unwrap() = Some(r.call_id);
            Ok(DialedLeg::new(leg_id.clone()).with_status(LegStatus::Queued))
        });
    let (slot, leg_id) = (call_id_slot.clone(), target_sid.clone());
    telephony
        .expect_add_target()
        .times(1)
        .in_sequence(&mut seq)
        .withf(move |r: &TargetCallRequest| {
            Some(r.call_id) == *slot.lock().unwrap()
                && r.to.as_e164() == "+5561999990000"
                && r.caller_id.is_none()
                && r.timeout_secs == 30
        })
        .returning(move |_| Ok(DialedLeg::new(leg_id.clone())));
    telephony.expect_hang_up().never();
    telephony.expect_end_conference().never();

    let store = Arc::new(InMemoryCallStore::new());
    let service = common::service_over(
        store.clone(),
        Arc::new(telephony),
        Arc::new(bonde_pressure_core::SystemClock),
    );
    let id = service.start(&demo_request()).await.unwrap().call_id;
    let cf: bonde_pressure_core::ConferenceId = format!("CF{}", "c".repeat(32)).parse().unwrap();
    let join = CallEvent::participant_joined(cf, activist_sid.clone(), None);
    // The same participant-join delivered three times dials once.
    for _ in 0..3 {
        service.handle(id, join.clone(), None).await.unwrap();
    }
    let call = service.call(id).await.unwrap().unwrap();
    assert_eq!(call.facts.target.leg_id, Some(target_sid.clone()));
    assert_eq!(
        store.get(id).await.unwrap().unwrap().facts.target.leg_id,
        Some(target_sid.clone()),
        "stored"
    );
    assert_eq!(call.state(), DetailedState::Connecting);
}

#[tokio::test]
async fn scripts_follow_the_call() {
    // Activist busy never calls back with a gather: drive moments by hand.
    let h = common::harness_with_tick(
        ScenarioPicker::Always(Scenario::ActivistBusy),
        Duration::from_secs(3600),
    );
    let id = h.service.start(&demo_request()).await.unwrap().call_id;

    let answer = h
        .service
        .script(
            id,
            ScriptMoment::Answered,
            CallEvent::Prompted,
            Some(raw(1)),
        )
        .await
        .unwrap();
    let VoiceInstruction::Gather {
        prompt,
        action,
        num_digits,
        speech,
        ..
    } = &answer.instructions[0]
    else {
        panic!("{answer:?}")
    };
    assert!(
        prompt.text.contains("Ana") && prompt.text.contains("Demo Target"),
        "{}",
        prompt.text
    );
    assert_eq!(
        (*action, *num_digits, *speech),
        (ScriptMoment::Confirmed, 1, true)
    );
    assert_eq!(answer.instructions.last(), Some(&VoiceInstruction::Hangup));
    assert_eq!(
        h.service.call(id).await.unwrap().unwrap().state(),
        DetailedState::AwaitingConfirmation
    );

    let confirmed = CallEvent::Confirmed(bonde_pressure_core::Confirmation::Digits("5".into()));
    let join = h
        .service
        .script(id, ScriptMoment::Confirmed, confirmed, None)
        .await
        .unwrap();
    assert!(join.instructions.iter().any(|i| matches!(i, VoiceInstruction::JoinConference { room, after: ScriptMoment::AfterConference, .. } if *room == id)));

    let busy = CallEvent::leg_status(Leg::Target, LegStatus::Busy).build();
    h.service.handle(id, busy, None).await.unwrap();
    let closing = h
        .service
        .script(
            id,
            ScriptMoment::AfterConference,
            CallEvent::Ignored {
                what: "dial action".into(),
            },
            Some(raw(2)),
        )
        .await
        .unwrap();
    let VoiceInstruction::Say(s) = &closing.instructions[0] else {
        panic!()
    };
    assert!(s.text.contains("ocupada"), "{}", s.text);
    assert_eq!(closing.instructions[1], VoiceInstruction::Hangup);
    // Both moments' payloads were stored with the call.
    let payloads: Vec<_> = h
        .store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.raw.payload)
        .collect();
    assert!(payloads.contains(&"n=1".to_string()) && payloads.contains(&"n=2".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_drives_silent_calls_to_a_terminal_state() {
    // A simulated telephony that is never connected: no callbacks ever arrive.
    let telephony = Arc::new(bonde_pressure_core::SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        Duration::ZERO,
    ));
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let store = Arc::new(InMemoryCallStore::new());
    let service = common::service_over(store.clone(), telephony.clone(), clock.clone());
    let id = service.start(&demo_request()).await.unwrap().call_id;

    // Fresh calls are left alone.
    assert_eq!(service.reconcile(10).await.unwrap().examined, 0);

    // Stale: the leg is fetched (the world says the activist is in the conference).
    clock.advance(Duration::from_secs(300));
    let report = service.reconcile(10).await.unwrap();
    assert_eq!(
        (report.examined, report.legs_fetched, report.expired),
        (1, 1, 0)
    );
    assert!(
        telephony
            .commands()
            .iter()
            .any(|c| matches!(c, TelephonyCommand::FetchLeg(_)))
    );
    assert_eq!(
        service
            .call(id)
            .await
            .unwrap()
            .unwrap()
            .facts
            .activist
            .status,
        Some(LegStatus::InProgress)
    );

    // Too old: expired, its live leg hung up, state error, no longer listed.
    clock.advance(Duration::from_secs(3 * 3600));
    let report = service.reconcile(10).await.unwrap();
    assert_eq!(report.expired, 1);
    let call = service.call(id).await.unwrap().unwrap();
    assert_eq!(call.state(), DetailedState::Error);
    assert!(
        telephony
            .commands()
            .iter()
            .any(|c| matches!(c, TelephonyCommand::HangUp { .. }))
    );
    // No callback reports the hang-up: the next pass fetches the leg, finds
    // it ended, and the call settles (still `error`); then it is left alone.
    assert!(!call.is_settled());
    clock.advance(Duration::from_secs(300));
    let report = service.reconcile(10).await.unwrap();
    assert_eq!(
        (report.examined, report.legs_fetched, report.expired),
        (1, 1, 0)
    );
    let call = service.call(id).await.unwrap().unwrap();
    assert_eq!(call.state(), DetailedState::Error);
    assert!(call.is_settled(), "{:?}", call.facts.activist);
    clock.advance(Duration::from_secs(300));
    assert_eq!(service.reconcile(10).await.unwrap().examined, 0);
}

/// A call whose callbacks were all lost during an outage longer than
/// `expire_after`: the pass that fetches its legs learns the real outcome
/// and keeps it, rather than expiring the call into `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_keeps_an_outcome_it_fetched_instead_of_expiring() {
    // Never connected: no callback ever arrives; fetches see the world.
    let telephony = Arc::new(bonde_pressure_core::SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::ActivistNoAnswer),
        Duration::ZERO,
    ));
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let service = common::service_over(
        Arc::new(InMemoryCallStore::new()),
        telephony.clone(),
        clock.clone(),
    );
    let id = service.start(&demo_request()).await.unwrap().call_id;
    clock.advance(Duration::from_secs(3 * 3600));
    let report = service.reconcile(10).await.unwrap();
    assert_eq!(
        (report.examined, report.legs_fetched, report.expired),
        (1, 1, 0),
        "{report:?}"
    );
    let call = service.call(id).await.unwrap().unwrap();
    assert_eq!(call.state(), DetailedState::ActivistNoAnswer);
    assert_eq!(call.ui_status(), UiStatus::Canceled);
    assert!(!call.facts.expired && call.is_settled());
}

/// A leg fetched long after it ended keeps the provider's end time, not
/// the time of the fetch (the details view's `ended_at` after an outage).
#[tokio::test]
async fn a_fetched_ended_leg_keeps_the_providers_end_time() {
    let leg_id: LegId = format!("CA{}", "a".repeat(32)).parse().unwrap();
    let ended: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
    let mut telephony = MockTelephony::new();
    let s = leg_id.clone();
    telephony
        .expect_call_activist()
        .times(1)
        .returning(move |_| Ok(DialedLeg::new(s.clone()).with_status(LegStatus::Queued)));
    let s = leg_id.clone();
    telephony.expect_fetch_leg().times(1).returning(move |_| {
        Ok(
            bonde_pressure_core::ports::LegSnapshot::new(s.clone(), LegStatus::NoAnswer)
                .with_duration_secs(0)
                .with_ended_at(ended),
        )
    });
    let clock = Arc::new(ManualClock::new(ended + chrono::Duration::hours(1)));
    let service = common::service_over(
        Arc::new(InMemoryCallStore::new()),
        Arc::new(telephony),
        clock.clone(),
    );
    let id = service.start(&demo_request()).await.unwrap().call_id;
    clock.advance(Duration::from_secs(300));
    let report = service.reconcile(10).await.unwrap();
    assert_eq!(report.legs_fetched, 1);
    let call = service.call(id).await.unwrap().unwrap();
    assert_eq!(call.state(), DetailedState::ActivistNoAnswer);
    assert_eq!(call.facts.activist.ended_at, Some(ended));
}

/// Target busy, and ending the conference fails: the state is terminal
/// (`target_busy`) but the activist is left alone in the conference.
/// Reconciliation must still list the call and hang the activist up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_hangs_up_a_leg_left_live_by_a_terminal_call() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let h = common::harness_with(
        ScenarioPicker::Always(Scenario::TargetBusy),
        Duration::ZERO,
        clock.clone(),
    );
    h.telephony.set_failure(
        CommandKind::EndConference,
        Some(TelephonyError::unavailable("timeout")),
    );
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let call = settle(&h.service, id).await;
    assert_eq!(call.state(), DetailedState::TargetBusy);
    assert_eq!(call.live_legs(), [Leg::Activist]);
    assert!(!call.is_settled());
    let activist = call.facts.activist.leg_id.clone().unwrap();

    clock.advance(Duration::from_secs(300));
    let listed = h.store.list_unfinished(clock.now(), 10).await.unwrap();
    assert_eq!(listed.iter().map(|c| c.id).collect::<Vec<_>>(), [id]);
    let report = h.service.reconcile(10).await.unwrap();
    assert_eq!(
        (
            report.examined,
            report.legs_fetched,
            report.legs_hung_up,
            report.expired,
            report.errors
        ),
        (1, 1, 1, 0, 0)
    );
    let hang_ups: Vec<_> = h
        .telephony
        .commands()
        .into_iter()
        .filter(|c| matches!(c, TelephonyCommand::HangUp { .. }))
        .collect();
    assert_eq!(
        hang_ups,
        [TelephonyCommand::HangUp {
            call_id: id,
            leg_id: activist,
            how: bonde_pressure_core::HangUp::Complete,
        }]
    );

    // The activist's leg ends; the call keeps its state and is settled.
    let call = common::until_settled(&h.service, id).await;
    assert_eq!(call.state(), DetailedState::TargetBusy);
    assert_eq!(call.facts.activist.status, Some(LegStatus::Completed));
    clock.advance(Duration::from_secs(300));
    assert_eq!(h.service.reconcile(10).await.unwrap().examined, 0);
}

/// The `DialTarget` effect was committed, but the replica that won it died
/// before recording the dial: no target leg id, no refusal. Once the call is
/// stale, reconciliation records the dial as failed, so the conference ends
/// and the activist hears the closing message instead of waiting for expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_fails_a_target_dial_that_never_reported_back() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    // An hour per simulated step: no callback arrives during the test.
    let h = common::harness_with(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
        clock.clone(),
    );
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let activist = h
        .service
        .call(id)
        .await
        .unwrap()
        .unwrap()
        .facts
        .activist
        .leg_id
        .unwrap();
    // The activist answered, confirmed, joined; the dial was requested and
    // its effect dropped (the replica died).
    commit_dropping_effects(&h.store, id, &activist_joins(&activist), clock.now()).await;
    let call = h.service.call(id).await.unwrap().unwrap();
    assert!(call.facts.requested.dial_target);
    assert_eq!(call.state(), DetailedState::Connecting);

    // Not stale yet: left alone.
    let report = h.service.reconcile(10).await.unwrap();
    assert_eq!(report.lost_dials, 0);

    clock.advance(Duration::from_secs(300));
    let report = h.service.reconcile(10).await.unwrap();
    assert_eq!((report.examined, report.lost_dials), (1, 1), "{report:?}");
    let call = h.service.call(id).await.unwrap().unwrap();
    assert_eq!(call.state(), DetailedState::TargetFailed);
    assert_eq!(call.ui_status(), UiStatus::Failed);
    assert!(
        h.telephony
            .commands()
            .iter()
            .any(|c| matches!(c, TelephonyCommand::EndConference { .. })),
        "{:?}",
        h.telephony.commands()
    );
    // Never dialled afterwards: the dial is not retried behind a live conference.
    assert!(
        !h.telephony
            .commands()
            .iter()
            .any(|c| matches!(c, TelephonyCommand::AddTarget(_)))
    );
    // A second pass finds nothing more to do for the dial.
    clock.advance(Duration::from_secs(300));
    assert_eq!(h.service.reconcile(10).await.unwrap().lost_dials, 0);
}

/// The activist's answer, confirmation and join, as callbacks would report them.
fn activist_joins(activist: &LegId) -> Vec<CallEvent> {
    vec![
        CallEvent::leg_status(Leg::Activist, LegStatus::InProgress)
            .with_leg_id(activist.clone())
            .build(),
        CallEvent::Confirmed(bonde_pressure_core::call::Confirmation::Digits("1".into())),
        CallEvent::participant_joined(
            format!("CF{}", "c".repeat(32)).parse().unwrap(),
            activist.clone(),
            None,
        ),
    ]
}

/// Commits `events` to the call directly, dropping their effects (a
/// replica that died, or one still performing them).
async fn commit_dropping_effects(
    store: &InMemoryCallStore,
    id: CallId,
    events: &[CallEvent],
    now: DateTime<Utc>,
) {
    let mut call = store.get(id).await.unwrap().unwrap();
    for e in events {
        call = call.apply(e, now).0;
    }
    store.commit(&call, &[]).await.unwrap();
}

/// A target that joined the conference (seen by its leg id) though its
/// `LegDialed` and status callbacks were lost is not a lost dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_seen_in_the_conference_is_not_a_lost_dial() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let h = common::harness_with(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
        clock.clone(),
    );
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let activist = h
        .service
        .call(id)
        .await
        .unwrap()
        .unwrap()
        .facts
        .activist
        .leg_id
        .unwrap();
    let mut events = activist_joins(&activist);
    events.push(CallEvent::participant_joined(
        format!("CF{}", "c".repeat(32)).parse().unwrap(),
        format!("CA{}", "b".repeat(32)).parse().unwrap(),
        None,
    ));
    commit_dropping_effects(&h.store, id, &events, clock.now()).await;
    clock.advance(Duration::from_secs(300));
    let report = h.service.reconcile(10).await.unwrap();
    assert_eq!((report.examined, report.lost_dials), (1, 0), "{report:?}");
    let call = h.service.call(id).await.unwrap().unwrap();
    assert_ne!(call.facts.target.status, Some(LegStatus::Failed));
}

/// A telephony whose first leg fetch lets "another replica" request the
/// target's dial (committed, not yet performed), as if it happened while
/// the reconciliation pass was under way.
struct DialRequestedDuringFetch {
    inner: Arc<bonde_pressure_core::SimulatedTelephony>,
    store: Arc<InMemoryCallStore>,
    pending: std::sync::Mutex<Option<(CallId, Vec<CallEvent>)>>,
    clock: Arc<ManualClock>,
}

#[async_trait]
impl bonde_pressure_core::Telephony for DialRequestedDuringFetch {
    async fn call_activist(
        &self,
        req: &bonde_pressure_core::ports::ActivistCallRequest,
    ) -> Result<DialedLeg, TelephonyError> {
        self.inner.call_activist(req).await
    }
    async fn add_target(&self, req: &TargetCallRequest) -> Result<DialedLeg, TelephonyError> {
        self.inner.add_target(req).await
    }
    async fn hang_up(
        &self,
        call_id: CallId,
        leg_id: &LegId,
        how: bonde_pressure_core::HangUp,
    ) -> Result<(), TelephonyError> {
        self.inner.hang_up(call_id, leg_id, how).await
    }
    async fn end_conference(
        &self,
        call_id: CallId,
        conference: &bonde_pressure_core::ConferenceId,
    ) -> Result<(), TelephonyError> {
        self.inner.end_conference(call_id, conference).await
    }
    async fn fetch_leg(
        &self,
        leg_id: &LegId,
    ) -> Result<bonde_pressure_core::ports::LegSnapshot, TelephonyError> {
        let pending = self.pending.lock().unwrap().take();
        if let Some((id, events)) = pending {
            commit_dropping_effects(&self.store, id, &events, self.clock.now()).await;
        }
        self.inner.fetch_leg(leg_id).await
    }
}

/// A dial requested after the pass listed the call (another replica is
/// dialling right now) is not a lost dial: only a request that was already
/// silent for `stale_after` when listed is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_requested_during_the_pass_is_not_a_lost_dial() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let store = Arc::new(InMemoryCallStore::new());
    let telephony = Arc::new(DialRequestedDuringFetch {
        inner: Arc::new(bonde_pressure_core::SimulatedTelephony::new(
            ScenarioPicker::Always(Scenario::Success),
            Duration::ZERO,
        )),
        store: store.clone(),
        pending: std::sync::Mutex::new(None),
        clock: clock.clone(),
    });
    let service = common::service_over(store.clone(), telephony.clone(), clock.clone());
    let id = service.start(&demo_request()).await.unwrap().call_id;
    let activist = service
        .call(id)
        .await
        .unwrap()
        .unwrap()
        .facts
        .activist
        .leg_id
        .unwrap();
    *telephony.pending.lock().unwrap() = Some((id, activist_joins(&activist)));

    clock.advance(Duration::from_secs(300));
    let report = service.reconcile(10).await.unwrap();
    assert_eq!(report.lost_dials, 0, "{report:?}");
    let call = service.call(id).await.unwrap().unwrap();
    assert!(
        call.facts.requested.dial_target,
        "the other replica's request"
    );
    assert_eq!(call.facts.target.status, None);
}

/// A leg the telephony does not know (a simulated telephony that restarted,
/// another account) is recorded as ended; the call settles instead of being
/// listed on every pass.
#[tokio::test]
async fn a_leg_unknown_to_the_telephony_is_recorded_as_ended() {
    let leg_id: LegId = format!("CA{}", "a".repeat(32)).parse().unwrap();
    let mut telephony = MockTelephony::new();
    let s = leg_id.clone();
    telephony
        .expect_call_activist()
        .times(1)
        .returning(move |_| Ok(DialedLeg::new(s.clone()).with_status(LegStatus::Queued)));
    telephony.expect_fetch_leg().times(1).returning(|_| {
        Err(TelephonyError::not_found(
            "The requested resource was not found",
        ))
    });
    telephony.expect_hang_up().never();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let service = common::service_over(
        Arc::new(InMemoryCallStore::new()),
        Arc::new(telephony),
        clock.clone(),
    );
    let id = service.start(&demo_request()).await.unwrap().call_id;
    clock.advance(Duration::from_secs(300));
    let report = service.reconcile(10).await.unwrap();
    assert_eq!((report.examined, report.errors), (1, 0), "{report:?}");
    let call = service.call(id).await.unwrap().unwrap();
    assert_eq!(call.facts.activist.status, Some(LegStatus::Canceled));
    assert!(call.is_settled(), "{:?}", call.state());
    clock.advance(Duration::from_secs(300));
    assert_eq!(service.reconcile(10).await.unwrap().examined, 0);
}

#[tokio::test]
async fn a_gather_without_input_says_goodbye_instead_of_joining() {
    let h = common::harness_with_tick(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
    );
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let empty = CallEvent::Ignored {
        what: "gather without input".into(),
    };
    let script = h
        .service
        .script(id, ScriptMoment::Confirmed, empty, Some(raw(1)))
        .await
        .unwrap();
    assert!(
        !script
            .instructions
            .iter()
            .any(|i| matches!(i, VoiceInstruction::JoinConference { .. }))
    );
    assert_eq!(script.instructions.last(), Some(&VoiceInstruction::Hangup));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_every_state_change() {
    // Callbacks come a tick after each command: the per-call subscription,
    // made when `start` answers, sees the commits that follow.
    let h = common::harness_with_tick(
        ScenarioPicker::Always(Scenario::TargetBusy),
        Duration::from_millis(30),
    );
    let live = h.service.live_updates();
    let mut updates = live.subscribe();
    let mut widget = live.subscribe_widget(WidgetId::new(1).unwrap());
    let mut other_widget = live.subscribe_widget(WidgetId::new(2).unwrap());
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let mut this_call = live.subscribe_call(id);
    let mut other_call = live.subscribe_call(CallId::new());
    settle(&h.service, id).await;
    let final_version = h.service.call(id).await.unwrap().unwrap().version;
    let drain = |sub: &mut Subscription| -> Vec<CallUpdate> {
        std::iter::from_fn(|| sub.try_next())
            .map(|n| match n {
                Notice::Update(u) => u,
                other => panic!("lagged: {other:?}"),
            })
            .collect()
    };
    let all = drain(&mut updates);
    let mut states = Vec::new();
    for u in &all {
        assert_eq!(u.call_id, id);
        if states.last() != Some(&u.state) {
            states.push(u.state);
        }
    }
    assert_eq!(states.first(), Some(&DetailedState::Created));
    assert_eq!(states.last(), Some(&DetailedState::TargetBusy));
    assert!(states.contains(&DetailedState::Connecting), "{states:?}");
    // One update per commit, in order, the last at the stored version.
    let versions: Vec<u64> = all.iter().map(|u| u.version).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(versions.last(), Some(&final_version));
    // The widget's subscription sees the same; the call's, the later ones.
    assert_eq!(drain(&mut widget), all);
    let later = drain(&mut this_call);
    assert!(!later.is_empty() && later.len() < all.len(), "{later:?}");
    assert_eq!(later[..], all[all.len() - later.len()..]);
    assert!(drain(&mut other_call).is_empty());
    assert!(drain(&mut other_widget).is_empty());
}

#[tokio::test]
async fn the_fallback_script_apologises_in_the_campaigns_voice_then_hangs_up() {
    let mut widget = bonde_pressure_core::demo_widget();
    widget.settings.voice = "Polly.Ricardo".into();
    widget.settings.language = "pt-PT".into();
    widget.settings.messages.unavailable = "Lamentamos, {activist}.".into();
    let store: Arc<dyn CallStore> = Arc::new(InMemoryCallStore::new());
    let replica = |store: Arc<dyn CallStore>| {
        PressureService::new(
            Dependencies::new(
                store,
                Arc::new(bonde_pressure_core::SimulatedTelephony::new(
                    ScenarioPicker::Always(Scenario::Success),
                    Duration::from_secs(3600),
                )),
                Arc::new(StaticCampaignDirectory::new([widget.clone()])),
            )
            .with_recorder(Arc::new(StubActionRecorder::new()))
            .with_clock(Arc::new(bonde_pressure_core::SystemClock)),
            ServiceConfig::default(),
        )
    };
    let a = replica(store.clone());
    let b = replica(store);
    let id = a.start(&demo_request()).await.unwrap().call_id;

    let expect_campaign = |script: bonde_pressure_core::VoiceScript| {
        assert_eq!(script.call_id, id);
        let [VoiceInstruction::Say(speech), VoiceInstruction::Hangup] = &script.instructions[..]
        else {
            panic!("{script:?}")
        };
        assert_eq!(
            (
                speech.voice.as_str(),
                speech.language.as_str(),
                speech.text.as_str()
            ),
            ("Polly.Ricardo", "pt-PT", "Lamentamos, .")
        );
    };
    // The replica that created the call knows its campaign.
    expect_campaign(a.fallback_script(id).await);

    // Another replica that never saw it: the default voice and message.
    let script = b.fallback_script(id).await;
    let defaults = bonde_pressure_core::CampaignSettings::default();
    let [VoiceInstruction::Say(speech), VoiceInstruction::Hangup] = &script.instructions[..] else {
        panic!("{script:?}")
    };
    assert_eq!(speech.voice, defaults.voice);
    assert_eq!(speech.text, defaults.messages.unavailable);
    // Once it has loaded the call, it knows.
    b.call(id).await.unwrap().unwrap();
    expect_campaign(b.fallback_script(id).await);
}
