//! Backend-neutral conversions between [`Call`] / [`RawEvent`] and columns.

use bonde_pressure_core::call::{CallFacts, LegFacts};
use bonde_pressure_core::domain::{ERASED_E164, Email, PersonName};
use bonde_pressure_core::ports::{RawEvent, StoreError, StoredEvent, UnreadableCall};
use bonde_pressure_core::{Activist, Call, CallId, Leg, PhoneNumber, Target, WidgetId};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use uuid::Uuid;

/// A row that cannot be turned back into a domain value.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {column} in the store: {reason}")]
pub(crate) struct CorruptRow {
    column: &'static str,
    reason: String,
}

pub(crate) fn corrupt(column: &'static str, reason: impl ToString) -> StoreError {
    StoreError::backend(CorruptRow {
        column,
        reason: reason.to_string(),
    })
}

/// What a row that failed to decode says about itself: the error of the
/// column that failed (its name and the kind of damage, never its value).
pub(crate) fn unreadable(call_id: Option<CallId>, e: StoreError) -> UnreadableCall {
    let reason = match e {
        StoreError::Backend(inner) => inner.to_string(),
        other => other.to_string(),
    };
    UnreadableCall::new(call_id, reason)
}

/// Decodes one call row with `decode` (the backend's `FromRow` and
/// [`CallParts::into_call`]): a failure is that call's, named by its id
/// when `id` could read it.
pub(crate) fn decode_call_row<R>(
    row: &R,
    id: impl FnOnce(&R) -> Option<CallId>,
    decode: impl FnOnce(&R) -> Result<Call, StoreError>,
) -> Result<Call, UnreadableCall> {
    decode(row).map_err(|e| unreadable(id(row), e))
}

/// Wraps a driver error.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::backend(e)
}

/// `true` when `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// `true` when `e` is a foreign-key violation.
pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}

// ----------------------------------------------------------------- time

/// Drops the sub-microsecond part (both backends store microseconds).
pub(crate) fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

/// The smallest microsecond instant `>= t`: for a stored (microsecond)
/// value `x`, `x < t ⇔ x < ceil(t)` and `x >= t ⇔ x >= ceil(t)`.
pub(crate) fn ceil_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = truncate_micros(t);
    if floor == t {
        t
    } else {
        floor + TimeDelta::microseconds(1)
    }
}

/// SQLite's timestamp text: fixed width, so text order is time order.
pub(crate) fn ts_text(t: DateTime<Utc>) -> String {
    truncate_micros(t)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Parses [`ts_text`]'s output (any RFC 3339 text).
pub(crate) fn parse_ts(column: &'static str, s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(column, e))
}

// ------------------------------------------------------------ integers

pub(crate) fn version_to_db(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| corrupt("version", format!("{v} exceeds BIGINT")))
}

pub(crate) fn version_from_db(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt("version", format!("{v} is negative")))
}

// ----------------------------------------------------------------- calls

/// The columns written for a call.
pub(crate) struct CallRecord<'a> {
    pub id: Uuid,
    pub widget_id: i64,
    pub activist_name: &'a str,
    pub activist_first_name: Option<&'a str>,
    pub activist_last_name: Option<&'a str>,
    pub activist_email: &'a str,
    pub from_phone_number: &'a str,
    pub from_call_sid: Option<&'a str>,
    pub to_phone_number: &'a str,
    pub to_call_sid: Option<&'a str>,
    pub target_name: &'a str,
    pub target_caller_id: Option<&'a str>,
    pub conference_sid: Option<&'a str>,
    pub state: &'static str,
    /// [`Call::is_settled`], not merely a terminal state: `list_unfinished`
    /// lists the rows where it is false.
    pub settled: bool,
    pub connected_secs: Option<i64>,
    /// [`bonde_pressure_core::FunnelStage::as_i16`] of the call.
    pub funnel_stage: i16,
    pub facts: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl<'a> CallRecord<'a> {
    /// The record of `call` stored with version `version`.
    pub fn new(call: &'a Call, version: u64) -> Result<Self, StoreError> {
        let state = call.state();
        Ok(Self {
            id: call.id.as_uuid(),
            widget_id: call.widget_id.get(),
            activist_name: call.activist.name.as_str(),
            activist_first_name: call.activist.first_name.as_ref().map(PersonName::as_str),
            activist_last_name: call.activist.last_name.as_ref().map(PersonName::as_str),
            activist_email: call.activist.email.as_str(),
            from_phone_number: call.activist.phone.as_e164(),
            from_call_sid: call.facts.activist.leg_id.as_ref().map(|s| s.as_str()),
            to_phone_number: call.target.phone.as_e164(),
            to_call_sid: call.facts.target.leg_id.as_ref().map(|s| s.as_str()),
            target_name: call.target.name.as_str(),
            target_caller_id: call.target_caller_id.as_ref().map(PhoneNumber::as_e164),
            conference_sid: call.facts.conference_id.as_ref().map(|s| s.as_str()),
            state: state.as_str(),
            settled: call.is_settled(),
            connected_secs: call.connected_secs().map(i64::from),
            funnel_stage: bonde_pressure_core::FunnelStage::of(&call.facts, state).as_i16(),
            facts: serde_json::to_string(&call.facts).map_err(StoreError::backend)?,
            version: version_to_db(version)?,
            created_at: truncate_micros(call.created_at),
            updated_at: truncate_micros(call.updated_at),
        })
    }
}

