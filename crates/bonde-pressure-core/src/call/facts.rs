//! Facts that only grow, merged by a join.
//!
//! The telephony delivers callbacks in any order, sometimes twice (Twilio
//! does). So nothing here is a transition: every field is a value of a
//! join-semilattice (a maximum, a logical or, a set union, an earliest
//! time), and [`CallFacts::join`] is commutative, associative and
//! idempotent. Whatever order the same events arrive in, the facts end
//! equal, and so does every state derived from them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{ConferenceId, LegId};

/// Which leg of the pressure call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// Leg A: the activist, called first.
    Activist,
    /// Leg B: the target, added to the conference once the activist is in it.
    Target,
}

impl Leg {
    /// `"activist"` or `"target"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Leg::Activist => "activist",
            Leg::Target => "target",
        }
    }
}

/// A call leg's status as the telephony reports it, ranked
/// `queued < initiated < ringing < in-progress < terminal`.
///
/// Terminal statuses are ranked among themselves too, only so that the join
/// is deterministic should two different ones ever be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LegStatus {
    /// Accepted by the provider, not yet dialled (Twilio queues calls above its CPS limit).
    Queued,
    /// Dialling started.
    Initiated,
    /// The phone rings.
    Ringing,
    /// Answered.
    InProgress,
    /// Answered, then ended normally.
    Completed,
    /// The line was busy.
    Busy,
    /// Nobody answered before the timeout.
    NoAnswer,
    /// The call could not be placed (bad number, carrier error, provider refusal).
    Failed,
    /// Hung up by us before it was answered.
    Canceled,
}

impl LegStatus {
    /// Every status, in rank order.
    pub const ALL: [LegStatus; 9] = [
        LegStatus::Queued,
        LegStatus::Initiated,
        LegStatus::Ringing,
        LegStatus::InProgress,
        LegStatus::Completed,
        LegStatus::Busy,
        LegStatus::NoAnswer,
        LegStatus::Failed,
        LegStatus::Canceled,
    ];

    /// Ended, one way or another.
    pub fn is_terminal(&self) -> bool {
        *self >= LegStatus::Completed
    }

    /// The wire spelling used by the simulated and Twilio adapters:
    /// `queued initiated ringing in-progress completed busy no-answer failed canceled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LegStatus::Queued => "queued",
            LegStatus::Initiated => "initiated",
            LegStatus::Ringing => "ringing",
            LegStatus::InProgress => "in-progress",
            LegStatus::Completed => "completed",
            LegStatus::Busy => "busy",
            LegStatus::NoAnswer => "no-answer",
            LegStatus::Failed => "failed",
            LegStatus::Canceled => "canceled",
        }
    }

    /// Parses the wire spelling ([`LegStatus::as_str`]); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Who answered, according to answering-machine detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AnsweredBy {
    /// A person.
    Human,
    /// Detection could not tell; treated as a person.
    Unknown,
    /// A fax machine.
    Fax,
    /// A machine greeting started.
    MachineStart,
    /// A machine greeting ended with a beep.
    MachineEndBeep,
    /// A machine greeting ended with silence.
    MachineEndSilence,
    /// A machine greeting ended otherwise.
    MachineEndOther,
}

impl AnsweredBy {
    /// Every value.
    pub const ALL: [AnsweredBy; 7] = [
        AnsweredBy::Human,
        AnsweredBy::Unknown,
        AnsweredBy::Fax,
        AnsweredBy::MachineStart,
        AnsweredBy::MachineEndBeep,
        AnsweredBy::MachineEndSilence,
        AnsweredBy::MachineEndOther,
    ];

    /// A voicemail or fax rather than a person.
    pub fn is_machine(&self) -> bool {
        !matches!(self, AnsweredBy::Human | AnsweredBy::Unknown)
    }

