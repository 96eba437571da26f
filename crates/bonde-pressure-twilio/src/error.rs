//! Twilio error bodies and their mapping onto core's [`TelephonyError`]
//! taxonomy: which Twilio codes mean the number called is invalid, the
//! destination is not permitted, our caller id was refused, our credentials
//! or account were refused, or Twilio rate-limits us. Core decides from the
//! variant what the activist is told and whether the attempt counts.

use std::time::Duration;

use bonde_pressure_core::TelephonyError;
use bonde_pressure_core::domain::mask_phone;
use serde::Deserialize;

// Sources of the code lists below: Twilio's error dictionary
// (https://www.twilio.com/docs/api/errors/{code}), checked for each code.
// Only codes that the voice REST API (Calls, Conference Participants)
// answers with are listed: the 1322x codes are `<Dial>` verb errors reported
// in call logs, never REST answers, and 21401, 21408, 21421, 21612 are
// Messaging / phone-number-purchase errors.

/// Twilio error codes meaning "the number we were asked to call cannot be
/// called": invalid or unreachable numbers, destinations Twilio blocks, and
/// unverified numbers on trial accounts. Reported as
/// [`TelephonyError::InvalidNumber`].
pub const INVALID_NUMBER_CODES: &[u32] = &[
    21211, // invalid 'To' phone number
    21214, // 'To' phone number cannot be reached
    21216, // call blocked by Twilio (high-risk or regulatory destination)
    21217, // phone number does not appear to be valid
    21219, // 'To' phone number not verified (trial account)
];

/// Twilio error codes meaning "the account's geographic permissions do not
/// allow calling this country" (Console → Voice → Settings → Geo
/// permissions). Reported as [`TelephonyError::DestinationNotPermitted`]
/// (our account's settings, not the number's fault) with a message starting
/// with [`GEO_PERMISSION_PREFIX`].
pub const GEO_PERMISSION_CODES: &[u32] = &[
    21215, // "Account not authorized to call +…": geo permission (REST)
    13227, // "No international authorization": the `<Dial>` counterpart; listed so
           // that it can never be mistaken for another refusal if it is relayed.
];

/// Twilio error codes meaning "**our** caller id (`From`) was refused": the
/// configured number (`TWILIO_PHONE_NUMBER`) or the campaign's caller-id
/// policy is wrong, not the number being called. Reported as
/// [`TelephonyError::CallerIdRejected`] (never `InvalidNumber`, which would
/// blame the activist) with a message starting with [`CALLER_ID_PREFIX`].
pub const CALLER_ID_CODES: &[u32] = &[
    21210, // 'From' phone number not verified (not a Twilio number or verified caller id)
    21212, // invalid 'From' / caller id
    21213, // 'From' / caller id is required
];

/// How the message of a geo-permission refusal starts.
pub const GEO_PERMISSION_PREFIX: &str = "geo permission: Twilio's geographic permissions do not allow calling this country (Console → Voice → Settings → Geo permissions)";

/// How the message of a refused caller id starts.
pub const CALLER_ID_PREFIX: &str = "caller id refused: Twilio rejected our From number (check TWILIO_PHONE_NUMBER and the campaign's caller-id policy)";

/// Which of the code lists above a Twilio error code is in: the
/// classification [`map_error`] maps onto core's [`TelephonyError`]
/// variants. Callers match those variants; this is Twilio's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The called number is invalid, unreachable, blocked or unverified.
    InvalidNumber,
    /// The account's geographic permissions do not allow the destination.
    GeoPermission,
    /// Our caller id (`From`) was refused: a configuration problem.
    CallerId,
}

impl Refusal {
    /// The refusal a Twilio error code means, if it is one of the lists above.
    pub fn of_code(code: u32) -> Option<Self> {
        if INVALID_NUMBER_CODES.contains(&code) {
            Some(Refusal::InvalidNumber)
        } else if GEO_PERMISSION_CODES.contains(&code) {
            Some(Refusal::GeoPermission)
        } else if CALLER_ID_CODES.contains(&code) {
            Some(Refusal::CallerId)
        } else {
            None
        }
    }

    /// The refusal an error of this client stands for, if any (by its code).
    pub fn of(error: &TelephonyError) -> Option<Self> {
        error.code().and_then(Self::of_code)
    }
}

/// Twilio's "too many requests" code (concurrent REST requests).
pub const TOO_MANY_REQUESTS: u32 = 20429;
/// Twilio's authentication error code.
pub const AUTHENTICATION_ERROR: u32 = 20003;
/// Twilio's "account is not active" code (suspended or closed account).
pub const ACCOUNT_NOT_ACTIVE: u32 = 20005;

