//! Parsing of Twilio's webhook forms into core [`CallEvent`]s.
//!
//! Input is the decoded form, as pairs (a name may repeat; the first value
//! counts). Values Twilio may add in the future (an unknown `CallStatus`,
//! `AnsweredBy` or conference `StatusCallbackEvent`) become
//! [`CallEvent::Ignored`]: stored, never an error. A missing or malformed
//! field the event cannot do without is a [`WebhookError`] naming it; the
//! HTTP layer stores the payload anyway and answers 4xx.

use bonde_pressure_core::{AnsweredBy, CallEvent, Confirmation, Leg, LegStatus, RawEvent};
use chrono::{DateTime, Utc};

use crate::forms::{AmdForm, CallForm, CallStatusForm, ConferenceForm, GatherForm};
use crate::urls::Route;

/// Why a webhook form could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A required field is absent or empty.
    #[error("missing required field {field}")]
    Missing {
        /// The field's name (`CallSid`, `CallStatus`...).
        field: &'static str,
    },
    /// A required field has a value that cannot be right.
    #[error("malformed field {field}: {reason}")]
    Malformed {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl WebhookError {
    /// The field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            WebhookError::Missing { field } | WebhookError::Malformed { field, .. } => field,
        }
    }
}

/// The fields of Twilio's callbacks that carry no personal data (no
/// numbers, no names, no speech): statuses, event names, durations,
/// sequence numbers, error codes. Read models show these to anyone
/// ([`bonde_pressure_core::Telephony::safe_payload_fields`]).
pub const SAFE_PAYLOAD_FIELDS: &[&str] = &[
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
];

/// The first value of a field, if present and not blank.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Shortens untrusted text for an `Ignored` description.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(MAX).collect();
        c.push('…');
        c
    }
}

/// A status callback (`/status-callback` for the activist,
/// `/dial-status-callback` for the target): `CallSid`, `CallStatus`,
/// `CallDuration`, `SipResponseCode`, `Timestamp` (RFC 2822) →
/// [`CallEvent::LegStatus`]. Unreadable optional fields are left out.
pub fn parse_call_status(form: &[(String, String)], leg: Leg) -> Result<CallEvent, WebhookError> {
    let f = CallStatusForm::read(form)?;
    let Some(status) = LegStatus::parse(&f.call_status) else {
        return Ok(CallEvent::Ignored {
            what: format!(
                "{} leg: unknown CallStatus {:?}",
                leg.as_str(),
                clip(&f.call_status)
            ),
        });
    };
    Ok(CallEvent::leg_status(leg, status)
        .with_leg_id(f.call_sid)
        .with_duration_secs(f.call_duration)
        .with_sip_response_code(f.sip_response_code)
        .with_at(f.timestamp.as_deref().and_then(parse_timestamp))
        .build())
}

