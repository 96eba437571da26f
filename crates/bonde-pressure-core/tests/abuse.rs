//! Issue 8: the number policy, the do-not-call list and the caps, through
//! the service.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::call::{CallEvent, Confirmation, DetailedState, UiStatus};
use bonde_pressure_core::do_not_call::{DoNotCallHasher, DoNotCallSource, InMemoryDoNotCallList};
use bonde_pressure_core::limits::Quota;
use bonde_pressure_core::script::{ScriptMoment, VoiceInstruction};
use bonde_pressure_core::simulated::{CommandKind, TelephonyCommand};
use bonde_pressure_core::{
    Dependencies, EventSink, InMemoryCallStore, ManualClock, PhoneNumber, PressureService, Region,
    Scenario, ScenarioPicker, ServiceConfig, SimulatedTelephony, StartError,
    StaticCampaignDirectory, StubActionRecorder, TelephonyError,
};
use chrono::Utc;
use common::{Harness, demo_request, settle};

fn harness_config(config: ServiceConfig, tick: Duration) -> (Harness, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        tick,
    ));
    let store = Arc::new(InMemoryCallStore::new());
    let recorder = Arc::new(StubActionRecorder::new());
    let service = Arc::new(PressureService::new(
        Dependencies::new(
            store.clone(),
            telephony.clone(),
            Arc::new(StaticCampaignDirectory::demo()),
        )
        .with_recorder(recorder.clone())
        .with_clock(clock.clone()),
        config,
    ));
    let sink: Arc<dyn EventSink> = service.clone();
    telephony.connect(Arc::downgrade(&sink));
    (
        Harness {
            service,
            telephony,
            store,
            recorder,
        },
        clock,
    )
}

fn kinds(err: StartError) -> Vec<(String, String)> {
    match err {
        StartError::Invalid(fields) => fields
            .into_iter()
            .map(|f| (f.loc.join("."), f.kind))
            .collect(),
        other => panic!("expected field errors, got {other:?}"),
    }
}

fn with_activist(phone: &str) -> bonde_pressure_core::StartCallRequest {
    let mut req = demo_request();
    req.activist.phone = phone.into();
    req
}

/// Reproductions 1 and 2: costly numbers, junk and non-geographic codes are
/// refused with a field error, and nothing is called.
#[tokio::test]
async fn the_number_policy_refuses_costly_numbers_and_junk() {
    let any_country = ServiceConfig::default().with_allowed_country_codes(vec![]);
    let (h, _) = harness_config(any_country, Duration::from_secs(3600));
    for (phone, kind) in [
        ("0900 123 4567", "value_error.phone.type"),
        ("0900-123-4567", "value_error.phone.type"),
        ("(0900) 123 4567", "value_error.phone.type"),
        ("09001234567", "value_error.phone.type"),
        ("+55 0900 123 4567", "value_error.phone.type"),
        ("0800 123 4567", "value_error.phone.type"),
        ("0500 123 4567", "value_error.phone.type"),
        ("0300 123 4567", "value_error.phone.type"),
        ("4004 1234", "value_error.phone.type"),
        ("+881 612345678", "value_error.phone.country"),
        ("+870 301234567", "value_error.phone.country"),
        ("+882 3421234", "value_error.phone.country"),
        ("+351 760 123 456", "value_error.phone.type"),
        ("+33 891 12 34 56", "value_error.phone.type"),
        ("11 9123A-5678", "value_error.phone"),
        ("++5511912345678", "value_error.phone"),
    ] {
        let err = h.service.start(&with_activist(phone)).await.unwrap_err();
        assert_eq!(
            kinds(err),
            [("activist.phone".to_string(), kind.to_string())],
            "{phone}"
        );
    }
    assert!(h.telephony.commands().is_empty(), "nothing was called");

    // An explicitly listed non-geographic code is allowed.
    let listed = ServiceConfig::default().with_allowed_country_codes(vec![55, 881]);
    let (h, _) = harness_config(listed, Duration::from_secs(3600));
    h.service
        .start(&with_activist("+881 612345678"))
        .await
        .unwrap();

    // A type can be allowed by configuration.
    let toll_free_ok = ServiceConfig::default()
        .with_allowed_number_types(bonde_pressure_core::NumberType::ALL.to_vec());
    let (h, _) = harness_config(toll_free_ok, Duration::from_secs(3600));
    h.service
        .start(&with_activist("0800 123 4567"))
        .await
        .unwrap();
}

