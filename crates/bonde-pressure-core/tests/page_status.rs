//! What the campaign page shows while the target's answering-machine
//! verdict is pending: `ringing` until the verdict says human/unknown, a
//! grace time after the target joined passes, or detection is off. Both
//! orders of "target joins" and "verdict arrives" are played.

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::call::{AnsweredBy, CallEvent, Confirmation, DetailedState, Leg};
use bonde_pressure_core::call::{LegStatus, UiStatus};
use bonde_pressure_core::ports::{DialedLeg, TargetCallRequest};
use bonde_pressure_core::{
    ActivistInput, CallId, Clock, ConferenceId, Dependencies, InMemoryCallStore, LegId,
    ManualClock, MockTelephony, PressureService, ServiceConfig, StartCallRequest,
    StaticCampaignDirectory, StubActionRecorder, TargetInput, demo_widget,
};
use chrono::{TimeZone, Utc};

const GRACE: Duration = Duration::from_secs(4);

fn sid(c: char) -> LegId {
    format!("CA{}", c.to_string().repeat(32)).parse().unwrap()
}

fn cf() -> ConferenceId {
    format!("CF{}", "c".repeat(32)).parse().unwrap()
}

struct World {
    service: PressureService,
    clock: Arc<ManualClock>,
    /// `detect_machine` of every target dial, in order.
    target_detection: Arc<std::sync::Mutex<Vec<bool>>>,
}

/// A service whose campaign runs detection (`detect`), on a manual clock,
/// over a telephony that accepts both legs.
fn world(detect: bool) -> World {
    let mut telephony = MockTelephony::new();
    telephony
        .expect_call_activist()
        .returning(|_| Ok(DialedLeg::new(sid('a')).with_status(LegStatus::Queued)));
    // A machine verdict hangs the target up and ends the conference.
    telephony.expect_hang_up().returning(|_, _, _| Ok(()));
    telephony.expect_end_conference().returning(|_, _| Ok(()));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let target_detection = seen.clone();
    telephony
        .expect_add_target()
        .returning(move |r: &TargetCallRequest| {
            seen.lock().unwrap().push(r.detect_machine);
            Ok(DialedLeg::new(sid('b')))
        });
    let mut widget = demo_widget();
    widget.settings.detect_machines = detect;
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap(),
    ));
    let service = PressureService::new(
        Dependencies::new(
            Arc::new(InMemoryCallStore::new()),
            Arc::new(telephony),
            Arc::new(StaticCampaignDirectory::new([widget])),
        )
        .with_recorder(Arc::new(StubActionRecorder::new()))
        .with_clock(clock.clone()),
        ServiceConfig::default().with_machine_verdict_grace(GRACE),
    );
    World {
        service,
        clock,
        target_detection,
    }
}

fn request() -> StartCallRequest {
    StartCallRequest::new(
        1,
        ActivistInput::new("Ana", "ana@example.org", "+5511912345678"),
        TargetInput::new("Demo Target", "+5561999990000"),
    )
}

fn target_joined() -> CallEvent {
    CallEvent::participant_joined(cf(), sid('b'), Leg::Target)
}

fn verdict(answered_by: AnsweredBy) -> CallEvent {
    CallEvent::answered_by(Leg::Target, sid('b'), answered_by)
}

impl World {
    /// Starts a call and plays it up to the target being dialled.
    async fn dialled(&self) -> CallId {
        let id = self.service.start(&request()).await.unwrap().call_id;
        for event in [
            CallEvent::leg_status(Leg::Activist, LegStatus::InProgress)
                .with_leg_id(sid('a'))
                .build(),
            CallEvent::Prompted,
            CallEvent::Confirmed(Confirmation::Digits("1".into())),
            CallEvent::participant_joined(cf(), sid('a'), Leg::Activist),
        ] {
            self.service.handle(id, event, None).await.unwrap();
        }
        assert_eq!(self.target_detection.lock().unwrap().len(), 1);
        id
    }

    async fn play(&self, id: CallId, event: CallEvent) {
        self.service.handle(id, event, None).await.unwrap();
    }

