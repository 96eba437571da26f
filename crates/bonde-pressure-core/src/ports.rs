//! The ports: what the core needs from the outside world.
//!
//! Every port is an object-safe `#[async_trait]` trait, `Send + Sync +
//! 'static`, held as `Arc<dyn …>` by [`crate::PressureService`]. Each says
//! what an implementation must guarantee; the in-crate fakes
//! ([`crate::InMemoryCallStore`], [`crate::SimulatedTelephony`],
//! [`crate::StaticCampaignDirectory`], [`crate::StubActionRecorder`]) are
//! reference implementations of those guarantees. With the `mock` feature,
//! mockall mocks (`MockTelephony`, `MockCallStore`, `MockCampaignDirectory`,
//! `MockActionRecorder`) are generated too.
//!
//! Every type here is re-exported at the crate root. The structs are
//! `#[non_exhaustive]`: build them with `new(...)` and the `with_*`
//! setters. A method added to a port later gets a default implementation
//! that keeps existing implementations correct, wherever one exists (see
//! [`Telephony::conference_participants`],
//! [`CallStore::count_recent_calls_to`]).

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::{AnsweredBy, Call, CallEvent, HangUp, Leg, LegStatus};
use crate::domain::{Activist, CallId, ConferenceId, LegId, PhoneNumber, WidgetId};
use crate::script::CampaignSettings;

// ---------------------------------------------------------------- Telephony

/// Ask the telephony to call the activist (leg A).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActivistCallRequest {
    /// Our call id: every callback for this leg must name it.
    pub call_id: CallId,
    /// The activist's number.
    pub to: PhoneNumber,
    /// Seconds to let it ring.
    pub timeout_secs: u32,
    /// Run asynchronous answering-machine detection.
    pub detect_machine: bool,
}

impl ActivistCallRequest {
    /// Call `to` for call `call_id`, ringing for `timeout_secs`, without
    /// answering-machine detection (see
    /// [`ActivistCallRequest::with_detect_machine`]).
    pub fn new(call_id: CallId, to: PhoneNumber, timeout_secs: u32) -> Self {
        Self {
            call_id,
            to,
            timeout_secs,
            detect_machine: false,
        }
    }

    /// With (or without) asynchronous answering-machine detection.
    pub fn with_detect_machine(mut self, detect_machine: bool) -> Self {
        self.detect_machine = detect_machine;
        self
    }
}

/// Ask the telephony to add the target (leg B) to the call's conference.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetCallRequest {
    /// Our call id: the target joins this call's conference, and every
    /// callback for this leg must name it.
    pub call_id: CallId,
    /// The target's number.
    pub to: PhoneNumber,
    /// Caller id shown to the target; `None` means the service's own number.
    pub caller_id: Option<PhoneNumber>,
    /// Seconds to let it ring.
    pub timeout_secs: u32,
    /// Run asynchronous answering-machine detection.
    pub detect_machine: bool,
}

impl TargetCallRequest {
    /// Add `to` to call `call_id`'s conference, ringing for
    /// `timeout_secs`, shown the service's own number, without
    /// answering-machine detection (see the `with_*` setters).
    pub fn new(call_id: CallId, to: PhoneNumber, timeout_secs: u32) -> Self {
        Self {
            call_id,
            to,
            caller_id: None,
            timeout_secs,
            detect_machine: false,
        }
    }

    /// With this caller id shown to the target (`None`: the service's own
    /// number).
    pub fn with_caller_id(mut self, caller_id: impl Into<Option<PhoneNumber>>) -> Self {
        self.caller_id = caller_id.into();
        self
    }

    /// With (or without) asynchronous answering-machine detection.
    pub fn with_detect_machine(mut self, detect_machine: bool) -> Self {
        self.detect_machine = detect_machine;
        self
    }
}

/// A leg the telephony accepted to place.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DialedLeg {
    /// The provider's id of the leg.
    pub leg_id: LegId,
    /// Its status in the provider's answer (usually `queued`).
    pub status: Option<LegStatus>,
}

impl DialedLeg {
    /// The leg `leg_id`, with no status in the answer (see
    /// [`DialedLeg::with_status`]).
    pub fn new(leg_id: LegId) -> Self {
        Self {
            leg_id,
            status: None,
        }
    }

    /// With the status the provider answered (if any).
    pub fn with_status(mut self, status: impl Into<Option<LegStatus>>) -> Self {
        self.status = status.into();
        self
    }
}

