//! The call aggregate: facts, derived state, and the pure `apply`.

mod event;
mod facts;
mod state;

pub use event::{CallEvent, Confirmation, Effect, HangUp};
pub use facts::{AnsweredBy, CallFacts, Leg, LegError, LegFacts, LegStatus, Presence, Requested};
pub use state::{DetailedState, UiStatus, derive_state};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Activist, CallId, PhoneNumber, Target, WidgetId};

/// One pressure call: who calls whom, and everything known about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Our id (also the conference's friendly name).
    pub id: CallId,
    /// The campaign widget the activist used.
    pub widget_id: WidgetId,
    /// Leg A.
    pub activist: Activist,
    /// Leg B.
    pub target: Target,
    /// The caller id shown to the target; `None` means our own number.
    pub target_caller_id: Option<PhoneNumber>,
    /// What is known.
    pub facts: CallFacts,
    /// Optimistic-concurrency version: bumped by every committed update.
    pub version: u64,
    /// When the call was created.
    pub created_at: DateTime<Utc>,
    /// When it was last updated.
    pub updated_at: DateTime<Utc>,
}

/// The result of applying an event: the new facts and what must be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The facts after the event.
    pub facts: CallFacts,
    /// The effects this transition requests (already marked requested in `facts`).
    pub effects: Vec<Effect>,
}

impl Call {
    /// A new call with no facts yet.
    pub fn new(
        id: CallId,
        widget_id: WidgetId,
        activist: Activist,
        target: Target,
        target_caller_id: Option<PhoneNumber>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            widget_id,
            activist,
            target,
            target_caller_id,
            facts: CallFacts::default(),
            version: 0,
            created_at: now,
            updated_at: now,
        }
    }

    /// The detailed state, derived from the facts.
    pub fn state(&self) -> DetailedState {
        derive_state(&self.facts)
    }

    /// The front-end's status.
    pub fn ui_status(&self) -> UiStatus {
        self.state().ui_status()
    }

    /// The call is over.
    pub fn is_terminal(&self) -> bool {
        self.state().is_terminal()
    }

    /// How long the activist and the target talked (the target leg's
    /// duration), for completed calls.
    pub fn connected_secs(&self) -> Option<u32> {
        (self.state() == DetailedState::Completed)
            .then_some(self.facts.target.duration_secs)
            .flatten()
    }
}

/// The facts one event contributes, on its own.
fn facts_of(event: &CallEvent) -> CallFacts {
    let mut f = CallFacts::default();
    match event {
        CallEvent::LegStatus {
            leg,
            sid,
            status,
            duration_secs,
            sip_response_code,
            at,
        } => {
            let l = f.leg_mut(*leg);
            l.sid = sid.clone();
            l.status = Some(*status);
            l.duration_secs = *duration_secs;
            l.sip_response_code = *sip_response_code;
            match status {
                LegStatus::Ringing => l.ringing_at = *at,
                LegStatus::InProgress => l.answered_at = *at,
                s if s.is_terminal() => l.ended_at = *at,
                _ => {}
            }
        }
        CallEvent::AnsweredBy {
            leg,
            sid,
            answered_by,
        } => {
            let l = f.leg_mut(*leg);
            l.sid = sid.clone();
            l.answered_by = Some(*answered_by);
        }
        CallEvent::Prompted => f.prompted = true,
        CallEvent::Confirmed(_) => f.confirmed = true,
        CallEvent::ConferenceStarted { conference_sid } => {
            f.conference_sid = Some(conference_sid.clone());
            f.conference_started = true;
        }
        CallEvent::ConferenceEnded { conference_sid } => {
            f.conference_sid = Some(conference_sid.clone());
            f.conference_ended = true;
        }
        CallEvent::ParticipantJoined {
            conference_sid,
            call_sid,
            leg,
        }
        | CallEvent::ParticipantLeft {
            conference_sid,
            call_sid,
            leg,
        } => {
            let joined = matches!(event, CallEvent::ParticipantJoined { .. });
            f.conference_sid = Some(conference_sid.clone());
            f.conference_started = true;
            let p = Presence {
                joined,
                left: !joined,
            };
            f.participants.insert(call_sid.clone(), p);
            if let Some(leg) = leg {
                let l = f.leg_mut(*leg);
                l.sid = Some(call_sid.clone());
                l.joined_conference = joined;
                l.left_conference = !joined;
            }
        }
        CallEvent::LegDialed { leg, sid, status } => {
            let l = f.leg_mut(*leg);
            l.sid = Some(sid.clone());
            l.status = *status;
            if *leg == Leg::Target {
                f.requested.dial_target = true;
            }
        }
        CallEvent::DialFailed { leg, error } => {
            let l = f.leg_mut(*leg);
            l.status = Some(LegStatus::Failed);
            l.error = Some(error.clone());
            if *leg == Leg::Target {
                f.requested.dial_target = true;
            }
        }
        CallEvent::Expired => f.expired = true,
        CallEvent::Ignored { .. } => {}
    }
    f
}

