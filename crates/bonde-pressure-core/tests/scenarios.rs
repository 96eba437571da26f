//! Every scripted lifecycle, played through the whole service, ends where it should.

mod common;

use bonde_pressure_core::CallStore;
use bonde_pressure_core::call::{DetailedState, UiStatus};
use bonde_pressure_core::simulated::TelephonyCommand;
use bonde_pressure_core::{Scenario, ScenarioPicker};
use common::{demo_request, harness, settle};

/// The page's final screen: activist-side ends are `canceled` (the screen
/// that lets the activist fix their number); `busy`, `no-answer` and
/// `failed` speak of the target.
fn expected_ui(s: Scenario) -> UiStatus {
    match s {
        Scenario::Success | Scenario::ActivistJoinLost => UiStatus::Completed,
        Scenario::TargetBusy => UiStatus::Busy,
        Scenario::TargetNoAnswer | Scenario::TargetVoicemail => UiStatus::NoAnswer,
        Scenario::ActivistBusy
        | Scenario::ActivistNoAnswer
        | Scenario::ActivistVoicemail
        | Scenario::NotConfirmed
        | Scenario::ActivistHangsUpWhileTargetRings => UiStatus::Canceled,
    }
}

fn reaches_target(s: Scenario) -> bool {
    matches!(
        s,
        Scenario::Success
            | Scenario::ActivistJoinLost
            | Scenario::TargetBusy
            | Scenario::TargetNoAnswer
            | Scenario::TargetVoicemail
            | Scenario::ActivistHangsUpWhileTargetRings
    )
}

/// How many callbacks the simulated world sends for a scenario.
fn expected_callbacks(s: Scenario) -> usize {
    // Activist: initiated, ringing, in-progress, prompt, AMD, confirmation,
    // conference start, join.
    let joined = 8;
    // Conference ended by us: end, activist leaves, activist's leg completes.
    let closed = 3;
    match s {
        // initiated, ringing, busy / no-answer
        Scenario::ActivistBusy | Scenario::ActivistNoAnswer => 3,
        // initiated, ringing, in-progress, prompt, AMD, then completed
        // (hung up by us for a voicemail, by the activist otherwise)
        Scenario::ActivistVoicemail | Scenario::NotConfirmed => 6,
        // target: initiated, ringing, busy / no-answer
        Scenario::TargetBusy | Scenario::TargetNoAnswer => joined + 3 + closed,
        // target: initiated, ringing, in-progress, join, AMD; hanging it up
        // ends the conference: end, target leaves + completes, activist too
        Scenario::TargetVoicemail => joined + 5 + 5,
        // target: initiated, ringing; activist leaves, conference ends,
        // activist completes; our cancel: target canceled
        Scenario::ActivistHangsUpWhileTargetRings => joined + 5 + 1,
        // target: initiated, ringing, in-progress, AMD, join, leave, completed
        Scenario::Success => joined + 7 + closed,
        // the same, but the activist's join is lost (not stored: never received)
        Scenario::ActivistJoinLost => joined - 1 + 7 + closed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_reaches_its_state_and_ui_status() {
    for scenario in Scenario::ALL {
        let h = harness(ScenarioPicker::Always(scenario));
        let started = h.service.start(&demo_request()).await.unwrap();
        // With instant playback the callbacks may outrun the answer, which tells
        // the truth: any status on the way, but never a wrong final one.
        assert!(
            !started.status.is_final() || started.status == expected_ui(scenario),
            "{scenario:?}: {:?}",
            started.status
        );
        assert!(started.leg_id.is_some());

        let call = settle(&h.service, started.call_id).await;
        assert_eq!(call.state(), scenario.expected_state(), "{scenario:?}");
        assert_eq!(call.ui_status(), expected_ui(scenario), "{scenario:?}");
        assert_eq!(
            h.service.page_status(&call),
            expected_ui(scenario),
            "{scenario:?}"
        );

        let commands = h.telephony.commands();
        let dials = commands
            .iter()
            .filter(|c| matches!(c, TelephonyCommand::AddTarget(_)))
            .count();
        assert_eq!(
            dials,
            usize::from(reaches_target(scenario)),
            "{scenario:?}: {commands:?}"
        );
        // Every callback was stored with the call, once.
        let events = h.store.events(started.call_id).await.unwrap();
        assert!(events.iter().all(|e| e.raw.kind == "simulated"));
        assert_eq!(
            events.len(),
            expected_callbacks(scenario),
            "{scenario:?}: {events:?}"
        );
        assert_eq!(h.recorder.recorded().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_scenarios_issue_the_right_commands() {
    use bonde_pressure_core::HangUp;
    // Activist voicemail: we hang the activist up (it was answered).
    let h = harness(ScenarioPicker::Always(Scenario::ActivistVoicemail));
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    settle(&h.service, id).await;
    assert!(h.telephony.commands().iter().any(|c| matches!(
        c,
        TelephonyCommand::HangUp {
            how: HangUp::Complete,
            ..
        }
    )));

    // Target busy: the conference is ended so the activist hears the closing message.
    let h = harness(ScenarioPicker::Always(Scenario::TargetBusy));
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    settle(&h.service, id).await;
    let ends = h
        .telephony
        .commands()
        .iter()
        .filter(|c| matches!(c, TelephonyCommand::EndConference { .. }))
        .count();
    assert_eq!(ends, 1);

    // Activist hangs up while the target rings: the target's leg is canceled.
    let h = harness(ScenarioPicker::Always(
        Scenario::ActivistHangsUpWhileTargetRings,
    ));
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let call = settle(&h.service, id).await;
    let cancels: Vec<_> = h
        .telephony
        .commands()
        .into_iter()
        .filter(|c| {
            matches!(
                c,
                TelephonyCommand::HangUp {
                    how: HangUp::Cancel,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(
        call.facts.target.status,
        Some(bonde_pressure_core::LegStatus::Canceled)
    );
    assert_eq!(call.state(), DetailedState::Abandoned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_digit_picks_the_scenario() {
    let h = harness(ScenarioPicker::ByActivistLastDigit);
    let mut req = demo_request();
    req.activist.phone = "11 91234-5675".into(); // 5: target busy
    let id = h.service.start(&req).await.unwrap().call_id;
    assert_eq!(
        settle(&h.service, id).await.state(),
        DetailedState::TargetBusy
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_call_has_talk_time() {
    let h = harness(ScenarioPicker::Always(Scenario::Success));
    let id = h.service.start(&demo_request()).await.unwrap().call_id;
    let call = settle(&h.service, id).await;
    assert_eq!(call.connected_secs(), Some(42));
    assert!(call.facts.requested.dial_target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_answers_initiated_before_any_callback() {
    let h = common::harness_with_tick(
        ScenarioPicker::Always(Scenario::ActivistBusy),
        std::time::Duration::from_millis(200),
    );
    let started = h.service.start(&demo_request()).await.unwrap();
    assert_eq!(started.status, UiStatus::Initiated);
    assert_eq!(
        started.leg_status,
        Some(bonde_pressure_core::LegStatus::Queued)
    );
}
