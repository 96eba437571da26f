//! States derived from facts by pure functions.

use serde::{Deserialize, Serialize};

use super::facts::{CallFacts, Leg, LegStatus};

/// Where a pressure call is, in detail (for people and statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DetailedState {
    /// Stored; the activist's phone is not ringing yet.
    Created,
    /// The activist's phone rings.
    ActivistRinging,
    /// The activist answered; the greeting has not been played yet.
    ActivistAnswered,
    /// The greeting played; waiting for the activist to press a key or speak.
    AwaitingConfirmation,
    /// The activist confirmed and is (being put) in the conference; the target is being dialled.
    Connecting,
    /// The target's phone rings.
    TargetRinging,
    /// Both talk.
    Connected,
    /// They talked and the call ended.
    Completed,
    /// The activist's line was busy.
    ActivistBusy,
    /// The activist did not answer.
    ActivistNoAnswer,
    /// The activist's call could not be placed.
    ActivistFailed,
    /// The activist's call was canceled before it was answered.
    ActivistCanceled,
    /// A voicemail answered the activist's phone.
    ActivistVoicemail,
    /// The activist answered but never confirmed.
    NotConfirmed,
    /// The target's line was busy.
    TargetBusy,
    /// The target did not answer.
    TargetNoAnswer,
    /// The target's call could not be placed.
    TargetFailed,
    /// A voicemail answered the target's phone.
    TargetVoicemail,
    /// The activist left before the target answered.
    Abandoned,
    /// No news for too long: reconciliation gave up.
    Error,
    /// The target was not dialled: its dial budget (per hour) was used up
    /// by the time the activist confirmed.
    TargetRateLimited,
}

impl DetailedState {
    /// Every state.
    pub const ALL: [DetailedState; 21] = [
        DetailedState::Created,
        DetailedState::ActivistRinging,
        DetailedState::ActivistAnswered,
        DetailedState::AwaitingConfirmation,
        DetailedState::Connecting,
        DetailedState::TargetRinging,
        DetailedState::Connected,
        DetailedState::Completed,
        DetailedState::ActivistBusy,
        DetailedState::ActivistNoAnswer,
        DetailedState::ActivistFailed,
        DetailedState::ActivistCanceled,
        DetailedState::ActivistVoicemail,
        DetailedState::NotConfirmed,
        DetailedState::TargetBusy,
        DetailedState::TargetNoAnswer,
        DetailedState::TargetFailed,
        DetailedState::TargetVoicemail,
        DetailedState::Abandoned,
        DetailedState::Error,
        DetailedState::TargetRateLimited,
    ];

    /// The call is over; its state will not change any more in practice.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            DetailedState::Created
                | DetailedState::ActivistRinging
                | DetailedState::ActivistAnswered
                | DetailedState::AwaitingConfirmation
                | DetailedState::Connecting
                | DetailedState::TargetRinging
                | DetailedState::Connected
        )
    }

    /// The snake_case name (`target_no_answer`), as stored and served.
    pub fn as_str(&self) -> &'static str {
        match self {
            DetailedState::Created => "created",
            DetailedState::ActivistRinging => "activist_ringing",
            DetailedState::ActivistAnswered => "activist_answered",
            DetailedState::AwaitingConfirmation => "awaiting_confirmation",
            DetailedState::Connecting => "connecting",
            DetailedState::TargetRinging => "target_ringing",
            DetailedState::Connected => "connected",
            DetailedState::Completed => "completed",
            DetailedState::ActivistBusy => "activist_busy",
            DetailedState::ActivistNoAnswer => "activist_no_answer",
            DetailedState::ActivistFailed => "activist_failed",
            DetailedState::ActivistCanceled => "activist_canceled",
            DetailedState::ActivistVoicemail => "activist_voicemail",
            DetailedState::NotConfirmed => "not_confirmed",
            DetailedState::TargetBusy => "target_busy",
            DetailedState::TargetNoAnswer => "target_no_answer",
            DetailedState::TargetFailed => "target_failed",
            DetailedState::TargetVoicemail => "target_voicemail",
            DetailedState::Abandoned => "abandoned",
            DetailedState::Error => "error",
            DetailedState::TargetRateLimited => "target_rate_limited",
        }
    }

    /// Parses [`DetailedState::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The front-end's status for this state. Every state maps to exactly one.
    ///
    /// The campaign widget's final screens `busy`, `no-answer` and `failed`
    /// speak of the *target* ("the target's number was busy"), so only
    /// target-side ends map to them. Every activist-side end maps to
    /// `canceled`, the screen that shows the activist's number and an
    /// "Alterar número" button. `error` (expired, unknown failure) is
    /// `failed`.
    ///
    /// This mapping ignores the wait for the target's machine-detection
    /// verdict: the page's status is [`crate::Call::page_status`].
    pub fn ui_status(&self) -> UiStatus {
        use DetailedState::*;
        match self {
            Created | ActivistRinging | ActivistAnswered | AwaitingConfirmation => {
                UiStatus::Initiated
            }
            Connecting | TargetRinging => UiStatus::Ringing,
            Connected => UiStatus::InProgress,
            Completed => UiStatus::Completed,
            // Every activist-side end: the page shows the activist's number
            // and lets them fix it and retry. The other screens name the
            // target, who was never called (or whom the activist left).
            ActivistBusy | ActivistNoAnswer | ActivistVoicemail | ActivistFailed
            | ActivistCanceled | NotConfirmed | Abandoned => UiStatus::Canceled,
            TargetBusy | TargetRateLimited => UiStatus::Busy,
            TargetNoAnswer | TargetVoicemail => UiStatus::NoAnswer,
            TargetFailed | Error => UiStatus::Failed,
        }
    }
}