    /// The wire spelling used by the simulated and Twilio adapters
    /// (`human`, `machine_start`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            AnsweredBy::Human => "human",
            AnsweredBy::Unknown => "unknown",
            AnsweredBy::Fax => "fax",
            AnsweredBy::MachineStart => "machine_start",
            AnsweredBy::MachineEndBeep => "machine_end_beep",
            AnsweredBy::MachineEndSilence => "machine_end_silence",
            AnsweredBy::MachineEndOther => "machine_end_other",
        }
    }

    /// Parses the wire spelling ([`AnsweredBy::as_str`]); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Why a leg failed, when the telephony said so (a provider error code, a
/// message). Build it with [`LegError::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LegError {
    /// The provider's error code, when it gave one.
    pub code: Option<u32>,
    /// Human-readable reason.
    pub message: String,
}

impl LegError {
    /// The provider's error `code` (if any) and its `message`.
    pub fn new(code: impl Into<Option<u32>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What is known of one leg. Every field only grows.
///
/// `#[non_exhaustive]`: facts gain fields over time. Outside this crate,
/// start from `LegFacts::default()` (or serde) and assign fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LegFacts {
    /// The provider's id for this leg. Serialized as `sid`, the name
    /// stored facts use.
    #[serde(rename = "sid")]
    pub leg_id: Option<LegId>,
    /// Highest-ranked status seen.
    pub status: Option<LegStatus>,
    /// Answering-machine detection verdict.
    pub answered_by: Option<AnsweredBy>,
    /// Seen in the conference.
    pub joined_conference: bool,
    /// Seen leaving the conference.
    pub left_conference: bool,
    /// Billable duration in seconds, once ended.
    pub duration_secs: Option<u32>,
    /// SIP response code of the leg's last attempt.
    pub sip_response_code: Option<u16>,
    /// Why it failed, when known.
    pub error: Option<LegError>,
    /// When it was first seen ringing.
    pub ringing_at: Option<DateTime<Utc>>,
    /// When it was first seen answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// When it was first seen ended.
    pub ended_at: Option<DateTime<Utc>>,
}

impl LegFacts {
    /// The least upper bound of two sets of facts.
    pub fn join(&self, other: &LegFacts) -> LegFacts {
        LegFacts {
            leg_id: self.leg_id.clone().max(other.leg_id.clone()),
            status: self.status.max(other.status),
            answered_by: self.answered_by.max(other.answered_by),
            joined_conference: self.joined_conference || other.joined_conference,
            left_conference: self.left_conference || other.left_conference,
            duration_secs: self.duration_secs.max(other.duration_secs),
            sip_response_code: self.sip_response_code.max(other.sip_response_code),
            error: self.error.clone().max(other.error.clone()),
            ringing_at: earliest(self.ringing_at, other.ringing_at),
            answered_at: earliest(self.answered_at, other.answered_at),
            ended_at: earliest(self.ended_at, other.ended_at),
        }
    }

    /// Ended, one way or another.
    pub fn is_terminal(&self) -> bool {
        self.status.is_some_and(|s| s.is_terminal())
    }

    /// Answered by a machine (voicemail or fax).
    pub fn is_machine(&self) -> bool {
        self.answered_by.is_some_and(|a| a.is_machine())
    }

    /// Answered at some point (in progress, or completed).
    pub fn was_answered(&self) -> bool {
        matches!(
            self.status,
            Some(LegStatus::InProgress | LegStatus::Completed)
        )
    }
}

/// A conference participant seen by its leg id, before or without knowing
/// which leg it is (resolved against the legs' ids when read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Joined the conference.
    pub joined: bool,
    /// Left the conference.
    pub left: bool,
}

/// Which effects have already been requested. Set by the transition that
/// requests them, so each is requested by exactly one committed transition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requested {
    /// The target was dialled into the conference.
    pub dial_target: bool,
    /// The activist's leg was hung up by us.
    pub hang_up_activist: bool,
    /// The target's leg was hung up or canceled by us.
    pub hang_up_target: bool,
    /// The conference was ended by us.
    pub end_conference: bool,
}

impl Requested {
    fn join(&self, o: &Requested) -> Requested {
        Requested {
            dial_target: self.dial_target || o.dial_target,
            hang_up_activist: self.hang_up_activist || o.hang_up_activist,
            hang_up_target: self.hang_up_target || o.hang_up_target,
            end_conference: self.end_conference || o.end_conference,
        }
    }
}

