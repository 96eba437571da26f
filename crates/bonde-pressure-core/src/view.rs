//! Read models: what every adapter shows of a call.
//!
//! - [`CallSummary`]: where a call is (state, page status, version); what a
//!   live-update stream sends on every change.
//! - [`CallDetails`]: a call in detail (the people, both legs, the
//!   conference, the event log), built by [`CallDetails::new`] or
//!   [`PressureService::call_details`]. Personal data is masked unless the
//!   caller asks for [`Disclosure::Unmasked`]: phones with
//!   [`mask_phone`], e-mails with [`mask_email`], and each stored payload
//!   shows only its [summary](TimelineEntry::summary) of fields that carry
//!   no personal data.
//!
//! Both serialize (serde) to the JSON the HTTP API answers; with the
//! `openapi` feature they derive `utoipa::ToSchema`. The JSON field names
//! `sid`, `conference_sid` and `call_sid` are the API's (they predate the
//! provider-neutral [`LegId`] and [`ConferenceId`]).

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::call::{AnsweredBy, Call, CallFacts, DetailedState, Leg, LegStatus, UiStatus};
use crate::domain::{CallId, ConferenceId, LegId, PhoneNumber, WidgetId, mask_email, mask_phone};
use crate::ports::{StoreError, StoredEvent};
use crate::service::PressureService;

/// Whether a read model shows personal data.
///
/// Showing it is the caller's decision, after its own checks (the HTTP
/// adapter requires the admin token and records the read in the
/// [audit log](crate::Privacy::record_unmasked_read) first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Disclosure {
    /// Phones and e-mails masked, no raw payloads (anyone may see this).
    #[default]
    Masked,
    /// Everything as stored.
    Unmasked,
}

impl Disclosure {
    /// [`Disclosure::Unmasked`] when `unmasked`, else [`Disclosure::Masked`].
    pub fn unmasked_if(unmasked: bool) -> Self {
        if unmasked {
            Disclosure::Unmasked
        } else {
            Disclosure::Masked
        }
    }

    /// Personal data is shown.
    pub fn is_unmasked(&self) -> bool {
        matches!(self, Disclosure::Unmasked)
    }

    fn phone(&self, phone: &PhoneNumber) -> String {
        match self {
            Disclosure::Unmasked => phone.as_e164().to_owned(),
            Disclosure::Masked => mask_phone(phone.as_e164()),
        }
    }

    fn email(&self, email: &str) -> String {
        match self {
            Disclosure::Unmasked => email.to_owned(),
            Disclosure::Masked => mask_email(email),
        }
    }
}

/// Timestamps as RFC 3339 with a numeric offset (`2026-03-04T05:06:07.123456+00:00`).
fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

/// One SSE `state` event's `data`: where a call is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct CallSummary {
    /// The call.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub call_id: CallId,
    /// Detailed state.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub state: DetailedState,
    /// The page's status.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: UiStatus,
    /// The call's version.
    pub version: u64,
    /// The call is over (the stream ends after this event; a reconnection
    /// with this event's id as `Last-Event-ID` gets `204 No Content`).
    pub terminal: bool,
}

impl CallSummary {
    /// `call` shown with page status `status` (see
    /// [`PressureService::call_summary`], which decides it with the
    /// service's clock).
    pub fn new(call: &Call, status: UiStatus) -> Self {
        Self {
            call_id: call.id,
            state: call.state(),
            status,
            version: call.version,
            terminal: call.is_terminal(),
        }
    }
}

/// A person in the call details (phone masked unless authorised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct PartyView {
    /// Name.
    pub name: String,
    /// E-mail (activist only; masked unless authorised).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number (E.164, masked unless authorised).
    pub phone: String,
}