/// The status strings the campaign page understands (it polls until one of
/// `completed busy canceled failed no-answer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UiStatus {
    /// The activist has not confirmed yet.
    Initiated,
    /// Dialling the target.
    Ringing,
    /// Connected.
    InProgress,
    /// Talked and ended.
    Completed,
    /// The target's line was busy.
    Busy,
    /// The target did not answer (or only a voicemail did).
    NoAnswer,
    /// The target's call could not be placed, or the call failed on our side.
    Failed,
    /// The activist's side ended it: missed, declined, unreachable, or left
    /// before the target answered.
    Canceled,
}

impl UiStatus {
    /// The front-end's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            UiStatus::Initiated => "initiated",
            UiStatus::Ringing => "ringing",
            UiStatus::InProgress => "in-progress",
            UiStatus::Completed => "completed",
            UiStatus::Busy => "busy",
            UiStatus::NoAnswer => "no-answer",
            UiStatus::Failed => "failed",
            UiStatus::Canceled => "canceled",
        }
    }

    /// The page stops polling on these.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            UiStatus::Initiated | UiStatus::Ringing | UiStatus::InProgress
        )
    }
}

/// Derives the detailed state from the facts. Pure and total.
///
/// Expiry dominates: an expired call is [`DetailedState::Error`] for good,
/// whatever the legs report afterwards (expiring hangs the legs up, and their
/// final callbacks must not turn `error` into `not_confirmed` or
/// `abandoned`). The one exception is [`DetailedState::Completed`]: when the
/// activist and the target talked and the call ended, it completed, expired
/// or not. Facts carry no order, so "terminal before it expired" cannot be
/// told apart from "terminal because it expired"; this rule needs neither.
pub fn derive_state(f: &CallFacts) -> DetailedState {
    let state = derive_from_legs(f);
    if f.expired && state != DetailedState::Completed {
        DetailedState::Error
    } else {
        state
    }
}