/// Everything known about one pressure call. Only grows.
///
/// `#[non_exhaustive]`: facts gain fields over time (each new one with a
/// serde default, so stored facts still read). Stores keep them as their
/// serde JSON; outside this crate, start from `CallFacts::default()` and
/// assign fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CallFacts {
    /// Leg A.
    pub activist: LegFacts,
    /// Leg B.
    pub target: LegFacts,
    /// The greeting and confirmation prompt were played to the activist.
    pub prompted: bool,
    /// The activist confirmed (a key or speech).
    pub confirmed: bool,
    /// The conference's provider id, once a report named it. Serialized as
    /// `conference_sid`, the name stored facts use.
    #[serde(rename = "conference_sid")]
    pub conference_id: Option<ConferenceId>,
    /// The conference started.
    pub conference_started: bool,
    /// The conference ended.
    pub conference_ended: bool,
    /// Conference participants by leg id (whatever leg they turn out to be).
    pub participants: BTreeMap<LegId, Presence>,
    /// Reconciliation gave up on this call: no news for too long.
    pub expired: bool,
    /// Effects already requested.
    pub requested: Requested,
    /// Whether answering-machine detection runs on this call's legs,
    /// decided from the campaign's settings when the call starts. `None`
    /// for calls stored before this was recorded (treated as on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_detection: Option<bool>,
    /// The activist pressed the do-not-call key (never a confirmation).
    #[serde(default)]
    pub opted_out: bool,
    /// The target was not dialled: its dial budget was used up.
    #[serde(default)]
    pub target_limited: bool,
    /// The opted-out activist's number is on the do-not-call list. Until
    /// it is, the call is not settled ([`crate::call::Call::is_settled`]):
    /// the next handling of the call or reconciliation lists it.
    #[serde(default)]
    pub opt_out_listed: bool,
    /// When the call's personal data was erased (retention or an erasure
    /// request): the activist is [`crate::Activist::erased`] and the legs'
    /// error messages read [`ERASED_MESSAGE`]. Only grows, like the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<DateTime<Utc>>,
}

/// What a leg's error message reads once the call's personal data was
/// erased (provider messages may quote the numbers); the code is kept.
pub const ERASED_MESSAGE: &str = "[erased]";

impl CallFacts {
    /// The least upper bound of two sets of facts: commutative, associative, idempotent.
    pub fn join(&self, other: &CallFacts) -> CallFacts {
        let mut participants = self.participants.clone();
        for (leg_id, p) in &other.participants {
            let e = participants.entry(leg_id.clone()).or_default();
            e.joined |= p.joined;
            e.left |= p.left;
        }
        CallFacts {
            activist: self.activist.join(&other.activist),
            target: self.target.join(&other.target),
            prompted: self.prompted || other.prompted,
            confirmed: self.confirmed || other.confirmed,
            conference_id: self.conference_id.clone().max(other.conference_id.clone()),
            conference_started: self.conference_started || other.conference_started,
            conference_ended: self.conference_ended || other.conference_ended,
            participants,
            expired: self.expired || other.expired,
            requested: self.requested.join(&other.requested),
            machine_detection: self.machine_detection.max(other.machine_detection),
            opted_out: self.opted_out || other.opted_out,
            target_limited: self.target_limited || other.target_limited,
            opt_out_listed: self.opt_out_listed || other.opt_out_listed,
            erased_at: earliest(self.erased_at, other.erased_at),
        }
        .redacted_if_erased()
    }

    /// Once erased, messages that arrive later are redacted too.
    fn redacted_if_erased(mut self) -> Self {
        if self.erased_at.is_some() {
            self.redact();
        }
        self
    }

    /// Replaces the legs' error messages (free text from the provider,
    /// which may quote the numbers) with [`ERASED_MESSAGE`], keeping codes.
    pub fn redact(&mut self) {
        for leg in [&mut self.activist, &mut self.target] {
            if let Some(e) = leg.error.as_mut() {
                e.message = ERASED_MESSAGE.to_owned();
            }
        }
    }

