//! Normalised telephony events and the effects applying them requests.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::facts::{AnsweredBy, Leg, LegError, LegStatus};
use crate::domain::{ConferenceId, LegId};

/// How the activist confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
#[non_exhaustive]
pub enum Confirmation {
    /// Pressed keys.
    Digits(String),
    /// Said something (speech recognition result).
    Speech(String),
}

impl Confirmation {
    /// Something was actually pressed or said (not empty, not only
    /// spaces). A confirmation without input does not confirm.
    pub fn has_input(&self) -> bool {
        match self {
            Confirmation::Digits(s) | Confirmation::Speech(s) => !s.trim().is_empty(),
        }
    }
}

/// Something the telephony (or our own command) reported about a call,
/// already parsed and provider-neutral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum CallEvent {
    /// A leg's status changed (status callback, or a reconciliation fetch).
    LegStatus {
        /// Which leg.
        leg: Leg,
        /// Its provider id, when the report carried one.
        leg_id: Option<LegId>,
        /// The new status.
        status: LegStatus,
        /// Duration in seconds (terminal reports).
        duration_secs: Option<u32>,
        /// SIP response code, when reported.
        sip_response_code: Option<u16>,
        /// When it happened, if the report says; otherwise when it was received.
        at: Option<DateTime<Utc>>,
    },
    /// Answering-machine detection finished.
    AnsweredBy {
        /// Which leg.
        leg: Leg,
        /// Its provider id, when the report carried one.
        leg_id: Option<LegId>,
        /// The verdict.
        answered_by: AnsweredBy,
    },
    /// The greeting and confirmation prompt were served to the activist.
    Prompted,
    /// The activist confirmed.
    Confirmed(Confirmation),
    /// The conference started.
    ConferenceStarted {
        /// Its provider id.
        conference_id: ConferenceId,
    },
    /// The conference ended.
    ConferenceEnded {
        /// Its provider id.
        conference_id: ConferenceId,
    },
    /// A participant joined the conference.
    ParticipantJoined {
        /// The conference.
        conference_id: ConferenceId,
        /// The participant's call.
        leg_id: LegId,
        /// Which leg, when the report's label says so.
        leg: Option<Leg>,
    },
    /// A participant left the conference.
    ParticipantLeft {
        /// The conference.
        conference_id: ConferenceId,
        /// The participant's call.
        leg_id: LegId,
        /// Which leg, when the report's label says so.
        leg: Option<Leg>,
    },
    /// Our request to place a leg was accepted.
    LegDialed {
        /// Which leg.
        leg: Leg,
        /// Its provider id.
        leg_id: LegId,
        /// Its status in the provider's answer.
        status: Option<LegStatus>,
    },
    /// Our request to place a leg was refused.
    DialFailed {
        /// Which leg.
        leg: Leg,
        /// Why.
        error: LegError,
    },
    /// Reconciliation gave up waiting for news of this call.
    Expired,
    /// The activist pressed the do-not-call key during the greeting: they
    /// are not to be called again, and this call is not confirmed.
    OptedOut,
    /// The opted-out activist's number was put on the do-not-call list.
    OptOutListed,
    /// The target's dial budget was used up when it was time to dial it:
    /// the target is not dialled (see [`crate::limits`]).
    TargetLimited,
    /// A report we understood the envelope of but not the content (an unknown
    /// status, an event we do not use). Stored with the call, changes nothing.
    Ignored {
        /// What it was, for the logs.
        what: String,
    },
}

impl CallEvent {
    /// A short name for logs and the event log (`leg_status`, `participant_joined`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            CallEvent::LegStatus { .. } => "leg_status",
            CallEvent::AnsweredBy { .. } => "answered_by",
            CallEvent::Prompted => "prompted",
            CallEvent::Confirmed(_) => "confirmed",
            CallEvent::ConferenceStarted { .. } => "conference_started",
            CallEvent::ConferenceEnded { .. } => "conference_ended",
            CallEvent::ParticipantJoined { .. } => "participant_joined",
            CallEvent::ParticipantLeft { .. } => "participant_left",
            CallEvent::LegDialed { .. } => "leg_dialed",
            CallEvent::DialFailed { .. } => "dial_failed",
            CallEvent::Expired => "expired",
            CallEvent::OptedOut => "opted_out",
            CallEvent::OptOutListed => "opt_out_listed",
            CallEvent::TargetLimited => "target_limited",
            CallEvent::Ignored { .. } => "ignored",
        }
    }
}

/// A command the service must carry out because of a transition. Each is
/// requested by exactly one committed transition of a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum Effect {
    /// Add the target to the conference.
    DialTarget,
    /// Hang up the activist's leg (a voicemail answered, or the call expired).
    HangUpActivist {
        /// The leg to hang up.
        leg_id: LegId,
        /// Cancel (not answered yet) or complete (answered).
        how: HangUp,
    },
    /// Hang up or cancel the target's leg (voicemail, activist gone, expired).
    HangUpTarget {
        /// The leg to hang up.
        leg_id: LegId,
        /// Cancel (not answered yet) or complete (answered).
        how: HangUp,
    },
    /// End the conference so the activist hears the closing message.
    EndConference {
        /// The conference.
        conference_id: ConferenceId,
    },
}

/// How to end a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangUp {
    /// The leg was not answered yet: cancel it (Twilio `Status=canceled`).
    Cancel,
    /// The leg is answered: hang up (Twilio `Status=completed`).
    Complete,
}