/// One leg in the call details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct LegView {
    /// The provider's id of the leg (Twilio: the Call SID).
    #[serde(rename = "sid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub leg_id: Option<LegId>,
    /// Highest status seen (`queued` … `completed`, `busy`...).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub status: Option<LegStatus>,
    /// Answering-machine verdict.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub answered_by: Option<AnsweredBy>,
    /// Seen in the conference.
    pub joined_conference: bool,
    /// Seen leaving the conference.
    pub left_conference: bool,
    /// Duration in seconds, once ended.
    pub duration_secs: Option<u32>,
    /// SIP response code.
    pub sip_response_code: Option<u16>,
    /// Provider error code, when it failed.
    pub error_code: Option<u32>,
    /// First seen ringing.
    #[serde(serialize_with = "rfc3339_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub ringing_at: Option<DateTime<Utc>>,
    /// First seen answered.
    #[serde(serialize_with = "rfc3339_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub answered_at: Option<DateTime<Utc>>,
    /// First seen ended.
    #[serde(serialize_with = "rfc3339_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub ended_at: Option<DateTime<Utc>>,
}

impl LegView {
    fn of(f: &CallFacts, leg: Leg) -> Self {
        let l = f.leg(leg);
        Self {
            leg_id: l.leg_id.clone(),
            status: l.status,
            answered_by: l.answered_by,
            // By the leg's own reports or by its id among the participants
            // (the activist joins through the voice script, reported by id).
            joined_conference: f.joined(leg),
            left_conference: f.left(leg),
            duration_secs: l.duration_secs,
            sip_response_code: l.sip_response_code,
            error_code: l.error.as_ref().and_then(|e| e.code),
            ringing_at: l.ringing_at,
            answered_at: l.answered_at,
            ended_at: l.ended_at,
        }
    }
}

/// Both legs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct LegsView {
    /// Leg A.
    pub activist: LegView,
    /// Leg B.
    pub target: LegView,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct TimelineEntry {
    /// Store id (increasing).
    pub id: i64,
    /// Route or report kind (`status-callback`, `simulated`...).
    pub kind: String,
    /// When it was received.
    #[serde(serialize_with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub received_at: DateTime<Utc>,
    /// The provider's leg id it names, as received (Twilio: the Call SID).
    #[serde(rename = "call_sid")]
    pub leg_id: Option<String>,
    /// The provider's sequence number (Twilio's SequenceNumber).
    pub sequence_number: Option<i64>,
    /// The payload's non-personal fields (status, event, answered-by...).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub summary: Map<String, Value>,
    /// The raw payload (authorised requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

impl TimelineEntry {
    /// Stored event `e`, its payload shown only when `disclosure` allows;
    /// its summary keeps the `safe_fields` of the payload
    /// ([`summarise_payload`]).
    pub fn new(e: StoredEvent, disclosure: Disclosure, safe_fields: &[&str]) -> Self {
        Self {
            id: e.id,
            summary: summarise_payload(&e.raw.payload, safe_fields),
            kind: e.raw.kind,
            received_at: e.raw.received_at,
            leg_id: e.raw.leg_id,
            sequence_number: e.raw.sequence_number,
            payload: disclosure.is_unmasked().then_some(e.raw.payload),
        }
    }
}

/// A call in detail: state, people, legs, conference and event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct CallDetails {
    /// The call.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub call_id: CallId,
    /// The widget.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub widget_id: WidgetId,
    /// Detailed state (`awaiting_confirmation`, `target_no_answer`...).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub state: DetailedState,
    /// The page's status.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: UiStatus,
    /// The call is over.
    pub terminal: bool,
    /// Optimistic-concurrency version (grows with every committed event).
    pub version: u64,
    /// Created.
    #[serde(serialize_with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub created_at: DateTime<Utc>,
    /// Last updated.
    #[serde(serialize_with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub updated_at: DateTime<Utc>,
    /// The activist.
    pub activist: PartyView,
    /// The target.
    pub target: PartyView,
    /// The legs.
    pub legs: LegsView,
    /// The greeting was played.
    pub prompted: bool,
    /// The activist confirmed.
    pub confirmed: bool,
    /// The conference's provider id (Twilio: the Conference SID).
    #[serde(rename = "conference_sid")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub conference_id: Option<ConferenceId>,
    /// Conference started.
    pub conference_started: bool,
    /// Conference ended.
    pub conference_ended: bool,
    /// Reconciliation gave up on the call.
    pub expired: bool,
    /// The activist pressed the do-not-call key during the greeting.
    pub opted_out: bool,
    /// The target was not dialled: its dial budget was used up.
    pub target_limited: bool,
    /// Talk time of a completed call.
    pub connected_secs: Option<u32>,
    /// The event log, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Phone numbers are shown unmasked (admin token presented).
    pub unmasked: bool,
}