    /// One leg's facts.
    pub fn leg(&self, leg: Leg) -> &LegFacts {
        match leg {
            Leg::Activist => &self.activist,
            Leg::Target => &self.target,
        }
    }

    /// One leg's facts, mutably.
    pub fn leg_mut(&mut self, leg: Leg) -> &mut LegFacts {
        match leg {
            Leg::Activist => &mut self.activist,
            Leg::Target => &mut self.target,
        }
    }

    fn presence(&self, leg: Leg) -> Presence {
        let l = self.leg(leg);
        let by_id = l
            .leg_id
            .as_ref()
            .and_then(|id| self.participants.get(id))
            .copied()
            .unwrap_or_default();
        Presence {
            joined: l.joined_conference || by_id.joined,
            left: l.left_conference || by_id.left,
        }
    }

    /// The leg was seen in the conference (directly, or by its leg id).
    pub fn joined(&self, leg: Leg) -> bool {
        self.presence(leg).joined
    }

    /// The leg was seen leaving the conference.
    pub fn left(&self, leg: Leg) -> bool {
        self.presence(leg).left
    }

    /// The activist confirmed, or is in the conference (which needs
    /// confirming): seen joining, or the conference started (only the
    /// activist's TwiML creates it; the target is added to it afterwards).
    pub fn activist_confirmed(&self) -> bool {
        self.confirmed || self.joined(Leg::Activist) || self.conference_started
    }

    /// Evidence that the activist is in the conference, whichever came
    /// first: the activist seen joining (by label or by the leg's id) or,
    /// while the target has not been dialled (the activist is then the only
    /// possible participant), the conference's start or any participant's
    /// join. A conference start carries no leg id, and the activist's own
    /// `participant-join` may be lost: either alone is enough.
    pub fn activist_in_conference(&self) -> bool {
        self.joined(Leg::Activist)
            || (!self.requested.dial_target
                && (self.conference_started || self.participants.values().any(|p| p.joined)))
    }

    /// Before the target is dialled the activist is the only possible
    /// participant, so any participant seen leaving is the activist.
    fn someone_left_before_dial(&self) -> bool {
        !self.requested.dial_target && self.participants.values().any(|p| p.left)
    }

    /// The activist's leg ended or left the conference, or (before the
    /// target was dialled) someone left the conference.
    pub fn activist_left_before_dial(&self) -> bool {
        self.activist_gone() || self.someone_left_before_dial()
    }

    /// The activist's leg ended or left the conference.
    pub fn activist_gone(&self) -> bool {
        self.activist.is_terminal() || self.left(Leg::Activist)
    }

    /// The target was reached: answered or in the conference.
    pub fn target_answered(&self) -> bool {
        self.joined(Leg::Target) || self.target.was_answered()
    }

    /// The leg was picked up, by any sign: an answered status (in progress,
    /// completed), an answering-machine verdict (detection runs only on an
    /// answered call, and its callback may arrive before the `in-progress`
    /// one), or presence in the conference. Decides how to end the leg: the
    /// provider ignores a cancel on an answered call.
    pub fn leg_answered(&self, leg: Leg) -> bool {
        let l = self.leg(leg);
        l.was_answered()
            || l.answered_by.is_some()
            || self.joined(leg)
            || (leg == Leg::Activist && self.conference_started)
    }

    /// The target is in the call but its machine-detection verdict has not
    /// arrived yet (detection is on, or not known to be off). A machine
    /// verdict makes the call `target_voicemail`; `human` or `unknown`
    /// ends the wait.
    pub fn awaiting_target_verdict(&self) -> bool {
        self.machine_detection != Some(false) && self.target.answered_by.is_none()
    }

    /// The leg may still be up at the provider: it was placed (we know its
    /// id, or, for the target, we asked for it to be dialled) and no
    /// terminal status was seen for it.
    pub fn leg_possibly_live(&self, leg: Leg) -> bool {
        let l = self.leg(leg);
        let placed = l.leg_id.is_some()
            || (leg == Leg::Target && self.requested.dial_target && !self.target_limited);
        placed && !l.is_terminal()
    }
}