/// A campaign's target that fails the policy is refused per request.
#[tokio::test]
async fn a_target_failing_the_policy_is_refused() {
    use bonde_pressure_core::ports::{Widget, WidgetTarget};
    let (h, _) = harness_config(ServiceConfig::default(), Duration::from_secs(3600));
    let widget = Widget::new(
        bonde_pressure_core::WidgetId::new(7).unwrap(),
        vec![WidgetTarget::new("Premium", "+55 500 123456")],
    );
    let service = PressureService::new(
        Dependencies::new(
            h.store.clone(),
            h.telephony.clone(),
            Arc::new(StaticCampaignDirectory::new(vec![widget])),
        )
        .with_recorder(h.recorder.clone())
        .with_clock(Arc::new(bonde_pressure_core::SystemClock)),
        ServiceConfig::default(),
    );
    let mut req = demo_request();
    req.widget_id = 7;
    req.target.phone = "+55 500 123456".into();
    let err = service.start(&req).await.unwrap_err();
    assert_eq!(
        kinds(err),
        [("target.phone".into(), "value_error.phone.type".into())]
    );
    assert!(h.telephony.commands().is_empty());
}

/// The greeting announces the configured do-not-call key, and says nothing
/// about one when it is off; only the configured key opts out.
#[tokio::test]
async fn the_greeting_announces_the_configured_key_or_none() {
    async fn greet_and_press(key: Option<char>, press: &str) -> (String, bool, bool) {
        let config = ServiceConfig::default().with_do_not_call_digit(key);
        let (h, _) = harness_config(config, Duration::from_secs(3600));
        let id = h.service.start(&demo_request()).await.unwrap().call_id;
        let greeting = h
            .service
            .script(id, ScriptMoment::Answered, CallEvent::Prompted, None)
            .await
            .unwrap();
        let VoiceInstruction::Gather { prompt, .. } = &greeting.instructions[0] else {
            panic!("{greeting:?}")
        };
        let pressed = CallEvent::Confirmed(Confirmation::Digits(press.into()));
        h.service
            .script(id, ScriptMoment::Confirmed, pressed, None)
            .await
            .unwrap();
        let call = h.service.call(id).await.unwrap().unwrap();
        let phone = PhoneNumber::parse("11 91234-5678", Region::BRAZIL).unwrap();
        let listed = h.service.is_on_do_not_call_list(&phone).await.unwrap();
        assert_eq!(call.facts.opted_out, listed);
        (prompt.text.clone(), call.facts.activist_confirmed(), listed)
    }

    // Off: no announcement, and 9 is an ordinary key that confirms.
    let (text, confirmed, listed) = greet_and_press(None, "9").await;
    assert!(!text.contains("aperte 9"), "{text}");
    assert!(!text.contains("ligações nossas"), "{text}");
    assert!(text.ends_with("diga o seu nome."), "{text:?}");
    assert!(confirmed && !listed);

    // Another key: announced, it opts out, and 9 confirms.
    let (text, confirmed, listed) = greet_and_press(Some('7'), "7").await;
    assert!(
        text.ends_with("Se não quiser receber mais ligações nossas, aperte 7."),
        "{text}"
    );
    assert!(!text.contains("aperte 9"), "{text}");
    assert!(!confirmed && listed);
    let (_, confirmed, listed) = greet_and_press(Some('7'), "9").await;
    assert!(confirmed && !listed);
}

