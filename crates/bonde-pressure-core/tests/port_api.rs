//! The port API as an embedder sees it, from outside the crate:
//! every port trait and every type in a port's signature is reachable at the
//! crate root; port structs are `#[non_exhaustive]`, so they are built with
//! their constructors and `with_*` setters (a struct literal would not
//! compile here); a store implements only what the service uses.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
// Everything below from the crate root only, as the docs promise.
use bonde_pressure_core::{
    ActionRecorder, Activist, ActivistCallRequest, ActivistInput, Admission, AnsweredBy,
    AuditEntry, Call, CallCursor, CallEvent, CallId, CallStore, CallerIdPolicy, CampaignDirectory,
    CampaignResults, CampaignSettings, Clock, ConferenceSnapshot, Dependencies, DialedLeg,
    DirectoryError, DoNotCallHash, DoNotCallList, DoNotCallSource, Email, ErasureReport,
    ErrorSource, EventSink, FieldError, FunnelStep, HandleOutcome, IdError, InMemoryCallStore,
    LegError, LegSnapshot, LegStatus, LegStatusEvent, LimitKey, LimitKind, LimiterError, Messages,
    ParticipantSnapshot, PersonKey, PersonName, PersonalDataStore, PhoneNumber, PressureService,
    Quota, RateLimiter, RawEvent, RecentCalls, ReconcileReport, RecorderError, Refill,
    RequestLimits, ResultsQuery, ResultsReport, RetentionPass, RetentionReport, Scenario,
    ScenarioPicker, SeriesBucket, ServiceConfig, SimulatedTelephony, StartCallRequest, StartedCall,
    StaticCampaignDirectory, StoreError, StoredEvent, SystemClock, Target, TargetCallRequest,
    TargetInput, TargetResults, Telephony, TelephonyError, UiStatus, UnreadableCall, Widget,
    WidgetAction, WidgetId, WidgetTarget,
};
use chrono::{DateTime, TimeZone, Utc};

fn phone(e164: &str) -> PhoneNumber {
    PhoneNumber::parse_e164(e164).unwrap()
}

fn sid() -> bonde_pressure_core::LegId {
    format!("CA{}", "a".repeat(32)).parse().unwrap()
}

/// Names every port type re-exported at the root (a type missing from the
/// root fails to compile above); the signatures tie each to its port.
#[allow(dead_code, clippy::type_complexity)]
struct RootReexports(
    fn(&dyn Telephony, &ActivistCallRequest, &TargetCallRequest) -> (DialedLeg, LegSnapshot),
    fn(ConferenceSnapshot, ParticipantSnapshot, TelephonyError),
    fn(&dyn CallStore, RawEvent, StoredEvent, UnreadableCall, RecentCalls, StoreError),
    fn(&dyn CampaignDirectory, Widget, WidgetTarget, DirectoryError, CampaignSettings),
    fn(Messages, CallerIdPolicy),
    fn(&dyn ActionRecorder, WidgetAction, RecorderError),
    fn(&dyn EventSink, &dyn Clock, SystemClock),
    fn(&dyn RateLimiter, LimitKey, LimitKind, Quota, Admission, LimiterError),
    fn(&dyn DoNotCallList, DoNotCallHash, DoNotCallSource),
    fn(&dyn PersonalDataStore, PersonKey, RetentionPass, RetentionReport, ErasureReport),
    fn(AuditEntry),
    fn(&dyn CampaignResults, ResultsQuery, ResultsReport, CallCursor),
    fn(FunnelStep, TargetResults, SeriesBucket),
    fn(Refill, RequestLimits, ErrorSource, LegError, IdError, PersonName, Email),
    fn(Activist, Target, LegStatusEvent),
);