/// A leg as the provider sees it now (for reconciliation).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LegSnapshot {
    /// The provider's id of the leg.
    pub leg_id: LegId,
    /// Current status.
    pub status: LegStatus,
    /// Duration in seconds, once ended.
    pub duration_secs: Option<u32>,
    /// Answering-machine verdict, when known.
    pub answered_by: Option<AnsweredBy>,
    /// When the leg ended, as the provider recorded it (a terminal leg
    /// fetched long after it ended keeps its real end time, not the fetch's).
    pub ended_at: Option<DateTime<Utc>>,
}

impl LegSnapshot {
    /// The leg `leg_id` in `status`, nothing else known (see the `with_*`
    /// setters).
    pub fn new(leg_id: LegId, status: LegStatus) -> Self {
        Self {
            leg_id,
            status,
            duration_secs: None,
            answered_by: None,
            ended_at: None,
        }
    }

    /// With its duration in seconds (if known).
    pub fn with_duration_secs(mut self, duration_secs: impl Into<Option<u32>>) -> Self {
        self.duration_secs = duration_secs.into();
        self
    }

    /// With its answering-machine verdict (if known).
    pub fn with_answered_by(mut self, answered_by: impl Into<Option<AnsweredBy>>) -> Self {
        self.answered_by = answered_by.into();
        self
    }

    /// With the provider's end time (if known).
    pub fn with_ended_at(mut self, ended_at: impl Into<Option<DateTime<Utc>>>) -> Self {
        self.ended_at = ended_at.into();
        self
    }
}

/// One participant of a conference as the provider lists it now (for
/// reconciliation).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParticipantSnapshot {
    /// The provider's id of the participant's leg.
    pub leg_id: LegId,
    /// Which leg, when the provider's listing says so (a participant label).
    pub leg: Option<Leg>,
    /// In the conference now (`false`: still being dialled, or leaving).
    pub in_conference: bool,
}

impl ParticipantSnapshot {
    /// A participant.
    pub fn new(leg_id: LegId, leg: Option<Leg>, in_conference: bool) -> Self {
        Self {
            leg_id,
            leg,
            in_conference,
        }
    }
}

/// A live conference as the provider sees it now (for reconciliation).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConferenceSnapshot {
    /// The provider's id of the conference.
    pub conference_id: ConferenceId,
    /// Its participants.
    pub participants: Vec<ParticipantSnapshot>,
}

impl ConferenceSnapshot {
    /// A conference with these participants.
    pub fn new(conference_id: ConferenceId, participants: Vec<ParticipantSnapshot>) -> Self {
        Self {
            conference_id,
            participants,
        }
    }
}

/// The cause of a [`TelephonyError`], when the implementation has one (an
/// I/O or decoding error, the provider's error body): shared, so errors stay
/// cheap to clone.
pub type ErrorSource = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why the telephony refused or failed a command.
///
/// The variants are what callers must tell apart: whose fault a refusal is
/// (the number called, our account's settings, the provider) decides what
/// the activist is told and whether the attempt counts against the number's
/// limits ([`TelephonyError::counts_against_limits`]). Implementations map
/// their provider's error codes onto them (Twilio's mapping is in the twilio
/// crate) and keep the underlying error as the [`source`](std::error::Error::source)
/// when there is one. Built with the constructors
/// ([`TelephonyError::invalid_number`]...) and
/// [`TelephonyError::with_source`]; matched with `..`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TelephonyError {
    /// Our account may not call this destination (geographic permissions,
    /// destinations the account has not enabled): a configuration problem
    /// on our side, not the number's fault.
    #[error("destination not permitted: {message}")]
    #[non_exhaustive]
    DestinationNotPermitted {
        /// Provider error code.
        code: Option<u32>,
        /// Provider message.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<ErrorSource>,
    },
    /// Our caller id (the number shown to the person called) was refused:
    /// not one the account may use. A configuration problem, not the
    /// called number's fault.
    #[error("caller id rejected: {message}")]
    #[non_exhaustive]
    CallerIdRejected {
        /// Provider error code.
        code: Option<u32>,
        /// Provider message.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<ErrorSource>,
    },
    /// The number called is invalid or unreachable (not a valid number,
    /// cannot be reached, blocked by the provider, unverified on a trial
    /// account).
    #[error("number cannot be called: {message}")]
    #[non_exhaustive]
    InvalidNumber {
        /// Provider error code.
        code: Option<u32>,
        /// Provider message.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<ErrorSource>,
    },
    /// Authentication or account configuration refused: wrong credentials,
    /// a suspended or inactive account.
    #[error("telephony authentication failed: {message}")]
    #[non_exhaustive]
    Auth {
        /// Provider error code.
        code: Option<u32>,
        /// Provider message.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<ErrorSource>,
    },
    /// Rate-limited by the provider, still after retries.
    #[error("telephony rate limit reached")]
    #[non_exhaustive]
    RateLimited {
        /// When to try again, if the provider said.
        retry_after: Option<Duration>,
        /// The underlying error, if any.
        #[source]
        source: Option<ErrorSource>,
    },
    /// The call or conference does not exist (any more).
    #[error("not found at the telephony provider: {message}")]
    #[non_exhaustive]
    NotFound {
        /// Provider message.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<ErrorSource>,
    },
    /// Any other refusal (a 4xx).
    #[error("telephony refused the request ({status}): {message}")]
    #[non_exhaustive]
    Rejected {
        /// HTTP status (or the provider's closest equivalent).
        status: u16,
        /// Provider error code.
        code: Option<u32>,
        /// Provider message.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<ErrorSource>,
    },
    /// The provider could not be reached or failed (5xx, timeout), still
    /// after retries. The command may have taken effect when the answer
    /// was lost (see [`Telephony`]).
    #[error("telephony unavailable: {message}")]
    #[non_exhaustive]
    Unavailable {
        /// What happened.
        message: String,
        /// The underlying error (I/O, timeout, decoding), if any.
        #[source]
        source: Option<ErrorSource>,
    },
}