/// A service whose do-not-call list fails its next `failures` adds, and
/// which reconciles every unfinished call at once.
fn with_flaky_list(
    failures: usize,
) -> (
    Arc<PressureService>,
    Arc<InMemoryDoNotCallList>,
    Arc<ManualClock>,
) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let telephony = Arc::new(SimulatedTelephony::new(
        ScenarioPicker::Always(Scenario::Success),
        Duration::from_secs(3600),
    ));
    let list = Arc::new(InMemoryDoNotCallList::new());
    list.fail_next_adds(failures);
    let config = ServiceConfig::default().with_stale_after(Duration::ZERO);
    let service = Arc::new(
        PressureService::new(
            Dependencies::new(
                Arc::new(InMemoryCallStore::new()),
                telephony.clone(),
                Arc::new(StaticCampaignDirectory::demo()),
            )
            .with_recorder(Arc::new(StubActionRecorder::new()))
            .with_clock(clock.clone()),
            config,
        )
        .with_do_not_call(list.clone(), DoNotCallHasher::default()),
    );
    let sink: Arc<dyn EventSink> = service.clone();
    telephony.connect(Arc::downgrade(&sink));
    (service, list, clock)
}

/// Presses 9 on a new call; the list's add fails, so nothing is listed yet.
async fn opt_out_while_the_list_fails(service: &PressureService) -> bonde_pressure_core::CallId {
    let id = service.start(&demo_request()).await.unwrap().call_id;
    service
        .script(id, ScriptMoment::Answered, CallEvent::Prompted, None)
        .await
        .unwrap();
    let pressed = CallEvent::Confirmed(Confirmation::Digits("9".into()));
    service
        .script(id, ScriptMoment::Confirmed, pressed, None)
        .await
        .unwrap();
    let call = service.call(id).await.unwrap().unwrap();
    assert!(call.facts.opted_out && !call.facts.opt_out_listed);
    assert!(call.opt_out_pending() && !call.is_settled());
    let phone = PhoneNumber::parse("11 91234-5678", Region::BRAZIL).unwrap();
    assert!(!service.is_on_do_not_call_list(&phone).await.unwrap());
    id
}

async fn assert_listed_and_refused(service: &PressureService, id: bonde_pressure_core::CallId) {
    let phone = PhoneNumber::parse("11 91234-5678", Region::BRAZIL).unwrap();
    assert!(service.is_on_do_not_call_list(&phone).await.unwrap());
    let call = service.call(id).await.unwrap().unwrap();
    assert!(
        call.facts.opt_out_listed && !call.opt_out_pending(),
        "{:?}",
        call.facts
    );
    let err = service.start(&demo_request()).await.unwrap_err();
    assert_eq!(
        kinds(err),
        [(
            "activist.phone".into(),
            "value_error.phone.do_not_call".into()
        )]
    );
}

/// A failed do-not-call add is not lost: reconciliation lists the number.
#[tokio::test]
async fn a_failed_opt_out_is_listed_by_reconciliation() {
    let (service, list, clock) = with_flaky_list(1);
    let id = opt_out_while_the_list_fails(&service).await;
    clock.advance(Duration::from_secs(1));
    let report = service.reconcile(10).await.unwrap();
    assert_eq!(report.opt_outs_listed, 1, "{report:?}");
    assert_eq!(list.len(), 1);
    assert_listed_and_refused(&service, id).await;
    // Listed once: the next pass has nothing to list.
    let report = service.reconcile(10).await.unwrap();
    assert_eq!(report.opt_outs_listed, 0, "{report:?}");
}

/// A failed do-not-call add is not lost: the next event of the call lists it.
#[tokio::test]
async fn a_failed_opt_out_is_listed_by_the_next_event_of_the_call() {
    let (service, _, _) = with_flaky_list(1);
    let id = opt_out_while_the_list_fails(&service).await;
    service
        .handle(
            id,
            CallEvent::Ignored {
                what: "a late callback".into(),
            },
            None,
        )
        .await
        .unwrap();
    assert_listed_and_refused(&service, id).await;
}

