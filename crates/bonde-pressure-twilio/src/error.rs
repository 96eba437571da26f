//! Twilio error bodies and their mapping to core's [`TelephonyError`].

use std::time::Duration;

use bonde_pressure_core::TelephonyError;
use bonde_pressure_core::domain::mask_phone;
use serde::Deserialize;

/// Twilio error codes meaning "this number cannot be called from here":
/// invalid or unsupported numbers, numbers blocked by geographic
/// permissions, unverified numbers on trial accounts, and unverified caller ids.
pub const INVALID_NUMBER_CODES: &[u32] = &[
    13223, // Dial: invalid phone number format
    13224, // Dial: Twilio does not support calling this number or the number is invalid
    13225, // Dial: forbidden phone number
    13226, // Dial: invalid country code
    13227, // Dial: no international authorization (geo permissions)
    21210, // 'From' phone number not verified
    21211, // invalid 'To' phone number
    21212, // invalid 'From' / caller id
    21213, // caller id is required
    21214, // 'To' phone number cannot be reached
    21215, // geo permission configuration is not permitting the call
    21216, // call blocked by Twilio (high-risk or regulatory destination)
    21217, // phone number does not appear to be valid
    21219, // 'To' phone number not verified (trial account)
    21401, // invalid phone number
    21408, // permission not enabled for the region
    21421, // phone number is invalid
    21612, // 'To' number cannot be reached / unroutable
];

/// Twilio's "too many requests" code (concurrent REST requests).
pub const TOO_MANY_REQUESTS: u32 = 20429;
/// Twilio's authentication error code.
pub const AUTHENTICATION_ERROR: u32 = 20003;
/// Twilio's "resource not found" code.
pub const NOT_FOUND: u32 = 20404;

/// An error body as Twilio sends it: the classic
/// `{code, message, more_info, status}` or the RFC 9457 problem shape
/// `{type, title, status, detail, instance}` (with or without `code`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    /// Twilio's error code (`21211`).
    pub code: Option<u32>,
    /// The message (`message`, or `detail`/`title`).
    pub message: String,
    /// Link to the error's documentation (`more_info`, or `type`).
    pub more_info: Option<String>,
}

#[derive(Deserialize)]
struct Body {
    code: Option<serde_json::Value>,
    message: Option<String>,
    more_info: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    title: Option<String>,
    detail: Option<String>,
}

