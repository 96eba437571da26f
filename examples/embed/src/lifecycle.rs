//! The callbacks a provider sends for one successful call, as core's
//! provider-neutral [`CallEvent`]s.
//!
//! The [`ConsoleTelephony`](crate::ConsoleTelephony) plays them back into
//! the service; the `MockTelephony` test delivers the same ones by hand, so
//! both drive the same lifecycle.

use bonde_pressure_core::{
    AnsweredBy, CallEvent, ConferenceId, Confirmation, Leg, LegId, LegStatus,
};

fn status(leg: Leg, leg_id: &LegId, status: LegStatus, duration_secs: Option<u32>) -> CallEvent {
    CallEvent::leg_status(leg, status)
        .with_leg_id(leg_id.clone())
        .with_duration_secs(duration_secs)
        .into()
}

fn human(leg: Leg, leg_id: &LegId) -> CallEvent {
    CallEvent::answered_by(leg, leg_id.clone(), AnsweredBy::Human)
}

/// The activist answers, hears the greeting, confirms with `1`, and joins
/// the call's conference (which starts). With `detect_machine`, the
/// answering-machine verdict (a human) is reported too.
///
/// After these, the service asks the telephony to add the target.
pub fn activist_answers_and_confirms(
    activist: &LegId,
    conference: &ConferenceId,
    detect_machine: bool,
) -> Vec<CallEvent> {
    let a = Leg::Activist;
    let mut events = vec![
        status(a, activist, LegStatus::Initiated, None),
        status(a, activist, LegStatus::Ringing, None),
        status(a, activist, LegStatus::InProgress, None),
        CallEvent::Prompted,
    ];
    if detect_machine {
        events.push(human(a, activist));
    }
    events.extend([
        CallEvent::Confirmed(Confirmation::Digits("1".into())),
        CallEvent::ConferenceStarted {
            conference_id: conference.clone(),
        },
        CallEvent::participant_joined(conference.clone(), activist.clone(), Leg::Activist),
    ]);
    events
}

/// The target answers and joins the conference; they talk; the target
/// hangs up, which ends the conference; the activist hears the closing
/// message and hangs up too.
///
/// After these, the call is `completed` and settled (no leg left up).
pub fn target_answers_then_both_hang_up(
    activist: &LegId,
    target: &LegId,
    conference: &ConferenceId,
    detect_machine: bool,
) -> Vec<CallEvent> {
    let b = Leg::Target;
    let mut events = vec![
        status(b, target, LegStatus::Initiated, None),
        status(b, target, LegStatus::Ringing, None),
        status(b, target, LegStatus::InProgress, None),
    ];
    if detect_machine {
        events.push(human(b, target));
    }
    events.extend([
        CallEvent::participant_joined(conference.clone(), target.clone(), Leg::Target),
        CallEvent::participant_left(conference.clone(), target.clone(), Leg::Target),
        status(b, target, LegStatus::Completed, Some(42)),
        CallEvent::ConferenceEnded {
            conference_id: conference.clone(),
        },
        CallEvent::participant_left(conference.clone(), activist.clone(), Leg::Activist),
        status(Leg::Activist, activist, LegStatus::Completed, Some(60)),
    ]);
    events
}