/// Reproduction 3: pressing 9 during the greeting is not a confirmation; the
/// activist hears goodbye, and the number is never called again.
#[tokio::test]
async fn pressing_9_opts_out_and_the_number_is_never_called_again() {
    let (h, _) = harness_config(ServiceConfig::default(), Duration::from_secs(3600));
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let greeting = h
        .service
        .script(id, ScriptMoment::Answered, CallEvent::Prompted, None)
        .await
        .unwrap();
    let VoiceInstruction::Gather { prompt, .. } = &greeting.instructions[0] else {
        panic!("{greeting:?}")
    };
    assert!(prompt.text.contains("aperte 9"), "{}", prompt.text);

    let pressed = CallEvent::Confirmed(Confirmation::Digits("9".into()));
    let script = h
        .service
        .script(id, ScriptMoment::Confirmed, pressed, None)
        .await
        .unwrap();
    assert!(
        !script
            .instructions
            .iter()
            .any(|i| matches!(i, VoiceInstruction::JoinConference { .. })),
        "{script:?}"
    );
    let VoiceInstruction::Say(bye) = &script.instructions[0] else {
        panic!("{script:?}")
    };
    assert!(bye.text.contains("não receberá mais"), "{}", bye.text);
    assert_eq!(script.instructions.last(), Some(&VoiceInstruction::Hangup));
    let call = h.service.call(id).await.unwrap().unwrap();
    assert!(call.facts.opted_out && !call.facts.activist_confirmed());
    assert_eq!(call.state(), DetailedState::AwaitingConfirmation);

    let phone = PhoneNumber::parse("11 91234-5678", Region::BRAZIL).unwrap();
    assert!(h.service.is_on_do_not_call_list(&phone).await.unwrap());
    let before = h.telephony.commands().len();
    let err = h.service.start(&demo_request()).await.unwrap_err();
    assert_eq!(
        kinds(err),
        [(
            "activist.phone".into(),
            "value_error.phone.do_not_call".into()
        )]
    );
    assert_eq!(h.telephony.commands().len(), before, "not called");
}

#[tokio::test]
async fn other_keys_still_confirm_and_the_opt_out_key_is_configurable() {
    let config = ServiceConfig::default().with_do_not_call_digit(Some('7'));
    let (h, _) = harness_config(config, Duration::from_secs(3600));
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let nine = CallEvent::Confirmed(Confirmation::Digits("9".into()));
    let script = h
        .service
        .script(id, ScriptMoment::Confirmed, nine, None)
        .await
        .unwrap();
    assert!(
        script
            .instructions
            .iter()
            .any(|i| matches!(i, VoiceInstruction::JoinConference { .. }))
    );
    let phone = PhoneNumber::parse("11 91234-5678", Region::BRAZIL).unwrap();
    assert!(!h.service.is_on_do_not_call_list(&phone).await.unwrap());
}

#[tokio::test]
async fn the_list_can_be_fed_by_the_operator() {
    let (h, _) = harness_config(ServiceConfig::default(), Duration::from_secs(3600));
    let phones = [
        PhoneNumber::parse("11 91234-5678", Region::BRAZIL).unwrap(),
        PhoneNumber::parse("11 91234-5679", Region::BRAZIL).unwrap(),
    ];
    let added = h
        .service
        .add_to_do_not_call_list(&phones, DoNotCallSource::File)
        .await
        .unwrap();
    assert_eq!(added, 2);
    let again = h
        .service
        .add_to_do_not_call_list(&phones[..1], DoNotCallSource::Admin)
        .await
        .unwrap();
    assert_eq!(again, 0);
    let err = h.service.start(&demo_request()).await.unwrap_err();
    assert_eq!(
        kinds(err),
        [(
            "activist.phone".into(),
            "value_error.phone.do_not_call".into()
        )]
    );
}