impl TelephonyError {
    /// Our account may not call this destination
    /// ([`TelephonyError::DestinationNotPermitted`]).
    pub fn destination_not_permitted(code: Option<u32>, message: impl Into<String>) -> Self {
        TelephonyError::DestinationNotPermitted {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// Our caller id was refused ([`TelephonyError::CallerIdRejected`]).
    pub fn caller_id_rejected(code: Option<u32>, message: impl Into<String>) -> Self {
        TelephonyError::CallerIdRejected {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// The number called is invalid or unreachable
    /// ([`TelephonyError::InvalidNumber`]).
    pub fn invalid_number(code: Option<u32>, message: impl Into<String>) -> Self {
        TelephonyError::InvalidNumber {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// Credentials or account configuration refused ([`TelephonyError::Auth`]).
    pub fn auth(code: Option<u32>, message: impl Into<String>) -> Self {
        TelephonyError::Auth {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// Rate-limited by the provider ([`TelephonyError::RateLimited`]).
    pub fn rate_limited(retry_after: Option<Duration>) -> Self {
        TelephonyError::RateLimited {
            retry_after,
            source: None,
        }
    }

    /// No such call or conference ([`TelephonyError::NotFound`]).
    pub fn not_found(message: impl Into<String>) -> Self {
        TelephonyError::NotFound {
            message: message.into(),
            source: None,
        }
    }

    /// Another refusal ([`TelephonyError::Rejected`]).
    pub fn rejected(status: u16, code: Option<u32>, message: impl Into<String>) -> Self {
        TelephonyError::Rejected {
            status,
            code,
            message: message.into(),
            source: None,
        }
    }

    /// The provider could not be reached or failed
    /// ([`TelephonyError::Unavailable`]).
    pub fn unavailable(message: impl Into<String>) -> Self {
        TelephonyError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// With this underlying error as the [`source`](std::error::Error::source).
    pub fn with_source(mut self, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        let cause: ErrorSource = std::sync::Arc::new(error);
        match &mut self {
            TelephonyError::DestinationNotPermitted { source, .. }
            | TelephonyError::CallerIdRejected { source, .. }
            | TelephonyError::InvalidNumber { source, .. }
            | TelephonyError::Auth { source, .. }
            | TelephonyError::RateLimited { source, .. }
            | TelephonyError::NotFound { source, .. }
            | TelephonyError::Rejected { source, .. }
            | TelephonyError::Unavailable { source, .. } => *source = Some(cause),
        }
        self
    }

    /// The underlying error (the [`source`](std::error::Error::source)), as
    /// given to [`TelephonyError::with_source`]: downcast it to the
    /// implementation's own error type for details.
    pub fn underlying(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            TelephonyError::DestinationNotPermitted { source, .. }
            | TelephonyError::CallerIdRejected { source, .. }
            | TelephonyError::InvalidNumber { source, .. }
            | TelephonyError::Auth { source, .. }
            | TelephonyError::RateLimited { source, .. }
            | TelephonyError::NotFound { source, .. }
            | TelephonyError::Rejected { source, .. }
            | TelephonyError::Unavailable { source, .. } => source.as_deref(),
        }
    }

    /// The provider's error code, when there is one.
    pub fn code(&self) -> Option<u32> {
        match self {
            TelephonyError::DestinationNotPermitted { code, .. }
            | TelephonyError::CallerIdRejected { code, .. }
            | TelephonyError::InvalidNumber { code, .. }
            | TelephonyError::Auth { code, .. }
            | TelephonyError::Rejected { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether a refused [`Telephony::call_activist`] or
    /// [`Telephony::add_target`] still counts as an attempt against the
    /// called number's limits (its caps in [`crate::limits`], an adapter's
    /// request limit): only when a call may have been placed (the answer was
    /// lost: [`TelephonyError::Unavailable`]) or the number itself was
    /// refused ([`TelephonyError::InvalidNumber`]). Refusals on our side —
    /// the destination not permitted, our caller id, credentials or account
    /// configuration, the provider's rate limit, another refusal — do not:
    /// the person called is not at fault and may try again once it is fixed.
    ///
    /// This is core's rule, the same for every implementation: an
    /// implementation decides only which variant a provider error is.
    pub fn counts_against_limits(&self) -> bool {
        matches!(
            self,
            TelephonyError::InvalidNumber { .. } | TelephonyError::Unavailable { .. }
        )
    }
}

/// Places and controls calls.
///
/// # What implementations must guarantee
/// - Callbacks for a leg placed by [`Telephony::call_activist`] or
///   [`Telephony::add_target`] reach the service tagged with the request's
///   `call_id` and the right [`crate::Leg`] (Twilio: per-leg callback URLs,
///   participant labels `activist` / `target`), at least once, in any order.
/// - Each call has one conference, addressed by its `call_id`:
///   [`Telephony::add_target`] adds the target to the conference of the
///   request's `call_id` (the one the activist's leg joins), ending the
///   conference when the target leaves; [`Telephony::end_conference`] and
///   [`Telephony::conference_participants`] address that same conference.
///   How the implementation names or finds it is its own business (Twilio:
///   the conference's friendly name is the call id). Reports about it name
///   it by the provider's [`ConferenceId`], which the service passes back
///   when it has one.
/// - Leg and conference ids ([`LegId`], [`ConferenceId`]) are the
///   provider's own and opaque to the core: the service only stores them
///   and passes them back. They must be unique across calls, not only
///   within one: stores key legs by their id. The core checks no more than that they are short
///   printable text; an implementation checks its own format before it
///   uses one (in a URL, say), and treats an id it could not have issued as
///   one it does not know (a hang-up or fetch answers
///   [`TelephonyError::NotFound`] or, for a hang-up, `Ok(())`).
/// - A command either took effect at the provider or returns an error; an
///   error is never returned for a command that took effect, except where the
///   provider's answer was lost (timeouts): implementations should say so with
///   [`TelephonyError::Unavailable`].
/// - A refusal is reported with the [`TelephonyError`] variant that says
///   whose fault it is (the number called, our account's destinations, our
///   caller id, our credentials, the provider): core decides from it what
///   the activist is told and whether the attempt counts against the
///   number's limits ([`TelephonyError::counts_against_limits`]). The
///   provider's own error is kept as the source when there is one.
/// - Every command returns within a bounded time, a few seconds (webhooks
///   wait on some, and the service takes a dial still unanswered long after
///   that as lost): transient provider failures (rate limits, 5xx) are
///   retried with backoff inside the implementation, within that bound, and
///   a provider that does not answer in time is
///   [`TelephonyError::Unavailable`]. (Twilio's client: at most about 10 s.)
/// - Hanging up a leg or ending a conference that already ended is not an
///   error worth reporting: return `Ok(())` or [`TelephonyError::NotFound`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Telephony: Send + Sync + 'static {
    /// Calls the activist.
    async fn call_activist(&self, req: &ActivistCallRequest) -> Result<DialedLeg, TelephonyError>;
    /// Adds the target to the call's conference.
    async fn add_target(&self, req: &TargetCallRequest) -> Result<DialedLeg, TelephonyError>;
    /// Ends a leg.
    async fn hang_up(
        &self,
        call_id: CallId,
        leg_id: &LegId,
        how: HangUp,
    ) -> Result<(), TelephonyError>;
    /// Ends the call's conference (everyone leaves; the activist's leg
    /// goes on to the closing message). `conference` is the provider's id
    /// of the conference of `call_id`, as a report named it.
    async fn end_conference(
        &self,
        call_id: CallId,
        conference: &ConferenceId,
    ) -> Result<(), TelephonyError>;
    /// Reads a leg's current status.
    async fn fetch_leg(&self, leg_id: &LegId) -> Result<LegSnapshot, TelephonyError>;

    /// Lists the participants of the call's conference while it is live
    /// (reconciliation's evidence that the activist is in it when the
    /// callbacks saying so were lost).
    ///
    /// The conference is the one of `call_id` (see the trait's guarantees);
    /// `conference` is its id when a report already named it. Returns
    /// `Ok(None)` when no such conference is live (not started yet, or
    /// ended), and an error when the provider could not be asked.
    /// Implementations must list only this call's conference.
    ///
    /// The default implementation cannot list participants and answers
    /// `Ok(None)`: reconciliation then learns nothing from it, as before
    /// this method existed.
    async fn conference_participants(
        &self,
        call_id: CallId,
        conference: Option<ConferenceId>,
    ) -> Result<Option<ConferenceSnapshot>, TelephonyError> {
        let _ = (call_id, conference);
        Ok(None)
    }

    /// The fields of this provider's callback payloads that carry no
    /// personal data (statuses, event names, durations, sequence numbers),
    /// which read models may show to anyone: a payload is summarised by
    /// these fields of its JSON object or form-encoded body
    /// ([`crate::view::summarise_payload`]). Never list a field that can
    /// hold a phone number, a name or free text.
    ///
    /// The default lists none: timelines then show no summary.
    fn safe_payload_fields(&self) -> &'static [&'static str] {
        &[]
    }
}

// ---------------------------------------------------------------- CallStore

/// A webhook payload (or other report) exactly as received, for the event log.
///
/// `Debug` shows the payload's length, never its contents: payloads carry
/// phone numbers (`From`, `To`) and what the activist said.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RawEvent {
    /// What it is: the route or report kind (`status-callback`, `conference-callback`...).
    pub kind: String,
    /// The provider's leg id the payload names, if any (kept as text: it may
    /// be malformed).
    pub leg_id: Option<String>,
    /// The body as received (form-encoded or JSON text).
    pub payload: String,
    /// The provider's `SequenceNumber`, if any.
    pub sequence_number: Option<i64>,
    /// When we received it.
    pub received_at: DateTime<Utc>,
}

impl Debug for RawEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEvent")
            .field("kind", &self.kind)
            .field("leg_id", &self.leg_id)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .field("sequence_number", &self.sequence_number)
            .field("received_at", &self.received_at)
            .finish()
    }
}

impl RawEvent {
    /// A payload of `kind` received at `received_at`, naming no leg id
    /// and no sequence number (see the `with_*` setters).
    pub fn new(
        kind: impl Into<String>,
        payload: impl Into<String>,
        received_at: DateTime<Utc>,
    ) -> Self {
        Self {
            kind: kind.into(),
            leg_id: None,
            payload: payload.into(),
            sequence_number: None,
            received_at,
        }
    }

    /// With the provider's leg id the payload names (as text, unchecked).
    pub fn with_leg_id(mut self, leg_id: impl Into<String>) -> Self {
        self.leg_id = Some(leg_id.into());
        self
    }

    /// With the provider's sequence number (if any).
    pub fn with_sequence_number(mut self, sequence_number: impl Into<Option<i64>>) -> Self {
        self.sequence_number = sequence_number.into();
        self
    }
}

/// A [`RawEvent`] as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredEvent {
    /// Store-assigned id, increasing in insertion order.
    pub id: i64,
    /// The call it belongs to; `None` when no such call exists.
    pub call_id: Option<CallId>,
    /// The event.
    pub raw: RawEvent,
}

impl StoredEvent {
    /// Event `id` of call `call_id` (`None`: stored for no call).
    pub fn new(id: i64, call_id: Option<CallId>, raw: RawEvent) -> Self {
        Self { id, call_id, raw }
    }
}

/// A stored call that cannot be decoded (a damaged row): that call's
/// problem only. `reason` names the column and what is wrong with it, never
/// the stored value (it may hold personal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored call {} cannot be read: {reason}", call_label(.call_id))]
#[non_exhaustive]
pub struct UnreadableCall {
    /// The call, when even its id could be read.
    pub call_id: Option<CallId>,
    /// What is wrong (column and kind of damage).
    pub reason: String,
}

fn call_label(id: &Option<CallId>) -> String {
    id.map_or_else(|| "(unknown id)".to_owned(), |id| id.to_string())
}

impl UnreadableCall {
    /// A damaged row of call `call_id` (`None`: its id is unreadable too).
    pub fn new(call_id: Option<CallId>, reason: impl Into<String>) -> Self {
        Self {
            call_id,
            reason: reason.into(),
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// This call's stored record cannot be decoded. Other calls are not
    /// affected.
    #[error(transparent)]
    Unreadable(UnreadableCall),
    /// Another writer committed first: reload and retry.
    #[error("version conflict: the call changed since it was read")]
    Conflict,
    /// A call with this id already exists.
    #[error("call already exists")]
    AlreadyExists,
    /// The call does not exist.
    #[error("call not found")]
    NotFound,
    /// The backend failed (connection, I/O, corrupt row...).
    #[error("store backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// Persists calls and their event log.
///
/// # What implementations must guarantee
/// - [`CallStore::commit`] is atomic and optimistic: it writes `call` with
///   version `call.version + 1` only if the stored version is still
///   `call.version`, and appends `events` in the same transaction; otherwise it
///   writes nothing and returns [`StoreError::Conflict`]. So concurrent
///   writers never lose an update, and an effect is run by one writer only.
/// - Events keep their insertion order ([`StoredEvent::id`] increases) and
///   are never dropped: [`CallStore::append_events`] stores payloads for
///   unknown calls too (`call_id = None`).
/// - Reads return what the last successful commit wrote (read-your-writes).
/// - [`CallStore::list_unfinished`] lists exactly the calls that are not
///   [settled](Call::is_settled) as last written, terminal or not.
/// - One damaged row is that call's problem only: rows are decoded one by
///   one; reading a call whose row cannot be decoded answers
///   [`StoreError::Unreadable`]; listings skip such rows
///   ([`CallStore::list_unfinished`]) or report them in their place
///   ([`CallStore::list_unfinished_rows`]), never fail because of them,
///   and never count them towards a listing's `limit`.
/// - A wrapper around another store forwards every method, including
///   those with a default ([`CallStore::list_unfinished_rows`]), or it
///   loses what the wrapped store does better than the default.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait CallStore: Send + Sync + 'static {
    /// Stores a new call (its version is taken as is, normally 0).
    async fn create(&self, call: &Call) -> Result<(), StoreError>;
    /// Loads a call.
    async fn get(&self, id: CallId) -> Result<Option<Call>, StoreError>;
    /// Writes `call` if its version is still current, with its raw events; returns the new version.
    async fn commit(&self, call: &Call, events: &[RawEvent]) -> Result<u64, StoreError>;
    /// Appends events without changing a call (unknown calls: `call_id = None`).
    async fn append_events(
        &self,
        call_id: Option<CallId>,
        events: &[RawEvent],
    ) -> Result<(), StoreError>;
    /// The call's event log, oldest first.
    async fn events(&self, call_id: CallId) -> Result<Vec<StoredEvent>, StoreError>;
    /// Calls that are not settled ([`Call::is_settled`]), last updated
    /// strictly before `updated_before`, oldest update first (ties by id), at
    /// most `limit`.
    ///
    /// Not settled is more than "not in a terminal state": a call whose
    /// state is terminal but one of whose legs may still be up (the target
    /// was busy, ending the conference failed, the activist is still in it)
    /// is listed too, so reconciliation hangs that leg up. Stores that keep
    /// a projection for this query must compute it with
    /// [`Call::is_settled`] on every create and commit.
    ///
    /// A row that cannot be decoded is skipped (see
    /// [`CallStore::list_unfinished_rows`] to see it).
    async fn list_unfinished(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError>;
    /// [`CallStore::list_unfinished`], with each row that cannot be decoded
    /// reported in its place ([`UnreadableCall`]) instead of skipped, so
    /// reconciliation can report it. Such rows do **not** count towards
    /// `limit`: the listing holds up to `limit` readable calls, plus the
    /// damaged rows met before them in the order (a store pages past them),
    /// so any number of damaged rows never starves the readable ones.
    ///
    /// The default implementation lists [`CallStore::list_unfinished`]'s
    /// calls, all readable: stores that cannot hold a damaged row (the
    /// in-memory one) need nothing more; SQL stores override it.
    ///
    /// **Wrappers must forward this method** (as every other one) to the
    /// store they wrap: a wrapper (a deadline, metrics, a cache) that
    /// forwards only [`CallStore::list_unfinished`] gets this default, which
    /// silently hides the damaged rows from reconciliation (they are
    /// skipped, never reported).
    async fn list_unfinished_rows(
        &self,
        updated_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Result<Call, UnreadableCall>>, StoreError> {
        Ok(self
            .list_unfinished(updated_before, limit)
            .await?
            .into_iter()
            .map(Ok)
            .collect())
    }
    /// The calls created for the activist number `phone` strictly after
    /// `since` (their count and the oldest creation time), for the daily
    /// cap per called number. A call counts when its activist leg was
    /// placed (it has a leg id) or while it is still `created` (being placed);
    /// a call whose activist leg the provider refused does not. Shared by every replica using the store and
    /// kept across restarts.
    ///
    /// `Ok(None)` means "this store does not count": the service then falls
    /// back to its in-process limiter. The default implementation returns
    /// `Ok(None)`; the in-memory, SQLite and PostgreSQL stores count (SQL
    /// stores with an index on `(from_phone_number, created_at)`).
    async fn count_recent_calls_to(
        &self,
        phone: &PhoneNumber,
        since: DateTime<Utc>,
    ) -> Result<Option<RecentCalls>, StoreError> {
        let _ = (phone, since);
        Ok(None)
    }
}

/// What [`CallStore::count_recent_calls_to`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecentCalls {
    /// How many calls.
    pub count: u64,
    /// When the oldest of them was created (`None` when there is none).
    pub oldest: Option<DateTime<Utc>>,
}

impl RecentCalls {
    /// `count` calls, the oldest created at `oldest`.
    pub fn new(count: u64, oldest: Option<DateTime<Utc>>) -> Self {
        Self { count, oldest }
    }
}

// -------------------------------------------------------- CampaignDirectory

/// A target as the widget's settings list it (free text, not yet validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WidgetTarget {
    /// Name.
    pub name: String,
    /// Phone number as typed by the campaign's author.
    pub phone: String,
}

impl WidgetTarget {
    /// A target named `name` at `phone` (as typed).
    pub fn new(name: impl Into<String>, phone: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            phone: phone.into(),
        }
    }
}

/// A campaign widget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Widget {
    /// Its id.
    pub id: WidgetId,
    /// Whether it runs phone pressure. A directory whose platform has other
    /// kinds of widget answers `false` for them (BONDE: any `kind` but
    /// `phone`), and the service refuses to start calls on them
    /// ([`crate::StartError::WidgetNotPhone`]). Default `true`.
    #[serde(default = "phone_pressure_by_default")]
    pub phone_pressure: bool,
    /// The targets activists may call.
    pub targets: Vec<WidgetTarget>,
    /// Voice, messages and policies for its calls.
    #[serde(default)]
    pub settings: CampaignSettings,
}

fn phone_pressure_by_default() -> bool {
    true
}

impl Widget {
    /// A phone-pressure widget with these targets and the default
    /// [`CampaignSettings`] (see the `with_*` setters).
    pub fn new(id: WidgetId, targets: Vec<WidgetTarget>) -> Self {
        Self {
            id,
            phone_pressure: true,
            targets,
            settings: CampaignSettings::default(),
        }
    }

    /// With these settings.
    pub fn with_settings(mut self, settings: CampaignSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Runs phone pressure (`true`, the default) or not (another kind of
    /// widget of the platform: starting a call on it is refused).
    pub fn with_phone_pressure(mut self, phone_pressure: bool) -> Self {
        self.phone_pressure = phone_pressure;
        self
    }
}

/// Why the directory failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The directory could not be reached or answered nonsense; the cause
    /// (an I/O or decoding error, or a message) is the source.
    #[error("campaign directory unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl DirectoryError {
    /// The directory is unavailable because of `cause` (an error, or a
    /// message: `String` and `&str` convert).
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        DirectoryError::Unavailable(cause.into())
    }
}

/// Where widgets (campaigns) are looked up.
///
/// # What implementations must guarantee
/// - `Ok(None)` means the widget does not exist; errors mean "could not tell"
///   (the service answers 5xx-ish for those, "Widget not found." for `None`).
/// - A widget that exists but is not a phone-pressure widget (the platform's
///   own rule, e.g. BONDE's `kind`) is returned with
///   [`Widget::phone_pressure`] `false` (the service answers "Widget is not a
///   'phone' kind."), not as `None`.
/// - Targets are returned as configured; the service compares normalised numbers.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait CampaignDirectory: Send + Sync + 'static {
    /// Looks a widget up.
    async fn widget(&self, id: WidgetId) -> Result<Option<Widget>, DirectoryError>;
}

// ----------------------------------------------------------- ActionRecorder

/// A pressure action to record in the campaign platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WidgetAction {
    /// The widget.
    pub widget_id: WidgetId,
    /// The call (recorded as `custom_fields.call`).
    pub call_id: CallId,
    /// Who acted.
    pub activist: Activist,
}

impl WidgetAction {
    /// `activist` acted on widget `widget_id` with call `call_id`.
    pub fn new(widget_id: WidgetId, call_id: CallId, activist: Activist) -> Self {
        Self {
            widget_id,
            call_id,
            activist,
        }
    }
}

/// Why recording failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecorderError {
    /// The platform could not be reached or refused; the cause (an I/O or
    /// decoding error, or a message) is the source.
    #[error("action recorder failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RecorderError {
    /// Recording failed because of `cause` (an error, or a message: `String`
    /// and `&str` convert).
    pub fn failed(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        RecorderError::Failed(cause.into())
    }
}

/// Records the activist's action in the campaign platform (BONDE).
///
/// # What implementations must guarantee
/// - Returning `Ok` means the action is recorded. Implementations retry
///   transient failures themselves; the service logs a final error and goes
///   on: a failed recording never fails or loses the call.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ActionRecorder: Send + Sync + 'static {
    /// Records the action.
    async fn record(&self, action: &WidgetAction) -> Result<(), RecorderError>;
}

// ---------------------------------------------------------------- EventSink

/// Receives events for calls (the simulated telephony plays its callbacks into this).
///
/// # What implementations must guarantee
/// - Delivery never fails from the caller's point of view: `deliver` returns
///   nothing, so an implementation handles (and logs) its own errors, and
///   must not panic on an unknown call or an event that changes nothing.
/// - Each delivered event is applied at most once per `deliver` call, with
///   the same guarantees as [`crate::PressureService::handle`] (order-independent,
///   effects run by the winning commit only); the raw payload, when given,
///   is stored with it, or alone for an unknown call.
/// - `deliver` may be called concurrently, for the same call or others, and
///   must not block the caller for longer than handling the event takes.
///
/// [`crate::PressureService`] implements it by calling
/// [`crate::PressureService::handle`].
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Delivers one event with its raw payload.
    async fn deliver(&self, call_id: CallId, event: CallEvent, raw: Option<RawEvent>);
}