/// Reads Twilio's `Timestamp` (RFC 2822, `Wed, 25 Nov 2026 13:27:31 +0000`).
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An async answering-machine detection callback (`/amd-status-callback`,
/// `/dial-amd-status-callback`): `CallSid`, `AnsweredBy` → [`CallEvent::AnsweredBy`].
pub fn parse_amd(form: &[(String, String)], leg: Leg) -> Result<CallEvent, WebhookError> {
    let f = AmdForm::read(form)?;
    Ok(match AnsweredBy::parse(&f.answered_by) {
        Some(answered_by) => CallEvent::answered_by(leg, f.call_sid, answered_by),
        None => CallEvent::Ignored {
            what: format!(
                "{} leg: unknown AnsweredBy {:?}",
                leg.as_str(),
                clip(&f.answered_by)
            ),
        },
    })
}

/// The leg a conference participant label names (`activist`, `target`).
pub fn leg_of_label(label: &str) -> Option<Leg> {
    match label.trim() {
        "activist" => Some(Leg::Activist),
        "target" => Some(Leg::Target),
        _ => None,
    }
}

/// A conference status callback: `StatusCallbackEvent`
/// (`conference-start`, `conference-end`, `participant-join`,
/// `participant-leave`; others are ignored), `ConferenceSid`, and for
/// participants `CallSid` and `ParticipantLabel`.
pub fn parse_conference(form: &[(String, String)]) -> Result<CallEvent, WebhookError> {
    let f = ConferenceForm::read(form)?;
    let leg = f.participant_label.as_deref().and_then(leg_of_label);
    Ok(
        match (
            f.status_callback_event.as_str(),
            f.conference_sid,
            f.call_sid,
        ) {
            ("conference-start", Some(conference_id), _) => {
                CallEvent::ConferenceStarted { conference_id }
            }
            ("conference-end", Some(conference_id), _) => {
                CallEvent::ConferenceEnded { conference_id }
            }
            ("participant-join", Some(conference_id), Some(leg_id)) => {
                CallEvent::participant_joined(conference_id, leg_id, leg)
            }
            ("participant-leave", Some(conference_id), Some(leg_id)) => {
                CallEvent::participant_left(conference_id, leg_id, leg)
            }
            (other, _, _) => CallEvent::Ignored {
                what: format!("conference event {:?}", clip(other)),
            },
        },
    )
}

/// The gather's action (`/dial`): `Digits` or else `SpeechResult` →
/// [`CallEvent::Confirmed`]; neither → [`CallEvent::Ignored`] (no confirmation).
pub fn parse_gather(form: &[(String, String)]) -> Result<CallEvent, WebhookError> {
    let f = GatherForm::read(form);
    if let Some(d) = f.digits {
        return Ok(CallEvent::Confirmed(Confirmation::Digits(d)));
    }
    if let Some(s) = f.speech_result {
        return Ok(CallEvent::Confirmed(Confirmation::Speech(s)));
    }
    Ok(CallEvent::Ignored {
        what: "gather without input".into(),
    })
}

/// The activist's answer (`/answer`) → [`CallEvent::Prompted`] (the
/// greeting and prompt are served in the response).
pub fn parse_answer(_form: &[(String, String)]) -> Result<CallEvent, WebhookError> {
    Ok(CallEvent::Prompted)
}

/// The `<Dial action>` after the conference (`/after-dial`) →
/// [`CallEvent::Ignored`] describing `DialCallStatus` (the payload is
/// stored; the conference callbacks carry the facts).
pub fn parse_dial_action(form: &[(String, String)]) -> Result<CallEvent, WebhookError> {
    let f = CallForm::read(form);
    let status = f.dial_call_status.as_deref().unwrap_or("unknown");
    let mut what = format!("dial action: DialCallStatus={}", clip(status));
    if let Some(d) = f.dial_call_duration.as_deref() {
        what.push_str(&format!(" DialCallDuration={}", clip(d)));
    }
    Ok(CallEvent::Ignored { what })
}

/// Parses the form of any route. Status and AMD routes carry their leg.
pub fn parse(route: Route, form: &[(String, String)]) -> Result<CallEvent, WebhookError> {
    match route {
        Route::Answer => parse_answer(form),
        Route::StatusCallback => parse_call_status(form, Leg::Activist),
        Route::DialStatusCallback => parse_call_status(form, Leg::Target),
        Route::AmdStatusCallback => parse_amd(form, Leg::Activist),
        Route::DialAmdStatusCallback => parse_amd(form, Leg::Target),
        Route::Dial => parse_gather(form),
        Route::ConferenceStatusCallback => parse_conference(form),
        Route::AfterDial => parse_dial_action(form),
    }
}

/// The `CallSid` as sent (possibly malformed, at most 128 characters), for
/// the event log ([`RawEvent::leg_id`]).
pub fn raw_call_sid(form: &[(String, String)]) -> Option<String> {
    field(form, "CallSid").map(|s| clip_len(s, 128))
}

fn clip_len(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The `SequenceNumber`, if present and numeric.
pub fn sequence_number(form: &[(String, String)]) -> Option<i64> {
    field(form, "SequenceNumber").and_then(|s| s.parse().ok())
}

/// The [`RawEvent`] to store for a route's payload: kind = the route's name,
/// `CallSid` and `SequenceNumber` extracted from the decoded form, `payload`
/// the body as received.
pub fn raw_event(
    route: Route,
    payload: &str,
    form: &[(String, String)],
    received_at: DateTime<Utc>,
) -> RawEvent {
    let mut raw = RawEvent::new(route.as_str(), payload, received_at)
        .with_sequence_number(sequence_number(form));
    raw.leg_id = raw_call_sid(form);
    raw
}

/// Decodes an `application/x-www-form-urlencoded` body into pairs.
pub fn decode_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bonde_pressure_core::LegId;
    use chrono::TimeZone;

    const CA: &str = "CA0123456789abcdef0123456789abcdef";
    const CF: &str = "CF0123456789abcdef0123456789abcdef";

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn status_callback_with_every_field() {
        let f = form(&[
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("CallSid", CA),
            ("CallStatus", "completed"),
            ("CallDuration", "42"),
            ("SipResponseCode", "200"),
            ("Timestamp", "Wed, 25 Nov 2026 13:27:31 +0000"),
            ("SequenceNumber", "3"),
            ("CallbackSource", "call-progress-events"),
        ]);
        let e = parse_call_status(&f, Leg::Activist).unwrap();
        assert_eq!(
            e,
            CallEvent::leg_status(Leg::Activist, LegStatus::Completed)
                .with_leg_id(CA.parse::<LegId>().unwrap())
                .with_duration_secs(42)
                .with_sip_response_code(200)
                .with_at(Utc.with_ymd_and_hms(2026, 11, 25, 13, 27, 31).unwrap())
                .build()
        );
        assert_eq!(parse(Route::DialStatusCallback, &f).unwrap(), {
            let CallEvent::LegStatus {
                leg_id,
                status,
                duration_secs,
                sip_response_code,
                at,
                ..
            } = e
            else {
                unreachable!()
            };
            CallEvent::leg_status(Leg::Target, status)
                .with_leg_id(leg_id)
                .with_duration_secs(duration_secs)
                .with_sip_response_code(sip_response_code)
                .with_at(at)
                .build()
        });
    }

    #[test]
    fn every_call_status_parses() {
        for s in LegStatus::ALL {
            let f = form(&[("CallSid", CA), ("CallStatus", s.as_str())]);
            match parse_call_status(&f, Leg::Target).unwrap() {
                CallEvent::LegStatus {
                    status,
                    duration_secs,
                    at,
                    ..
                } => {
                    assert_eq!(status, s);
                    assert_eq!(duration_secs, None);
                    assert_eq!(at, None);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unknown_status_is_ignored_not_an_error() {
        let f = form(&[("CallSid", CA), ("CallStatus", "teleported")]);
        let CallEvent::Ignored { what } = parse_call_status(&f, Leg::Activist).unwrap() else {
            panic!("not ignored")
        };
        assert!(what.contains("teleported"), "{what}");
        let long = "x".repeat(1000);
        let f = form(&[("CallSid", CA), ("CallStatus", &long)]);
        let CallEvent::Ignored { what } = parse_call_status(&f, Leg::Activist).unwrap() else {
            panic!("not ignored")
        };
        assert!(what.len() < 200);
    }

    #[test]
    fn malformed_optional_fields_are_dropped() {
        let f = form(&[
            ("CallSid", CA),
            ("CallStatus", "busy"),
            ("CallDuration", "-1"),
            ("SipResponseCode", "abc"),
            ("Timestamp", "yesterday"),
        ]);
        let CallEvent::LegStatus {
            duration_secs,
            sip_response_code,
            at,
            ..
        } = parse_call_status(&f, Leg::Activist).unwrap()
        else {
            panic!()
        };
        assert_eq!((duration_secs, sip_response_code, at), (None, None, None));
    }

    #[test]
    fn missing_or_malformed_required_fields_are_typed_errors() {
        let e = parse_call_status(&form(&[("CallStatus", "ringing")]), Leg::Activist).unwrap_err();
        assert_eq!(e, WebhookError::Missing { field: "CallSid" });
        let e = parse_call_status(
            &form(&[("CallSid", "  "), ("CallStatus", "ringing")]),
            Leg::Activist,
        )
        .unwrap_err();
        assert_eq!(e.field(), "CallSid");
        let e = parse_call_status(
            &form(&[("CallSid", "CA123"), ("CallStatus", "ringing")]),
            Leg::Activist,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            WebhookError::Malformed {
                field: "CallSid",
                ..
            }
        ));
        let e = parse_call_status(&form(&[("CallSid", CA)]), Leg::Activist).unwrap_err();
        assert_eq!(
            e,
            WebhookError::Missing {
                field: "CallStatus"
            }
        );
        assert_eq!(
            parse_amd(&form(&[("CallSid", CA)]), Leg::Target).unwrap_err(),
            WebhookError::Missing {
                field: "AnsweredBy"
            }
        );
        assert_eq!(
            parse_conference(&form(&[])).unwrap_err(),
            WebhookError::Missing {
                field: "StatusCallbackEvent"
            }
        );
        assert_eq!(
            parse_conference(&form(&[("StatusCallbackEvent", "conference-start")])).unwrap_err(),
            WebhookError::Missing {
                field: "ConferenceSid"
            }
        );
        assert_eq!(
            parse_conference(&form(&[
                ("StatusCallbackEvent", "participant-join"),
                ("ConferenceSid", CA)
            ]))
            .unwrap_err()
            .field(),
            "ConferenceSid"
        );
        assert_eq!(
            parse_conference(&form(&[
                ("StatusCallbackEvent", "participant-leave"),
                ("ConferenceSid", CF)
            ]))
            .unwrap_err(),
            WebhookError::Missing { field: "CallSid" }
        );
        assert!(
            WebhookError::Missing { field: "CallSid" }
                .to_string()
                .contains("CallSid")
        );
    }

    #[test]
    fn amd_verdicts() {
        for a in AnsweredBy::ALL {
            let f = form(&[
                ("CallSid", CA),
                ("AnsweredBy", a.as_str()),
                ("MachineDetectionDuration", "2300"),
            ]);
            assert_eq!(
                parse(Route::AmdStatusCallback, &f).unwrap(),
                CallEvent::answered_by(Leg::Activist, CA.parse::<LegId>().unwrap(), a)
            );
            assert!(matches!(
                parse(Route::DialAmdStatusCallback, &f).unwrap(),
                CallEvent::AnsweredBy {
                    leg: Leg::Target,
                    ..
                }
            ));
        }
        let f = form(&[("CallSid", CA), ("AnsweredBy", "robot")]);
        assert!(matches!(
            parse_amd(&f, Leg::Activist).unwrap(),
            CallEvent::Ignored { .. }
        ));
    }

    #[test]
    fn conference_events() {
        let f = form(&[
            ("StatusCallbackEvent", "conference-start"),
            ("ConferenceSid", CF),
            ("FriendlyName", "0b7e3a52-9d4c-4f5e-8a1b-2c3d4e5f6a7b"),
            ("SequenceNumber", "1"),
        ]);
        assert_eq!(
            parse(Route::ConferenceStatusCallback, &f).unwrap(),
            CallEvent::ConferenceStarted {
                conference_id: CF.parse().unwrap()
            }
        );
        let f = form(&[
            ("StatusCallbackEvent", "conference-end"),
            ("ConferenceSid", CF),
            (
                "ReasonConferenceEnded",
                "participant-with-end-conference-on-exit-left",
            ),
            ("CallSidEndingConference", CA),
        ]);
        assert_eq!(
            parse_conference(&f).unwrap(),
            CallEvent::ConferenceEnded {
                conference_id: CF.parse().unwrap()
            }
        );
        for (label, leg) in [
            ("activist", Some(Leg::Activist)),
            ("target", Some(Leg::Target)),
            ("someone", None),
        ] {
            let f = form(&[
                ("StatusCallbackEvent", "participant-join"),
                ("ConferenceSid", CF),
                ("CallSid", CA),
                ("ParticipantLabel", label),
            ]);
            assert_eq!(
                parse_conference(&f).unwrap(),
                CallEvent::participant_joined(CF.parse().unwrap(), CA.parse().unwrap(), leg)
            );
        }
        let f = form(&[
            ("StatusCallbackEvent", "participant-leave"),
            ("ConferenceSid", CF),
            ("CallSid", CA),
        ]);
        assert_eq!(
            parse_conference(&f).unwrap(),
            CallEvent::participant_left(CF.parse().unwrap(), CA.parse().unwrap(), None)
        );
        // Events we do not use need nothing else.
        for e in ["participant-mute", "participant-hold", "announcement-end"] {
            assert!(matches!(
                parse_conference(&form(&[("StatusCallbackEvent", e)])).unwrap(),
                CallEvent::Ignored { what } if what.contains(e)
            ));
        }
    }

    #[test]
    fn gather_answer_and_dial_action() {
        assert_eq!(
            parse(Route::Dial, &form(&[("CallSid", CA), ("Digits", "5")])).unwrap(),
            CallEvent::Confirmed(Confirmation::Digits("5".into()))
        );
        assert_eq!(
            parse_gather(&form(&[
                ("Digits", ""),
                ("SpeechResult", "Ana Souza"),
                ("Confidence", "0.9")
            ]))
            .unwrap(),
            CallEvent::Confirmed(Confirmation::Speech("Ana Souza".into()))
        );
        assert!(matches!(
            parse_gather(&form(&[("Digits", ""), ("SpeechResult", " ")])).unwrap(),
            CallEvent::Ignored { .. }
        ));
        assert_eq!(
            parse(Route::Answer, &form(&[("CallSid", CA)])).unwrap(),
            CallEvent::Prompted
        );
        let CallEvent::Ignored { what } = parse(
            Route::AfterDial,
            &form(&[("DialCallStatus", "completed"), ("DialCallDuration", "61")]),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            what,
            "dial action: DialCallStatus=completed DialCallDuration=61"
        );
    }

    #[test]
    fn repeated_keys_take_the_first_value() {
        let f = form(&[
            ("CallSid", CA),
            ("CallStatus", "ringing"),
            ("CallStatus", "completed"),
        ]);
        assert!(matches!(
            parse_call_status(&f, Leg::Activist).unwrap(),
            CallEvent::LegStatus {
                status: LegStatus::Ringing,
                ..
            }
        ));
    }

    #[test]
    fn raw_event_extraction() {
        let body = format!("CallSid={CA}&CallStatus=ringing&SequenceNumber=7&To=%2B5511912345678");
        let f = decode_form(body.as_bytes());
        assert_eq!(field(&f, "To"), Some("+5511912345678"));
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let raw = raw_event(Route::StatusCallback, &body, &f, at);
        assert_eq!(raw.kind, "status-callback");
        assert_eq!(raw.leg_id.as_deref(), Some(CA));
        assert_eq!(raw.sequence_number, Some(7));
        assert_eq!(raw.payload, body);
        assert_eq!(raw.received_at, at);
        let f = form(&[("CallSid", "garbage"), ("SequenceNumber", "x")]);
        assert_eq!(raw_call_sid(&f).as_deref(), Some("garbage"));
        assert_eq!(sequence_number(&f), None);
        assert_eq!(raw_call_sid(&[]), None);
    }
}

#[cfg(test)]
mod safe_field_tests {
    use super::SAFE_PAYLOAD_FIELDS;

    #[test]
    fn safe_fields_hold_no_personal_data() {
        for personal in [
            "From",
            "To",
            "Caller",
            "Called",
            "CallSid",
            "AccountSid",
            "Digits",
            "SpeechResult",
            "FromCity",
            "ToCity",
            "CallerName",
            "ForwardedFrom",
        ] {
            assert!(!SAFE_PAYLOAD_FIELDS.contains(&personal), "{personal}");
        }
        assert!(SAFE_PAYLOAD_FIELDS.contains(&"CallStatus"));
    }
}