/// Reproduction 3: one number is called at most N times per 24 h, whoever
/// asks; refusals on our side do not count.
#[tokio::test]
async fn an_activist_number_is_called_at_most_n_times_a_day() {
    let config = ServiceConfig::default().with_activist_calls(Some(Quota::per_day(3)));
    let (h, clock) = harness_config(config, Duration::from_secs(3600));
    // Our own refusal (the provider rate-limits us) is given back.
    h.telephony.set_failure(
        CommandKind::CallActivist,
        Some(TelephonyError::rate_limited(None)),
    );
    for _ in 0..5 {
        h.service.start(&demo_request()).await.unwrap_err();
    }
    h.telephony.set_failure(CommandKind::CallActivist, None);
    for _ in 0..3 {
        h.service.start(&demo_request()).await.unwrap();
    }
    match h.service.start(&demo_request()).await.unwrap_err() {
        StartError::RateLimited { scope, retry_after } => {
            assert_eq!(scope, "activist_calls");
            assert_eq!(retry_after, Duration::from_secs(24 * 3600));
        }
        other => panic!("{other:?}"),
    }
    // Another number is not affected; a day later the first can be called again.
    h.service
        .start(&with_activist("11 91234-5670"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(24 * 3600));
    h.service.start(&demo_request()).await.unwrap();
}

/// The daily cap is counted in the call store: a restarted service (or
/// another replica), with a fresh in-process limiter, still refuses.
#[tokio::test]
async fn the_daily_cap_survives_a_restart_and_is_shared_by_replicas() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let store = Arc::new(InMemoryCallStore::new());
    let replica = || {
        let telephony = Arc::new(SimulatedTelephony::new(
            ScenarioPicker::Always(Scenario::Success),
            Duration::from_secs(3600),
        ));
        let service = Arc::new(PressureService::new(
            Dependencies::new(
                store.clone(),
                telephony.clone(),
                Arc::new(StaticCampaignDirectory::demo()),
            )
            .with_recorder(Arc::new(StubActionRecorder::new()))
            .with_clock(clock.clone()),
            ServiceConfig::default().with_activist_calls(Some(Quota::per_day(3))),
        ));
        let sink: Arc<dyn EventSink> = service.clone();
        telephony.connect(Arc::downgrade(&sink));
        service
    };
    let first = replica();
    for _ in 0..2 {
        first.start(&demo_request()).await.unwrap();
    }
    clock.advance(Duration::from_secs(3600));
    let second = replica();
    second.start(&demo_request()).await.unwrap();
    drop(first);
    let restarted = replica();
    match restarted.start(&demo_request()).await.unwrap_err() {
        StartError::RateLimited { scope, retry_after } => {
            assert_eq!(scope, "activist_calls");
            // The oldest of the three leaves the window in 23 h.
            assert_eq!(retry_after, Duration::from_secs(23 * 3600));
        }
        other => panic!("{other:?}"),
    }
    clock.advance(Duration::from_secs(23 * 3600));
    restarted.start(&demo_request()).await.unwrap();
}