impl CallDetails {
    /// `call` in detail, shown with page status `status`, with its stored
    /// `events` (oldest first) as the timeline, each summarised by its
    /// payload's `safe_fields` (the telephony's
    /// [`Telephony::safe_payload_fields`](crate::Telephony::safe_payload_fields)).
    /// Phones and e-mails are masked and payloads left out unless
    /// `disclosure` is [`Disclosure::Unmasked`]. Pure;
    /// [`PressureService::call_details`] loads the events and decides the
    /// status and the fields.
    pub fn new(
        call: &Call,
        status: UiStatus,
        events: Vec<StoredEvent>,
        disclosure: Disclosure,
        safe_fields: &[&str],
    ) -> Self {
        let f = &call.facts;
        Self {
            call_id: call.id,
            widget_id: call.widget_id,
            state: call.state(),
            status,
            terminal: call.is_terminal(),
            version: call.version,
            created_at: call.created_at,
            updated_at: call.updated_at,
            activist: PartyView {
                name: call.activist.name.as_str().to_owned(),
                email: Some(disclosure.email(call.activist.email.as_str())),
                phone: disclosure.phone(&call.activist.phone),
            },
            target: PartyView {
                name: call.target.name.as_str().to_owned(),
                email: None,
                phone: disclosure.phone(&call.target.phone),
            },
            legs: LegsView {
                activist: LegView::of(f, Leg::Activist),
                target: LegView::of(f, Leg::Target),
            },
            prompted: f.prompted,
            confirmed: f.confirmed,
            conference_id: f.conference_id.clone(),
            conference_started: f.conference_started,
            conference_ended: f.conference_ended,
            expired: f.expired,
            opted_out: f.opted_out,
            target_limited: f.target_limited,
            connected_secs: call.connected_secs(),
            timeline: events
                .into_iter()
                .map(|e| TimelineEntry::new(e, disclosure, safe_fields))
                .collect(),
            unmasked: disclosure.is_unmasked(),
        }
    }
}

impl PressureService {
    /// Where `call` is now: [`CallSummary::new`] with
    /// [`PressureService::page_status`].
    pub fn call_summary(&self, call: &Call) -> CallSummary {
        CallSummary::new(call, self.page_status(call))
    }

    /// `call` in detail ([`CallDetails::new`]): its stored events are
    /// loaded from the call store, its page status is
    /// [`PressureService::page_status`].
    pub async fn call_details(
        &self,
        call: &Call,
        disclosure: Disclosure,
    ) -> Result<CallDetails, StoreError> {
        let events = self.store().events(call.id).await?;
        Ok(CallDetails::new(
            call,
            self.page_status(call),
            events,
            disclosure,
            self.deps.telephony.safe_payload_fields(),
        ))
    }
}

