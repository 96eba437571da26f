//! Twilio's webhook forms, as the fields this crate reads: each parser in
//! [`crate::webhook`] reads its form into one of these types first, then
//! turns it into a [`bonde_pressure_core::CallEvent`]. With the `openapi`
//! feature they derive `utoipa::ToSchema`, so an API description shows
//! exactly what is read (Twilio sends more fields; all are kept in the
//! event log as received).

use bonde_pressure_core::{ConferenceId, LegId};

use crate::webhook::{WebhookError, field};

fn required<'a>(form: &'a [(String, String)], name: &'static str) -> Result<&'a str, WebhookError> {
    field(form, name).ok_or(WebhookError::Missing { field: name })
}

fn owned(form: &[(String, String)], name: &str) -> Option<String> {
    field(form, name).map(str::to_owned)
}

fn number<T: std::str::FromStr>(form: &[(String, String)], name: &str) -> Option<T> {
    field(form, name).and_then(|v| v.parse().ok())
}

pub(crate) fn call_sid(form: &[(String, String)]) -> Result<LegId, WebhookError> {
    let raw = required(form, "CallSid")?;
    crate::ids::parse_call_sid(raw).map_err(|_| WebhookError::Malformed {
        field: "CallSid",
        reason: "expected CA followed by 32 hex digits".into(),
    })
}

fn conference_sid(form: &[(String, String)]) -> Result<ConferenceId, WebhookError> {
    let raw = required(form, "ConferenceSid")?;
    crate::ids::parse_conference_sid(raw).map_err(|_| WebhookError::Malformed {
        field: "ConferenceSid",
        reason: "expected CF followed by 32 hex digits".into(),
    })
}

/// A TwiML request's form (`/answer`, `/after-dial`): Twilio's voice
/// request parameters; none is required.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    serde(rename_all = "PascalCase")
)]
#[non_exhaustive]
pub struct CallForm {
    /// The leg's Call SID.
    #[cfg_attr(feature = "openapi", schema(pattern = "^CA[0-9a-fA-F]{32}$"))]
    pub call_sid: Option<String>,
    /// The leg's status.
    pub call_status: Option<String>,
    /// Twilio's `DialCallStatus` (after the conference).
    pub dial_call_status: Option<String>,
    /// Twilio's `DialCallDuration` (after the conference), as sent.
    pub dial_call_duration: Option<String>,
}

impl CallForm {
    /// Reads the form; never fails.
    pub fn read(form: &[(String, String)]) -> Self {
        Self {
            call_sid: owned(form, "CallSid"),
            call_status: owned(form, "CallStatus"),
            dial_call_status: owned(form, "DialCallStatus"),
            dial_call_duration: owned(form, "DialCallDuration"),
        }
    }
}

/// A status callback's form (`/status-callback`, `/dial-status-callback`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    serde(rename_all = "PascalCase")
)]
#[non_exhaustive]
pub struct CallStatusForm {
    /// The leg's Call SID.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, pattern = "^CA[0-9a-fA-F]{32}$")
    )]
    pub call_sid: LegId,
    /// `queued initiated ringing in-progress completed busy failed no-answer
    /// canceled`; another value is stored and ignored.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub call_status: String,
    /// Seconds, on the final callback.
    pub call_duration: Option<u32>,
    /// SIP response code of the attempt.
    pub sip_response_code: Option<u16>,
    /// RFC 2822 time of the event.
    pub timestamp: Option<String>,
    /// Order of this leg's callbacks.
    pub sequence_number: Option<u32>,
}

impl CallStatusForm {
    /// Reads the form: `CallSid` (a Call SID) and `CallStatus` are
    /// required; unreadable optional fields are left out.
    pub fn read(form: &[(String, String)]) -> Result<Self, WebhookError> {
        Ok(Self {
            call_sid: call_sid(form)?,
            call_status: required(form, "CallStatus")?.to_owned(),
            call_duration: number(form, "CallDuration"),
            sip_response_code: number(form, "SipResponseCode"),
            timestamp: owned(form, "Timestamp"),
            sequence_number: number(form, "SequenceNumber"),
        })
    }
}

/// An answering-machine detection callback's form (`/amd-status-callback`,
/// `/dial-amd-status-callback`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    serde(rename_all = "PascalCase")
)]
#[non_exhaustive]
pub struct AmdForm {
    /// The leg's Call SID.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, pattern = "^CA[0-9a-fA-F]{32}$")
    )]
    pub call_sid: LegId,
    /// `human machine_start fax unknown machine_end_beep machine_end_silence
    /// machine_end_other`; another value is stored and ignored.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub answered_by: String,
    /// How long detection took, in milliseconds.
    pub machine_detection_duration: Option<u32>,
}