// -------------------------------------------------------------------- Clock

/// The time source, the timer and the randomness of the service (a port so
/// tests can move time, skip waits and fix the jitter).
///
/// Everything in the service that reads the time, waits or draws a random
/// number goes through this port: the time of events and limits (`now`),
/// a commit retry's backoff and the bound on a campaign lookup (`sleep`),
/// and the spread of that backoff (`jitter`).
///
/// # What implementations must guarantee
/// - `now` never goes backwards by more than the host clock does; it is
///   cheap (called on every event).
/// - `sleep` completes once `duration` has passed by this clock (or at
///   once, for a clock that moves itself forward, as [`crate::ManualClock`]
///   does), and never blocks the thread: it is awaited on the caller's
///   executor. Dropping the future cancels the wait.
/// - `jitter` returns a number in `[0, 1)`; successive values need not be
///   unpredictable, only spread enough to de-synchronise retries.
///
/// `sleep` and `jitter` have default implementations: `sleep` uses tokio's
/// timer (the caller must run inside a tokio runtime with the time driver
/// enabled), `jitter` a per-process random hash of a counter. An embedder
/// on another runtime implements `sleep` with its own timer.
#[async_trait]
pub trait Clock: Debug + Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;

    /// Waits `duration` (default: `tokio::time::sleep`).
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// A number in `[0, 1)` that spreads retries (default: a per-process
    /// random hash of a counter).
    fn jitter(&self) -> f64 {
        default_jitter()
    }
}

/// A number in `[0, 1)`: a counter hashed with a per-process random key.
fn default_jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = KEYS
        .get_or_init(std::collections::hash_map::RandomState::new)
        .build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    // The top 53 bits, as a fraction of 2^53: uniform in [0, 1).
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn the_default_jitter_is_a_spread_fraction() {
        let draws: Vec<f64> = (0..1000).map(|_| SystemClock.jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)), "{draws:?}");
        let low = draws.iter().filter(|j| **j < 0.5).count();
        assert!((300..700).contains(&low), "{low} of 1000 below 0.5");
    }
}