fn derive_from_legs(f: &CallFacts) -> DetailedState {
    use DetailedState::*;
    let a = &f.activist;
    let b = &f.target;

    if !f.activist_confirmed() {
        // Confirming proves a person is there, so a machine verdict counts only before.
        if a.is_machine() {
            return ActivistVoicemail;
        }
        return match a.status {
            Some(LegStatus::Busy) => ActivistBusy,
            Some(LegStatus::NoAnswer) => ActivistNoAnswer,
            Some(LegStatus::Failed) => ActivistFailed,
            Some(LegStatus::Canceled) => ActivistCanceled,
            Some(LegStatus::Completed) => NotConfirmed,
            Some(LegStatus::InProgress) if f.prompted || a.answered_by.is_some() => {
                AwaitingConfirmation
            }
            Some(LegStatus::InProgress) => ActivistAnswered,
            Some(LegStatus::Ringing) => ActivistRinging,
            Some(LegStatus::Queued | LegStatus::Initiated) | None => {
                if f.prompted {
                    AwaitingConfirmation
                } else {
                    Created
                }
            }
        };
    }

    if b.is_machine() {
        return TargetVoicemail;
    }
    if f.target_answered() {
        let over =
            f.activist_gone() || b.is_terminal() || f.left(Leg::Target) || f.conference_ended;
        return if over { Completed } else { Connected };
    }
    if f.target_limited {
        return TargetRateLimited;
    }
    match b.status {
        Some(LegStatus::Busy) => return TargetBusy,
        Some(LegStatus::NoAnswer) => return TargetNoAnswer,
        Some(LegStatus::Failed) => return TargetFailed,
        Some(LegStatus::Canceled) => return Abandoned,
        _ => {}
    }
    if f.activist_gone() || f.conference_ended {
        return Abandoned;
    }
    if b.status == Some(LegStatus::Ringing) {
        TargetRinging
    } else {
        Connecting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_maps_to_one_ui_status_and_round_trips() {
        for s in DetailedState::ALL {
            assert_eq!(DetailedState::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            // final UI statuses are exactly the terminal states
            assert_eq!(s.ui_status().is_final(), s.is_terminal(), "{s:?}");
        }
        let all: Vec<&str> = DetailedState::ALL
            .iter()
            .map(|s| s.ui_status().as_str())
            .collect();
        for ui in [
            "initiated",
            "ringing",
            "in-progress",
            "completed",
            "busy",
            "no-answer",
            "failed",
            "canceled",
        ] {
            assert!(all.contains(&ui), "{ui} is reachable");
        }
        assert_eq!(
            serde_json::to_string(&UiStatus::InProgress).unwrap(),
            "\"in-progress\""
        );
    }

    #[test]
    fn leg_status_spelling() {
        for s in LegStatus::ALL {
            assert_eq!(LegStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(LegStatus::parse("nope"), None);
    }

    #[test]
    fn confirmation_beats_a_late_machine_verdict() {
        let mut f = CallFacts::default();
        f.activist.status = Some(LegStatus::InProgress);
        f.activist.answered_by = Some(crate::call::AnsweredBy::MachineStart);
        assert_eq!(derive_state(&f), DetailedState::ActivistVoicemail);
        f.confirmed = true;
        assert_eq!(derive_state(&f), DetailedState::Connecting);
    }

    #[test]
    fn expiry_dominates_every_state_but_completed() {
        let mut f = CallFacts {
            expired: true,
            ..Default::default()
        };
        assert_eq!(derive_state(&f), DetailedState::Error);
        f.activist.status = Some(LegStatus::Busy);
        assert_eq!(derive_state(&f), DetailedState::Error);

        // Talked, then ended: completed, expired or not.
        let mut f = CallFacts {
            expired: true,
            confirmed: true,
            ..Default::default()
        };
        f.activist.status = Some(LegStatus::InProgress);
        f.target.status = Some(LegStatus::Completed);
        f.target.duration_secs = Some(42);
        assert_eq!(derive_state(&f), DetailedState::Completed);
    }

    /// Expiring hangs the legs up; their late callbacks must not move the
    /// call out of `error` (it used to become `not_confirmed` / `abandoned`).
    #[test]
    fn callbacks_after_expiry_leave_the_call_in_error() {
        use crate::call::{CallEvent, apply};
        let leg_a: crate::LegId = format!("CA{}", "a".repeat(32)).parse().unwrap();
        let target: crate::LegId = format!("CA{}", "b".repeat(32)).parse().unwrap();
        let status = |leg, id: &crate::LegId, status| CallEvent::LegStatus {
            leg,
            leg_id: Some(id.clone()),
            status,
            duration_secs: Some(3),
            sip_response_code: None,
            at: None,
        };

        // Awaiting confirmation, expired, then the hung-up activist completes.
        let mut f = CallFacts::default();
        for e in [
            status(Leg::Activist, &leg_a, LegStatus::InProgress),
            CallEvent::Prompted,
            CallEvent::Expired,
        ] {
            f = apply(&f, &e).facts;
        }
        assert_eq!(derive_state(&f), DetailedState::Error);
        let f = apply(&f, &status(Leg::Activist, &leg_a, LegStatus::Completed)).facts;
        assert_eq!(derive_state(&f), DetailedState::Error);

        // Target ringing, expired, then the activist's leg ends and the target is canceled.
        let mut f = CallFacts {
            confirmed: true,
            ..Default::default()
        };
        for e in [
            status(Leg::Activist, &leg_a, LegStatus::InProgress),
            status(Leg::Target, &target, LegStatus::Ringing),
            CallEvent::Expired,
            status(Leg::Activist, &leg_a, LegStatus::Completed),
            status(Leg::Target, &target, LegStatus::Canceled),
        ] {
            f = apply(&f, &e).facts;
        }
        assert_eq!(derive_state(&f), DetailedState::Error);
    }
}