/// The columns a call is read back from (backend types already decoded).
pub(crate) struct CallParts {
    pub id: Uuid,
    pub widget_id: i64,
    pub activist_name: String,
    pub activist_first_name: Option<String>,
    pub activist_last_name: Option<String>,
    pub activist_email: String,
    pub from_phone_number: String,
    pub to_phone_number: String,
    pub target_name: String,
    pub target_caller_id: Option<String>,
    pub facts: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn name(column: &'static str, s: &str) -> Result<PersonName, StoreError> {
    PersonName::parse(s).map_err(|e| corrupt(column, e))
}

fn phone(column: &'static str, s: &str) -> Result<PhoneNumber, StoreError> {
    PhoneNumber::from_trusted_e164(s).map_err(|e| corrupt(column, e))
}

impl CallParts {
    /// Rebuilds the call.
    pub fn into_call(self) -> Result<Call, StoreError> {
        let facts: CallFacts =
            serde_json::from_str(&self.facts).map_err(|e| corrupt("phone_calls.facts", e))?;
        // An erased call's activist is the placeholder, built as is: its
        // columns hold placeholders that are not meant to parse.
        let erased = facts.erased_at.is_some();
        let activist = if erased {
            Activist::erased()
        } else {
            self.activist()?
        };
        let widget_id =
            WidgetId::new(self.widget_id).map_err(|e| corrupt("phone_calls.widget_id", e))?;
        let target = Target::new(
            name("phone_calls.target_name", &self.target_name)?,
            phone("phone_calls.to_phone_number", &self.to_phone_number)?,
        );
        let target_caller_id = self
            .target_caller_id
            .as_deref()
            .map(|s| match s {
                ERASED_E164 if erased => Ok(PhoneNumber::erased()),
                s => phone("phone_calls.target_caller_id", s),
            })
            .transpose()?;
        Ok(Call::new(
            CallId::from(self.id),
            widget_id,
            activist,
            target,
            target_caller_id,
            self.created_at,
        )
        .with_facts(facts)
        .with_version(version_from_db(self.version)?)
        .with_updated_at(self.updated_at))
    }
}

impl CallParts {
    fn activist(&self) -> Result<Activist, StoreError> {
        let full_name = name("phone_calls.activist_name", &self.activist_name)?;
        let first_name = self
            .activist_first_name
            .as_deref()
            .map(|s| name("phone_calls.activist_first_name", s))
            .transpose()?;
        let last_name = self
            .activist_last_name
            .as_deref()
            .map(|s| name("phone_calls.activist_last_name", s))
            .transpose()?;
        let email = Email::parse(&self.activist_email)
            .map_err(|e| corrupt("phone_calls.activist_email", e))?;
        let phone = phone("phone_calls.from_phone_number", &self.from_phone_number)?;
        Ok(Activist::new(full_name, email, phone)
            .with_first_name(first_name)
            .with_last_name(last_name))
    }
}

/// The `twilio_calls` row of one leg (only legs with a SID have one).
pub(crate) struct LegRecord<'a> {
    pub sid: &'a str,
    pub leg: &'static str,
    pub status: Option<&'static str>,
    pub answered_by: Option<&'static str>,
    pub from_phone_number: Option<&'a str>,
    pub to_phone_number: &'a str,
    pub duration_secs: Option<i64>,
    pub sip_response_code: Option<i32>,
    pub error_code: Option<i64>,
    pub error_message: Option<&'a str>,
    pub ringing_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// The legs of `call` that have a SID.
pub(crate) fn leg_records(call: &Call) -> Vec<LegRecord<'_>> {
    let mut out = Vec::with_capacity(2);
    for leg in [Leg::Activist, Leg::Target] {
        let f: &LegFacts = call.facts.leg(leg);
        let Some(sid) = f.leg_id.as_ref() else {
            continue;
        };
        // A SID is one leg: never upsert the same row twice in one commit.
        if out.iter().any(|l: &LegRecord<'_>| l.sid == sid.as_str()) {
            continue;
        }
        let (from, to) = match leg {
            // Leg A is placed from the service's own number (not stored here).
            Leg::Activist => (None, call.activist.phone.as_e164()),
            Leg::Target => (
                call.target_caller_id.as_ref().map(PhoneNumber::as_e164),
                call.target.phone.as_e164(),
            ),
        };
        out.push(LegRecord {
            sid: sid.as_str(),
            leg: leg.as_str(),
            status: f.status.map(|s| s.as_str()),
            answered_by: f.answered_by.map(|a| a.as_str()),
            from_phone_number: from,
            to_phone_number: to,
            duration_secs: f.duration_secs.map(i64::from),
            sip_response_code: f.sip_response_code.map(i32::from),
            error_code: f.error.as_ref().and_then(|e| e.code).map(i64::from),
            error_message: f.error.as_ref().map(|e| e.message.as_str()),
            ringing_at: f.ringing_at.map(truncate_micros),
            answered_at: f.answered_at.map(truncate_micros),
            ended_at: f.ended_at.map(truncate_micros),
        });
    }
    out
}

// ----------------------------------------------------------------- events

/// The columns an event is read back from.
pub(crate) struct EventParts {
    pub id: i64,
    pub phone_call_id: Option<Uuid>,
    pub call_sid: Option<String>,
    pub kind: String,
    pub payload: String,
    pub sequence_number: Option<i64>,
    pub received_at: DateTime<Utc>,
}

impl EventParts {
    pub fn into_event(self) -> StoredEvent {
        let mut raw = RawEvent::new(self.kind, self.payload, self.received_at);
        raw.leg_id = self.call_sid;
        raw.sequence_number = self.sequence_number;
        StoredEvent::new(self.id, self.phone_call_id.map(CallId::from), raw)
    }
}