    async fn page(&self, id: CallId) -> UiStatus {
        let call = self.service.call(id).await.unwrap().unwrap();
        self.service.page_status(&call)
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

#[tokio::test]
async fn join_then_human_verdict_shows_ringing_until_the_verdict() {
    let w = world(true);
    let id = w.dialled().await;
    w.play(id, target_joined()).await;
    let call = w.service.call(id).await.unwrap().unwrap();
    assert_eq!(call.state(), DetailedState::Connected);
    assert_eq!(call.ui_status(), UiStatus::InProgress, "the state alone");
    assert_eq!(w.page(id).await, UiStatus::Ringing);
    w.advance(Duration::from_secs(2));
    assert_eq!(w.page(id).await, UiStatus::Ringing);
    w.play(id, verdict(AnsweredBy::Human)).await;
    assert_eq!(w.page(id).await, UiStatus::InProgress);
}

#[tokio::test]
async fn human_verdict_then_join_shows_in_progress_at_once() {
    let w = world(true);
    let id = w.dialled().await;
    w.play(id, verdict(AnsweredBy::Human)).await;
    w.play(id, target_joined()).await;
    assert_eq!(w.page(id).await, UiStatus::InProgress);
}

#[tokio::test]
async fn an_unknown_verdict_counts_as_a_person() {
    for verdict_first in [true, false] {
        let w = world(true);
        let id = w.dialled().await;
        if verdict_first {
            w.play(id, verdict(AnsweredBy::Unknown)).await;
            w.play(id, target_joined()).await;
        } else {
            w.play(id, target_joined()).await;
            assert_eq!(w.page(id).await, UiStatus::Ringing);
            w.play(id, verdict(AnsweredBy::Unknown)).await;
        }
        assert_eq!(w.page(id).await, UiStatus::InProgress, "{verdict_first}");
    }
}

#[tokio::test]
async fn a_machine_never_shows_in_progress_in_either_order() {
    // Join first: ringing, then the machine verdict turns it into no-answer.
    let w = world(true);
    let id = w.dialled().await;
    w.play(id, target_joined()).await;
    w.advance(Duration::from_secs(2));
    assert_eq!(w.page(id).await, UiStatus::Ringing);
    w.play(id, verdict(AnsweredBy::MachineStart)).await;
    let call = w.service.call(id).await.unwrap().unwrap();
    assert_eq!(call.state(), DetailedState::TargetVoicemail);
    assert_eq!(w.page(id).await, UiStatus::NoAnswer);

    // Verdict first: no-answer straight away, whatever joins afterwards.
    let w = world(true);
    let id = w.dialled().await;
    w.play(id, verdict(AnsweredBy::MachineEndBeep)).await;
    assert_eq!(w.page(id).await, UiStatus::NoAnswer);
    w.play(id, target_joined()).await;
    assert_eq!(w.page(id).await, UiStatus::NoAnswer);
}

#[tokio::test]
async fn without_a_verdict_the_wait_ends_after_the_grace_time() {
    let w = world(true);
    let id = w.dialled().await;
    w.play(id, target_joined()).await;
    w.advance(GRACE - Duration::from_millis(1));
    assert_eq!(w.page(id).await, UiStatus::Ringing);
    w.advance(Duration::from_millis(1));
    assert_eq!(w.page(id).await, UiStatus::InProgress);
}

#[tokio::test]
async fn the_grace_time_counts_from_the_earliest_sign_of_an_answer() {
    // The target's in-progress report (stamped by the provider 3 s before
    // the join arrived) starts the wait, not the join.
    let w = world(true);
    let id = w.dialled().await;
    let answered = w.clock.now() - chrono::TimeDelta::seconds(3);
    w.play(
        id,
        CallEvent::leg_status(Leg::Target, LegStatus::InProgress)
            .with_leg_id(sid('b'))
            .with_at(answered)
            .build(),
    )
    .await;
    w.play(id, target_joined()).await;
    assert_eq!(w.page(id).await, UiStatus::Ringing);
    w.advance(Duration::from_secs(1));
    assert_eq!(w.page(id).await, UiStatus::InProgress);
}

#[tokio::test]
async fn with_detection_off_the_page_shows_in_progress_at_once() {
    let w = world(false);
    let id = w.dialled().await;
    assert_eq!(*w.target_detection.lock().unwrap(), [false]);
    w.play(id, target_joined()).await;
    let call = w.service.call(id).await.unwrap().unwrap();
    assert_eq!(call.facts.machine_detection, Some(false));
    assert_eq!(w.page(id).await, UiStatus::InProgress);
}

#[tokio::test]
async fn the_call_keeps_the_detection_setting_it_started_with() {
    let w = world(true);
    let id = w.dialled().await;
    assert_eq!(*w.target_detection.lock().unwrap(), [true]);
    let call = w.service.call(id).await.unwrap().unwrap();
    assert_eq!(call.facts.machine_detection, Some(true));
}