fn code_of(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The trailing number of a problem `type` URI (`…/errors/21211` → 21211).
fn code_from_type(t: &str) -> Option<u32> {
    let tail = t.trim_end_matches('/').rsplit('/').next()?;
    let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.len() >= 5 {
        digits.parse().ok()
    } else {
        None
    }
}

impl ApiError {
    /// Reads an error body; anything unreadable gives a message from the raw text.
    pub fn parse(body: &str) -> Self {
        match serde_json::from_str::<Body>(body) {
            Ok(b) => {
                let code = b
                    .code
                    .as_ref()
                    .and_then(code_of)
                    .or_else(|| b.kind.as_deref().and_then(code_from_type));
                let message = b
                    .message
                    .or(b.detail)
                    .or(b.title)
                    .unwrap_or_else(|| "no message".to_owned());
                ApiError {
                    code,
                    message: scrub_phone_numbers(&message),
                    more_info: b.more_info.or(b.kind),
                }
            }
            Err(_) => ApiError {
                code: None,
                message: snippet(body),
                more_info: None,
            },
        }
    }
}

/// Masks every phone-number-like run (an optional `+` and 8 or more digits)
/// of a provider message, so that errors can be logged: Twilio's messages
/// quote the numbers they refuse.
pub fn scrub_phone_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let mut j = i;
        if chars[j] == '+' {
            j += 1;
        }
        let digits_start = j;
        while j < chars.len() && chars[j].is_ascii_digit() {
            j += 1;
        }
        // Only whole words: the digits inside a SID (`CA0123456789abcdef…`) stay.
        let glued_before = start > 0 && chars[start - 1].is_alphanumeric();
        let glued_after = j < chars.len() && chars[j].is_alphanumeric();
        if j - digits_start >= 8 && !glued_before && !glued_after {
            out.push_str(&mask_phone(&chars[start..j].iter().collect::<String>()));
            i = j;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn snippet(body: &str) -> String {
    let t = body.trim();
    if t.is_empty() {
        return "empty body".to_owned();
    }
    let mut s: String = t.chars().take(200).collect();
    if t.chars().count() > 200 {
        s.push('…');
    }
    scrub_phone_numbers(&s)
}

/// Maps a non-success answer to a [`TelephonyError`]: invalid numbers (see
/// [`INVALID_NUMBER_CODES`]) → `InvalidNumber`; 401 / 20003 → `Auth`; 404 /
/// 20404 → `NotFound`; 429 / 20429 → `RateLimited`; other 4xx → `Rejected`;
/// 5xx → `Unavailable`.
pub fn map_error(status: u16, body: &str, retry_after: Option<Duration>) -> TelephonyError {
    let e = ApiError::parse(body);
    let code = e.code;
    if code.is_some_and(|c| INVALID_NUMBER_CODES.contains(&c)) {
        return TelephonyError::InvalidNumber {
            code,
            message: e.message,
        };
    }
    if status == 401 || code == Some(AUTHENTICATION_ERROR) {
        return TelephonyError::Auth { message: e.message };
    }
    if status == 429 || code == Some(TOO_MANY_REQUESTS) {
        return TelephonyError::RateLimited { retry_after };
    }
    if status == 404 || code == Some(NOT_FOUND) {
        return TelephonyError::NotFound { message: e.message };
    }
    if (400..500).contains(&status) {
        return TelephonyError::Rejected {
            status,
            code,
            message: e.message,
        };
    }
    TelephonyError::Unavailable {
        message: format!("HTTP {status}: {}", e.message),
    }
}

/// Whether an answer is worth retrying: 429, Twilio code 20429, or 5xx.
pub fn is_retryable(status: u16, body: &str) -> bool {
    status == 429
        || status >= 500
        || ((400..500).contains(&status) && ApiError::parse(body).code == Some(TOO_MANY_REQUESTS))
}

/// Reads `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn classic_body() {
        let body = r#"{"code": 21211, "message": "The 'To' number 123 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        let e = ApiError::parse(body);
        assert_eq!(e.code, Some(21211));
        assert!(e.message.starts_with("The 'To' number"));
        assert_eq!(
            e.more_info.as_deref(),
            Some("https://www.twilio.com/docs/errors/21211")
        );
        assert!(matches!(
            map_error(400, body, None),
            TelephonyError::InvalidNumber {
                code: Some(21211),
                ..
            }
        ));
    }

    #[test]
    fn problem_body() {
        let body = r#"{"type": "https://www.twilio.com/docs/errors/21215", "title": "Geo permission", "status": 400, "detail": "Account not authorized to call +55...", "instance": "/2010-04-01/Accounts/AC/Calls.json"}"#;
        let e = ApiError::parse(body);
        assert_eq!(e.code, Some(21215));
        assert_eq!(e.message, "Account not authorized to call +55...");
        assert!(matches!(
            map_error(400, body, None),
            TelephonyError::InvalidNumber {
                code: Some(21215),
                ..
            }
        ));
        let with_code =
            r#"{"type": "about:blank", "title": "Not Found", "status": 404, "code": "20404"}"#;
        let e = ApiError::parse(with_code);
        assert_eq!(e.code, Some(20404));
        assert_eq!(e.message, "Not Found");
    }

    #[test]
    fn mapping_table() {
        let b = |code: u32| format!(r#"{{"code": {code}, "message": "m", "status": 400}}"#);
        for code in [21214, 21216, 21217, 21219, 13227, 21408, 21210] {
            assert!(
                matches!(map_error(400, &b(code), None), TelephonyError::InvalidNumber { code: Some(c), .. } if c == code),
                "{code}"
            );
        }
        assert!(matches!(
            map_error(401, &b(20003), None),
            TelephonyError::Auth { .. }
        ));
        assert!(matches!(
            map_error(401, "", None),
            TelephonyError::Auth { .. }
        ));
        assert!(matches!(
            map_error(404, &b(20404), None),
            TelephonyError::NotFound { .. }
        ));
        assert_eq!(
            map_error(429, &b(20429), Some(Duration::from_secs(3))),
            TelephonyError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            map_error(400, &b(21220), None),
            TelephonyError::Rejected {
                status: 400,
                code: Some(21220),
                message: "m".into()
            }
        );
        assert!(matches!(
            map_error(503, "<html>oops</html>", None),
            TelephonyError::Unavailable { message } if message.contains("503") && message.contains("oops")
        ));
    }

    #[test]
    fn retryable_answers() {
        assert!(is_retryable(429, ""));
        assert!(is_retryable(500, ""));
        assert!(is_retryable(503, ""));
        assert!(is_retryable(400, r#"{"code": 20429}"#));
        assert!(!is_retryable(400, r#"{"code": 21211}"#));
        assert!(!is_retryable(401, ""));
        assert!(!is_retryable(404, ""));
    }

    #[test]
    fn retry_after_forms() {
        let now = chrono::Utc
            .with_ymd_and_hms(2015, 10, 21, 7, 28, 0)
            .unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn phone_numbers_in_messages_are_masked() {
        let body = r#"{"code": 21211, "message": "The 'To' number +5511987654321 is not a valid phone number.", "status": 400}"#;
        let e = map_error(400, body, None);
        let shown = e.to_string();
        assert!(!shown.contains("987654321"), "{shown}");
        assert!(shown.contains("+5511*****4321"), "{shown}");
        assert_eq!(
            scrub_phone_numbers("call 5511987654321, code 21211, sid CA12"),
            "call 55119****4321, code 21211, sid CA12"
        );
        assert_eq!(scrub_phone_numbers("ação +12 ok"), "ação +12 ok");
        let sid = "CA0123456789abcdef0123456789abcdef CA01234567890123456789012345678901";
        assert_eq!(scrub_phone_numbers(sid), sid);
        assert!(
            !ApiError::parse("not json +5561999990000")
                .message
                .contains("999990000")
        );
    }

    #[test]
    fn garbage_bodies() {
        let e = ApiError::parse("");
        assert_eq!(e.code, None);
        assert_eq!(e.message, "empty body");
        let long = "z".repeat(5000);
        assert!(ApiError::parse(&long).message.chars().count() <= 201);
        assert_eq!(ApiError::parse(r#"{"code": "abc"}"#).code, None);
        assert_eq!(ApiError::parse(r#"[1,2]"#).code, None);
    }
}
