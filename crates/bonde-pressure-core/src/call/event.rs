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
///
/// A telephony adapter builds these to feed the [`crate::EventSink`]. The
/// variants with optional fields are `#[non_exhaustive]` (they may gain
/// more): build them with [`CallEvent::leg_status`],
/// [`CallEvent::answered_by`], [`CallEvent::participant_joined`],
/// [`CallEvent::participant_left`] and [`CallEvent::leg_dialed`], and
/// match them with `..`. The others carry only what they cannot be
/// without and are built as literals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum CallEvent {
    /// A leg's status changed (status callback, or a reconciliation fetch).
    /// Built by [`CallEvent::leg_status`].
    #[non_exhaustive]
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
    /// Answering-machine detection finished. Built by
    /// [`CallEvent::answered_by`].
    #[non_exhaustive]
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
    /// A participant joined the conference. Built by
    /// [`CallEvent::participant_joined`].
    #[non_exhaustive]
    ParticipantJoined {
        /// The conference.
        conference_id: ConferenceId,
        /// The participant's call.
        leg_id: LegId,
        /// Which leg, when the report's label says so.
        leg: Option<Leg>,
    },
    /// A participant left the conference. Built by
    /// [`CallEvent::participant_left`].
    #[non_exhaustive]
    ParticipantLeft {
        /// The conference.
        conference_id: ConferenceId,
        /// The participant's call.
        leg_id: LegId,
        /// Which leg, when the report's label says so.
        leg: Option<Leg>,
    },
    /// Our request to place a leg was accepted. Built by
    /// [`CallEvent::leg_dialed`].
    #[non_exhaustive]
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
    /// `leg` is now `status`: a [`CallEvent::LegStatus`], with no leg id,
    /// duration, SIP code or time until the [`LegStatusEvent`]'s `with_*`
    /// setters give them; `.into()` (or [`LegStatusEvent::build`]) makes
    /// the event.
    ///
    /// ```
    /// use bonde_pressure_core::{CallEvent, Leg, LegStatus};
    ///
    /// let event: CallEvent = CallEvent::leg_status(Leg::Activist, LegStatus::Completed)
    ///     .with_duration_secs(42)
    ///     .into();
    /// assert_eq!(event.kind(), "leg_status");
    /// ```
    pub fn leg_status(leg: Leg, status: LegStatus) -> LegStatusEvent {
        LegStatusEvent {
            leg,
            leg_id: None,
            status,
            duration_secs: None,
            sip_response_code: None,
            at: None,
        }
    }

    /// Answering-machine detection on `leg` (provider id `leg_id`, when the
    /// report carried one) said `answered_by` ([`CallEvent::AnsweredBy`]).
    pub fn answered_by(
        leg: Leg,
        leg_id: impl Into<Option<LegId>>,
        answered_by: AnsweredBy,
    ) -> Self {
        CallEvent::AnsweredBy {
            leg,
            leg_id: leg_id.into(),
            answered_by,
        }
    }

    /// Leg `leg_id` joined conference `conference_id`; `leg` says which of
    /// the call's legs it is, when the report's label says so
    /// ([`CallEvent::ParticipantJoined`]).
    pub fn participant_joined(
        conference_id: ConferenceId,
        leg_id: LegId,
        leg: impl Into<Option<Leg>>,
    ) -> Self {
        CallEvent::ParticipantJoined {
            conference_id,
            leg_id,
            leg: leg.into(),
        }
    }

    /// Leg `leg_id` left conference `conference_id` (`leg` as in
    /// [`CallEvent::participant_joined`]; [`CallEvent::ParticipantLeft`]).
    pub fn participant_left(
        conference_id: ConferenceId,
        leg_id: LegId,
        leg: impl Into<Option<Leg>>,
    ) -> Self {
        CallEvent::ParticipantLeft {
            conference_id,
            leg_id,
            leg: leg.into(),
        }
    }

    /// Our request to place `leg` was accepted: the provider calls it
    /// `leg_id` and answered `status`, if it said
    /// ([`CallEvent::LegDialed`]).
    pub fn leg_dialed(leg: Leg, leg_id: LegId, status: impl Into<Option<LegStatus>>) -> Self {
        CallEvent::LegDialed {
            leg,
            leg_id,
            status: status.into(),
        }
    }

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