/// The fields of a stored payload that may be shown to anyone: a JSON
/// object's string and number fields, or a form-encoded body's fields
/// (decoded; malformed percent-escapes are kept as they are), among
/// `safe_fields`, the fields the provider's payloads carry no personal data
/// in ([`Telephony::safe_payload_fields`](crate::Telephony::safe_payload_fields)).
pub fn summarise_payload(payload: &str, safe_fields: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(payload) {
        for k in safe_fields {
            if let Some(v) = m.get(*k).filter(|v| v.is_string() || v.is_number()) {
                out.insert((*k).into(), v.clone());
            }
        }
        return out;
    }
    for (k, v) in form_urlencoded::parse(payload.as_bytes()) {
        if safe_fields.contains(&k.as_ref()) {
            out.insert(k.into_owned(), Value::from(v.into_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::LegError;
    use crate::domain::{Activist, Email, PersonName, Region, Target};
    use crate::ports::RawEvent;
    use chrono::TimeZone;

    /// Twilio's and the simulated telephony's safe fields, as their
    /// adapters declare them (core's tests cannot name the twilio crate).
    const SAFE: &[&str] = &[
        "CallStatus",
        "StatusCallbackEvent",
        "AnsweredBy",
        "ParticipantLabel",
        "ReasonConferenceEnded",
        "ReasonParticipantLeft",
        "ParticipantCallStatus",
        "CallDuration",
        "SipResponseCode",
        "SequenceNumber",
        "Timestamp",
        "ErrorCode",
        "type",
        "status",
        "leg",
        "answered_by",
    ];

    fn fixture() -> (Call, Vec<StoredEvent>) {
        let t0 = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap()
            + chrono::Duration::microseconds(123456);
        let secs = chrono::Duration::seconds;
        let id: CallId = "b1f7afd0-8e24-4beb-b8be-72cd77040a40".parse().unwrap();
        let activist = Activist {
            name: PersonName::parse("Ana Silva").unwrap(),
            first_name: None,
            last_name: None,
            email: Email::parse("ana@example.org").unwrap(),
            phone: PhoneNumber::parse("11 91234-5678", Region::BRAZIL).unwrap(),
        };
        let target = Target {
            name: PersonName::parse("Demo Target").unwrap(),
            phone: PhoneNumber::parse("+5561999990000", Region::BRAZIL).unwrap(),
        };
        let mut call = Call::new(id, WidgetId::new(7).unwrap(), activist, target, None, t0);
        call.version = 9;
        call.updated_at = t0 + secs(75);
        let f = &mut call.facts;
        f.activist.leg_id = Some(LegId::parse("CA0123456789abcdef0123456789abcdef").unwrap());
        f.activist.status = Some(LegStatus::Completed);
        f.activist.answered_by = Some(AnsweredBy::Human);
        f.activist.duration_secs = Some(70);
        f.activist.sip_response_code = Some(200);
        f.activist.ringing_at = Some(t0 + secs(1));
        f.activist.answered_at = Some(t0 + secs(5));
        f.activist.ended_at = Some(t0 + secs(75));
        f.target.leg_id = Some(LegId::parse("CA1123456789abcdef0123456789abcdef").unwrap());
        f.target.status = Some(LegStatus::Failed);
        f.target.error = Some(LegError {
            code: Some(32005),
            message: "x".into(),
        });
        f.target.joined_conference = true;
        f.target.left_conference = true;
        f.prompted = true;
        f.confirmed = true;
        f.conference_id = Some(ConferenceId::parse("CF0123456789abcdef0123456789abcdef").unwrap());
        f.conference_started = true;
        let events = vec![
            StoredEvent::new(
                1,
                Some(id),
                RawEvent::new(
                    "status-callback",
                    "CallSid=CA1&From=%2B5511912345678&CallStatus=in-progress&To=%2B5561999990000\
                     &SequenceNumber=2&Timestamp=Wed%2C+25+Nov&ErrorCode=%zz%2&AnsweredBy=a%2",
                    t0,
                )
                .with_leg_id("CA1")
                .with_sequence_number(2),
            ),
            StoredEvent::new(
                2,
                Some(id),
                RawEvent::new(
                    "simulated",
                    r#"{"type":"leg_status","leg":"activist","status":"ringing","sid":"CA1","answered_by":null,"SequenceNumber":3}"#,
                    t0 + secs(2),
                ),
            ),
            StoredEvent::new(
                5,
                Some(id),
                RawEvent::new(
                    "conference-callback",
                    "StatusCallbackEvent=participant-join&CallStatus=&SequenceNumber",
                    t0 + secs(3),
                ),
            ),
        ];
        (call, events)
    }

    /// The JSON the HTTP API answered before the read model moved into
    /// core, byte for byte (only the masked e-mail changed: one masking).
    const MASKED: &str = r#"{"call_id":"b1f7afd0-8e24-4beb-b8be-72cd77040a40","widget_id":7,"state":"completed","status":"completed","terminal":true,"version":9,"created_at":"2026-03-04T05:06:07.123456+00:00","updated_at":"2026-03-04T05:07:22.123456+00:00","activist":{"name":"Ana Silva","email":"***@example.org","phone":"+5511*****5678"},"target":{"name":"Demo Target","phone":"+5561*****0000"},"legs":{"activist":{"sid":"CA0123456789abcdef0123456789abcdef","status":"completed","answered_by":"human","joined_conference":false,"left_conference":false,"duration_secs":70,"sip_response_code":200,"error_code":null,"ringing_at":"2026-03-04T05:06:08.123456+00:00","answered_at":"2026-03-04T05:06:12.123456+00:00","ended_at":"2026-03-04T05:07:22.123456+00:00"},"target":{"sid":"CA1123456789abcdef0123456789abcdef","status":"failed","answered_by":null,"joined_conference":true,"left_conference":true,"duration_secs":null,"sip_response_code":null,"error_code":32005,"ringing_at":null,"answered_at":null,"ended_at":null}},"prompted":true,"confirmed":true,"conference_sid":"CF0123456789abcdef0123456789abcdef","conference_started":true,"conference_ended":false,"expired":false,"opted_out":false,"target_limited":false,"connected_secs":null,"timeline":[{"id":1,"kind":"status-callback","received_at":"2026-03-04T05:06:07.123456+00:00","call_sid":"CA1","sequence_number":2,"summary":{"AnsweredBy":"a%2","CallStatus":"in-progress","ErrorCode":"%zz%2","SequenceNumber":"2","Timestamp":"Wed, 25 Nov"}},{"id":2,"kind":"simulated","received_at":"2026-03-04T05:06:09.123456+00:00","call_sid":null,"sequence_number":null,"summary":{"SequenceNumber":3,"leg":"activist","status":"ringing","type":"leg_status"}},{"id":5,"kind":"conference-callback","received_at":"2026-03-04T05:06:10.123456+00:00","call_sid":null,"sequence_number":null,"summary":{"CallStatus":"","SequenceNumber":"","StatusCallbackEvent":"participant-join"}}],"unmasked":false}"#;

    const UNMASKED: &str = r#"{"call_id":"b1f7afd0-8e24-4beb-b8be-72cd77040a40","widget_id":7,"state":"completed","status":"completed","terminal":true,"version":9,"created_at":"2026-03-04T05:06:07.123456+00:00","updated_at":"2026-03-04T05:07:22.123456+00:00","activist":{"name":"Ana Silva","email":"ana@example.org","phone":"+5511912345678"},"target":{"name":"Demo Target","phone":"+5561999990000"},"legs":{"activist":{"sid":"CA0123456789abcdef0123456789abcdef","status":"completed","answered_by":"human","joined_conference":false,"left_conference":false,"duration_secs":70,"sip_response_code":200,"error_code":null,"ringing_at":"2026-03-04T05:06:08.123456+00:00","answered_at":"2026-03-04T05:06:12.123456+00:00","ended_at":"2026-03-04T05:07:22.123456+00:00"},"target":{"sid":"CA1123456789abcdef0123456789abcdef","status":"failed","answered_by":null,"joined_conference":true,"left_conference":true,"duration_secs":null,"sip_response_code":null,"error_code":32005,"ringing_at":null,"answered_at":null,"ended_at":null}},"prompted":true,"confirmed":true,"conference_sid":"CF0123456789abcdef0123456789abcdef","conference_started":true,"conference_ended":false,"expired":false,"opted_out":false,"target_limited":false,"connected_secs":null,"timeline":[{"id":1,"kind":"status-callback","received_at":"2026-03-04T05:06:07.123456+00:00","call_sid":"CA1","sequence_number":2,"summary":{"AnsweredBy":"a%2","CallStatus":"in-progress","ErrorCode":"%zz%2","SequenceNumber":"2","Timestamp":"Wed, 25 Nov"},"payload":"CallSid=CA1&From=%2B5511912345678&CallStatus=in-progress&To=%2B5561999990000&SequenceNumber=2&Timestamp=Wed%2C+25+Nov&ErrorCode=%zz%2&AnsweredBy=a%2"},{"id":2,"kind":"simulated","received_at":"2026-03-04T05:06:09.123456+00:00","call_sid":null,"sequence_number":null,"summary":{"SequenceNumber":3,"leg":"activist","status":"ringing","type":"leg_status"},"payload":"{\"type\":\"leg_status\",\"leg\":\"activist\",\"status\":\"ringing\",\"sid\":\"CA1\",\"answered_by\":null,\"SequenceNumber\":3}"},{"id":5,"kind":"conference-callback","received_at":"2026-03-04T05:06:10.123456+00:00","call_sid":null,"sequence_number":null,"summary":{"CallStatus":"","SequenceNumber":"","StatusCallbackEvent":"participant-join"},"payload":"StatusCallbackEvent=participant-join&CallStatus=&SequenceNumber"}],"unmasked":true}"#;

    #[test]
    fn details_serialize_to_the_api_json() {
        let (call, events) = fixture();
        let masked = CallDetails::new(
            &call,
            UiStatus::Completed,
            events.clone(),
            Disclosure::Masked,
            SAFE,
        );
        assert_eq!(serde_json::to_string(&masked).unwrap(), MASKED);
        let unmasked = CallDetails::new(
            &call,
            UiStatus::Completed,
            events,
            Disclosure::Unmasked,
            SAFE,
        );
        assert_eq!(serde_json::to_string(&unmasked).unwrap(), UNMASKED);
    }

    #[test]
    fn masked_details_hold_no_personal_data() {
        let (call, events) = fixture();
        let text = serde_json::to_string(&CallDetails::new(
            &call,
            UiStatus::Completed,
            events,
            Disclosure::default(),
            SAFE,
        ))
        .unwrap();
        for personal in ["5511912345678", "61999990000", "ana@", "From", "\"To\""] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
    }

    #[test]
    fn summaries_keep_only_safe_fields() {
        let s = summarise_payload(
            "CallSid=CA1&From=%2B5511912345678&CallStatus=in-progress&To=%2B5561999990000&SequenceNumber=2",
            SAFE,
        );
        assert_eq!(s.get("CallStatus").unwrap(), "in-progress");
        assert_eq!(s.get("SequenceNumber").unwrap(), "2");
        assert!(!s.contains_key("From") && !s.contains_key("To"));
        let s = summarise_payload(
            r#"{"type":"leg_status","leg":"activist","status":"ringing","sid":"CA1"}"#,
            SAFE,
        );
        assert_eq!(s.get("type").unwrap(), "leg_status");
        assert!(!s.contains_key("sid"));
        // Malformed escapes stay as they are; `+` is a space.
        let s = summarise_payload("CallStatus=a%2Bb%zz%2&Timestamp=x+y%", SAFE);
        assert_eq!(s.get("CallStatus").unwrap(), "a+b%zz%2");
        assert_eq!(s.get("Timestamp").unwrap(), "x y%");
        // Invalid UTF-8 is replaced, never an error.
        let s = summarise_payload("CallStatus=%FF", SAFE);
        assert_eq!(s.get("CallStatus").unwrap(), "\u{FFFD}");
        // Only the fields the provider declares safe: none by default.
        assert!(summarise_payload("CallStatus=ringing", &[]).is_empty());
    }

    #[test]
    fn summaries_name_states_as_their_spelling() {
        let (mut call, _) = fixture();
        for state in DetailedState::ALL {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                Value::from(state.as_str())
            );
        }
        for status in LegStatus::ALL {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                Value::from(status.as_str())
            );
        }
        for a in AnsweredBy::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), Value::from(a.as_str()));
        }
        call.facts.target.status = Some(LegStatus::InProgress);
        let s = CallSummary::new(&call, UiStatus::InProgress);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!(
                r#"{{"call_id":"b1f7afd0-8e24-4beb-b8be-72cd77040a40","state":"{}","status":"in-progress","version":9,"terminal":{}}}"#,
                call.state().as_str(),
                call.is_terminal()
            )
        );
    }
}