fn hang_up_mode(leg: &LegFacts) -> HangUp {
    if leg.was_answered() {
        HangUp::Complete
    } else {
        HangUp::Cancel
    }
}

/// Decides the effects the facts call for that were not requested yet, and
/// marks them requested.
fn decide(f: &mut CallFacts) -> Vec<Effect> {
    let mut effects = Vec::new();
    let a_gone = f.activist_gone();
    let b_answered = f.target_answered();
    // Any sign of the target leg means it was dialled (facts restored or reordered).
    if f.target.sid.is_some() || f.target.status.is_some() {
        f.requested.dial_target = true;
    }

    if f.joined(Leg::Activist)
        && !f.requested.dial_target
        && !a_gone
        && !f.conference_ended
        && !f.expired
    {
        f.requested.dial_target = true;
        effects.push(Effect::DialTarget);
    }

    let a_voicemail = f.activist.is_machine() && !f.activist_confirmed();
    if (a_voicemail || f.expired) && !f.activist.is_terminal() && !f.requested.hang_up_activist {
        if let Some(sid) = f.activist.sid.clone() {
            f.requested.hang_up_activist = true;
            effects.push(Effect::HangUpActivist {
                sid,
                how: hang_up_mode(&f.activist),
            });
        }
    }

    let activist_left_first = (a_gone || f.conference_ended) && !b_answered;
    if (f.target.is_machine() || activist_left_first || f.expired)
        && !f.target.is_terminal()
        && !f.requested.hang_up_target
    {
        if let Some(sid) = f.target.sid.clone() {
            f.requested.hang_up_target = true;
            effects.push(Effect::HangUpTarget {
                sid,
                how: hang_up_mode(&f.target),
            });
        }
    }

    let target_missed = f.target.is_terminal() && !b_answered;
    if (target_missed || f.target.is_machine() || f.expired)
        && !a_gone
        && !f.conference_ended
        && !f.requested.end_conference
    {
        if let Some(conference_sid) = f.conference_sid.clone() {
            f.requested.end_conference = true;
            effects.push(Effect::EndConference { conference_sid });
        }
    }
    effects
}

/// Applies one event to the facts: joins what it says, then decides what
/// must now be done. Pure; the caller commits `facts` and, only if the commit
/// wins, performs `effects`.
pub fn apply(facts: &CallFacts, event: &CallEvent) -> Transition {
    let mut facts = facts.join(&facts_of(event));
    let effects = decide(&mut facts);
    Transition { facts, effects }
}

impl Call {
    /// Applies an event (see [`apply`]) and returns the updated call (same
    /// version: the store bumps it on commit) with the requested effects.
    ///
    /// A leg-status report that carries no time of its own (the simulated
    /// telephony's, a reconciliation fetch) is stamped with `now`, the time
    /// it was received; the facts keep the earliest time seen.
    pub fn apply(&self, event: &CallEvent, now: DateTime<Utc>) -> (Call, Vec<Effect>) {
        let stamped;
        let event = match event {
            CallEvent::LegStatus { at: None, .. } => {
                let mut e = event.clone();
                if let CallEvent::LegStatus { at, .. } = &mut e {
                    *at = Some(now);
                }
                stamped = e;
                &stamped
            }
            _ => event,
        };
        let t = apply(&self.facts, event);
        let mut next = self.clone();
        next.facts = t.facts;
        next.updated_at = now.max(self.updated_at);
        (next, t.effects)
    }
}