/// A [`CallEvent::LegStatus`] being built: from [`CallEvent::leg_status`],
/// with `with_*` setters for its optional fields, then `.into()` or
/// [`LegStatusEvent::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "build the event with `.into()` or `.build()`"]
pub struct LegStatusEvent {
    leg: Leg,
    leg_id: Option<LegId>,
    status: LegStatus,
    duration_secs: Option<u32>,
    sip_response_code: Option<u16>,
    at: Option<DateTime<Utc>>,
}

impl LegStatusEvent {
    /// With the leg's provider id (when the report carried one).
    pub fn with_leg_id(mut self, leg_id: impl Into<Option<LegId>>) -> Self {
        self.leg_id = leg_id.into();
        self
    }

    /// With the duration in seconds (terminal reports).
    pub fn with_duration_secs(mut self, duration_secs: impl Into<Option<u32>>) -> Self {
        self.duration_secs = duration_secs.into();
        self
    }

    /// With the SIP response code (when reported).
    pub fn with_sip_response_code(mut self, code: impl Into<Option<u16>>) -> Self {
        self.sip_response_code = code.into();
        self
    }

    /// With when it happened (when the report says; otherwise the time it
    /// was received counts).
    pub fn with_at(mut self, at: impl Into<Option<DateTime<Utc>>>) -> Self {
        self.at = at.into();
        self
    }

    /// The event.
    pub fn build(self) -> CallEvent {
        CallEvent::LegStatus {
            leg: self.leg,
            leg_id: self.leg_id,
            status: self.status,
            duration_secs: self.duration_secs,
            sip_response_code: self.sip_response_code,
            at: self.at,
        }
    }
}

impl From<LegStatusEvent> for CallEvent {
    fn from(event: LegStatusEvent) -> Self {
        event.build()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn leg_id() -> LegId {
        "leg-1".parse().unwrap()
    }

    fn conference_id() -> ConferenceId {
        "room-1".parse().unwrap()
    }

    #[test]
    fn constructors_fill_every_field() {
        let at = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(
            CallEvent::leg_status(Leg::Target, LegStatus::Busy).build(),
            CallEvent::LegStatus {
                leg: Leg::Target,
                leg_id: None,
                status: LegStatus::Busy,
                duration_secs: None,
                sip_response_code: None,
                at: None,
            }
        );
        let full: CallEvent = CallEvent::leg_status(Leg::Activist, LegStatus::Completed)
            .with_leg_id(leg_id())
            .with_duration_secs(42)
            .with_sip_response_code(200)
            .with_at(at)
            .into();
        assert_eq!(
            full,
            CallEvent::LegStatus {
                leg: Leg::Activist,
                leg_id: Some(leg_id()),
                status: LegStatus::Completed,
                duration_secs: Some(42),
                sip_response_code: Some(200),
                at: Some(at),
            }
        );
        assert_eq!(
            CallEvent::answered_by(Leg::Activist, leg_id(), AnsweredBy::Fax),
            CallEvent::AnsweredBy {
                leg: Leg::Activist,
                leg_id: Some(leg_id()),
                answered_by: AnsweredBy::Fax,
            }
        );
        assert_eq!(
            CallEvent::participant_joined(conference_id(), leg_id(), Leg::Target),
            CallEvent::ParticipantJoined {
                conference_id: conference_id(),
                leg_id: leg_id(),
                leg: Some(Leg::Target),
            }
        );
        assert_eq!(
            CallEvent::participant_left(conference_id(), leg_id(), None),
            CallEvent::ParticipantLeft {
                conference_id: conference_id(),
                leg_id: leg_id(),
                leg: None,
            }
        );
        assert_eq!(
            CallEvent::leg_dialed(Leg::Target, leg_id(), LegStatus::Queued),
            CallEvent::LegDialed {
                leg: Leg::Target,
                leg_id: leg_id(),
                status: Some(LegStatus::Queued),
            }
        );
    }
}