/// What a store builds and an adapter feeds the service are built with
/// constructors too (a struct literal would not compile here).
#[test]
fn calls_people_and_events_are_built_with_constructors() {
    let name = PersonName::parse("Ana Souza").unwrap();
    let email = Email::parse("ana@example.org").unwrap();
    let activist = Activist::new(name.clone(), email.clone(), phone("+5511912345678"))
        .with_first_name(PersonName::parse("Ana").unwrap())
        .with_last_name(None);
    assert_eq!(
        (
            &activist.name,
            &activist.email,
            activist.first_name.as_ref().map(|n| n.as_str())
        ),
        (&name, &email, Some("Ana"))
    );
    assert_eq!(activist.last_name, None);
    let target = Target::new(PersonName::parse("Alvo").unwrap(), phone("+5561999990000"));
    assert_eq!(target.phone, phone("+5561999990000"));
    let error = LegError::new(13_224, "refused");
    assert_eq!(
        (error.code, error.message.as_str()),
        (Some(13_224), "refused")
    );
    assert_eq!(LegError::new(None, "x").code, None);

    // A store restores a call from its columns.
    let created = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let updated = Utc.with_ymd_and_hms(2026, 1, 2, 3, 9, 0).unwrap();
    let mut facts = bonde_pressure_core::CallFacts::default();
    facts.prompted = true;
    let id = CallId::new();
    let call = Call::new(
        id,
        WidgetId::new(4).unwrap(),
        activist.clone(),
        target.clone(),
        None,
        created,
    )
    .with_facts(facts.clone())
    .with_version(7)
    .with_updated_at(updated);
    assert_eq!(
        (call.id, call.version, call.created_at, call.updated_at),
        (id, 7, created, updated)
    );
    assert_eq!(
        (&call.activist, &call.target, &call.facts),
        (&activist, &target, &facts)
    );

    let event: CallEvent = CallEvent::leg_status(bonde_pressure_core::Leg::Target, LegStatus::Busy)
        .with_leg_id(sid())
        .with_sip_response_code(486)
        .into();
    let CallEvent::LegStatus {
        leg_id,
        status,
        sip_response_code,
        duration_secs,
        ..
    } = &event
    else {
        panic!("{event:?}")
    };
    assert_eq!(
        (leg_id.as_ref(), *status, *sip_response_code, *duration_secs),
        (Some(&sid()), LegStatus::Busy, Some(486), None)
    );
}

/// The errors that hold a cause give it back as their source.
#[test]
fn port_errors_keep_their_cause() {
    let io = || std::io::Error::other("connection reset");
    for e in [
        &DirectoryError::unavailable(io()) as &dyn std::error::Error,
        &RecorderError::failed(io()),
        &LimiterError::unavailable(io()),
    ] {
        assert_eq!(
            e.source().map(|c| c.to_string()).as_deref(),
            Some("connection reset"),
            "{e}"
        );
        // These show their cause themselves: the chain does not repeat it.
        assert!(e.to_string().ends_with(": connection reset"), "{e}");
        assert_eq!(
            bonde_pressure_core::error_chain(e).to_string(),
            e.to_string()
        );
    }
}

#[test]
fn telephony_requests_and_answers_are_built_with_constructors() {
    let id = CallId::new();
    let req = ActivistCallRequest::new(id, phone("+5511912345678"), 30);
    assert_eq!(
        (req.call_id, req.timeout_secs, req.detect_machine),
        (id, 30, false)
    );
    assert!(req.with_detect_machine(true).detect_machine);

    let req = TargetCallRequest::new(id, phone("+5561999990000"), 25);
    assert_eq!((req.caller_id.clone(), req.detect_machine), (None, false));
    let req = req
        .with_caller_id(phone("+5511912345678"))
        .with_detect_machine(true);
    assert_eq!(req.caller_id, Some(phone("+5511912345678")));
    assert!(req.detect_machine);
    assert_eq!(req.with_caller_id(None).caller_id, None);

    let leg = DialedLeg::new(sid());
    assert_eq!(leg.status, None);
    assert_eq!(
        leg.with_status(LegStatus::Queued).status,
        Some(LegStatus::Queued)
    );

    let ended = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let snap = LegSnapshot::new(sid(), LegStatus::InProgress);
    assert_eq!(
        (snap.duration_secs, snap.answered_by, snap.ended_at),
        (None, None, None)
    );
    let snap = LegSnapshot::new(sid(), LegStatus::Completed)
        .with_duration_secs(42)
        .with_answered_by(AnsweredBy::Human)
        .with_ended_at(ended);
    assert_eq!(
        (snap.duration_secs, snap.answered_by, snap.ended_at),
        (Some(42), Some(AnsweredBy::Human), Some(ended))
    );
}