/// Reproduction 4: requests that never get confirmed do not use up the
/// target; the token is taken at dial, and a target out of budget ends the
/// call in `target_rate_limited` (the page's `busy`) with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_is_charged_at_dial_not_on_request() {
    let config = ServiceConfig::default()
        .with_target_dials(Some(Quota::per_hour(2)))
        .with_activist_calls(None);
    // Never-confirmed requests: nothing is dialled, nothing is charged.
    let (h, _) = harness_config(config.clone(), Duration::from_secs(3600));
    for i in 0..30 {
        h.service
            .start(&with_activist(&format!("11 91234-56{i:02}")))
            .await
            .unwrap();
    }

    // Calls that do get confirmed are charged when the target is dialled.
    let (h, _) = harness_config(config, Duration::ZERO);
    for _ in 0..2 {
        let id = h.service.start(&demo_request()).await.unwrap().call_id;
        assert_eq!(
            settle(&h.service, id).await.state(),
            DetailedState::Completed
        );
    }
    // The POST peeks: refused with the time the budget frees up.
    match h.service.start(&demo_request()).await.unwrap_err() {
        StartError::RateLimited { scope, .. } => assert_eq!(scope, "target"),
        other => panic!("{other:?}"),
    }
    let dials = h
        .telephony
        .commands()
        .iter()
        .filter(|c| matches!(c, TelephonyCommand::AddTarget(_)))
        .count();
    assert_eq!(dials, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_out_of_budget_at_dial_time_ends_the_call_as_busy() {
    let config = ServiceConfig::default()
        .with_target_dials(Some(Quota::per_hour(1)))
        .with_activist_calls(None);
    // Two activists pass the peek before either is confirmed.
    let (h, _) = harness_config(config, Duration::from_secs(3600));
    let first = h.service.start(&demo_request()).await.unwrap().call_id;
    let second = h
        .service
        .start(&with_activist("11 91234-5670"))
        .await
        .unwrap()
        .call_id;
    let cf: bonde_pressure_core::ConferenceId = format!("CF{}", "c".repeat(32)).parse().unwrap();
    for id in [first, second] {
        let call = h.service.call(id).await.unwrap().unwrap();
        let sid = call.facts.activist.leg_id.clone().unwrap();
        h.service
            .handle(
                id,
                CallEvent::Confirmed(Confirmation::Digits("1".into())),
                None,
            )
            .await
            .unwrap();
        h.service
            .handle(
                id,
                CallEvent::participant_joined(cf.clone(), sid, None),
                None,
            )
            .await
            .unwrap();
    }
    let first = h.service.call(first).await.unwrap().unwrap();
    assert!(first.facts.requested.dial_target && !first.facts.target_limited);
    let second = h.service.call(second).await.unwrap().unwrap();
    assert!(second.facts.target_limited);
    assert_eq!(second.state(), DetailedState::TargetRateLimited);
    assert_eq!(second.ui_status(), UiStatus::Busy);
    assert!(second.is_terminal());
    assert!(
        second.facts.requested.end_conference,
        "the activist is let go"
    );
    assert!(
        !second
            .facts
            .leg_possibly_live(bonde_pressure_core::call::Leg::Target)
    );
    let dials: Vec<_> = h
        .telephony
        .commands()
        .into_iter()
        .filter(|c| matches!(c, TelephonyCommand::AddTarget(r) if r.call_id == second.id))
        .collect();
    assert!(dials.is_empty(), "the target was not dialled");
    let closing = h
        .service
        .script(
            second.id,
            ScriptMoment::AfterConference,
            CallEvent::Ignored {
                what: "dial action".into(),
            },
            None,
        )
        .await
        .unwrap();
    let VoiceInstruction::Say(s) = &closing.instructions[0] else {
        panic!("{closing:?}")
    };
    assert!(s.text.contains("muitas ligações"), "{}", s.text);
}

/// Today's refund rule at dial: the provider refusing us gives the token back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_refused_on_our_side_gives_the_target_token_back() {
    let config = ServiceConfig::default()
        .with_target_dials(Some(Quota::per_hour(1)))
        .with_activist_calls(None);
    let (h, _) = harness_config(config, Duration::ZERO);
    h.telephony.set_failure(
        CommandKind::AddTarget,
        Some(TelephonyError::auth(None, "bad credentials")),
    );
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    assert_eq!(
        settle(&h.service, id).await.state(),
        DetailedState::TargetFailed
    );
    h.telephony.set_failure(CommandKind::AddTarget, None);
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    assert_eq!(
        settle(&h.service, id).await.state(),
        DetailedState::Completed
    );
}