impl AmdForm {
    /// Reads the form: `CallSid` (a Call SID) and `AnsweredBy` are required.
    pub fn read(form: &[(String, String)]) -> Result<Self, WebhookError> {
        Ok(Self {
            call_sid: call_sid(form)?,
            answered_by: required(form, "AnsweredBy")?.to_owned(),
            machine_detection_duration: number(form, "MachineDetectionDuration"),
        })
    }
}

/// The gather action's form (`/dial`): no input at all is a valid request
/// (the activist did not confirm).
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    serde(rename_all = "PascalCase")
)]
#[non_exhaustive]
pub struct GatherForm {
    /// The activist leg's Call SID.
    #[cfg_attr(feature = "openapi", schema(pattern = "^CA[0-9a-fA-F]{32}$"))]
    pub call_sid: Option<String>,
    /// Keys pressed.
    pub digits: Option<String>,
    /// What was said.
    pub speech_result: Option<String>,
    /// Speech recognition confidence, 0 to 1.
    pub confidence: Option<f32>,
}

impl GatherForm {
    /// Reads the form; never fails.
    pub fn read(form: &[(String, String)]) -> Self {
        Self {
            call_sid: owned(form, "CallSid"),
            digits: owned(form, "Digits"),
            speech_result: owned(form, "SpeechResult"),
            confidence: number(form, "Confidence"),
        }
    }
}

/// A conference status callback's form (`/conference-status-callback`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    serde(rename_all = "PascalCase")
)]
#[non_exhaustive]
pub struct ConferenceForm {
    /// The conference's SID (required for the events this service reads).
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, pattern = "^CF[0-9a-fA-F]{32}$")
    )]
    pub conference_sid: Option<ConferenceId>,
    /// `conference-start conference-end participant-join participant-leave`;
    /// other events are stored and ignored.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub status_callback_event: String,
    /// The participant's Call SID (participant events).
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, pattern = "^CA[0-9a-fA-F]{32}$")
    )]
    pub call_sid: Option<LegId>,
    /// Our call id.
    pub friendly_name: Option<String>,
    /// `activist` or `target`: which leg the participant is.
    pub participant_label: Option<String>,
    /// Order of this conference's callbacks.
    pub sequence_number: Option<u32>,
}

impl ConferenceForm {
    /// Reads the form: `StatusCallbackEvent` is required; for the events
    /// this service reads, `ConferenceSid` (a Conference SID) too, and for
    /// participant events `CallSid` (a Call SID). Other events read no SID.
    pub fn read(form: &[(String, String)]) -> Result<Self, WebhookError> {
        let event = required(form, "StatusCallbackEvent")?;
        let (conference_sid, call_sid) = match event {
            "conference-start" | "conference-end" => (Some(conference_sid(form)?), None),
            "participant-join" | "participant-leave" => {
                let conference = conference_sid(form)?;
                (Some(conference), Some(self::call_sid(form)?))
            }
            _ => (None, None),
        };
        Ok(Self {
            conference_sid,
            status_callback_event: event.to_owned(),
            call_sid,
            friendly_name: owned(form, "FriendlyName"),
            participant_label: owned(form, "ParticipantLabel"),
            sequence_number: number(form, "SequenceNumber"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn status_forms_check_the_sid_before_the_status() {
        let e = CallStatusForm::read(&form(&[("CallSid", "nope")])).unwrap_err();
        assert_eq!(e.field(), "CallSid");
        let e = CallStatusForm::read(&form(&[("CallSid", &format!("CA{}", "a".repeat(32)))]))
            .unwrap_err();
        assert_eq!(
            e,
            WebhookError::Missing {
                field: "CallStatus"
            }
        );
        let f = CallStatusForm::read(&form(&[
            ("CallSid", &format!("CA{}", "a".repeat(32))),
            ("CallStatus", "completed"),
            ("CallDuration", "x"),
            ("SipResponseCode", "200"),
        ]))
        .unwrap();
        assert_eq!(f.call_status, "completed");
        assert_eq!((f.call_duration, f.sip_response_code), (None, Some(200)));
    }

    #[test]
    fn conference_forms_read_sids_only_for_the_events_they_need() {
        let f = ConferenceForm::read(&form(&[("StatusCallbackEvent", "conference-mute")])).unwrap();
        assert_eq!((f.conference_sid, f.call_sid), (None, None));
        let e = ConferenceForm::read(&form(&[("StatusCallbackEvent", "participant-join")]))
            .unwrap_err();
        assert_eq!(
            e,
            WebhookError::Missing {
                field: "ConferenceSid"
            }
        );
        let e = ConferenceForm::read(&form(&[])).unwrap_err();
        assert_eq!(
            e,
            WebhookError::Missing {
                field: "StatusCallbackEvent"
            }
        );
    }
}