#[test]
fn store_directory_and_recorder_types_are_built_with_constructors() {
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let raw = RawEvent::new("status-callback", "CallStatus=ringing", at);
    assert_eq!((raw.leg_id.clone(), raw.sequence_number), (None, None));
    let raw = raw.with_leg_id("CA1").with_sequence_number(7);
    assert_eq!(
        (
            raw.kind.as_str(),
            raw.leg_id.as_deref(),
            raw.sequence_number
        ),
        ("status-callback", Some("CA1"), Some(7))
    );
    let id = CallId::new();
    let stored = StoredEvent::new(3, Some(id), raw.clone());
    assert_eq!((stored.id, stored.call_id, stored.raw), (3, Some(id), raw));

    let widget_id = WidgetId::new(9).unwrap();
    let widget = Widget::new(widget_id, vec![WidgetTarget::new("Alvo", "+5561999990000")]);
    assert!(
        widget.phone_pressure,
        "a widget runs phone pressure by default"
    );
    assert_eq!(widget.settings, CampaignSettings::default());
    assert_eq!(widget.targets[0].name, "Alvo");
    let settings = CampaignSettings::default()
        .with_voice("Polly.Vitoria")
        .with_caller_id(CallerIdPolicy::ActivistNumber)
        .with_detect_machines(false)
        .with_hold_music_url("https://example.org/hold.mp3".to_owned())
        .with_messages(Messages::default().with_greeting("Oi, {activist}!"));
    let widget = widget
        .with_settings(settings.clone())
        .with_phone_pressure(false);
    assert!(!widget.phone_pressure);
    assert_eq!(widget.settings.voice, "Polly.Vitoria");
    assert_eq!(widget.settings.messages.greeting, "Oi, {activist}!");
    assert_eq!(
        widget.settings.messages.no_input,
        Messages::default().no_input
    );
    assert_eq!(
        settings.with_hold_music_url(None).hold_music_url,
        None,
        "an optional setting can be cleared"
    );

    let activist = bonde_pressure_core::Activist::erased();
    let action = WidgetAction::new(widget_id, id, activist.clone());
    assert_eq!(
        (action.widget_id, action.call_id, action.activist),
        (widget_id, id, activist)
    );
}

#[test]
fn service_types_are_built_with_constructors_and_setters() {
    let config = ServiceConfig::default()
        .with_max_commit_attempts(3)
        .with_stale_after(Duration::from_secs(5))
        .with_expire_after(Duration::from_secs(50))
        .with_machine_verdict_grace(Duration::ZERO)
        .with_allowed_country_codes(vec![55, 351])
        .with_activist_calls(Quota::per_day(2))
        .with_target_dials(None)
        .with_do_not_call_digit('7');
    assert_eq!(config.max_commit_attempts, 3);
    assert_eq!(config.stale_after, Duration::from_secs(5));
    assert_eq!(config.expire_after, Duration::from_secs(50));
    assert_eq!(config.machine_verdict_grace, Duration::ZERO);
    assert_eq!(config.allowed_country_codes, vec![55, 351]);
    assert_eq!(config.activist_calls, Some(Quota::per_day(2)));
    assert_eq!(config.target_dials, None);
    assert_eq!(config.do_not_call_digit, Some('7'));
    let defaults = ServiceConfig::default();
    assert_eq!(
        config.allowed_number_types, defaults.allowed_number_types,
        "untouched settings keep their defaults"
    );

    let req = StartCallRequest::new(
        1,
        ActivistInput::new("Ana Souza", "ana@example.org", "11 91234-5678")
            .with_first_name("Ana")
            .with_last_name("Souza"),
        TargetInput::new("Demo Target", "+55 61 99999-0000"),
    );
    assert_eq!(req.widget_id, 1);
    assert_eq!(req.activist.first_name.as_deref(), Some("Ana"));
    assert_eq!(req.activist.last_name.as_deref(), Some("Souza"));
    assert_eq!(req.target.phone, "+55 61 99999-0000");
    assert_eq!(
        ActivistInput::new("Ana", "a@b.org", "1").first_name,
        None,
        "optional names are absent unless set"
    );

    let id = CallId::new();
    let started = StartedCall::new(id, UiStatus::Initiated);
    assert_eq!((started.leg_id.clone(), started.leg_status), (None, None));
    let started = started
        .with_leg_id(sid())
        .with_leg_status(LegStatus::Queued);
    assert_eq!(started.leg_id, Some(sid()));
    assert_eq!(started.leg_status, Some(LegStatus::Queued));

    let field = FieldError::new(&["activist", "phone"], "bad", "value_error.phone");
    assert_eq!(field.loc, vec!["activist", "phone"]);

    let mut report = ReconcileReport::default();
    report.examined += 1;
    assert_eq!(report.examined, 1);
}

