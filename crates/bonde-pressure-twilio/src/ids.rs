//! Twilio's resource SIDs, checked where they become core's opaque ids.
//!
//! Core's [`LegId`] and [`ConferenceId`] accept any provider's id. Twilio's
//! are SIDs: a two-letter prefix (`CA` for a call, `CF` for a conference)
//! followed by 32 hex digits. This adapter refuses anything else wherever
//! it meets an id: in webhook forms ([`crate::webhook`], a
//! [`WebhookError::Malformed`](crate::WebhookError::Malformed) field), in
//! Twilio's answers, and before putting an id into a REST URL
//! ([`TwilioClient`](crate::TwilioClient): an id that is not a SID names no
//! call or conference at Twilio, so it is
//! [`TelephonyError::NotFound`](bonde_pressure_core::TelephonyError::NotFound)
//! without a request).

use bonde_pressure_core::{ConferenceId, LegId};

/// Why a text is not the Twilio SID expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} SID (expected {prefix} followed by 32 hex digits)")]
#[non_exhaustive]
pub struct SidError {
    /// What kind of SID was expected (`Call`, `Conference`).
    pub kind: &'static str,
    /// Its two-letter prefix (`CA`, `CF`).
    pub prefix: &'static str,
}

const CALL: SidError = SidError {
    kind: "Call",
    prefix: "CA",
};
const CONFERENCE: SidError = SidError {
    kind: "Conference",
    prefix: "CF",
};

/// Whether `s` is `prefix` followed by 32 hex digits (any Twilio SID:
/// `AC` accounts, `SK` API keys, `CA` calls, `CF` conferences).
pub fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// Parses a Call SID (`CA` + 32 hex digits; surrounding whitespace is
/// trimmed) into core's leg id.
pub fn parse_call_sid(s: &str) -> Result<LegId, SidError> {
    let s = s.trim();
    if is_sid(s, CALL.prefix) {
        s.parse().map_err(|_| CALL)
    } else {
        Err(CALL)
    }
}

/// Parses a Conference SID (`CF` + 32 hex digits; surrounding whitespace
/// is trimmed) into core's conference id.
pub fn parse_conference_sid(s: &str) -> Result<ConferenceId, SidError> {
    let s = s.trim();
    if is_sid(s, CONFERENCE.prefix) {
        s.parse().map_err(|_| CONFERENCE)
    } else {
        Err(CONFERENCE)
    }
}

/// Whether a leg id is a Twilio Call SID.
pub fn is_call_sid(id: &LegId) -> bool {
    is_sid(id.as_str(), CALL.prefix)
}

/// Whether a conference id is a Twilio Conference SID.
pub fn is_conference_sid(id: &ConferenceId) -> bool {
    is_sid(id.as_str(), CONFERENCE.prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_are_checked() {
        let ok = format!("CA{}", "a1".repeat(16));
        assert_eq!(parse_call_sid(&ok).unwrap().as_str(), ok);
        assert_eq!(parse_call_sid(&format!(" {ok}\n")).unwrap().as_str(), ok);
        assert!(parse_conference_sid(&format!("CF{}", "0".repeat(32))).is_ok());
        assert!(parse_conference_sid(&ok).is_err(), "CA is not a conference");
        assert!(parse_call_sid("CA123").is_err());
        assert!(parse_call_sid(&format!("CA{}", "z".repeat(32))).is_err());
        assert!(parse_call_sid(&format!("CA{}", "a".repeat(33))).is_err());
        assert!(parse_call_sid("").is_err());
    }

    #[test]
    fn errors_say_what_was_expected() {
        assert_eq!(
            parse_call_sid("CA1").unwrap_err().to_string(),
            "not a valid Call SID (expected CA followed by 32 hex digits)"
        );
        assert_eq!(
            parse_conference_sid("CF1").unwrap_err().to_string(),
            "not a valid Conference SID (expected CF followed by 32 hex digits)"
        );
    }

    #[test]
    fn core_ids_that_are_not_sids_are_told_apart() {
        // Core accepts other providers' ids; this adapter does not.
        let other: LegId = "leg-42".parse().unwrap();
        assert!(!is_call_sid(&other));
        let sid = parse_call_sid(&format!("CA{}", "b".repeat(32))).unwrap();
        assert!(is_call_sid(&sid));
        let cf: ConferenceId = format!("CA{}", "c".repeat(32)).parse().unwrap();
        assert!(!is_conference_sid(&cf), "a Call SID is not a conference's");
        assert!(is_conference_sid(
            &parse_conference_sid(&format!("CF{}", "c".repeat(32))).unwrap()
        ));
    }
}