/// Twilio error codes meaning "our credentials or account were refused":
/// reported as [`TelephonyError::Auth`], as is any 401.
pub const AUTH_CODES: &[u32] = &[
    AUTHENTICATION_ERROR, // authentication failed
    ACCOUNT_NOT_ACTIVE,   // account not active
];
/// Twilio's "resource not found" code.
pub const NOT_FOUND: u32 = 20404;

/// An error body as Twilio sends it: the classic
/// `{code, message, more_info, status}` or the RFC 9457 problem shape
/// `{type, title, status, detail, instance}` (with or without `code`).
///
/// The source of the [`TelephonyError`]s [`map_error`] returns (downcast
/// [`TelephonyError::underlying`] to it): its message has phone numbers
/// masked, like the error's.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("Twilio error {}: {message}", code_text(.code))]
pub struct ApiError {
    /// Twilio's error code (`21211`).
    pub code: Option<u32>,
    /// The message (`message`, or `detail`/`title`).
    pub message: String,
    /// Link to the error's documentation (`more_info`, or `type`).
    pub more_info: Option<String>,
}

fn code_text(code: &Option<u32>) -> String {
    code.map_or_else(|| "without a code".to_owned(), |c| c.to_string())
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

/// Characters that may separate the digit groups of a written phone number
/// (`+55 (11) 98765-4321`, `11.98765.4321`).
const PHONE_SEPARATORS: [char; 5] = [' ', '-', '(', ')', '.'];

/// The end (exclusive) of the phone-number-like run starting at `start`, and
/// its digit count: an optional `+` or `(`, then digit groups separated by at
/// most two separators (`") "`); the run ends at its last digit. `None` if it
/// does not start with a digit group.
fn phone_run(chars: &[char], start: usize) -> Option<(usize, usize)> {
    let mut j = start;
    while j < chars.len() && j - start < 2 && matches!(chars[j], '+' | '(') {
        j += 1;
    }
    if j >= chars.len() || !chars[j].is_ascii_digit() {
        return None;
    }
    let mut digits = 0;
    let mut end = j;
    loop {
        while j < chars.len() && chars[j].is_ascii_digit() {
            j += 1;
            digits += 1;
        }
        end = end.max(j);
        // A separator group: one or two separators, then a digit. ". " ends a
        // sentence, not a number.
        let mut k = j;
        while k < chars.len() && k - j < 2 && PHONE_SEPARATORS.contains(&chars[k]) {
            k += 1;
        }
        let sentence_end = k - j == 2 && chars[j] == '.' && chars[j + 1] == ' ';
        if k == j || sentence_end || k >= chars.len() || !chars[k].is_ascii_digit() {
            break;
        }
        j = k;
    }
    Some((end, digits))
}

/// Masks every phone-number-like run of a provider message, so that errors
/// can be logged: Twilio's messages quote the numbers they refuse. A run is an
/// optional `+` (or `(`) and digit groups separated by spaces, `-`, `.`, `(`
/// or `)` (`+55 11 98765-4321`, `(11) 98765-4321`), with 8 digits or more in
/// all; it is masked with [`mask_phone`], separators included. Digits glued to
/// letters (SIDs such as `CA0123…`) are left alone. Shorter runs (error codes,
/// HTTP statuses) stay, but two short numbers separated by a space may be
/// masked together: masking too much is the safe side.
pub fn scrub_phone_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // Only whole words: the digits inside a SID (`CA0123456789abcdef…`) stay.
        let glued_before = i > 0 && chars[i - 1].is_alphanumeric();
        if !glued_before {
            if let Some((end, digits)) = phone_run(&chars, i) {
                let glued_after = end < chars.len() && chars[end].is_alphanumeric();
                if digits >= 8 && !glued_after {
                    out.push_str(&mask_phone(&chars[i..end].iter().collect::<String>()));
                } else {
                    // Not a phone number: copy the whole run, so that its tail
                    // is not examined again as a run of its own.
                    out.extend(&chars[i..end]);
                }
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
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

/// Maps a non-success answer onto core's [`TelephonyError`] taxonomy:
/// invalid numbers ([`INVALID_NUMBER_CODES`]) → `InvalidNumber`; geo
/// permissions ([`GEO_PERMISSION_CODES`]) → `DestinationNotPermitted` with a
/// "geo permission" message; our refused caller id ([`CALLER_ID_CODES`]) →
/// `CallerIdRejected` with a "caller id refused" message; 401 or
/// [`AUTH_CODES`] → `Auth`; 404 / 20404 → `NotFound`; 429 / 20429 →
/// `RateLimited`; other 4xx → `Rejected`; 5xx → `Unavailable`. Twilio's
/// error body ([`ApiError`]) is the source.
pub fn map_error(status: u16, body: &str, retry_after: Option<Duration>) -> TelephonyError {
    let e = ApiError::parse(body);
    let code = e.code;
    let message = e.message.clone();
    // The body's text is the error's message; the parsed body is its source.
    let error = match code.and_then(Refusal::of_code) {
        Some(Refusal::InvalidNumber) => TelephonyError::invalid_number(code, message),
        Some(Refusal::GeoPermission) => TelephonyError::destination_not_permitted(
            code,
            format!("{GEO_PERMISSION_PREFIX}: {message}"),
        ),
        Some(Refusal::CallerId) => {
            TelephonyError::caller_id_rejected(code, format!("{CALLER_ID_PREFIX}: {message}"))
        }
        None if status == 401 || code.is_some_and(|c| AUTH_CODES.contains(&c)) => {
            TelephonyError::auth(code, message)
        }
        None if status == 429 || code == Some(TOO_MANY_REQUESTS) => {
            TelephonyError::rate_limited(retry_after)
        }
        None if status == 404 || code == Some(NOT_FOUND) => TelephonyError::not_found(message),
        None if (400..500).contains(&status) => TelephonyError::rejected(status, code, message),
        None => TelephonyError::unavailable(format!("HTTP {status}: {message}")),
    };
    error.with_source(e)
}

/// Whether an answer to an idempotent request is worth retrying: 429,
/// Twilio code 20429, or 5xx.
pub fn is_retryable(status: u16, body: &str) -> bool {
    status == 429 || status >= 500 || is_rate_limit_code(status, body)
}

/// Whether an answer to a request that **creates a call** is worth retrying:
/// only answers meaning Twilio did not act on it, 429 / 20429 and 503
/// (Service Unavailable). A 500, 502 or 504 may come after the call was
/// placed; repeating the request could ring the person twice.
pub fn is_retryable_creation(status: u16, body: &str) -> bool {
    status == 429 || status == 503 || is_rate_limit_code(status, body)
}

fn is_rate_limit_code(status: u16, body: &str) -> bool {
    (400..500).contains(&status) && ApiError::parse(body).code == Some(TOO_MANY_REQUESTS)
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
            TelephonyError::DestinationNotPermitted {
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
        for code in [21211, 21214, 21216, 21217, 21219] {
            let e = map_error(400, &b(code), None);
            assert!(
                matches!(&e, TelephonyError::InvalidNumber { code: Some(c), message, .. } if *c == code && message == "m"),
                "{code}: {e:?}"
            );
            assert!(e.counts_against_limits(), "{code}");
            assert_eq!(Refusal::of_code(code), Some(Refusal::InvalidNumber));
        }
        // Messaging / number-purchase codes are not voice refusals of a number.
        for code in [21401, 21408, 21421, 21612, 13223, 13224, 13225, 13226] {
            assert_eq!(Refusal::of_code(code), None, "{code}");
            assert!(
                matches!(map_error(400, &b(code), None), TelephonyError::Rejected { code: Some(c), .. } if c == code),
                "{code}"
            );
        }
        for (status, body) in [
            (401, b(20003)),
            (401, String::new()),
            (403, b(20003)),
            (401, b(20005)),
            (403, b(20005)),
        ] {
            let e = map_error(status, &body, None);
            assert!(
                matches!(e, TelephonyError::Auth { .. }),
                "{status} {body}: {e:?}"
            );
            assert!(!e.counts_against_limits());
        }
        assert_eq!(map_error(403, &b(20005), None).code(), Some(20005));
        assert!(matches!(
            map_error(404, &b(20404), None),
            TelephonyError::NotFound { .. }
        ));
        assert!(matches!(
            map_error(429, &b(20429), Some(Duration::from_secs(3))),
            TelephonyError::RateLimited {
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            map_error(400, &b(21220), None),
            TelephonyError::Rejected {
                status: 400,
                code: Some(21220),
                ref message,
                ..
            } if message == "m"
        ));
        assert!(matches!(
            map_error(503, "<html>oops</html>", None),
            TelephonyError::Unavailable { message, .. } if message.contains("503") && message.contains("oops")
        ));
    }

    #[test]
    fn the_error_body_is_the_source() {
        use std::error::Error as _;
        let body = r#"{"code": 21211, "message": "The 'To' number +5511987654321 is not valid.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        let e = map_error(400, body, None);
        let source = e.source().expect("a source").to_string();
        assert_eq!(
            source,
            "Twilio error 21211: The 'To' number +5511*****4321 is not valid."
        );
        let api = e
            .underlying()
            .and_then(|u| u.downcast_ref::<ApiError>())
            .expect("the parsed body");
        assert_eq!(
            api.more_info.as_deref(),
            Some("https://www.twilio.com/docs/errors/21211")
        );
        assert_eq!(
            ApiError::parse("").to_string(),
            "Twilio error without a code: empty body"
        );
    }

    #[test]
    fn geo_permission_says_so_and_is_typed() {
        for code in [21215, 13227] {
            let body = format!(
                r#"{{"code": {code}, "message": "Account not authorized to call +5511987654321. Perhaps you need to enable some international permissions", "status": 400}}"#
            );
            let e = map_error(400, &body, None);
            assert_eq!(Refusal::of(&e), Some(Refusal::GeoPermission), "{code}");
            assert!(!e.counts_against_limits(), "{code}");
            match &e {
                TelephonyError::DestinationNotPermitted {
                    code: Some(c),
                    message,
                    ..
                } => {
                    assert_eq!(*c, code);
                    assert!(message.starts_with("geo permission: "), "{message}");
                    assert!(message.contains("Geo permissions"), "{message}");
                    assert!(message.contains("Account not authorized"), "{message}");
                    assert!(!message.contains("987654321"), "{message}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn our_caller_id_is_not_the_activists_number() {
        for &code in CALLER_ID_CODES {
            let body = format!(
                r#"{{"code": {code}, "message": "The source phone number provided, +551140028922, is not yet verified for your account.", "status": 400}}"#
            );
            let e = map_error(400, &body, None);
            assert!(
                !matches!(e, TelephonyError::InvalidNumber { .. }),
                "{code} blames the called number: {e:?}"
            );
            assert_eq!(Refusal::of(&e), Some(Refusal::CallerId), "{code}");
            assert!(!e.counts_against_limits(), "{code}");
            match &e {
                TelephonyError::CallerIdRejected {
                    code: Some(c),
                    message,
                    ..
                } => {
                    assert_eq!(*c, code);
                    assert!(message.starts_with("caller id refused: "), "{message}");
                    assert!(message.contains("TWILIO_PHONE_NUMBER"), "{message}");
                    assert!(message.contains("not yet verified"), "{message}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        assert_eq!(Refusal::of(&TelephonyError::auth(None, "x")), None);
    }

    #[test]
    fn code_lists_are_disjoint() {
        for c in INVALID_NUMBER_CODES {
            assert!(
                !GEO_PERMISSION_CODES.contains(c) && !CALLER_ID_CODES.contains(c),
                "{c}"
            );
        }
        for c in GEO_PERMISSION_CODES {
            assert!(!CALLER_ID_CODES.contains(c), "{c}");
        }
        for c in AUTH_CODES {
            assert_eq!(Refusal::of_code(*c), None, "{c}");
        }
    }

    #[test]
    fn creations_retry_only_answers_twilio_did_not_act_on() {
        assert!(is_retryable_creation(429, ""));
        assert!(is_retryable_creation(503, ""));
        assert!(is_retryable_creation(400, r#"{"code": 20429}"#));
        for status in [500, 502, 504, 400, 401, 404] {
            assert!(!is_retryable_creation(status, ""), "{status}");
        }
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
            "call *********4321, code 21211, sid CA12"
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
    fn formatted_phone_numbers_are_masked() {
        // International numbers keep country and area code; anything else only its last 4.
        assert_eq!(
            scrub_phone_numbers("To +55 11 98765-4321 refused"),
            "To +55 1********4321 refused"
        );
        assert_eq!(
            scrub_phone_numbers("call (11) 98765-4321."),
            "call ***********4321."
        );
        assert_eq!(
            scrub_phone_numbers("n=11.98765.4321, ok"),
            "n=*********4321, ok"
        );
        assert_eq!(scrub_phone_numbers("+1 415-867-5309"), "+1 41******5309");
        assert_eq!(scrub_phone_numbers("9876-5432"), "*********");
        for text in [
            "+55 11 98765-4321",
            "(11) 98765-4321",
            "+55 (11) 98765 4321",
            "11 98765 4321",
            "+55-11-98765-4321",
        ] {
            let shown = scrub_phone_numbers(&format!("number {text} is invalid"));
            assert!(!shown.contains("98765"), "{text}: {shown}");
            assert!(
                shown.starts_with("number ") && shown.ends_with(" is invalid"),
                "{shown}"
            );
        }
    }

    #[test]
    fn short_numbers_and_sentences_stay() {
        for text in [
            "error 21211 (see docs)",
            "HTTP 400",
            "code 21211. Retry in 30 s",
            "1234-5678x",
            "sid CA0123456789abcdef0123456789abcdef, 12 34",
        ] {
            assert_eq!(scrub_phone_numbers(text), text);
        }
        // A sentence end does not join two numbers into one.
        assert_eq!(
            scrub_phone_numbers("code 21211. 1234 is fine"),
            "code 21211. 1234 is fine"
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