/// A store with only the required `CallStore` methods (no statistics, no
/// lookup by SID): the service runs a whole call on it.
struct MinimalStore(InMemoryCallStore);

#[async_trait]
impl CallStore for MinimalStore {
    async fn create(&self, call: &Call) -> Result<(), StoreError> {
        self.0.create(call).await
    }
    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        self.0.get(id).await
    }
    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError> {
        self.0.commit(call, events).await
    }
    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError> {
        self.0.append_events(call_id, events).await
    }
    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError> {
        self.0.events(call_id).await
    }
    async fn list_unfinished(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        self.0.list_unfinished(updated_before, limit).await
    }
}

#[tokio::test]
async fn a_store_with_only_the_required_methods_runs_a_call() {
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        Duration::ZERO,
    ));
    let store = Arc::new(MinimalStore(InMemoryCallStore::new()));
    // Only the three ports without a default: no recorder, the system clock.
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

    let id = service
        .start(&common::demo_request())
        .await
        .unwrap()
        .call_id;
    let call = common::until_settled(&service, id).await;
    assert_eq!(call.ui_status(), UiStatus::Completed);
    assert!(!store.events(id).await.unwrap().is_empty());
    // The defaulted methods answer for it: no damaged rows, no store count.
    assert!(
        store
            .count_recent_calls_to(&call.activist.phone, call.created_at)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(service.reconcile(10).await.unwrap().examined, 0, "settled");
}

/// An embedder's event sink, written against the port's root re-export,
/// receives what the simulated telephony plays.
#[tokio::test]
async fn an_embedder_event_sink_receives_the_telephony_callbacks() {
    #[derive(Default)]
    struct Recorded(std::sync::Mutex<Vec<(CallId, &'static str, bool)>>);
    #[async_trait]
    impl EventSink for Recorded {
        async fn deliver(&self, call_id: CallId, event: CallEvent, raw: Option<RawEvent>) {
            self.0
                .lock()
                .unwrap()
                .push((call_id, event.kind(), raw.is_some()));
        }
    }
    let telephony = SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::ActivistBusy),
        Duration::ZERO,
    );
    let recorded = Arc::new(Recorded::default());
    let sink: Arc<dyn EventSink> = recorded.clone();
    telephony.connect(Arc::downgrade(&sink));
    let id = CallId::new();
    let leg = telephony
        .call_activist(&ActivistCallRequest::new(id, phone("+5511912345671"), 30))
        .await
        .unwrap();
    assert_eq!(leg.status, Some(LegStatus::Queued));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while recorded.0.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nothing delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = recorded.0.lock().unwrap().clone();
    assert!(
        got.iter().all(|(call, _, raw)| *call == id && *raw),
        "{got:?}"
    );
}

#[test]
fn handle_outcomes_are_built_with_a_constructor() {
    let call = bonde_pressure_core::Call::new(
        CallId::new(),
        WidgetId::new(1).unwrap(),
        bonde_pressure_core::Activist::erased(),
        bonde_pressure_core::Target::new(
            bonde_pressure_core::domain::PersonName::parse("Alvo").unwrap(),
            phone("+5561999990000"),
        ),
        None,
        Utc::now(),
    );
    let outcome = HandleOutcome::new(call.clone(), vec![]);
    assert_eq!((outcome.call, outcome.effects), (call, vec![]));
}
